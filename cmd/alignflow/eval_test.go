package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/model/tokenizer"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/policy"
	"github.com/alignflow/alignflow/reward"
)

func rbRow(prompt, chosen, rejected, subset string) string {
	b, _ := json.Marshal(map[string]any{"prompt": prompt, "chosen": chosen, "chosen_model": "a", "rejected": rejected, "rejected_model": "b", "subset": subset, "id": 1})
	return string(b)
}

// TestEvalRewardBench scores a small reward model on pairs whose results are
// known whatever its weights: a pair and its mirror image give exactly one
// correct answer (50%), identical responses are a tie (0%).
func TestEvalRewardBench(t *testing.T) {
	cfg := transformer.Config{Vocab: tokenizer.VocabSize, Dim: 16, Heads: 2, Layers: 1, Hidden: 32, MaxLen: 32}
	pol := policy.Init(cfg, 3)
	rm, err := reward.InitFromBackbone(pol, 3)
	require.NoError(t, err)
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	ref, err := store.PutWeights("reward/model.safetensors", rm)
	require.NoError(t, err)
	polRef, err := store.PutWeights("sft/policy.safetensors", pol)
	require.NoError(t, err)
	model := store.Abs(ref)

	data := writeLines(t, "bench.jsonl",
		rbRow("opposite of hot?", "cold", "hot", "alpacaeval-easy"),
		rbRow("opposite of hot?", "hot", "cold", "alpacaeval-easy"),
		rbRow("2+2?", "4", "4", "math-prm"),
		rbRow("a very long prompt that does not fit in the model's thirty-two token window", "yes", "no", "my-subset"),
		`{"prompt": "broken"}`,
	)
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		cmd := rootCmd()
		cmd.SetOut(&out)
		cmd.SetArgs(append([]string{"eval", "rewardbench"}, args...))
		err := cmd.Execute()
		return out.String(), err
	}

	_, err = run("--model", model, "--data", data)
	require.Error(t, err, "strict by default")
	assert.Contains(t, err.Error(), "bench.jsonl:5")

	out, err := run("--model", model, "--data", data, "--skip-invalid", "--json")
	require.NoError(t, err)
	var got rewardBenchOutput
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	assert.True(t, got.Verified)
	assert.Equal(t, 4, got.Pairs)
	assert.Equal(t, 1, got.SkippedRows)
	acc := map[string]float64{}
	for _, s := range got.Report.Subsets {
		acc[s.Subset] = s.Accuracy
	}
	assert.Equal(t, 0.5, acc["alpacaeval-easy"])
	assert.Equal(t, 0.0, acc["math-prm"])
	require.Len(t, got.Report.Unmapped, 1)
	assert.Equal(t, "my-subset", got.Report.Unmapped[0].Subset)
	cats := map[string]*float64{}
	for _, c := range got.Report.Categories {
		cats[c.Name] = c.Score
	}
	require.NotNil(t, cats["Chat"])
	assert.Equal(t, 0.5, *cats["Chat"])
	assert.Nil(t, cats["Safety"])
	require.NotNil(t, got.Report.Overall)
	assert.InDelta(t, 0.25, *got.Report.Overall, 1e-12, "mean of Chat 0.5 and Reasoning 0")

	out, err = run("--model", model, "--data", data, "--skip-invalid")
	require.NoError(t, err)
	assert.Contains(t, out, "1 invalid rows skipped")
	assert.Contains(t, out, "Chat Hard")

	_, err = run("--model", store.Abs(polRef), "--data", data)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not a reward model")

	require.NoError(t, os.WriteFile(model, append([]byte("x"), mustRead(t, model)...), 0o644))
	_, err = run("--model", model, "--data", data, "--skip-invalid")
	require.ErrorIs(t, err, artifact.ErrCorrupt)

	_, err = run("--model", filepath.Join(t.TempDir(), "missing.safetensors"), "--data", data)
	require.Error(t, err)
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}
