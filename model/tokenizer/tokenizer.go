// Package tokenizer maps text to the token ids alignflow's byte-level models see.
// Every byte is its own token, so any text round-trips and no vocabulary file is
// needed; three special tokens mark the start and end of a sequence and padding.
// HelpSteer2 multi-turn prompts are mapped to plain chat text (ChatPrompt)
// before they are encoded.
package tokenizer

import (
	"fmt"
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
// bytes of ChatPrompt(prompt) and the separator. Every consumer (training,
// scoring, evaluation) goes through here, so all see the same chat text.
func EncodePrompt(prompt string) []int32 {
	text := ChatPrompt(prompt)
	ids := make([]int32, 0, len(text)+len(Separator)+1)
	ids = append(ids, BOS)
	ids = append(ids, Encode(text)...)
	return append(ids, Encode(Separator)...)
}

// TurnMarker starts every turn but the first in a HelpSteer2 multi-turn
// prompt; the role and a newline follow it, as in
// "hi<extra_id_1>Assistant\nhello<extra_id_1>User\nwhy?".
const TurnMarker = "<extra_id_1>"

// Roles a turn may have.
const (
	RoleUser      = "User"
	RoleAssistant = "Assistant"
)

// Turn is one turn of a conversation prompt.
type Turn struct {
	Role string // RoleUser or RoleAssistant
	Text string
}

// ParseTurns splits a HelpSteer2 prompt into its turns. The first turn is the
// unmarked text before any TurnMarker and is always a user turn (possibly
// empty); each later turn is TurnMarker, a role, a newline and the text, with
// only that one newline removed. A single-turn prompt gives one turn. A role
// other than User or Assistant is an error naming the marker.
func ParseTurns(prompt string) ([]Turn, error) {
	segs := strings.Split(prompt, TurnMarker)
	turns := make([]Turn, 0, len(segs))
	turns = append(turns, Turn{Role: RoleUser, Text: segs[0]})
	for i, seg := range segs[1:] {
		role, text, _ := strings.Cut(seg, "\n")
		if role != RoleUser && role != RoleAssistant {
			return nil, fmt.Errorf("turn %d has unknown role marker %q (want %q or %q followed by a newline)",
				i+2, TurnMarker+shorten(role, 32), TurnMarker+RoleUser, TurnMarker+RoleAssistant)
		}
		turns = append(turns, Turn{Role: role, Text: text})
	}
	return turns, nil
}

// ChatPrompt maps a HelpSteer2 prompt to the chat text the model sees. A
// single-turn prompt (no TurnMarker) is returned unchanged, byte for byte. A
// multi-turn prompt becomes the first user turn followed by each later turn
// on its own line as "User: text" or "Assistant: text":
// "hi<extra_id_1>Assistant\nhello<extra_id_1>User\nwhy?" becomes
// "hi\nAssistant: hello\nUser: why?". A prompt ParseTurns rejects is returned
// unchanged; the data loaders reject such prompts before they get here.
func ChatPrompt(prompt string) string {
	if !strings.Contains(prompt, TurnMarker) {
		return prompt
	}
	turns, err := ParseTurns(prompt)
	if err != nil {
		return prompt
	}
	var b strings.Builder
	b.Grow(len(prompt))
	b.WriteString(turns[0].Text)
	for _, t := range turns[1:] {
		b.WriteString("\n")
		b.WriteString(t.Role)
		b.WriteString(": ")
		b.WriteString(t.Text)
	}
	return b.String()
}

// shorten cuts s to at most n runes, marking a cut with "...".
func shorten(s string, n int) string {
	for i := range s {
		if n == 0 {
			return s[:i] + "..."
		}
		n--
	}
	return s
}

// EncodeResponse returns the tokens the policy emits for a response, ending in EOS.
func EncodeResponse(response string) []int32 {
	return append(Encode(response), EOS)
}

// Fit returns the tokens a model reads for response after prompt, at most
// maxLen of them. When both fit they are joined whole. Otherwise the start
// of the prompt goes: its first keep tokens stay (the BOS, for a prompt that
// starts with one: 1 for the byte-level model's prompts), then as much of
// the prompt's end as leaves room for the response, but at least half the
// window, the context needed to judge a response; a response longer than
// the rest loses its end (and its EOS). whole reports whether the response
// is in seq entirely; cut whether the prompt lost its start. Reward-model
// training, evaluation and RewardBench scoring all read pairs this way.
func Fit(prompt, response []int32, maxLen, keep int) (seq []int32, whole, cut bool) {
	if len(prompt)+len(response) <= maxLen {
		return append(append(make([]int32, 0, len(prompt)+len(response)), prompt...), response...), true, false
	}
	if len(prompt) == 0 {
		return append([]int32(nil), response[:maxLen]...), false, false
	}
	keep = min(keep, len(prompt))
	rest := max(maxLen-len(response), maxLen/2) - keep // prompt tokens after the kept ones
	rest = max(0, min(rest, len(prompt)-keep))
	seq = append(append([]int32(nil), prompt[:keep]...), prompt[len(prompt)-rest:]...)
	seq = append(seq, response...)
	whole = len(seq) <= maxLen
	return seq[:min(len(seq), maxLen)], whole, rest < len(prompt)-keep
}
