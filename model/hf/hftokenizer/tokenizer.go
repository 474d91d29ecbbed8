// Package hftokenizer reads Hugging Face tokenizer.json files with a BPE
// model and encodes and decodes text exactly as Hugging Face's tokenizers
// do: added and special tokens are matched first, then the normaliser, the
// pre-tokeniser and the BPE model (byte-level, as GPT-2, Llama 3, Qwen2 and
// SmolLM2 use, or SentencePiece-style with byte fallback, as Llama 2,
// Mistral and TinyLlama use), then the post-processor (BOS). Pre-tokeniser
// regexes use look-ahead, so they run on regexp2.
//
// It is written here rather than taken from a library: tiktoken-go covers
// byte-level BPE only, and the Go ports of tokenizers either mishandle byte
// fallback and look-ahead regexes or need a Rust library (toolchain.md).
package hftokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"
)

// Tokenizer is a loaded tokenizer.json. It is safe for concurrent use.
type Tokenizer struct {
	// Path is the file it was read from.
	Path string

	model       *bpe
	normalize   normalizer
	preTokenize preTokenizer
	post        *template // nil: the post-processor adds nothing
	decode      decoder
	added       []addedToken // as the files list them
	tokens      []string     // by id
	special     map[int32]bool

	// raw and normalized are the added tokens by what finds them (longest
	// first): the normalized: false ones by their content in the raw text,
	// the others by their normalised content in the normalised text.
	raw, normalized []addedPattern
}

// addedPattern is an added token and the text that finds it.
type addedPattern struct {
	text  string
	token addedToken
}

// File is the name of a tokenizer in a model directory.
const File = "tokenizer.json"

// ConfigFile is the name of the tokenizer settings transformers reads
// beside File.
const ConfigFile = "tokenizer_config.json"

// maxFileBytes bounds what Load reads: the largest real tokenizer.json files
// (Gemma's, Qwen2's) are about 35 MB.
const maxFileBytes = 256 << 20

// Load reads a tokenizer.json, or the one in a model directory, with the
// tokenizer_config.json beside it when there is one (ParseWithConfig).
func Load(path string) (*Tokenizer, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, File)
	}
	data, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	config, err := readFile(filepath.Join(filepath.Dir(path), ConfigFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	t, err := ParseWithConfig(data, config)
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s: %w", path, err)
	}
	t.Path = path
	return t, nil
}

// readFile reads a file of at most maxFileBytes.
func readFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Size() > maxFileBytes {
		return nil, fmt.Errorf("%s: %d bytes is more than any tokenizer file (at most %d)", path, st.Size(), maxFileBytes)
	}
	return os.ReadFile(path)
}

// Parse reads the contents of a tokenizer.json alone, as Hugging Face's
// tokenizers library does. Errors name the field at fault and, for a
// component of an unsupported type, the supported ones.
func Parse(data []byte) (*Tokenizer, error) {
	t, err := parse(data)
	if err != nil {
		return nil, err
	}
	if err := t.refreshAdded(); err != nil {
		return nil, err
	}
	return t, nil
}

// ParseWithConfig reads the contents of a tokenizer.json and of the
// tokenizer_config.json beside it (nil when there is none) and tokenises as
// transformers' AutoTokenizer does with the two: the latter's added tokens
// and special tokens, and for Llama its add_bos_token and add_eos_token,
// apply over the former's (config.go says how, and what it refuses).
func ParseWithConfig(data, config []byte) (*Tokenizer, error) {
	t, err := parse(data)
	if err != nil {
		return nil, err
	}
	if config != nil {
		if err := t.applyConfig(config); err != nil {
			return nil, err
		}
	}
	if err := t.refreshAdded(); err != nil {
		return nil, err
	}
	return t, nil
}

func parse(data []byte) (*Tokenizer, error) {
	var f file
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("not a tokenizer.json: %w", err)
	}
	typ, ok, err := component(f.Model)
	switch {
	case err != nil:
		return nil, fmt.Errorf("model: %w", err)
	case !ok:
		return nil, fmt.Errorf("model: missing")
	case typ != "BPE":
		return nil, unsupported("model.type", typ, []string{"BPE"})
	}
	var m bpeModel
	if err := json.Unmarshal(f.Model, &m); err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	t := &Tokenizer{special: map[int32]bool{}}
	if t.model, err = newBPE(&m, "model"); err != nil {
		return nil, err
	}
	if t.normalize, err = parseNormalizer(f.Normalizer, "normalizer"); err != nil {
		return nil, err
	}
	if t.preTokenize, err = parsePreTokenizer(f.PreTokenizer, "pre_tokenizer"); err != nil {
		return nil, err
	}
	if t.decode, err = parseDecoder(f.Decoder, "decoder"); err != nil {
		return nil, err
	}
	if err := t.index(&m, f.AddedTokens); err != nil {
		return nil, err
	}
	if t.post, err = parsePostProcessor(f.PostProcessor, "post_processor", t.TokenID); err != nil {
		return nil, err
	}
	return t, nil
}

// refreshAdded builds the patterns that find the added tokens. A
// normalized token is found by what the normaliser makes of its content
// (Llama 2's Prepend and Replace make "</s>" "▁</s>"), as in
// tokenizers/src/tokenizer/added_vocabulary.rs:
// AddedVocabulary::refresh_added_tokens; one the normaliser empties can
// never be found. A normaliser regex past RegexTimeout on a token is an
// error.
func (t *Tokenizer) refreshAdded() (err error) {
	defer func() {
		if r := recover(); r != nil {
			p, ok := r.(regexPanic)
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("added tokens: %w", p.err)
		}
	}()
	t.raw, t.normalized = nil, nil
	for _, a := range t.added {
		if !a.Normalized {
			t.raw = append(t.raw, addedPattern{a.Content, a})
			continue
		}
		text := a.Content
		if t.normalize != nil {
			text = t.normalize(text)
		}
		if text != "" {
			t.normalized = append(t.normalized, addedPattern{text, a})
		}
	}
	for _, p := range [][]addedPattern{t.raw, t.normalized} {
		slices.SortStableFunc(p, func(a, b addedPattern) int { return len(b.text) - len(a.text) })
	}
	return nil
}

// index builds the id-to-token table. Ids must be below the number of
// tokens the file defines, so a crafted file cannot make it allocate more
// than its own size.
func (t *Tokenizer) index(m *bpeModel, added []addedToken) error {
	limit := len(m.Vocab) + len(added)
	t.tokens = make([]string, limit)
	set := make([]bool, limit)
	for tok, id := range m.Vocab {
		if id < 0 || id >= limit {
			return fmt.Errorf("model.vocab: %q has id %d, outside 0..%d", shorten(tok, 40), id, limit-1)
		}
		if set[id] {
			return fmt.Errorf("model.vocab: id %d is given to both %q and %q", id, shorten(t.tokens[id], 40), shorten(tok, 40))
		}
		t.tokens[id], set[id] = tok, true
	}
	for i, a := range added {
		field := fmt.Sprintf("added_tokens[%d]", i)
		if a.ID < 0 || a.ID >= limit {
			return fmt.Errorf("%s: id %d outside 0..%d", field, a.ID, limit-1)
		}
		if a.Content == "" {
			return fmt.Errorf("%s.content: empty", field)
		}
		if set[a.ID] && t.tokens[a.ID] != a.Content {
			return fmt.Errorf("%s: id %d is %q in the vocabulary, not %q", field, a.ID, shorten(t.tokens[a.ID], 40), shorten(a.Content, 40))
		}
		t.tokens[a.ID], set[a.ID] = a.Content, true
		if a.Special {
			t.special[int32(a.ID)] = true
		}
		t.added = append(t.added, a)
	}
	// Trailing ids no token uses are dropped; the table is dense below.
	n := len(t.tokens)
	for n > 0 && !set[n-1] {
		n--
	}
	t.tokens = t.tokens[:n]
	return nil
}

// VocabSize is the number of ids: one more than the largest.
func (t *Tokenizer) VocabSize() int { return len(t.tokens) }

// Token returns the token of an id ("" when there is none).
func (t *Tokenizer) Token(id int32) string {
	if id < 0 || int(id) >= len(t.tokens) {
		return ""
	}
	return t.tokens[id]
}

// TokenID returns the id of a token of the vocabulary or an added token.
func (t *Tokenizer) TokenID(token string) (int32, bool) {
	for _, a := range t.added {
		if a.Content == token {
			return int32(a.ID), true
		}
	}
	id, ok := t.model.vocab[token]
	return id, ok
}

// IsSpecial reports whether id is a special added token (BOS, EOS, ...).
func (t *Tokenizer) IsSpecial(id int32) bool { return t.special[id] }

// Encode returns the ids of text. Added and special tokens written in the
// text are recognised either way; addSpecial also applies the
// post-processor (for Llama, the BOS in front), as Hugging Face's
// encode(text, add_special_tokens=...) does. It panics with EncodeChecked's
// error (a regex past RegexTimeout): a tokenizer a user gives is encoded
// with EncodeChecked.
func (t *Tokenizer) Encode(text string, addSpecial bool) []int32 {
	ids, err := t.EncodeChecked(text, addSpecial)
	if err != nil {
		panic(err)
	}
	return ids
}

// EncodeChecked is Encode, with a regex of tokenizer.json that ran past
// RegexTimeout on text as a *RegexError naming the file and the field.
func (t *Tokenizer) EncodeChecked(text string, addSpecial bool) (ids []int32, err error) {
	defer func() {
		if r := recover(); r != nil {
			p, ok := r.(regexPanic)
			if !ok {
				panic(r)
			}
			path := t.Path
			if path == "" {
				path = File
			}
			ids, err = nil, fmt.Errorf("tokenizer %s: %w", path, p.err)
		}
	}()
	return t.encode(text, addSpecial), nil
}

func (t *Tokenizer) encode(text string, addSpecial bool) []int32 {
	var ids []int32
	for i, seg := range t.segments(text) {
		if seg.token >= 0 {
			ids = append(ids, seg.token)
			continue
		}
		words := []string{seg.text}
		if t.preTokenize != nil {
			words = t.preTokenize(seg.text, i == 0)
		}
		for _, w := range words {
			ids = append(ids, t.model.tokenize(w)...)
		}
	}
	if addSpecial && t.post != nil {
		ids = t.post.apply(ids)
	}
	return ids
}

// segment is a piece of the input: an added token, or normalised text.
type segment struct {
	text  string
	token int32 // -1 for text
}

// segments splits text at added tokens and normalises the rest in two
// passes, as tokenizers/src/tokenizer/added_vocabulary.rs:
// AddedVocabulary::extract_and_normalize does: the normalized: false tokens
// are found in the raw text, then each piece between them is normalised and
// the normalized tokens are found in it.
func (t *Tokenizer) segments(text string) []segment {
	var out []segment
	for _, s := range splitAdded(text, t.raw) {
		if s.token >= 0 {
			out = append(out, s)
			continue
		}
		if t.normalize != nil {
			s.text = t.normalize(s.text)
		}
		for _, n := range splitAdded(s.text, t.normalized) {
			if n.token >= 0 || n.text != "" {
				out = append(out, n)
			}
		}
	}
	return out
}

// splitAdded finds the added tokens in text as
// tokenizers/src/tokenizer/added_vocabulary.rs: AddedVocabulary::find_matches
// does with its Aho-Corasick automaton (MatchKind::LeftmostLongest): the
// leftmost match, the longest of those starting there, each search going on
// where the previous match ended, also after a match that single_word
// discards or whose rstrip took the whitespace after it; lstrip and rstrip
// widen a match over the whitespace beside it.
func splitAdded(text string, patterns []addedPattern) []segment {
	if len(patterns) == 0 || text == "" {
		return []segment{{text: text, token: -1}}
	}
	var out []segment
	last := 0 // where the text not yet split off starts
	for at := 0; ; {
		p, start, ok := leftmostLongest(text, at, patterns)
		if !ok {
			break
		}
		end := start + len(p.text)
		at = end
		a := p.token
		if a.SingleWord && (isWordBefore(text, start) || isWordAfter(text, end)) {
			continue
		}
		if a.LStrip {
			start = max(last, len(strings.TrimRightFunc(text[:start], isSpace)))
		}
		if a.RStrip {
			end = len(text) - len(strings.TrimLeftFunc(text[end:], isSpace))
		}
		if start > last {
			out = append(out, segment{text: text[last:start], token: -1})
		}
		out = append(out, segment{token: int32(a.ID)})
		last = end
	}
	if last < len(text) {
		out = append(out, segment{text: text[last:], token: -1})
	}
	return out
}

// leftmostLongest finds the first pattern in text at or after at: the
// leftmost, then the longest (patterns are longest first).
func leftmostLongest(text string, at int, patterns []addedPattern) (addedPattern, int, bool) {
	for i := at; i < len(text); i++ {
		for _, p := range patterns {
			if strings.HasPrefix(text[i:], p.text) {
				return p, i, true
			}
		}
	}
	return addedPattern{}, 0, false
}

func isWordBefore(text string, i int) bool {
	r, n := utf8.DecodeLastRuneInString(text[:i])
	return n > 0 && isWordChar(r)
}

func isWordAfter(text string, i int) bool {
	r, n := utf8.DecodeRuneInString(text[i:])
	return n > 0 && isWordChar(r)
}

// Decode returns the text of ids, leaving out special tokens when asked.
func (t *Tokenizer) Decode(ids []int32, skipSpecial bool) string {
	tokens := make([]string, 0, len(ids))
	for _, id := range ids {
		if skipSpecial && t.special[id] {
			continue
		}
		tokens = append(tokens, t.Token(id))
	}
	if t.decode != nil {
		tokens = t.decode(tokens)
	}
	return strings.Join(tokens, "")
}
