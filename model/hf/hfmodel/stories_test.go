package hfmodel

import (
	"bufio"
	"encoding/json"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
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

// greedyRun loads a model directory and continues prompt greedily for n
// tokens with the KV cache; it returns the tokens and the logits of the
// full forward pass at the prompt's last position.
func greedyRun(t *testing.T, dir string, prompt []int32, n int) ([]int32, []float32) {
	t.Helper()
	m, err := Load(dir)
	require.NoError(t, err)
	cfg := m.Config.Transformer
	b, err := backend.New(backend.Go)
	require.NoError(t, err)
	samples, err := policy.NewEngine(b, cfg, m.Params).Generate(m.Params, [][]int32{prompt}, 1,
		policy.SampleOptions{Temperature: 0, MaxTokens: n, Stop: m.EOS}, rand.New(rand.NewPCG(1, 1)))
	require.NoError(t, err)
	args, err := m.Params.Args(m.Params.Names())
	require.NoError(t, err)
	out, err := graph.MustNewExec(b, func(in []*graph.Node) *graph.Node {
		return policy.Logits(transformer.ParamsOf(m.Params.Names(), in), cfg, in[len(in)-1])
	}).Exec1(append(args, tensors.FromValue([][]int32{prompt}))...)
	require.NoError(t, err)
	last := len(prompt) - 1
	return samples[0].Tokens, tensors.MustCopyFlatData[float32](out)[last*cfg.Vocab : (last+1)*cfg.Vocab]
}

// withConfig copies the stories260K directory with config.json's fields
// changed (nil removes one).
func withConfig(t *testing.T, over map[string]any) string {
	t.Helper()
	dir := stories(t, func(src string) []byte { b, _ := os.ReadFile(src); return b })
	var c map[string]any
	b, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &c))
	for k, v := range over {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	b, err = json.Marshal(c)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, ConfigFile), b, 0o644))
	return dir
}

// TestStoriesV5ConfigRunsAsV4: stories260K with a rotary base of 5000 and
// llama3 scaling written as transformers v5 writes a config
// (rope_parameters holding rope_theta and the scaling, no rope_theta or
// rope_scaling beside it, dtype for torch_dtype) generates token for token
// what the same model written as v4 writes it generates, with the same
// logits; and both differ from the model's own base of 10000, so the v5
// fields are read, not defaulted.
func TestStoriesV5ConfigRunsAsV4(t *testing.T) {
	scaling := map[string]any{"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 128}
	v4 := withConfig(t, map[string]any{"rope_theta": 5000.0, "rope_scaling": scaling})
	params := maps.Clone(scaling)
	params["rope_theta"] = 5000.0
	v5 := withConfig(t, map[string]any{"rope_theta": nil, "rope_scaling": nil, "rope_parameters": params, "torch_dtype": nil, "dtype": "float32"})

	c := greedyCases(t)[1]
	want, wantLogits := greedyRun(t, v4, c.PromptIDs, 40)
	got, gotLogits := greedyRun(t, v5, c.PromptIDs, 40)
	assert.Equal(t, want, got, "greedy tokens")
	assert.Equal(t, wantLogits, gotLogits, "logits at the prompt's last position")
	_, base := greedyRun(t, fixtures.Path(t, "models", "stories260K"), c.PromptIDs, 1)
	assert.NotEqual(t, base, wantLogits, "the changed rotary base and scaling change the logits")
}
