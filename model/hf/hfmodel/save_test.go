package hfmodel

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/model/hf/safetensors"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/policy"
)

// TestRandomModelsRoundTrip writes random Llama, Mistral and Qwen2 models
// of each flavour (tied and untied heads, grouped-query attention, q/k/v
// biases, llama3 rope scaling; F32, BF16 and F16; one file and shards),
// loads them and writes them again: the files are byte-identical, and the
// loaded weights are the written ones.
func TestRandomModelsRoundTrip(t *testing.T) {
	base := transformer.Config{Vocab: 40, Dim: 16, Heads: 4, Layers: 2, Hidden: 24, MaxLen: 64, GatedMLP: true, NormEps: 1e-5, RopeTheta: 10000}
	flavours := []struct {
		name, arch, dtype string
		change            func(*transformer.Config)
		shard             int64
	}{
		{"llama untied GQA", "LlamaForCausalLM", "float32", func(c *transformer.Config) { c.KVHeads = 2 }, ShardBytes},
		{"llama 3.2 tied with llama3 rope", "LlamaForCausalLM", "bfloat16", func(c *transformer.Config) {
			c.KVHeads, c.TiedEmbeddings, c.RopeTheta = 1, true, 500000
			c.RopeScaling = &transformer.RopeScaling{Type: transformer.RopeLlama3, Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositions: 8192}
		}, ShardBytes},
		{"mistral sharded", "MistralForCausalLM", "bfloat16", func(c *transformer.Config) { c.KVHeads = 2 }, 4000},
		{"qwen2 biases tied", "Qwen2ForCausalLM", "float16", func(c *transformer.Config) { c.KVHeads, c.QKVBias, c.TiedEmbeddings, c.RopeTheta = 2, true, true, 1e6 }, ShardBytes},
		{"llama head_dim", "LlamaForCausalLM", "float32", func(c *transformer.Config) { c.KVHeads, c.HeadSize = 2, 6 }, ShardBytes},
		{"llama attention_bias", "LlamaForCausalLM", "bfloat16", func(c *transformer.Config) { c.KVHeads, c.QKVBias, c.OBias = 2, true, true }, ShardBytes},
	}
	for i, fl := range flavours {
		t.Run(fl.name, func(t *testing.T) {
			tc := base
			fl.change(&tc)
			require.NoError(t, tc.Validate())
			params := policy.Init(tc, uint64(i+1))
			r := rand.New(rand.NewPCG(uint64(i), 9))
			for _, n := range params.Names() {
				for j := range params.Get(n).Data {
					params.Get(n).Data[j] += float32(r.NormFloat64() * 0.01) // biases and norms too
				}
			}
			cfg := &Config{Architecture: fl.arch, Transformer: tc, DType: fl.dtype, EOS: []int32{2}}
			dtype, err := DTypeOf(fl.dtype)
			require.NoError(t, err)
			write := func(dir string, c *Config, ps *weights.Set) {
				b, err := ConfigJSON(c)
				require.NoError(t, err)
				require.NoError(t, os.WriteFile(filepath.Join(dir, ConfigFile), b, 0o644))
				require.NoError(t, WriteWeights(dir, c.Transformer, ps, dtype, fl.shard))
			}
			first := t.TempDir()
			write(first, cfg, params)
			read, err := ReadConfig(first)
			require.NoError(t, err)
			assert.Equal(t, tc, read.Transformer)
			loaded, err := LoadWeights(first, read)
			require.NoError(t, err)
			for _, n := range params.Names() {
				want := safetensors.Decode(safetensors.Encode(params.Get(n).Data, dtype), dtype)
				assert.Equal(t, want, loaded.Get(n).Data, "%s holds what was written", n)
			}
			// Every flavour runs: the KV-cached decoder agrees with the full
			// forward pass on what it samples.
			b, err := backend.New(backend.Go)
			require.NoError(t, err)
			eng := policy.NewEngine(b, tc, loaded)
			prompts := [][]int32{{1, 5, 7}, {1, 9}}
			samples, err := eng.Generate(loaded, prompts, 2, policy.SampleOptions{Temperature: 1, TopP: 1, MaxTokens: 5, Stop: []int32{2}}, rand.New(rand.NewPCG(3, 3)))
			require.NoError(t, err)
			var responses [][]int32
			for _, s := range samples {
				responses = append(responses, s.Tokens)
			}
			batch, err := policy.MakeBatch(tc, 2, prompts, responses)
			require.NoError(t, err)
			lp, err := eng.LogProbs(loaded, batch)
			require.NoError(t, err)
			for row, s := range samples {
				for j, want := range s.LogProbs {
					assert.InDelta(t, want, lp[row][len(prompts[row])-1+j], 1e-4, "row %d token %d", row, j)
				}
			}

			second := t.TempDir()
			write(second, read, loaded)
			files, err := os.ReadDir(first)
			require.NoError(t, err)
			if fl.shard < ShardBytes {
				assert.Greater(t, len(files), 3, "sharded")
			}
			for _, f := range files {
				a, _ := os.ReadFile(filepath.Join(first, f.Name()))
				b, err := os.ReadFile(filepath.Join(second, f.Name()))
				require.NoError(t, err)
				assert.Equal(t, a, b, "%s is byte-identical", f.Name())
			}
		})
	}
}

// TestLlamaAttentionBias loads a Llama with attention_bias, whose q, k, v
// and o projections all have biases (LlamaAttention:
// bias=config.attention_bias on each), and checks the o_proj bias against
// an equivalent model. Attention weights sum to one, so a value bias x
// reaches the attention output as x itself and leaves o_proj as
// o_proj.weight·x: moving x from v_proj.bias to o_proj.bias (worked out
// here in Hugging Face's layout, each query head reading its key/value
// head's x) gives the same logits. A model that dropped or misplaced the
// o bias would not.
func TestLlamaAttentionBias(t *testing.T) {
	tc := transformer.Config{Vocab: 40, Dim: 16, Heads: 4, KVHeads: 2, Layers: 2, Hidden: 24, MaxLen: 16, GatedMLP: true, NormEps: 1e-5, RopeTheta: 10000,
		QKVBias: true, OBias: true}
	require.NoError(t, tc.Validate())
	params := policy.Init(tc, 5)
	r := rand.New(rand.NewPCG(5, 5))
	for _, n := range params.Names() {
		for j := range params.Get(n).Data {
			params.Get(n).Data[j] += float32(r.NormFloat64() * 0.3)
		}
	}
	cfg := &Config{Architecture: "LlamaForCausalLM", Transformer: tc, DType: "float32", EOS: []int32{2}}
	b, err := ConfigJSON(cfg)
	require.NoError(t, err)
	assert.Contains(t, string(b), `"attention_bias": true`)
	given := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(given, ConfigFile), b, 0o644))
	require.NoError(t, WriteWeights(given, tc, params, safetensors.F32, ShardBytes))

	f, err := safetensors.Open(filepath.Join(given, safetensors.Single))
	require.NoError(t, err)
	var ts []safetensors.Tensor
	hd, rep := tc.HeadDim(), tc.Heads/tc.KVHeads
	for _, n := range f.Names() {
		v, err := f.Float32(n)
		require.NoError(t, err)
		info, _ := f.Info(n)
		ts = append(ts, safetensors.Tensor{Name: n, DType: safetensors.F32, Shape: info.Shape, Values: v})
	}
	f.Close()
	get := func(name string) []float32 {
		for _, ts := range ts {
			if ts.Name == name {
				return ts.Values
			}
		}
		t.Fatalf("no tensor %s", name)
		return nil
	}
	for l := 0; l < tc.Layers; l++ {
		vb, ob := get(fmt.Sprintf("model.layers.%d.self_attn.v_proj.bias", l)), get(fmt.Sprintf("model.layers.%d.self_attn.o_proj.bias", l))
		wo := get(fmt.Sprintf("model.layers.%d.self_attn.o_proj.weight", l)) // [out D, in heads*hd]
		x := make([]float32, len(vb))
		for i := range x {
			x[i] = float32(r.NormFloat64())
			vb[i] -= x[i]
		}
		for o := range ob {
			for h := 0; h < tc.Heads; h++ {
				for i := 0; i < hd; i++ {
					ob[o] += wo[o*tc.Heads*hd+h*hd+i] * x[(h/rep)*hd+i]
				}
			}
		}
	}
	moved := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(moved, ConfigFile), b, 0o644))
	var buf bytes.Buffer
	require.NoError(t, safetensors.Write(&buf, ts, map[string]string{"format": "pt"}))
	require.NoError(t, os.WriteFile(filepath.Join(moved, safetensors.Single), buf.Bytes(), 0o644))

	be, err := backend.New(backend.Go)
	require.NoError(t, err)
	logits := func(dir string) []float32 {
		c, err := ReadConfig(dir)
		require.NoError(t, err)
		require.True(t, c.Transformer.OBias)
		ps, err := LoadWeights(dir, c)
		require.NoError(t, err)
		args, err := ps.Args(ps.Names())
		require.NoError(t, err)
		out, err := graph.MustNewExec(be, func(in []*graph.Node) *graph.Node {
			return policy.Logits(transformer.ParamsOf(ps.Names(), in), tc, in[len(in)-1])
		}).Exec1(append(args, tensors.FromValue([][]int32{{1, 7, 3, 9, 12, 5}}))...)
		require.NoError(t, err)
		return tensors.MustCopyFlatData[float32](out)
	}
	assert.InDeltaSlice(t, logits(given), logits(moved), 1e-4)
}
