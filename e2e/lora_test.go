package e2e

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/model/hf/hfmodel"
	"github.com/alignflow/alignflow/model/hf/safetensors"
	"github.com/alignflow/alignflow/model/lm"
	"github.com/alignflow/alignflow/ops/export"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/policy"
	"github.com/alignflow/alignflow/reward"
)

// checkLoRAExports exports a LoRA run's policy and reward model in both
// formats and checks the PEFT adapters against the merged exports by
// PEFT's own rule, on Hugging Face's tensors and layout: each adapted
// weight is W + (lora_B.weight @ lora_A.weight) * lora_alpha / r
// (peft/tuners/lora/layer.py, Linear.get_delta_weight, fan_in_fan_out
// false), and a SEQ_CLS adapter's score.weight replaces the base's
// (modules_to_save). The base with the adapter applied so must generate the
// merged policy's greedy tokens and give the merged reward model's scores.
// It returns the policy's PEFT directory.
func checkLoRAExports(t *testing.T, store *artifact.Store, runID, src string, sum pipeline.Summary) string {
	require.NotNil(t, sum.SFT.Adapter, "SFT trained an adapter")
	require.NotNil(t, sum.RewardModel.Adapter, "the reward model trained an adapter")
	dir := t.TempDir()
	merged, peft := filepath.Join(dir, "merged"), filepath.Join(dir, "peft")
	_, err := export.Policy(store, runID, merged, export.Merged)
	require.NoError(t, err)
	_, err = export.Policy(store, runID, peft, export.PEFT)
	require.NoError(t, err)
	cfg := readPEFTConfig(t, peft)
	assert.Equal(t, "LORA", cfg["peft_type"])
	assert.Equal(t, "CAUSAL_LM", cfg["task_type"])
	assert.Equal(t, float64(8), cfg["r"], "the SFT and REINFORCE adapters of rank 4 stacked")
	assert.Equal(t, src, cfg["base_model_name_or_path"])

	applied := applyPEFT(t, src, peft, filepath.Join(dir, "applied"), "")
	assertSameTensors(t, merged, applied, 1e-6)
	prompts := []string{"Once upon a time", "Lily saw a big", "The dog"}
	withAdapter := openModel(t, src)
	require.NoError(t, withAdapter.ApplyAdapter(peft)) // generate --model src --adapter peft
	for _, p := range prompts {
		want := greedy(t, openModel(t, merged), p)
		assert.Equal(t, want, greedy(t, openModel(t, applied), p), "prompt %q: the same greedy tokens", p)
		assert.Equal(t, want, greedy(t, withAdapter, p), "prompt %q: the same through --adapter", p)
	}

	rmMerged, rmPEFT := filepath.Join(dir, "rm-merged"), filepath.Join(dir, "rm-peft")
	_, err = export.Reward(store, runID, rmMerged, export.Merged)
	require.NoError(t, err)
	_, err = export.Reward(store, runID, rmPEFT, export.PEFT)
	require.NoError(t, err)
	cfg = readPEFTConfig(t, rmPEFT)
	assert.Equal(t, "SEQ_CLS", cfg["task_type"])
	assert.Equal(t, []any{"score"}, cfg["modules_to_save"])
	rmApplied := applyPEFT(t, src, rmPEFT, filepath.Join(dir, "rm-applied"), rmMerged)
	assertSameTensors(t, rmMerged, rmApplied, 1e-6)
	rmAdapter := openModel(t, src)
	require.NoError(t, rmAdapter.ApplyAdapter(rmPEFT)) // score --model src --adapter rm-peft
	want := scores(t, openModel(t, rmMerged), prompts)
	for _, m := range []*lm.Model{openModel(t, rmApplied), rmAdapter} {
		got := scores(t, m, prompts)
		for i := range want {
			for k := range want[i] {
				assert.InDelta(t, want[i][k], got[i][k], 1e-5, "sequence %d attribute %d: the same score through both exports", i, k)
			}
		}
	}
	_, err = export.Policy(store, runID, filepath.Join(dir, "merged"), export.PEFT)
	assert.ErrorContains(t, err, "already exists")
	return peft
}

func readPEFTConfig(t *testing.T, dir string) map[string]any {
	b, err := os.ReadFile(filepath.Join(dir, hfmodel.PEFTConfigFile))
	require.NoError(t, err)
	var cfg map[string]any
	require.NoError(t, json.Unmarshal(b, &cfg))
	return cfg
}

// applyPEFT writes, at out, the model PEFT makes of base src and the
// adapter directory peft: the description files of like (src's when ""),
// and every weight of src with the adapter's delta added, computed here in
// Hugging Face's layout, in float32 as torch computes it.
func applyPEFT(t *testing.T, src, peft, out, like string) string {
	cfg := readPEFTConfig(t, peft)
	scaling := float32(cfg["lora_alpha"].(float64) / cfg["r"].(float64))
	ad, err := safetensors.Open(filepath.Join(peft, hfmodel.PEFTWeightsFile))
	require.NoError(t, err)
	defer ad.Close()
	base, err := safetensors.OpenDir(src)
	require.NoError(t, err)
	defer base.Close()
	used := map[string]bool{}
	var ts []safetensors.Tensor
	for _, name := range base.Names() {
		info, _, _ := base.Info(name)
		w, err := base.Float32(name)
		require.NoError(t, err)
		module := "base_model.model." + strings.TrimSuffix(name, ".weight")
		if a, ok := ad.Info(module + ".lora_A.weight"); ok {
			av, err := ad.Float32(module + ".lora_A.weight")
			require.NoError(t, err)
			bv, err := ad.Float32(module + ".lora_B.weight")
			require.NoError(t, err)
			r, in, outDim := a.Shape[0], a.Shape[1], info.Shape[0]
			for i := 0; i < outDim; i++ {
				for j := 0; j < in; j++ {
					var d float32
					for k := 0; k < r; k++ {
						d += bv[i*r+k] * av[k*in+j]
					}
					w[i*in+j] += d * scaling
				}
			}
			used[module+".lora_A.weight"], used[module+".lora_B.weight"] = true, true
		}
		if like != "" && name == "lm_head.weight" {
			continue // a classifier has a score layer instead
		}
		ts = append(ts, safetensors.Tensor{Name: name, DType: safetensors.F32, Shape: info.Shape, Values: w})
	}
	if like != "" {
		score, err := ad.Float32("base_model.model.score.weight")
		require.NoError(t, err)
		info, _ := ad.Info("base_model.model.score.weight")
		ts = append(ts, safetensors.Tensor{Name: "score.weight", DType: safetensors.F32, Shape: info.Shape, Values: score})
		used["base_model.model.score.weight"] = true
	} else {
		like = src
	}
	assert.Len(t, used, len(ad.Names()), "every tensor of the adapter is applied")
	require.NoError(t, os.MkdirAll(out, 0o755))
	entries, err := os.ReadDir(like)
	require.NoError(t, err)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".json") && !strings.HasPrefix(e.Name(), "model.safetensors") {
			b, err := os.ReadFile(filepath.Join(like, e.Name()))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(out, e.Name()), b, 0o644))
		}
	}
	f, err := os.Create(filepath.Join(out, safetensors.Single))
	require.NoError(t, err)
	require.NoError(t, safetensors.Write(f, ts, map[string]string{"format": "pt"}))
	require.NoError(t, f.Close())
	return out
}

// assertSameTensors compares two directories' weights, tensor by tensor.
func assertSameTensors(t *testing.T, a, b string, tol float64) {
	da, err := safetensors.OpenDir(a)
	require.NoError(t, err)
	defer da.Close()
	db, err := safetensors.OpenDir(b)
	require.NoError(t, err)
	defer db.Close()
	require.ElementsMatch(t, da.Names(), db.Names())
	for _, n := range da.Names() {
		va, err := da.Float32(n)
		require.NoError(t, err)
		vb, err := db.Float32(n)
		require.NoError(t, err)
		for i := range va {
			if d := float64(va[i] - vb[i]); d > tol || d < -tol {
				require.Failf(t, "weights differ", "%s[%d]: %v and %v", n, i, va[i], vb[i])
			}
		}
	}
}

func openModel(t *testing.T, dir string) *lm.Model {
	m, err := lm.Open(dir, true)
	require.NoError(t, err)
	return m
}

// greedy is the model's greedy continuation of prompt.
func greedy(t *testing.T, m *lm.Model, prompt string) []int32 {
	ids, err := m.Tokenizer.EncodeChecked(prompt, true)
	require.NoError(t, err)
	b, err := backend.New(backend.Go)
	require.NoError(t, err)
	cfg := *m.Config
	cfg.MaxLen = min(cfg.MaxLen, len(ids)+24)
	s, err := policy.NewEngine(b, cfg, m.Params).Generate(m.Params, [][]int32{ids}, 1, policy.SampleOptions{MaxTokens: 24, Stop: m.EOS}, rand.New(rand.NewPCG(1, 1)))
	require.NoError(t, err)
	return s[0].Tokens
}

// scores are a reward model's five outputs for each prompt with a short
// response.
func scores(t *testing.T, m *lm.Model, prompts []string) [][reward.NumAttributes]float32 {
	require.True(t, m.Reward)
	codec, err := m.Codec()
	require.NoError(t, err)
	var seqs [][]int32
	for _, p := range prompts {
		ids, _, _, err := codec.Sequence(p, "there was a cat", m.Config.MaxLen)
		require.NoError(t, err)
		seqs = append(seqs, ids)
	}
	b, err := backend.New(backend.Go)
	require.NoError(t, err)
	out, err := reward.NewEngine(b, *m.Config, m.Params).Score(m.Params, seqs, len(seqs))
	require.NoError(t, err)
	return out
}
