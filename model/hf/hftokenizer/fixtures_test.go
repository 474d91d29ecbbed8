package hftokenizer

import (
	"bufio"
	"encoding/json"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/internal/fixtures"
)

type idCase struct {
	Text             string  `json:"text"`
	IDs              []int32 `json:"ids"`
	AddSpecialTokens bool    `json:"add_special_tokens"`
}

func readCases[T any](t *testing.T, path string) []T {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var out []T
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var c T
		require.NoError(t, json.Unmarshal(sc.Bytes(), &c), "%s", path)
		out = append(out, c)
	}
	require.NoError(t, sc.Err())
	require.NotEmpty(t, out, path)
	return out
}

// TestIDsEqualHuggingFace encodes every vector of the fixtures with the real
// GPT-2 (byte-level BPE) and Llama 2 (SentencePiece-style BPE with byte
// fallback) tokenizer.json files: the ids equal those Hugging Face's own
// tokenizers gave, and decoding them gives the text back.
func TestIDsEqualHuggingFace(t *testing.T) {
	for _, name := range []string{"gpt2", "llama2"} {
		t.Run(name, func(t *testing.T) {
			tok, err := Load(fixtures.Path(t, "tokenizers", name))
			require.NoError(t, err)
			cases := readCases[idCase](t, fixtures.Path(t, "tokenizers", name+".ids.jsonl"))
			for _, c := range cases {
				got := tok.Encode(c.Text, c.AddSpecialTokens)
				if c.IDs == nil {
					c.IDs = []int32{}
				}
				if got == nil {
					got = []int32{}
				}
				assert.Equal(t, c.IDs, got, "%q", c.Text)
				assert.Equal(t, c.Text, tok.Decode(c.IDs, false), "decode %q", c.Text)
			}
			t.Logf("%d vectors", len(cases))
		})
	}
}

// TestStoriesPromptsEqualRunC encodes the stories260K prompts with its
// tokenizer.json and BOS, as llama2.c's run.c encoded them.
func TestStoriesPromptsEqualRunC(t *testing.T) {
	tok, err := Load(fixtures.Path(t, "models", "stories260K"))
	require.NoError(t, err)
	type greedy struct {
		Prompt    string  `json:"prompt"`
		PromptIDs []int32 `json:"prompt_ids"`
		Generated []int32 `json:"generated_ids"`
		Text      string  `json:"text"`
	}
	for _, c := range readCases[greedy](t, fixtures.Path(t, "models", "stories260K.greedy.jsonl")) {
		assert.Equal(t, c.PromptIDs, tok.Encode(c.Prompt, true), "%q", c.Prompt)
		all := append(append([]int32(nil), c.PromptIDs...), c.Generated...)
		assert.Equal(t, c.Text, tok.Decode(all, true), "%q", c.Prompt)
	}
}

// TestLlama2FindsNormalizedAddedTokens: Llama 2's added tokens are
// normalized: true, so they are found by their normalised form ("▁<s>",
// "▁</s>") in the normalised text and take the "▁" before them. The first
// vector is what transformers' AutoTokenizer gives with this tokenizer.json
// (encode, add_special_tokens=True); the second follows from its ids
// (7251 is "▁hi").
func TestLlama2FindsNormalizedAddedTokens(t *testing.T) {
	tok, err := Load(fixtures.Path(t, "tokenizers", "llama2"))
	require.NoError(t, err)
	for text, want := range map[string][]int32{
		"<s>[INST] hi [/INST]": {1, 1, 29961, 25580, 29962, 7251, 518, 29914, 25580, 29962},
		"hi </s>":              {1, 7251, 2},
	} {
		assert.Equal(t, want, tok.Encode(text, true), "%q", text)
	}
}
