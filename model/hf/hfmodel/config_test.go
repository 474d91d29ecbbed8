package hfmodel

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/internal/fixtures"
	"github.com/alignflow/alignflow/model/hf/safetensors"
)

func llamaConfig(over map[string]any) []byte {
	c := map[string]any{"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama", "hidden_size": 16, "intermediate_size": 24,
		"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 32, "max_position_embeddings": 64,
		"rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": false, "torch_dtype": "bfloat16", "eos_token_id": []int{2, 3}}
	for k, v := range over {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	b, _ := json.Marshal(c)
	return b
}

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig(llamaConfig(nil))
	require.NoError(t, err)
	tc := c.Transformer
	assert.Equal(t, 2, tc.KVHeadCount())
	assert.Equal(t, 4, tc.HeadDim())
	assert.True(t, tc.GatedMLP)
	assert.False(t, tc.QKVBias)
	assert.Equal(t, 1e-5, tc.NormEps)
	assert.Equal(t, "bfloat16", c.DType)
	assert.Equal(t, []int32{2, 3}, c.EOS)

	q, err := ParseConfig(llamaConfig(map[string]any{"architectures": []string{"Qwen2ForCausalLM"}, "model_type": "qwen2", "tie_word_embeddings": true}))
	require.NoError(t, err)
	assert.True(t, q.Transformer.QKVBias, "Qwen2 has q/k/v biases")
	assert.True(t, q.Transformer.TiedEmbeddings)

	l3, err := ParseConfig(llamaConfig(map[string]any{"rope_scaling": map[string]any{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}))
	require.NoError(t, err)
	assert.Equal(t, "llama3", l3.Transformer.RopeScaling.Type)
	assert.Equal(t, 8192, l3.Transformer.RopeScaling.OriginalMaxPositions)
	lin, err := ParseConfig(llamaConfig(map[string]any{"rope_scaling": map[string]any{"type": "linear", "factor": 2.0}}))
	require.NoError(t, err)
	assert.Equal(t, "linear", lin.Transformer.RopeScaling.Type)
}

// TestRefusedConfigs: an architecture or a value alignflow cannot run is
// refused naming the field, the value and what is supported.
func TestRefusedConfigs(t *testing.T) {
	for _, tc := range []struct {
		over map[string]any
		want string
	}{
		{map[string]any{"architectures": []string{"GPT2LMHeadModel"}}, `architectures: "GPT2LMHeadModel" is not supported (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, LlamaForSequenceClassification, MistralForSequenceClassification, Qwen2ForSequenceClassification)`},
		{map[string]any{"architectures": nil}, "architectures"},
		{map[string]any{"model_type": "gemma"}, `model_type: "gemma" does not go with LlamaForCausalLM`},
		{map[string]any{"rope_scaling": map[string]any{"rope_type": "yarn", "factor": 4.0}}, `rope_scaling: type "yarn" is not supported (supported: llama3, linear)`},
		{map[string]any{"rope_scaling": map[string]any{"rope_type": "llama3", "factor": 8.0}}, "low_freq_factor"},
		{map[string]any{"hidden_act": "gelu"}, `hidden_act: "gelu" is not supported (supported: silu)`},
		{map[string]any{"num_key_value_heads": 3}, "multiple of kv_heads"},
		{map[string]any{"hidden_size": 0}, "hidden_size: must be a positive integer"},
		{map[string]any{"mlp_bias": true}, "mlp_bias"},
		{map[string]any{"torch_dtype": "float8_e4m3fn"}, `torch_dtype: "float8_e4m3fn" is not supported`},
		{map[string]any{"architectures": []string{"MistralForCausalLM"}, "model_type": "mistral", "sliding_window": 16}, "sliding_window: 16"},
		{map[string]any{"eos_token_id": "x"}, "eos_token_id"},
	} {
		_, err := ParseConfig(llamaConfig(tc.over))
		require.Error(t, err, "%v", tc.over)
		assert.Contains(t, err.Error(), tc.want)
	}
	_, err := ReadConfig(t.TempDir())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no config.json: not a Hugging Face model directory")
}

// stories copies the stories260K directory (but its weights, written by
// the test) so a test can damage one file.
func stories(t *testing.T, weights func(src string) []byte) string {
	src := fixtures.Path(t, "models", "stories260K")
	dir := t.TempDir()
	desc, err := ReadDescription(src)
	require.NoError(t, err)
	for f, b := range desc.Files {
		require.NoError(t, os.WriteFile(filepath.Join(dir, f), b, 0o644))
	}
	if weights != nil {
		require.NoError(t, os.WriteFile(filepath.Join(dir, safetensors.Single), weights(filepath.Join(src, safetensors.Single)), 0o644))
	}
	return dir
}

// TestRefusedModelDirectories: a directory that does not describe the
// model its weights hold, or has no weights or tokenizer, is refused naming
// the file and the tensor.
func TestRefusedModelDirectories(t *testing.T) {
	reshaped := func(src string) []byte {
		f, err := safetensors.Open(src)
		require.NoError(t, err)
		defer f.Close()
		var ts []safetensors.Tensor
		for _, n := range f.Names() {
			v, err := f.Float32(n)
			require.NoError(t, err)
			info, _ := f.Info(n)
			shape := info.Shape
			if n == "model.layers.1.self_attn.k_proj.weight" {
				shape = []int{64, 32} // transposed
			}
			ts = append(ts, safetensors.Tensor{Name: n, DType: safetensors.F32, Shape: shape, Values: v})
		}
		var b bytes.Buffer
		require.NoError(t, safetensors.Write(&b, ts, nil))
		return b.Bytes()
	}
	dir := stories(t, reshaped)
	_, err := Load(dir)
	require.Error(t, err)
	assert.Contains(t, err.Error(), filepath.Join(dir, safetensors.Single)+": tensor model.layers.1.self_attn.k_proj.weight has shape [64 32], but config.json gives [32 64]")

	truncated := func(src string) []byte {
		b, err := os.ReadFile(src)
		require.NoError(t, err)
		return b[:len(b)/2]
	}
	dir = stories(t, truncated)
	_, err = Load(dir)
	require.Error(t, err)
	assert.Contains(t, err.Error(), filepath.Join(dir, safetensors.Single))
	assert.Contains(t, err.Error(), "lie outside")

	dir = stories(t, nil)
	_, err = Load(dir)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no model.safetensors or model.safetensors.index.json")

	dir = stories(t, func(src string) []byte { b, _ := os.ReadFile(src); return b })
	require.NoError(t, os.Remove(filepath.Join(dir, "tokenizer.json")))
	_, err = Load(dir)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no tokenizer.json")

	dir = stories(t, func(src string) []byte { b, _ := os.ReadFile(src); return b })
	cfg, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"), []byte(strings.Replace(string(cfg), `"num_hidden_layers": 5`, `"num_hidden_layers": 6`, 1)), 0o644))
	_, err = Load(dir)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "tensor model.layers.5.input_layernorm.weight is missing")
}

// FuzzParseConfig feeds arbitrary bytes to ParseConfig: a config or an
// error, never a panic, and a config it accepts is a valid architecture
// whose writing back parses to the same one.
func FuzzParseConfig(f *testing.F) {
	f.Add(llamaConfig(nil))
	f.Add(llamaConfig(map[string]any{"architectures": []string{"Qwen2ForSequenceClassification"}, "model_type": "qwen2", "num_labels": 5}))
	f.Add(llamaConfig(map[string]any{"rope_scaling": map[string]any{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}))
	f.Add([]byte(`{"architectures": ["LlamaForCausalLM"], "hidden_size": 1e300}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		require.NoError(t, c.Transformer.Validate())
		b, err := ConfigJSON(c)
		require.NoError(t, err)
		back, err := ParseConfig(b)
		require.NoError(t, err)
		assert.Equal(t, c.Transformer.Dim, back.Transformer.Dim)
	})
}
