package hfmodel

import (
	"bufio"
	"encoding/json"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/internal/fixtures"
	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/policy"
)

type greedyCase struct {
	Prompt      string    `json:"prompt"`
	PromptIDs   []int32   `json:"prompt_ids"`
	Generated   []int32   `json:"generated_ids"`
	FirstLogits []float32 `json:"first_pred_logits_0_7"`
	Text        string    `json:"text"`
}

func greedyCases(t *testing.T) []greedyCase {
	f, err := os.Open(fixtures.Path(t, "models", "stories260K.greedy.jsonl"))
	require.NoError(t, err)
	defer f.Close()
	var out []greedyCase
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var c greedyCase
		require.NoError(t, json.Unmarshal(sc.Bytes(), &c))
		out = append(out, c)
	}
	require.NotEmpty(t, out)
	return out
}

// TestStoriesContinuesAsRunC loads llama2.c's stories260K (a pretrained
// Llama with grouped-query attention and tied embeddings) from its Hugging
// Face directory and continues the fixture's prompts greedily with the KV
// cache: token for token what llama2.c's run.c generated, and the logits of
// the first predicted position within 1e-4 of run.c's.
func TestStoriesContinuesAsRunC(t *testing.T) {
	m, err := Load(fixtures.Path(t, "models", "stories260K"))
	require.NoError(t, err)
	cfg := m.Config.Transformer
	assert.Equal(t, 4, cfg.KVHeadCount())
	assert.Equal(t, 8, cfg.HeadDim())
	assert.True(t, cfg.TiedEmbeddings)
	assert.Equal(t, []int32{2}, m.EOS)
	b, err := backend.New(backend.Go)
	require.NoError(t, err)
	eng := policy.NewEngine(b, cfg, m.Params)
	logits := graph.MustNewExec(b, func(in []*graph.Node) *graph.Node {
		return policy.Logits(transformer.ParamsOf(m.Params.Names(), in), cfg, in[len(in)-1])
	}).SetMaxCache(-1)
	for _, c := range greedyCases(t) {
		assert.Equal(t, c.PromptIDs, m.Tokenizer.Encode(c.Prompt, true), "%q encodes as run.c's", c.Prompt)
		samples, err := eng.Generate(m.Params, [][]int32{c.PromptIDs}, 1,
			policy.SampleOptions{Temperature: 0, MaxTokens: len(c.Generated), Stop: m.EOS}, rand.New(rand.NewPCG(1, 1)))
		require.NoError(t, err)
		assert.Equal(t, c.Generated, samples[0].Tokens, "%q", c.Prompt)
		assert.Equal(t, c.Text, m.Tokenizer.Decode(append(append([]int32(nil), c.PromptIDs...), samples[0].Tokens...), true))

		args, err := m.Params.Args(m.Params.Names())
		require.NoError(t, err)
		out, err := logits.Exec1(append(args, tensors.FromValue([][]int32{c.PromptIDs}))...)
		require.NoError(t, err)
		flat := tensors.MustCopyFlatData[float32](out)
		last := len(c.PromptIDs) - 1
		got := flat[last*cfg.Vocab : last*cfg.Vocab+8]
		assert.InDeltaSlice(t, c.FirstLogits, got, 1e-4, "%q: first logits", c.Prompt)
	}
}
