package hfmodel

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/internal/fixtures"
	"github.com/alignflow/alignflow/model/hf/chattemplate"
	"github.com/alignflow/alignflow/model/hf/hftokenizer"
)

// TestDescriptionTokenizerFollowsItsConfig: the tokenizer of a description
// is tokenizer.json with tokenizer_config.json applied over it, as
// transformers' AutoTokenizer loads the two: Llama 2's with add_eos_token
// ends a sequence with </s> (2), and a config that disagrees with
// tokenizer.json is refused naming both.
func TestDescriptionTokenizerFollowsItsConfig(t *testing.T) {
	tok, err := os.ReadFile(fixtures.Path(t, "tokenizers", "llama2", "tokenizer.json"))
	require.NoError(t, err)
	files := map[string][]byte{hftokenizer.File: tok}
	d, err := ParseDescription("llama2", files)
	require.NoError(t, err)
	assert.Equal(t, []int32{1, 7251}, d.Tokenizer.Encode("hi", true), "tokenizer.json alone: BOS")

	files[chattemplate.ConfigFile] = []byte(`{"tokenizer_class": "LlamaTokenizer", "add_eos_token": true, "eos_token": "</s>"}`)
	d, err = ParseDescription("llama2", files)
	require.NoError(t, err)
	assert.Equal(t, []int32{1, 7251, 2}, d.Tokenizer.Encode("hi", true))

	files[chattemplate.ConfigFile] = []byte(`{"added_tokens_decoder": {"2": {"content": "</s>", "normalized": false, "special": true}}}`)
	_, err = ParseDescription("llama2", files)
	require.Error(t, err)
	assert.Contains(t, err.Error(), filepath.Join("llama2", hftokenizer.File)+`: tokenizer_config.json added_tokens_decoder["2"] "</s>": normalized false, but true in tokenizer.json`)
}
