package hftokenizer

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// configTokenizer is a SentencePiece-style tokenizer.json (Llama 2's
// normaliser) with "<s>" only in the vocabulary, "<x>" a plain added token
// and "</s>" a special one, and no post-processor.
func configTokenizer(t *testing.T, parts map[string]string) []byte {
	t.Helper()
	all := map[string]string{
		"normalizer":      `{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},{"type":"Replace","pattern":{"String":" "},"content":"▁"}]}`,
		"model.unk_token": `"<unk>"`, "model.fuse_unk": "true",
		"added_tokens": `[{"id":4,"content":"<x>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":false},
			{"id":6,"content":"</s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}]`,
	}
	for k, v := range parts {
		all[k] = v
	}
	return buildJSON(t, []string{"<unk>", "▁", "a", "▁a", "<x>", "<s>", "</s>"}, []string{"▁ a"}, all)
}

// TestConfigAddedTokens: tokenizer_config.json's added_tokens_decoder and
// named special tokens apply over tokenizer.json's added tokens as
// transformers 4 applies them (tokenization_utils_fast.py:
// PreTrainedTokenizerFast.__init__ adds them again; tokenizers'
// AddedVocabulary::add_tokens keeps the id of the content and takes the new
// flags).
func TestConfigAddedTokens(t *testing.T) {
	const x = `"content":"<x>","normalized":false,"special":false`
	tests := []struct {
		name, config, text string
		want               []int32
		special            []int32
	}{
		{"none", `{}`, "a <x> a", []int32{3, 1, 4, 1, 3}, []int32{6}},
		{"lstrip and rstrip", `{"added_tokens_decoder":{"4":{` + x + `,"lstrip":true,"rstrip":true,"single_word":false}}}`,
			"a <x> a", []int32{3, 4, 3}, []int32{6}},
		{"single_word", `{"added_tokens_decoder":{"4":{` + x + `,"lstrip":false,"rstrip":false,"single_word":true}}}`,
			"a<x>a", []int32{3, 0, 2}, []int32{6}}, // "▁a<x>a": < x > are one fused unknown
		{"special", `{"added_tokens_decoder":{"4":{"content":"<x>","normalized":false,"special":true}}}`,
			"<x>", []int32{4}, []int32{4, 6}},
		{"a named token becomes an added special one", `{"bos_token":"<s>"}`, "<s>a", []int32{5, 3}, []int32{5, 6}},
		{"without it, <s> is text", `{}`, "<s>a", []int32{1, 0, 2}, []int32{6}},
		{"a named AddedToken keeps its flags", `{"added_tokens_decoder":{},"bos_token":{"__type":"AddedToken","content":"<s>","normalized":true,"lstrip":false,"rstrip":false,"single_word":false}}`,
			"<s>a", []int32{5, 2}, []int32{5, 6}}, // found as "▁<s>" in "▁<s>a"
		{"an older file: a named added token becomes special", `{"eos_token":"<x>"}`, "<x>", []int32{4}, []int32{4, 6}},
		{"a named AddedToken of the decoder is the decoder's", `{"added_tokens_decoder":{"4":{` + x + `}},"eos_token":{"content":"<x>","lstrip":true,"rstrip":true,"normalized":false}}`,
			"a <x> a", []int32{3, 1, 4, 1, 3}, []int32{4, 6}},
		{"a listed AddedToken is not", `{"added_tokens_decoder":{"4":{` + x + `}},"additional_special_tokens":[{"content":"<x>","lstrip":true,"rstrip":true,"normalized":false}]}`,
			"a <x> a", []int32{3, 4, 3}, []int32{4, 6}},
	}
	for _, tc := range tests {
		tok, err := ParseWithConfig(configTokenizer(t, nil), []byte(tc.config))
		require.NoError(t, err, tc.name)
		assert.Equal(t, tc.want, tok.Encode(tc.text, false), tc.name)
		var special []int32
		for id := range int32(tok.VocabSize()) {
			if tok.IsSpecial(id) {
				special = append(special, id)
			}
		}
		assert.Equal(t, tc.special, special, tc.name)
	}
}

// TestConfigBOSAndEOS: a Llama tokenizer's post-processor is rebuilt from
// add_bos_token (default true) and add_eos_token (default false), as
// transformers 4's models/llama/tokenization_llama_fast.py:
// LlamaTokenizerFast.update_post_processor does; other classes keep
// tokenizer.json's where the flags agree with it.
func TestConfigBOSAndEOS(t *testing.T) {
	bos := `{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],"special_tokens":{"<s>":{"id":"<s>","ids":[5],"tokens":["<s>"]}}}`
	tests := []struct {
		name, post, config string
		want               []int32
	}{
		{"Llama's defaults", "", `{"tokenizer_class":"LlamaTokenizer"}`, []int32{5, 3}},
		{"Llama: EOS, no BOS", bos, `{"tokenizer_class":"LlamaTokenizerFast","add_bos_token":false,"add_eos_token":true}`, []int32{3, 6}},
		{"Llama: the named tokens", "", `{"tokenizer_class":"LlamaTokenizer","add_eos_token":true,"bos_token":"<x>","eos_token":"<s>"}`, []int32{4, 3, 5}},
		{"other classes keep tokenizer.json's", bos, `{"tokenizer_class":"PreTrainedTokenizerFast"}`, []int32{5, 3}},
		{"flags that agree", bos, `{"tokenizer_class":"PreTrainedTokenizerFast","add_bos_token":true,"bos_token":"<s>"}`, []int32{5, 3}},
		{"flags that agree with no post-processor", "", `{"tokenizer_class":"Qwen2Tokenizer","add_bos_token":false}`, []int32{3}},
	}
	for _, tc := range tests {
		parts := map[string]string{}
		if tc.post != "" {
			parts["post_processor"] = tc.post
		}
		tok, err := ParseWithConfig(configTokenizer(t, parts), []byte(tc.config))
		require.NoError(t, err, tc.name)
		assert.Equal(t, tc.want, tok.Encode("a", true), tc.name)
		assert.Equal(t, []int32{3}, tok.Encode("a", false), tc.name)
	}
}

// TestRefusedConfigs: what alignflow cannot apply as transformers does, or
// where the versions transformers 4 runs on differ, is refused naming the
// file, the field and the token.
func TestRefusedConfigs(t *testing.T) {
	const flags = `"lstrip":false,"rstrip":false,"single_word":false`
	tests := []struct {
		name, config string
		want         []string
	}{
		{"not JSON", `{`, []string{"tokenizer_config.json: not a tokenizer_config.json"}},
		{"normalized differs", `{"added_tokens_decoder":{"6":{"content":"</s>","normalized":true,"special":true,` + flags + `}}}`,
			[]string{`tokenizer_config.json added_tokens_decoder["6"] "</s>": normalized true, but false in tokenizer.json`, "make the two files agree"}},
		{"id differs", `{"added_tokens_decoder":{"7":{"content":"</s>","normalized":false,"special":true,` + flags + `}}}`,
			[]string{`added_tokens_decoder["7"] "</s>": id 7, but it is id 6 in tokenizer.json`}},
		{"a new token", `{"added_tokens_decoder":{"7":{"content":"<new>","normalized":false,"special":true,` + flags + `}}}`,
			[]string{`added_tokens_decoder["7"] "<new>": not a token of tokenizer.json`}},
		{"a named new token", `{"pad_token":"<pad>"}`, []string{`tokenizer_config.json pad_token "<pad>": not a token of tokenizer.json`}},
		{"a listed new token", `{"additional_special_tokens":["<s>","<pad>"]}`, []string{`additional_special_tokens[1] "<pad>": not a token`}},
		{"not an id", `{"added_tokens_decoder":{"six":{"content":"</s>"}}}`, []string{`added_tokens_decoder["six"]: "six" is not an id`}},
		{"not a token", `{"eos_token":7}`, []string{"eos_token: neither a token's text nor an AddedToken"}},
		{"not a flag", `{"add_bos_token":"yes"}`, []string{`tokenizer_config.json: add_bos_token: "yes" is not true, false or null`}},
		{"from_slow", `{"from_slow":true}`, []string{"from_slow: true", "tokenizer.model"}},
		{"split_special_tokens", `{"split_special_tokens":true}`, []string{"split_special_tokens: true", "only false"}},
		{"Llama's add_prefix_space", `{"tokenizer_class":"LlamaTokenizer","add_prefix_space":true}`, []string{"add_prefix_space", "from_slow"}},
		{"Llama's BOS without bos_token", `{"tokenizer_class":"LlamaTokenizer","bos_token":null}`, []string{"add_bos_token is true but it names no bos_token"}},
		{"Llama's EOS not a token", `{"tokenizer_class":"LlamaTokenizer","add_eos_token":true,"eos_token":{"content":"<eos>"}}`, []string{`eos_token "<eos>": not a token`}},
		{"other class: flags that disagree", `{"tokenizer_class":"PreTrainedTokenizerFast","add_eos_token":true,"eos_token":"</s>"}`,
			[]string{`add_bos_token unset and add_eos_token true ask for nothing before a sequence and "</s>" after it`,
				`tokenizer.json's post_processor adds nothing and nothing`, `tokenizer_class "PreTrainedTokenizerFast"`}},
	}
	for _, tc := range tests {
		_, err := ParseWithConfig(configTokenizer(t, nil), []byte(tc.config))
		require.Error(t, err, tc.name)
		for _, w := range tc.want {
			assert.Contains(t, err.Error(), w, tc.name)
		}
	}
	_, err := ParseWithConfig(buildJSON(t, []string{"a"}, []string{}, nil), []byte(`{"tokenizer_class":"LlamaTokenizer"}`))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `bos_token (LlamaTokenizerFast's default) "<s>": not a token of tokenizer.json`)
}

// TestLoadReadsTheConfigBeside: Load applies the tokenizer_config.json in
// the tokenizer's directory, and names the tokenizer at fault.
func TestLoadReadsTheConfigBeside(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, File), configTokenizer(t, nil), 0o644))
	tok, err := Load(dir)
	require.NoError(t, err)
	assert.Equal(t, []int32{3}, tok.Encode("a", true), "no tokenizer_config.json: no post-processor")
	require.NoError(t, os.WriteFile(filepath.Join(dir, ConfigFile), []byte(`{"tokenizer_class":"LlamaTokenizer","add_eos_token":true}`), 0o644))
	tok, err = Load(filepath.Join(dir, File))
	require.NoError(t, err)
	assert.Equal(t, []int32{5, 3, 6}, tok.Encode("a", true))
	require.NoError(t, os.WriteFile(filepath.Join(dir, ConfigFile), []byte(`{"pad_token":"<pad>"}`), 0o644))
	_, err = Load(dir)
	require.Error(t, err)
	assert.Contains(t, err.Error(), filepath.Join(dir, File)+": tokenizer_config.json pad_token")
}
