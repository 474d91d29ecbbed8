package hfmodel

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/model/hf/safetensors"
	"github.com/alignflow/alignflow/model/lora"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/reward"
)

// TestPEFTAdapterFiles writes a reward model's adapter as PEFT does and
// reads it back: PEFT's tensor names and [r, in] / [out, r] shapes
// (base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight), the
// score layer under its own name (modules_to_save), and the same values.
func TestPEFTAdapterFiles(t *testing.T) {
	cfg := transformer.Config{Vocab: 40, Dim: 16, Heads: 2, KVHeads: 1, Layers: 2, Hidden: 24, MaxLen: 32, GatedMLP: true}
	ad, err := lora.Init(cfg, lora.Config{Rank: 3, Alpha: 6, Targets: []string{"k_proj", "up_proj"}}, 1)
	require.NoError(t, err)
	head := weights.NewTensor(cfg.Dim, reward.NumAttributes)
	for i := range head.Data {
		head.Data[i] = float32(i)
	}
	ad.Put(reward.HeadW, head)
	dir := filepath.Join(t.TempDir(), "adapter")
	require.NoError(t, ExportPEFT(dir, cfg, ad, TaskSeqCls, "/models/base"))

	raw, err := os.ReadFile(filepath.Join(dir, PEFTConfigFile))
	require.NoError(t, err)
	var c map[string]any
	require.NoError(t, json.Unmarshal(raw, &c))
	for k, v := range map[string]any{"peft_type": "LORA", "task_type": "SEQ_CLS", "r": 3.0, "lora_alpha": 6.0, "base_model_name_or_path": "/models/base",
		"use_dora": false, "use_rslora": false, "bias": "none", "fan_in_fan_out": false} {
		assert.Equal(t, v, c[k], k)
	}
	assert.Equal(t, []any{"k_proj", "up_proj"}, c["target_modules"])
	assert.Equal(t, []any{"score"}, c["modules_to_save"])

	f, err := safetensors.Open(filepath.Join(dir, PEFTWeightsFile))
	require.NoError(t, err)
	defer f.Close()
	shapes := map[string][]int{}
	for _, n := range f.Names() {
		info, _ := f.Info(n)
		shapes[n] = info.Shape
	}
	kv := cfg.KVHeadCount() * cfg.HeadDim()
	assert.Equal(t, map[string][]int{
		"base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight": {3, 16},
		"base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight": {kv, 3},
		"base_model.model.model.layers.0.mlp.up_proj.lora_A.weight":      {3, 16},
		"base_model.model.model.layers.0.mlp.up_proj.lora_B.weight":      {24, 3},
		"base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight": {3, 16},
		"base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight": {kv, 3},
		"base_model.model.model.layers.1.mlp.up_proj.lora_A.weight":      {3, 16},
		"base_model.model.model.layers.1.mlp.up_proj.lora_B.weight":      {24, 3},
		"base_model.model.score.weight":                                  {5, 16},
	}, shapes)
	a, err := f.Float32("base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight")
	require.NoError(t, err)
	ours := ad.Get("layer1.wk.lora_a") // [in, r]
	assert.Equal(t, ours.Data[0*3+2], a[2*16+0], "lora_A.weight[k][i] is A[i][k]")
	assert.Equal(t, ours.Data[5*3+1], a[1*16+5])

	back, pc, err := ReadPEFT(os.DirFS(dir), dir, cfg)
	require.NoError(t, err)
	assert.Equal(t, TaskSeqCls, pc.TaskType)
	require.Equal(t, ad.Names(), back.Names())
	for _, n := range ad.Names() {
		assert.Equal(t, ad.Get(n).Shape, back.Get(n).Shape, n)
		assert.Equal(t, ad.Get(n).Data, back.Get(n).Data, n)
	}
	got, ok, err := lora.Of(back)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, lora.Config{Rank: 3, Alpha: 6, Targets: []string{"k_proj", "up_proj"}}, got)

	_, _, err = ReadPEFT(os.DirFS(dir), dir, transformer.Config{Vocab: 40, Dim: 16, Heads: 2, Layers: 2, Hidden: 24, MaxLen: 32})
	assert.ErrorContains(t, err, "tensor base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight is [8 3], the model's module needs [16 3]")
}
