package hftokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/dlclark/regexp2/v2"
	"golang.org/x/text/unicode/norm"
)

// normalizer rewrites a piece of text before it is split and tokenised.
type normalizer func(string) string

var normalizerTypes = []string{"Sequence", "Prepend", "Replace", "NFC", "NFKC", "NFD", "NFKD", "Lowercase", "Strip"}

func parseNormalizer(raw json.RawMessage, field string) (normalizer, error) {
	typ, err := componentType(raw, field)
	if err != nil || typ == "" {
		return nil, err
	}
	switch typ {
	case "Sequence":
		seq, err := sequence(raw, "normalizers", field, parseNormalizer)
		if err != nil {
			return nil, err
		}
		return func(s string) string {
			for _, n := range seq {
				s = n(s)
			}
			return s
		}, nil
	case "Prepend":
		var v struct {
			Prepend string `json:"prepend"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		return func(s string) string {
			if s == "" {
				return s
			}
			return v.Prepend + s
		}, nil
	case "Replace":
		var v struct {
			Pattern pattern `json:"pattern"`
			Content string  `json:"content"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		return replacer(v.Pattern, v.Content, field)
	case "NFC":
		return norm.NFC.String, nil
	case "NFKC":
		return norm.NFKC.String, nil
	case "NFD":
		return norm.NFD.String, nil
	case "NFKD":
		return norm.NFKD.String, nil
	case "Lowercase":
		return lowercase, nil
	case "Strip":
		var v struct {
			Left  bool `json:"strip_left"`
			Right bool `json:"strip_right"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		return func(s string) string {
			if v.Left {
				s = strings.TrimLeftFunc(s, isSpace)
			}
			if v.Right {
				s = strings.TrimRightFunc(s, isSpace)
			}
			return s
		}, nil
	}
	return nil, unsupported(field+".type", typ, normalizerTypes)
}

// replacer replaces every match of p by content: a literal string or a regex.
func replacer(p pattern, content, field string) (func(string) string, error) {
	switch {
	case p.String != nil:
		old := *p.String
		if old == "" {
			return nil, fmt.Errorf("%s.pattern.String: empty", field)
		}
		return func(s string) string { return strings.ReplaceAll(s, old, content) }, nil
	case p.Regex != nil:
		re, err := compileRegex(*p.Regex, field+".pattern.Regex")
		if err != nil {
			return nil, err
		}
		return func(s string) string {
			spans := findAll(re, s)
			if len(spans) == 0 {
				return s
			}
			var b strings.Builder
			last := 0
			for _, sp := range spans {
				b.WriteString(s[last:sp[0]])
				b.WriteString(content)
				last = sp[1]
			}
			b.WriteString(s[last:])
			return b.String()
		}, nil
	}
	return nil, fmt.Errorf("%s.pattern: neither String nor Regex", field)
}

// RegexTimeout bounds each search of a tokenizer.json regex (regexp2's
// MatchTimeout). regexp2 backtracks, so a pattern such as (a+)+$ takes
// exponential time in the text's length (11.5 s at 26 characters, years at
// 50); real pre-tokenizer patterns search a long text in milliseconds.
var RegexTimeout = 10 * time.Second

// regex is a tokenizer.json regex and the field it came from.
type regex struct {
	re    *regexp2.Regexp
	field string
}

func compileRegex(expr, field string) (*regex, error) {
	re, err := regexp2.Compile(expr)
	if err != nil {
		return nil, fmt.Errorf("%s: %q does not compile: %w", field, shorten(expr, 80), err)
	}
	re.MatchTimeout = RegexTimeout
	return &regex{re: re, field: field}, nil
}

// RegexError is a regex search that ran past RegexTimeout.
type RegexError struct {
	Field, Pattern string
	Chars          int // the length of the text searched
	Timeout        time.Duration
}

func (e *RegexError) Error() string {
	return fmt.Sprintf("%s: the regex %q ran past %v on a text of %d characters: it backtracks catastrophically (as (a+)+$ does), which Hugging Face's tokenizers (Rust's onig) would not run either",
		e.Field, shorten(e.Pattern, 80), e.Timeout, e.Chars)
}

// regexPanic carries a *RegexError from deep in an encoding to
// EncodeChecked, which recovers it: the pieces of the pipeline (normalisers,
// pre-tokenizers) have no error results.
type regexPanic struct{ err *RegexError }

// findAll returns the byte spans of the non-overlapping matches of re in s.
// A search past RegexTimeout (regexp2's only error) ends the encoding with
// a *RegexError (see EncodeChecked).
func findAll(re *regex, s string) [][]int {
	spans, err := re.re.FindAllStringIndex(s, -1)
	if err != nil {
		panic(regexPanic{&RegexError{Field: re.field, Pattern: re.re.String(), Chars: utf8.RuneCountInString(s), Timeout: re.re.MatchTimeout}})
	}
	return spans
}

// lowercase is the Lowercase normaliser:
// tokenizers/src/tokenizer/normalizer.rs: NormalizedString::lowercase maps
// each character by Rust's char::to_lowercase, which is Go's
// unicode.ToLower but for the one unconditional multi-character mapping of
// Unicode's SpecialCasing.txt, İ to i and a combining dot above. Being by
// character, it has no context: a final Σ becomes σ, not ς, in both.
func lowercase(s string) string {
	return strings.ToLower(strings.ReplaceAll(s, "\u0130", "i\u0307"))
}

// isWordChar is Rust regex's \w, which tokenizers' Whitespace pre-tokenizer
// and single_word added tokens match with: regex-syntax's perl_word,
// Alphabetic (letters, Nl and Other_Alphabetic), marks, Nd, Pc and
// Join_Control. .NET's \w, which regexp2 has, leaves out Mc, Me, Nl and
// the Other_Alphabetic symbols (Ⓐ).
func isWordChar(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsMark(r) ||
		unicode.In(r, unicode.Nl, unicode.Nd, unicode.Pc, unicode.Other_Alphabetic, unicode.Join_Control)
}

// isSpace is Rust's char::is_whitespace, which Hugging Face's tokenizers use.
func isSpace(r rune) bool {
	switch r {
	case ' ', '\t', '\n', '\v', '\f', '\r', 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
		return true
	}
	return r >= 0x2000 && r <= 0x200A
}

func unsupported(field, value string, allowed []string) error {
	return fmt.Errorf("%s: %q is not supported (supported: %s)", field, value, strings.Join(allowed, ", "))
}
