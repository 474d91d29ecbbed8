package hftokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
)

// preTokenizer splits a normalised piece of text into the words the model
// tokenises one by one. first reports whether the piece starts the input
// (Metaspace's prepend_scheme "first" looks at it).
type preTokenizer func(s string, first bool) []string

var preTokenizerTypes = []string{"Sequence", "ByteLevel", "Split", "Metaspace", "Digits", "Whitespace", "WhitespaceSplit"}

// gpt2Split is the ByteLevel pre-tokenizer's regex (use_regex: true).
const gpt2Split = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

var gpt2Regex = func() *regex {
	re, err := compileRegex(gpt2Split, "pre_tokenizer(ByteLevel).use_regex")
	if err != nil {
		panic(err)
	}
	return re
}()

func parsePreTokenizer(raw json.RawMessage, field string) (preTokenizer, error) {
	typ, err := componentType(raw, field)
	if err != nil || typ == "" {
		return nil, err
	}
	switch typ {
	case "Sequence":
		seq, err := sequence(raw, "pretokenizers", field, parsePreTokenizer)
		if err != nil {
			return nil, err
		}
		return func(s string, first bool) []string {
			pieces := []string{s}
			for _, p := range seq {
				var next []string
				for i, piece := range pieces {
					next = append(next, p(piece, first && i == 0)...)
				}
				pieces = next
			}
			return pieces
		}, nil
	case "ByteLevel":
		var v struct {
			AddPrefixSpace bool  `json:"add_prefix_space"`
			UseRegex       *bool `json:"use_regex"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		useRegex := v.UseRegex == nil || *v.UseRegex // true unless said otherwise
		return func(s string, _ bool) []string {
			if v.AddPrefixSpace && !strings.HasPrefix(s, " ") {
				s = " " + s
			}
			pieces := []string{s}
			if useRegex {
				pieces = splitBy(s, findAll(gpt2Regex, s), "Isolated", false)
			}
			for i, p := range pieces {
				pieces[i] = byteLevelEncode(p)
			}
			return pieces
		}, nil
	case "Split":
		var v struct {
			Pattern  pattern `json:"pattern"`
			Behavior string  `json:"behavior"`
			Invert   bool    `json:"invert"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		if !isBehavior(v.Behavior) {
			return nil, unsupported(field+".behavior", v.Behavior, behaviors)
		}
		find, err := matcher(v.Pattern, field)
		if err != nil {
			return nil, err
		}
		return func(s string, _ bool) []string { return splitBy(s, find(s), v.Behavior, v.Invert) }, nil
	case "Metaspace":
		m, err := parseMetaspace(raw, field)
		if err != nil {
			return nil, err
		}
		return func(s string, first bool) []string {
			s = strings.ReplaceAll(s, " ", m.replacement)
			if (m.scheme == "always" || m.scheme == "first" && first) && !strings.HasPrefix(s, m.replacement) {
				s = m.replacement + s
			}
			if !m.split {
				return []string{s}
			}
			return splitBy(s, literalSpans(s, m.replacement), "MergedWithNext", false)
		}, nil
	case "Digits":
		var v struct {
			Individual bool `json:"individual_digits"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		behavior := "Contiguous"
		if v.Individual {
			behavior = "Isolated"
		}
		// Rust's char::is_numeric (Nd, Nl, No: ², ½, ①), not only digits.
		return func(s string, _ bool) []string { return splitBy(s, runeSpans(s, unicode.IsNumber), behavior, false) }, nil
	case "Whitespace":
		return func(s string, _ bool) []string { return whitespaceSplit(s) }, nil
	case "WhitespaceSplit":
		return func(s string, _ bool) []string { return strings.FieldsFunc(s, isSpace) }, nil
	}
	return nil, unsupported(field+".type", typ, preTokenizerTypes)
}

// metaspace is a Metaspace pre-tokenizer's or decoder's settings.
type metaspace struct {
	replacement string
	scheme      string // always, first or never
	split       bool
}

// parseMetaspace reads a Metaspace as
// tokenizers/src/pre_tokenizers/metaspace.rs: Metaspace::deserialize does:
// prepend_scheme is "always" when absent, and the older add_prefix_space
// may only be false with prepend_scheme "never" (tokenizers refuses the
// file otherwise); add_prefix_space true changes nothing.
func parseMetaspace(raw json.RawMessage, field string) (metaspace, error) {
	var v struct {
		Replacement    string `json:"replacement"`
		PrependScheme  string `json:"prepend_scheme"`
		AddPrefixSpace *bool  `json:"add_prefix_space"`
		Split          *bool  `json:"split"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return metaspace{}, fmt.Errorf("%s: %w", field, err)
	}
	m := metaspace{replacement: v.Replacement, scheme: v.PrependScheme, split: v.Split == nil || *v.Split}
	if m.replacement == "" {
		m.replacement = "▁"
	}
	if m.scheme == "" {
		m.scheme = "always"
	}
	if m.scheme != "always" && m.scheme != "first" && m.scheme != "never" {
		return metaspace{}, unsupported(field+".prepend_scheme", m.scheme, []string{"always", "first", "never"})
	}
	if v.AddPrefixSpace != nil && !*v.AddPrefixSpace && m.scheme != "never" {
		return metaspace{}, fmt.Errorf("%s.add_prefix_space: false does not match prepend_scheme %q (false goes only with \"never\")", field, m.scheme)
	}
	return m, nil
}

// whitespaceSplit is the Whitespace pre-tokenizer: the matches of
// \w+|[^\w\s]+ with Rust regex's \w and \s (runs of word characters and
// runs of other characters that are not whitespace), whitespace removed.
func whitespaceSplit(s string) []string {
	class := func(r rune) int {
		switch {
		case isWordChar(r):
			return 1
		case isSpace(r):
			return 0
		}
		return 2
	}
	var out []string
	start, prev := 0, 0
	for i, r := range s {
		c := class(r)
		if c != prev {
			if prev != 0 {
				out = append(out, s[start:i])
			}
			start, prev = i, c
		}
	}
	if prev != 0 {
		out = append(out, s[start:])
	}
	return out
}

var behaviors = []string{"Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous"}

func isBehavior(b string) bool {
	for _, x := range behaviors {
		if b == x {
			return true
		}
	}
	return false
}

// matcher returns the spans a Split pattern matches.
func matcher(p pattern, field string) (func(string) [][]int, error) {
	switch {
	case p.String != nil:
		lit := *p.String
		return func(s string) [][]int { return literalSpans(s, lit) }, nil
	case p.Regex != nil:
		re, err := compileRegex(*p.Regex, field+".pattern.Regex")
		if err != nil {
			return nil, err
		}
		return func(s string) [][]int { return findAll(re, s) }, nil
	}
	return nil, fmt.Errorf("%s.pattern: neither String nor Regex", field)
}

func literalSpans(s, lit string) [][]int {
	if lit == "" {
		return nil
	}
	var spans [][]int
	for at := 0; ; {
		i := strings.Index(s[at:], lit)
		if i < 0 {
			return spans
		}
		spans = append(spans, []int{at + i, at + i + len(lit)})
		at += i + len(lit)
	}
}

// runeSpans returns one span per rune of s for which keep is true.
func runeSpans(s string, keep func(rune) bool) [][]int {
	var spans [][]int
	for i, r := range s {
		if keep(r) {
			spans = append(spans, []int{i, i + len(string(r))})
		}
	}
	return spans
}

// splitBy splits s at the matched spans the way Hugging Face's
// SplitDelimiterBehavior does; with invert the spans are the pieces and
// what lies between them the delimiters. Empty pieces are dropped.
func splitBy(s string, spans [][]int, behavior string, invert bool) []string {
	type part struct {
		text  string
		match bool
	}
	var parts []part
	last := 0
	for _, sp := range spans {
		if sp[0] > last {
			parts = append(parts, part{s[last:sp[0]], invert})
		}
		if sp[1] > sp[0] {
			parts = append(parts, part{s[sp[0]:sp[1]], !invert})
		}
		last = sp[1]
	}
	if last < len(s) {
		parts = append(parts, part{s[last:], invert})
	}
	var out []string
	switch behavior {
	case "Isolated":
		for _, p := range parts {
			out = append(out, p.text)
		}
	case "Removed":
		for _, p := range parts {
			if !p.match {
				out = append(out, p.text)
			}
		}
	case "MergedWithPrevious": // a delimiter joins the piece before it, unless that is one too
		for i, p := range parts {
			if p.match && i > 0 && !parts[i-1].match {
				out[len(out)-1] += p.text
			} else {
				out = append(out, p.text)
			}
		}
	case "MergedWithNext": // a delimiter joins the piece after it, unless that is one too
		for i := len(parts) - 1; i >= 0; i-- {
			p := parts[i]
			if p.match && i < len(parts)-1 && !parts[i+1].match {
				out[len(out)-1] = p.text + out[len(out)-1]
			} else {
				out = append(out, p.text)
			}
		}
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	case "Contiguous":
		for i, p := range parts {
			if p.match && i > 0 && parts[i-1].match {
				out[len(out)-1] += p.text
			} else {
				out = append(out, p.text)
			}
		}
	}
	return out
}
