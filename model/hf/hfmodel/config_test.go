package hfmodel

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/internal/fixtures"
	"github.com/alignflow/alignflow/model/hf/safetensors"
	"github.com/alignflow/alignflow/model/transformer"
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

// TestConfigFieldsAsTransformersReadThem: each field transformers v4 or v5
// writes, or leaves out, gives the architecture transformers builds from
// it. The rules are from transformers' sources: rope_scaling, else
// rope_parameters, with the rope_theta in it before the top-level one
// (modeling_rope_utils.py: RotaryEmbeddingConfigMixin.convert_rope_params_to_dict);
// dtype before torch_dtype (configuration_utils.py:
// PreTrainedConfig.__post_init__); rms_norm_eps 1e-6 where left out
// (LlamaConfig, MistralConfig, Qwen2Config); attention biases
// (LlamaAttention: bias=config.attention_bias on q, k, v and o_proj;
// MistralAttention: none; Qwen2Attention: q, k and v only); the sliding
// window (MistralConfig: sliding_window=4096 where left out, every layer;
// Qwen2Config.__post_init__: with use_sliding_window, the layers
// layer_types marks, else those from max_window_layers, default 28, on).
func TestConfigFieldsAsTransformersReadThem(t *testing.T) {
	type read struct {
		Theta   float64
		Scaling *transformer.RopeScaling
		DType   string
		Eps     float64
		QKV, O  bool
		Window  int
	}
	llama3 := map[string]any{"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
	mistral := map[string]any{"architectures": []string{"MistralForCausalLM"}, "model_type": "mistral"}
	qwen2 := map[string]any{"architectures": []string{"Qwen2ForCausalLM"}, "model_type": "qwen2"}
	with := func(a, b map[string]any) map[string]any {
		out := maps.Clone(a)
		maps.Copy(out, b)
		return out
	}
	for _, tc := range []struct {
		name string
		over map[string]any
		want func(*read)
	}{
		{"v4 llama", nil, func(*read) {}},
		{"v5 rope_parameters", map[string]any{"rope_theta": nil, "rope_parameters": map[string]any{"rope_type": "default", "rope_theta": 5e5}}, func(r *read) { r.Theta = 5e5 }},
		{"v5 llama3", map[string]any{"rope_theta": nil, "rope_parameters": llama3}, func(r *read) {
			r.Theta, r.Scaling = 5e5, &transformer.RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositions: 8192}
		}},
		{"v5 without rope_theta", map[string]any{"rope_theta": nil, "rope_parameters": map[string]any{"type": "linear", "factor": 2.0}}, func(r *read) {
			r.Scaling = &transformer.RopeScaling{Type: "linear", Factor: 2}
		}},
		{"both layouts agreeing", map[string]any{"rope_theta": 5e5, "rope_parameters": map[string]any{"rope_type": "default", "rope_theta": 5e5}}, func(r *read) { r.Theta = 5e5 }},
		{"rope_scaling before rope_parameters", map[string]any{"rope_scaling": map[string]any{"rope_type": "linear", "factor": 2.0}, "rope_parameters": map[string]any{"rope_type": "default", "rope_theta": 5e5}}, func(r *read) {
			r.Scaling = &transformer.RopeScaling{Type: "linear", Factor: 2}
		}},
		{"empty rope_scaling", map[string]any{"rope_theta": nil, "rope_scaling": map[string]any{}, "rope_parameters": map[string]any{"rope_type": "default", "rope_theta": 5e5}}, func(r *read) { r.Theta = 5e5 }},
		{"no rope field", map[string]any{"rope_theta": nil}, func(*read) {}},
		{"v5 dtype", map[string]any{"torch_dtype": nil, "dtype": "bfloat16"}, func(*read) {}},
		{"dtype before torch_dtype", map[string]any{"dtype": "float16"}, func(r *read) { r.DType = "float16" }},
		{"no dtype", map[string]any{"torch_dtype": nil}, func(r *read) { r.DType = "float32" }},
		{"llama without rms_norm_eps", map[string]any{"rms_norm_eps": nil}, func(r *read) { r.Eps = 1e-6 }},
		{"mistral without rms_norm_eps", with(mistral, map[string]any{"rms_norm_eps": nil}), func(r *read) { r.Eps, r.Window = 1e-6, 4096 }},
		{"qwen2 without rms_norm_eps", with(qwen2, map[string]any{"rms_norm_eps": nil}), func(r *read) { r.Eps, r.QKV = 1e-6, true }},
		{"llama attention_bias", map[string]any{"attention_bias": true}, func(r *read) { r.QKV, r.O = true, true }},
		{"mistral attention_bias", with(mistral, map[string]any{"attention_bias": true}), func(r *read) { r.Window = 4096 }},
		{"qwen2 attention_bias false", with(qwen2, map[string]any{"attention_bias": false}), func(r *read) { r.QKV = true }},
		{"mistral sliding_window", with(mistral, map[string]any{"sliding_window": 16}), func(r *read) { r.Window = 16 }},
		{"mistral sliding_window null", with(mistral, map[string]any{"sliding_window": json.RawMessage("null")}), func(*read) {}},
		{"qwen2 window on no layer", with(qwen2, map[string]any{"use_sliding_window": true, "sliding_window": 16, "max_window_layers": 2}), func(r *read) { r.QKV = true }},
		{"qwen2 window by default on no layer", with(qwen2, map[string]any{"use_sliding_window": true, "sliding_window": 16}), func(r *read) { r.QKV = true }},
		{"qwen2 window on layer 1", with(qwen2, map[string]any{"use_sliding_window": true, "sliding_window": 16, "max_window_layers": 1}), func(r *read) { r.QKV, r.Window = true, 16 }},
		{"qwen2 window by layer_types", with(qwen2, map[string]any{"use_sliding_window": true, "sliding_window": 16, "max_window_layers": 2, "layer_types": []string{"sliding_attention", "full_attention"}}), func(r *read) {
			r.QKV, r.Window = true, 16
		}},
		{"qwen2 without use_sliding_window", with(qwen2, map[string]any{"sliding_window": 16, "max_window_layers": 0}), func(r *read) { r.QKV = true }},
		{"llama has no window", map[string]any{"use_sliding_window": true, "sliding_window": 16}, func(*read) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig(llamaConfig(tc.over))
			require.NoError(t, err)
			want := read{Theta: 1e4, DType: "bfloat16", Eps: 1e-5}
			tc.want(&want)
			tt := c.Transformer
			assert.Equal(t, want, read{tt.RopeTheta, tt.RopeScaling, c.DType, tt.NormEps, tt.QKVBias, tt.OBias, c.Window})
		})
	}
}

// TestCheckLen: a sequence longer than the sliding window is refused,
// naming both lengths and the fields that give the window; one that fits
// it, or a model without one, is not.
func TestCheckLen(t *testing.T) {
	for _, tc := range []struct {
		over map[string]any
		n    int
		want string
	}{
		{map[string]any{"architectures": []string{"MistralForCausalLM"}, "model_type": "mistral", "sliding_window": 16}, 17,
			"sequences of up to 17 tokens do not fit config.json's sliding_window 16: MistralForCausalLM attends over at most the last 16 tokens"},
		{map[string]any{"architectures": []string{"MistralForCausalLM"}, "model_type": "mistral", "sliding_window": 16}, 16, ""},
		{map[string]any{"architectures": []string{"MistralForCausalLM"}, "model_type": "mistral"}, 4097, "sliding_window (left out: 4096 by default)"},
		{map[string]any{"architectures": []string{"Qwen2ForCausalLM"}, "model_type": "qwen2", "use_sliding_window": true, "sliding_window": 16, "max_window_layers": 1}, 17,
			"sliding_window 16 with use_sliding_window true on layers 1 and after (max_window_layers 1)"},
		{map[string]any{"architectures": []string{"Qwen2ForCausalLM"}, "model_type": "qwen2", "use_sliding_window": true, "sliding_window": 16, "layer_types": []string{"sliding_attention", "full_attention"}}, 17,
			"sliding_window 16 with use_sliding_window true on layers [0] (layer_types)"},
		{nil, 1 << 20, ""},
	} {
		c, err := ParseConfig(llamaConfig(tc.over))
		require.NoError(t, err)
		err = c.CheckLen(tc.n)
		if tc.want == "" {
			assert.NoError(t, err, "%v", tc.over)
			continue
		}
		require.Error(t, err, "%v", tc.over)
		assert.Contains(t, err.Error(), tc.want)
	}
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
		{map[string]any{"rope_scaling": map[string]any{"rope_type": "yarn", "factor": 4.0}}, `rope_scaling: type "yarn" is not supported (supported: default, llama3, linear)`},
		{map[string]any{"rope_scaling": map[string]any{"rope_type": "llama3", "factor": 8.0}}, "low_freq_factor"},
		{map[string]any{"hidden_act": "gelu"}, `hidden_act: "gelu" is not supported (supported: silu)`},
		{map[string]any{"num_key_value_heads": 3}, "multiple of kv_heads"},
		{map[string]any{"hidden_size": 0}, "hidden_size: must be a positive integer"},
		{map[string]any{"mlp_bias": true}, "mlp_bias"},
		{map[string]any{"torch_dtype": "float8_e4m3fn"}, `torch_dtype: "float8_e4m3fn" is not supported`},
		{map[string]any{"rope_theta": 5e5, "rope_parameters": map[string]any{"rope_type": "default", "rope_theta": 1e6}}, "rope_theta 500000 and rope_parameters.rope_theta 1e+06 disagree"},
		{map[string]any{"rope_parameters": map[string]any{"full_attention": map[string]any{"rope_type": "default"}}}, "rope_parameters: parameters per layer type (full_attention, sliding_attention) are not supported"},
		{map[string]any{"rope_parameters": map[string]any{"rope_type": "yarn", "factor": 4.0}}, `rope_parameters: type "yarn" is not supported (supported: default, llama3, linear)`},
		{map[string]any{"rope_theta": nil, "rope_parameters": map[string]any{"rope_theta": -1.0}}, "rope_parameters.rope_theta: must be positive, got -1"},
		{map[string]any{"rms_norm_eps": 0}, "rms_norm_eps: must be positive, got 0"},
		{map[string]any{"dtype": "float8_e4m3fn"}, `dtype: "float8_e4m3fn" is not supported`},
		{map[string]any{"architectures": []string{"MistralForCausalLM"}, "model_type": "mistral", "sliding_window": 0}, "sliding_window: 0 is neither a positive integer nor null"},
		{map[string]any{"architectures": []string{"Qwen2ForCausalLM"}, "model_type": "qwen2", "layer_types": []string{"full_attention"}}, "layer_types: 1 entries for num_hidden_layers 2"},
		{map[string]any{"architectures": []string{"Qwen2ForCausalLM"}, "model_type": "qwen2", "layer_types": []string{"full_attention", "chunked_attention"}}, `layer_types[1]: "chunked_attention" is not supported`},
		{map[string]any{"architectures": []string{"Qwen2ForCausalLM"}, "model_type": "qwen2", "layer_types": []string{"full_attention", "sliding_attention"}}, "layer_types: layer 1 is sliding_attention but the config has no window"},
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
// whose writing back (ConfigJSON) parses to the same architecture, dtype
// and sliding window.
func FuzzParseConfig(f *testing.F) {
	f.Add(llamaConfig(nil))
	f.Add(llamaConfig(map[string]any{"architectures": []string{"Qwen2ForSequenceClassification"}, "model_type": "qwen2", "num_labels": 5}))
	f.Add(llamaConfig(map[string]any{"rope_scaling": map[string]any{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}))
	f.Add(llamaConfig(map[string]any{"rope_theta": nil, "rope_parameters": map[string]any{"rope_type": "linear", "rope_theta": 5e5, "factor": 2.0}, "dtype": "float16", "attention_bias": true}))
	f.Add(llamaConfig(map[string]any{"architectures": []string{"MistralForCausalLM"}, "model_type": "mistral", "sliding_window": 16, "rms_norm_eps": nil}))
	f.Add(llamaConfig(map[string]any{"architectures": []string{"Qwen2ForCausalLM"}, "model_type": "qwen2", "use_sliding_window": true, "sliding_window": 16, "max_window_layers": 1}))
	f.Add(llamaConfig(map[string]any{"architectures": []string{"Qwen2ForCausalLM"}, "model_type": "qwen2", "use_sliding_window": true, "sliding_window": 16, "layer_types": []string{"sliding_attention", "full_attention"}}))
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
		assert.Equal(t, c.Transformer, back.Transformer)
		assert.Equal(t, c.DType, back.DType)
		assert.Equal(t, c.Window, back.Window)
		assert.Equal(t, c.windowLayers, back.windowLayers)
	})
}
