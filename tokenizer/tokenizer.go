// Package tokenizer maps text to the token ids alignflow's byte-level models see.
// Every byte is its own token, so any text round-trips and no vocabulary file is
// needed; three special tokens mark the start and end of a sequence and padding.
package tokenizer

import (
	"strings"
)

// Special token ids, placed after the 256 byte values.
const (
	BOS = 256 // start of a sequence
	EOS = 257 // end of a response: sampling stops here
	PAD = 258 // filler after the end, masked out everywhere
	// VocabSize is the number of token ids.
	VocabSize = 259
)

// Separator ends the prompt and starts the response, so the model can tell
// where the assistant's turn begins.
const Separator = "\n"

// Encode returns the bytes of s as token ids.
func Encode(s string) []int32 {
	ids := make([]int32, len(s))
	for i := 0; i < len(s); i++ {
		ids[i] = int32(s[i])
	}
	return ids
}

// Decode returns the text of ids, skipping special tokens.
func Decode(ids []int32) string {
	var b strings.Builder
	for _, id := range ids {
		if id >= 0 && id < 256 {
			b.WriteByte(byte(id))
		}
	}
	return b.String()
}

// EncodePrompt returns the context a response is generated from: BOS, the
// prompt's bytes and the separator.
func EncodePrompt(prompt string) []int32 {
	ids := make([]int32, 0, len(prompt)+2)
	ids = append(ids, BOS)
	ids = append(ids, Encode(prompt)...)
	return append(ids, Encode(Separator)...)
}

// EncodeResponse returns the tokens the policy emits for a response, ending in EOS.
func EncodeResponse(response string) []int32 {
	return append(Encode(response), EOS)
}
