package hftokenizer

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// decoder turns the tokens of a sequence back into text, token by token, as
// Hugging Face's decode_chain does; the results are concatenated.
type decoder func(tokens []string) []string

var decoderTypes = []string{"Sequence", "ByteLevel", "Replace", "ByteFallback", "Fuse", "Strip", "Metaspace"}

func parseDecoder(raw json.RawMessage, field string) (decoder, error) {
	typ, err := componentType(raw, field)
	if err != nil || typ == "" {
		return nil, err
	}
	switch typ {
	case "Sequence":
		seq, err := sequence(raw, "decoders", field, parseDecoder)
		if err != nil {
			return nil, err
		}
		return func(tokens []string) []string {
			for _, d := range seq {
				tokens = d(tokens)
			}
			return tokens
		}, nil
	case "ByteLevel":
		return func(tokens []string) []string {
			return []string{strings.ToValidUTF8(string(byteLevelDecode(strings.Join(tokens, ""))), "\uFFFD")}
		}, nil
	case "Replace":
		var v struct {
			Pattern pattern `json:"pattern"`
			Content string  `json:"content"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		replace, err := replacer(v.Pattern, v.Content, field)
		if err != nil {
			return nil, err
		}
		return func(tokens []string) []string {
			out := make([]string, len(tokens))
			for i, t := range tokens {
				out[i] = replace(t)
			}
			return out
		}, nil
	case "ByteFallback":
		return byteFallback, nil
	case "Fuse":
		return func(tokens []string) []string { return []string{strings.Join(tokens, "")} }, nil
	case "Strip":
		var v struct {
			Content string `json:"content"`
			Start   int    `json:"start"`
			Stop    int    `json:"stop"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		if utf8.RuneCountInString(v.Content) != 1 {
			return nil, fmt.Errorf("%s.content: %q must be one character", field, v.Content)
		}
		return func(tokens []string) []string {
			out := make([]string, len(tokens))
			for i, t := range tokens {
				for n := 0; n < v.Start && strings.HasPrefix(t, v.Content); n++ {
					t = t[len(v.Content):]
				}
				for n := 0; n < v.Stop && strings.HasSuffix(t, v.Content); n++ {
					t = t[:len(t)-len(v.Content)]
				}
				out[i] = t
			}
			return out
		}, nil
	case "Metaspace":
		m, err := parseMetaspace(raw, field)
		if err != nil {
			return nil, err
		}
		// Every replacement becomes a space, but in the first token,
		// where each one goes unless the scheme is never (metaspace.rs:
		// Metaspace::decode_chain), not only the one it prepended.
		return func(tokens []string) []string {
			out := make([]string, len(tokens))
			for i, t := range tokens {
				space := " "
				if i == 0 && m.scheme != "never" {
					space = ""
				}
				out[i] = strings.ReplaceAll(t, m.replacement, space)
			}
			return out
		}, nil
	}
	return nil, unsupported(field+".type", typ, decoderTypes)
}

// byteFallback turns runs of <0xXX> tokens into the text of their bytes;
// bytes that are not valid UTF-8 become one U+FFFD each.
func byteFallback(tokens []string) []string {
	var out []string
	var pending []byte
	flush := func() {
		if len(pending) == 0 {
			return
		}
		if utf8.Valid(pending) {
			out = append(out, string(pending))
		} else {
			out = append(out, strings.Repeat("\uFFFD", len(pending)))
		}
		pending = nil
	}
	for _, t := range tokens {
		if b, ok := byteToken(t); ok {
			pending = append(pending, b)
			continue
		}
		flush()
		out = append(out, t)
	}
	flush()
	return out
}

// byteToken parses a byte-fallback token "<0xAB>".
func byteToken(t string) (byte, bool) {
	if len(t) != 6 || !strings.HasPrefix(t, "<0x") || t[5] != '>' {
		return 0, false
	}
	v, err := strconv.ParseUint(t[3:5], 16, 8)
	return byte(v), err == nil
}
