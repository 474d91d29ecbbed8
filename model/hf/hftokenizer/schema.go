package hftokenizer

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
)

// file is the part of a tokenizer.json that alignflow reads. Components are
// kept raw and decoded by type, so an unknown type is an error that names
// the field and the supported types instead of being ignored.
type file struct {
	AddedTokens   []addedToken    `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
	Model         json.RawMessage `json:"model"`
}

type addedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

// bpeModel is tokenizer.json's "model" when its type is BPE.
type bpeModel struct {
	Type                    string            `json:"type"`
	Dropout                 *float64          `json:"dropout"`
	UnkToken                *string           `json:"unk_token"`
	ContinuingSubwordPrefix *string           `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string           `json:"end_of_word_suffix"`
	FuseUnk                 bool              `json:"fuse_unk"`
	ByteFallback            bool              `json:"byte_fallback"`
	IgnoreMerges            bool              `json:"ignore_merges"`
	Vocab                   map[string]int    `json:"vocab"`
	Merges                  []json.RawMessage `json:"merges"`
}

// pattern is a Split or Replace pattern: {"String": "..."} or {"Regex": "..."}.
type pattern struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

// componentType is the "type" of a raw component at field: "" for null,
// an error naming field for anything else without one.
func componentType(raw json.RawMessage, field string) (string, error) {
	typ, _, err := component(raw)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	return typ, nil
}

// sequence parses the list at key of a Sequence component with parse,
// naming each part's field, and leaves out parts that are null.
func sequence[T any](raw json.RawMessage, key, field string, parse func(json.RawMessage, string) (T, error)) ([]T, error) {
	var v map[string]json.RawMessage
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	var parts []json.RawMessage
	if err := json.Unmarshal(v[key], &parts); err != nil && v[key] != nil {
		return nil, fmt.Errorf("%s.%s: %w", field, key, err)
	}
	var out []T
	for i, r := range parts {
		p, err := parse(r, fmt.Sprintf("%s.%s[%d]", field, key, i))
		if err != nil {
			return nil, err
		}
		if v := reflect.ValueOf(p); v.IsValid() && !v.IsNil() { // a null part parses to a nil func
			out = append(out, p)
		}
	}
	return out, nil
}

// component decodes the "type" of a raw component (nil when it is null).
func component(raw json.RawMessage) (string, bool, error) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return "", false, nil
	}
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return "", true, fmt.Errorf("not an object with a type: %w", err)
	}
	if head.Type == "" {
		return "", true, fmt.Errorf("has no type")
	}
	return head.Type, true, nil
}

// mergePair decodes one merge, written either as "a b" or as ["a", "b"].
func mergePair(raw json.RawMessage) (string, string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		a, b, ok := strings.Cut(s, " ")
		if !ok || a == "" || b == "" || strings.Contains(b, " ") {
			return "", "", fmt.Errorf("%q is not two tokens separated by one space", s)
		}
		return a, b, nil
	}
	var pair []string
	if err := json.Unmarshal(raw, &pair); err != nil || len(pair) != 2 || pair[0] == "" || pair[1] == "" {
		return "", "", fmt.Errorf("%s is neither \"a b\" nor [\"a\", \"b\"]", shorten(string(raw), 60))
	}
	return pair[0], pair[1], nil
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
