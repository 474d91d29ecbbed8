package hftokenizer

import "strings"

// byteToRune and runeToByte are GPT-2's bytes_to_unicode table: every byte
// maps to a printable rune (the printable Latin-1 bytes to themselves, the
// rest to U+0100 onwards), so byte-level BPE works on visible text.
var (
	byteToRune [256]rune
	runeToByte = map[rune]byte{}
)

func init() {
	n := 0
	for b := 0; b < 256; b++ {
		r := rune(b)
		if !(b >= '!' && b <= '~' || b >= 0xA1 && b <= 0xAC || b >= 0xAE && b <= 0xFF) {
			r = rune(256 + n)
			n++
		}
		byteToRune[b] = r
		runeToByte[r] = byte(b)
	}
}

// byteLevelEncode maps every byte of s to its printable rune.
func byteLevelEncode(s string) string {
	var b strings.Builder
	b.Grow(2 * len(s))
	for i := 0; i < len(s); i++ {
		b.WriteRune(byteToRune[s[i]])
	}
	return b.String()
}

// byteLevelDecode maps printable runes back to bytes; a rune outside the
// table is kept as its UTF-8 encoding (added tokens such as <|endoftext|>
// pass unchanged, since their runes map to themselves).
func byteLevelDecode(s string) []byte {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		if b, ok := runeToByte[r]; ok {
			out = append(out, b)
		} else {
			out = append(out, string(r)...)
		}
	}
	return out
}
