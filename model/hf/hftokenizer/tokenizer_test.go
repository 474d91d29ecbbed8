package hftokenizer

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// build makes a tokenizer.json from a vocabulary (ids in order), merges and
// the other components given as JSON, and parses it.
func build(t *testing.T, vocab []string, merges any, parts map[string]string) *Tokenizer {
	t.Helper()
	tok, err := Parse(buildJSON(t, vocab, merges, parts))
	require.NoError(t, err)
	return tok
}

// buildJSON makes the tokenizer.json build parses.
func buildJSON(t *testing.T, vocab []string, merges any, parts map[string]string) []byte {
	t.Helper()
	v := map[string]int{}
	for i, tok := range vocab {
		v[tok] = i
	}
	model := map[string]any{"type": "BPE", "vocab": v, "merges": merges}
	for k, val := range parts {
		if strings.HasPrefix(k, "model.") {
			var x any
			require.NoError(t, json.Unmarshal([]byte(val), &x))
			model[strings.TrimPrefix(k, "model.")] = x
		}
	}
	doc := map[string]any{"model": model}
	for _, k := range []string{"normalizer", "pre_tokenizer", "post_processor", "decoder", "added_tokens"} {
		if val, ok := parts[k]; ok {
			doc[k] = json.RawMessage(val)
		}
	}
	b, err := json.Marshal(doc)
	require.NoError(t, err)
	return b
}

// llama3Regex is Llama 3's pre-tokenizer pattern, as its tokenizer.json
// writes it (a JSON string).
const llama3Regex = `"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"`

// TestByteLevelWithSplitAndIgnoreMerges is Llama 3's layout: a Split
// pre-tokeniser with a look-ahead regex, ByteLevel without its own regex,
// merges as pairs, and ignore_merges (a word in the vocabulary is one
// token even where its merges would build it otherwise).
func TestByteLevelWithSplitAndIgnoreMerges(t *testing.T) {
	vocab := []string{"a", "b", "c", "Ġ", "ab", "bc", "abc", "Ġa", "Ġab", "ĠĠ"}
	merges := [][]string{{"b", "c"}, {"a", "b"}, {"Ġ", "a"}, {"Ġa", "b"}, {"Ġ", "Ġ"}}
	parts := map[string]string{
		"pre_tokenizer": `{"type":"Sequence","pretokenizers":[
			{"type":"Split","pattern":{"Regex":` + llama3Regex + `},"behavior":"Isolated","invert":false},
			{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":false}]}`,
		"decoder": `{"type":"ByteLevel"}`,
	}
	plain := build(t, vocab, merges, parts)
	// "abc": bc merges first (rank 0), then a+bc has no merge: [a, bc].
	assert.Equal(t, []int32{0, 5}, plain.Encode("abc", false))
	parts["model.ignore_merges"] = "true"
	llama3 := build(t, vocab, merges, parts)
	assert.Equal(t, []int32{6}, llama3.Encode("abc", false), "the whole word is in the vocabulary")
	// "  ab": the look-ahead keeps the last space with the word: "Ġ" then "Ġab".
	assert.Equal(t, []int32{3, 8}, llama3.Encode("  ab", false))
	assert.Equal(t, "  ab", llama3.Decode(llama3.Encode("  ab", false), false))
}

// TestAddedTokens: special tokens in the text are matched before the
// model (longest first), lstrip and rstrip take the whitespace beside them,
// single_word ones only match as whole words, and normalized ones are
// matched by their normalised content in the normalised text (here
// Llama 2's normaliser, which makes "</s>" "▁</s>"), as
// tokenizers/src/tokenizer/added_vocabulary.rs:
// AddedVocabulary::refresh_added_tokens and extract_and_normalize do.
func TestAddedTokens(t *testing.T) {
	vocab := []string{"<unk>", "<s>", "</s>", "▁", "h", "i", "▁h", "hi", "▁hi", "<|x|>", "<|x|>!", "tag", " "}
	merges := []string{"▁ h", "▁h i", "h i"}
	added := `[{"id":1,"content":"<s>","normalized":false,"special":true},
		{"id":2,"content":"</s>","normalized":true,"special":true},
		{"id":9,"content":"<|x|>","lstrip":true,"rstrip":true,"special":true},
		{"id":10,"content":"<|x|>!","special":true},
		{"id":11,"content":"tag","single_word":true,"special":false}]`
	tok := build(t, vocab, merges, map[string]string{
		"normalizer":      `{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},{"type":"Replace","pattern":{"String":" "},"content":"▁"}]}`,
		"added_tokens":    added,
		"model.unk_token": `"<unk>"`, "model.fuse_unk": "true",
		"post_processor": `{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],
			"special_tokens":{"<s>":{"id":"<s>","ids":[1],"tokens":["<s>"]}}}`,
		"decoder": `{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]}`,
	})
	tests := []struct {
		text string
		want []int32
	}{
		{"hi", []int32{8}},                // "▁hi"
		{"<s>hi", []int32{1, 8}},          // matched in the raw text; "hi" is normalised to "▁hi"
		{"hi </s>", []int32{8, 2}},        // "▁hi▁</s>": the "▁" before "</s>" is the token's
		{"</s>", []int32{2}},              // "▁</s>"
		{"hi</s>", []int32{8, 0}},         // "▁hi</s>" has no "▁</s>": < / s > are one fused unknown
		{"hi <|x|> hi", []int32{8, 9, 8}}, // lstrip and rstrip take the spaces
		{"hi<|x|>!", []int32{8, 10}},      // the longest token that matches
		{"tag", []int32{11}},              // a whole word
		{"tagh", []int32{3, 0, 4}},        // not a word of its own: "▁", t a g unknown (fused), "h"
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, tok.Encode(tc.text, false), "%q", tc.text)
	}
	assert.Equal(t, []int32{1, 8}, tok.Encode("hi", true), "the post-processor adds BOS")
	assert.Equal(t, "hi", tok.Decode([]int32{1, 8}, true))
	assert.Equal(t, "<s> hi", tok.Decode([]int32{1, 8}, false))
	assert.True(t, tok.IsSpecial(1))
	assert.False(t, tok.IsSpecial(11))
	id, ok := tok.TokenID("</s>")
	assert.True(t, ok)
	assert.Equal(t, int32(2), id)
}

// TestMetaspaceAndDigits: Mistral's newer layout (a Metaspace
// pre-tokeniser) and the Digits pre-tokeniser.
func TestMetaspaceAndDigits(t *testing.T) {
	vocab := []string{"▁a", "▁b", "1", "2", "▁", "a", "b"}
	tok := build(t, vocab, []string{"▁ a", "▁ b"}, map[string]string{
		"pre_tokenizer": `{"type":"Sequence","pretokenizers":[{"type":"Metaspace","replacement":"▁","prepend_scheme":"first","split":true},{"type":"Digits","individual_digits":true}]}`,
		"decoder":       `{"type":"Metaspace","replacement":"▁","prepend_scheme":"first"}`,
	})
	assert.Equal(t, []int32{0, 1, 4, 2, 3}, tok.Encode("a b 12", false))
	assert.Equal(t, "a b 12", tok.Decode([]int32{0, 1, 4, 2, 3}, false))
}

func TestSplitBehaviours(t *testing.T) {
	spans := [][]int{{1, 2}, {2, 3}, {5, 6}} // "-" "-" in "a--bc-d"
	s := "a--bc-d"
	for behavior, want := range map[string][]string{
		"Isolated":           {"a", "-", "-", "bc", "-", "d"},
		"Removed":            {"a", "bc", "d"},
		"MergedWithPrevious": {"a-", "-", "bc-", "d"},
		"MergedWithNext":     {"a", "-", "-bc", "-d"},
		"Contiguous":         {"a", "--", "bc", "-", "d"},
	} {
		assert.Equal(t, want, splitBy(s, spans, behavior, false), behavior)
	}
	assert.Equal(t, []string{"-", "-", "-"}, splitBy(s, spans, "Removed", true), "inverted: the matches are kept")
}

// TestRefusedFiles: what alignflow cannot tokenise exactly is refused with
// the field, the value and what is supported.
func TestRefusedFiles(t *testing.T) {
	tests := []struct {
		name, json string
		want       []string
	}{
		{"WordPiece", `{"model":{"type":"WordPiece","vocab":{"a":0}}}`, []string{`model.type: "WordPiece" is not supported (supported: BPE)`}},
		{"Unigram", `{"model":{"type":"Unigram","vocab":[["a",0]]}}`, []string{`model.type: "Unigram"`}},
		{"no model", `{"normalizer":null}`, []string{"model: missing"}},
		{"not JSON", `{"model":`, []string{"not a tokenizer.json"}},
		{"unknown normalizer", `{"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"normalizer":{"type":"BertNormalizer"}}`,
			[]string{`normalizer.type: "BertNormalizer" is not supported`, "NFC"}},
		{"unknown pre-tokenizer in a sequence", `{"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Punctuation"}]}}`,
			[]string{`pre_tokenizer.pretokenizers[0].type: "Punctuation"`}},
		{"merge outside the vocabulary", `{"model":{"type":"BPE","vocab":{"a":0,"b":1},"merges":["a b"]}}`, []string{"model.merges[0]", `"a" + "b"`}},
		{"bad merge", `{"model":{"type":"BPE","vocab":{"a":0},"merges":["a"]}}`, []string{"model.merges[0]", "two tokens"}},
		{"id out of range", `{"model":{"type":"BPE","vocab":{"a":0,"b":99999999999},"merges":[]}}`, []string{"model.vocab", "outside 0..1"}},
		{"duplicate id", `{"model":{"type":"BPE","vocab":{"a":0,"b":0},"merges":[]}}`, []string{"model.vocab: id 0 is given to both"}},
		{"dropout", `{"model":{"type":"BPE","vocab":{"a":0},"merges":[],"dropout":0.1}}`, []string{"model.dropout"}},
		{"unknown unk", `{"model":{"type":"BPE","vocab":{"a":0},"merges":[],"unk_token":"<unk>"}}`, []string{"model.unk_token", "<unk>"}},
		{"bad regex", `{"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"Split","pattern":{"Regex":"("},"behavior":"Isolated"}}`,
			[]string{"pre_tokenizer.pattern.Regex", "does not compile"}},
		{"bad behavior", `{"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"Split","pattern":{"String":" "},"behavior":"Sideways"}}`,
			[]string{`pre_tokenizer.behavior: "Sideways"`, "Isolated"}},
		{"added token id", `{"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"added_tokens":[{"id":7,"content":"<s>"}]}`, []string{"added_tokens[0]", "outside"}},
	}
	for _, tc := range tests {
		_, err := Parse([]byte(tc.json))
		require.Error(t, err, tc.name)
		for _, w := range tc.want {
			assert.Contains(t, err.Error(), w, tc.name)
		}
	}
	dir := t.TempDir()
	_, err := Load(dir)
	require.Error(t, err)
	assert.Contains(t, err.Error(), filepath.Join(dir, File))
	require.NoError(t, os.WriteFile(filepath.Join(dir, File), []byte(`{"model":{"type":"WordPiece"}}`), 0o644))
	_, err = Load(dir)
	require.Error(t, err)
	assert.Contains(t, err.Error(), filepath.Join(dir, File)+": model.type")
}

// TestAddedTokenMatching: the search for added tokens goes on where the
// last match ended, also after a match that single_word discards or whose
// rstrip took the whitespace after it, as the Aho-Corasick iterator of
// tokenizers/src/tokenizer/added_vocabulary.rs: AddedVocabulary::find_matches
// does; single_word's word characters are Rust regex's \w (Ⅻ is one).
func TestAddedTokenMatching(t *testing.T) {
	vocab := []string{"<unk>", "x", "a", "b", "xa", "ab", "Ⅻ", "Ⅻa", "<a>", "\n"}
	tok := build(t, vocab, []string{"Ⅻ a", "a b", "x a"}, map[string]string{
		"model.unk_token": `"<unk>"`,
		"added_tokens": `[{"id":5,"content":"ab","single_word":true,"lstrip":false,"rstrip":false,"normalized":false,"special":false},
			{"id":3,"content":"b","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":false},
			{"id":8,"content":"<a>","single_word":false,"lstrip":false,"rstrip":true,"normalized":false,"special":true},
			{"id":9,"content":"\n","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":false}]`,
	})
	tests := []struct {
		text string
		want []int32
		why  string
	}{
		{"ab", []int32{5}, "a whole word"},
		{"xab", []int32{1, 5}, `"ab" is not a word of its own; the search goes on after it, so "b" is not found and x a b is one word`},
		{"Ⅻab", []int32{7, 3}, `Ⅻ is a word character: "ab" is not a word of its own; Ⅻ a b is one word`},
		{"<a>\n\nx", []int32{8, 9, 9, 1}, `rstrip took "\n\n", but the search goes on after "<a>" and finds them`},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, tok.Encode(tc.text, false), "%q: %s", tc.text, tc.why)
	}
}

// TestLowercase: tokenizers lowercases character by character with Rust's
// char::to_lowercase (tokenizers/src/tokenizer/normalizer.rs:
// NormalizedString::lowercase): İ becomes i and a combining dot above, and
// a final Σ becomes σ (no final ς: a character has no context).
func TestLowercase(t *testing.T) {
	vocab := []string{"i", "\u0307", "x", "ο", "δ", "σ", "ς"}
	tok := build(t, vocab, []string{}, map[string]string{"normalizer": `{"type":"Lowercase"}`})
	assert.Equal(t, []int32{0, 1, 2}, tok.Encode("İx", false))
	assert.Equal(t, []int32{0, 2}, tok.Encode("Ix", false))
	assert.Equal(t, []int32{3, 4, 3, 5}, tok.Encode("ΟΔΟΣ", false))
}

// TestDigits: the Digits pre-tokenizer splits at every character Rust's
// char::is_numeric takes (tokenizers/src/pre_tokenizers/digits.rs): the
// general categories Nd, Nl and No, so ², ½ and ① too.
func TestDigits(t *testing.T) {
	vocab := []string{"a", "1", "²", "½", "①", "Ⅻ", "a1", "a²", "a½", "a①", "aⅫ", "³", "²³"}
	merges := []string{"a 1", "a ²", "a ½", "a ①", "a Ⅻ", "² ³"}
	for _, individual := range []bool{false, true} {
		tok := build(t, vocab, merges, map[string]string{"pre_tokenizer": fmt.Sprintf(`{"type":"Digits","individual_digits":%v}`, individual)})
		for text, want := range map[string][]int32{"a1": {0, 1}, "a²": {0, 2}, "a½": {0, 3}, "a①": {0, 4}, "aⅫ": {0, 5}} {
			assert.Equal(t, want, tok.Encode(text, false), "%q", text)
		}
		want := []int32{12}
		if individual {
			want = []int32{2, 11}
		}
		assert.Equal(t, want, tok.Encode("²³", false), "individual_digits %v", individual)
	}
}

// TestWhitespacePreTokenizer: \w+|[^\w\s]+ with Rust regex's \w
// (tokenizers/src/pre_tokenizers/whitespace.rs), which takes Nl (Ⅻ),
// Other_Alphabetic symbols (Ⓐ), spacing marks (ः) and enclosing marks
// (U+20DD) as word characters, where .NET's \w does not.
func TestWhitespacePreTokenizer(t *testing.T) {
	vocab := []string{"x", "Ⅻ", "Ⓐ", "ः", "\u20dd", ",", "xⅫ", "xⒶ", "xः", "x\u20dd", "x,"}
	tok := build(t, vocab, []string{"x Ⅻ", "x Ⓐ", "x ः", "x \u20dd", "x ,"}, map[string]string{"pre_tokenizer": `{"type":"Whitespace"}`})
	tests := map[string][]int32{"xⅫ": {6}, "xⒶ": {7}, "xः": {8}, "x\u20dd": {9}, "x,": {0, 5}, " x \u3000 ,, ": {0, 5, 5}}
	for text, want := range tests {
		assert.Equal(t, want, tok.Encode(text, false), "%q", text)
	}
}

// TestDuplicateMergeKeepsLastRank: a pair listed twice in merges has the
// rank of its last place, as tokenizers/src/models/bpe/model.rs:
// BpeBuilder::build collects them into a map.
func TestDuplicateMergeKeepsLastRank(t *testing.T) {
	tok := build(t, []string{"a", "b", "c", "ab", "bc"}, []string{"a b", "b c", "a b"}, nil)
	assert.Equal(t, []int32{0, 4}, tok.Encode("abc", false), "b c (rank 1) before a b (rank 2)")
}

// TestMetaspace: prepend_scheme as tokenizers/src/pre_tokenizers/metaspace.rs:
// Metaspace::deserialize reads it (the older add_prefix_space false only
// with "never"), and the decoder drops every "▁" of the first token
// (Metaspace::decode_chain).
func TestMetaspace(t *testing.T) {
	vocab := []string{"▁a", "a", "▁▁a", "▁b", "▁"}
	merges := []string{"▁ a"}
	never := build(t, vocab, merges, map[string]string{
		"pre_tokenizer": `{"type":"Metaspace","replacement":"▁","add_prefix_space":false,"prepend_scheme":"never"}`,
		"decoder":       `{"type":"Metaspace","replacement":"▁","add_prefix_space":false,"prepend_scheme":"never"}`,
	})
	assert.Equal(t, []int32{1}, never.Encode("a", false))
	assert.Equal(t, " a b", never.Decode([]int32{0, 3}, false))
	always := build(t, vocab, merges, map[string]string{
		"pre_tokenizer": `{"type":"Metaspace","replacement":"▁","add_prefix_space":true}`,
		"decoder":       `{"type":"Metaspace","replacement":"▁","prepend_scheme":"always"}`,
	})
	assert.Equal(t, []int32{0}, always.Encode("a", false))
	assert.Equal(t, "a b", always.Decode([]int32{2, 3}, false), "both ▁ of the first token go")
	for _, c := range []struct{ part, scheme string }{{"pre_tokenizer", ""}, {"pre_tokenizer", `"first"`}, {"decoder", `"always"`}} {
		ms := `{"type":"Metaspace","replacement":"▁","add_prefix_space":false`
		if c.scheme != "" {
			ms += `,"prepend_scheme":` + c.scheme
		}
		_, err := Parse(buildJSON(t, vocab, []string{}, map[string]string{c.part: ms + "}"}))
		require.Error(t, err, "%s %s", c.part, c.scheme)
		assert.Contains(t, err.Error(), c.part+".add_prefix_space: false does not match prepend_scheme")
	}
}
