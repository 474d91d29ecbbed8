// Package hfmodel reads Hugging Face Llama-family model directories
// (LlamaForCausalLM: Llama 2, 3, 3.1, 3.2, TinyLlama, SmolLM2;
// MistralForCausalLM; Qwen2ForCausalLM) into alignflow's transformer:
// config.json becomes a transformer.Config, the safetensors weights the
// policy's parameters, and tokenizer.json, tokenizer_config.json and
// generation_config.json the tokenizer, chat template and EOS (a
// Description, parsed from the exact bytes read, which a run stores and an
// export writes back). Anything it cannot run exactly is refused before any
// training, naming the file, the field and what is supported.
package hfmodel

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/alignflow/alignflow/model/transformer"
)

// ConfigFile is a model directory's architecture.
const ConfigFile = "config.json"

// Architectures alignflow loads, by config.json's architectures[0].
var Architectures = []string{"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"}

// Classifiers are the reward-model architectures alignflow reads and
// writes, by the language-model architecture of their backbone.
var Classifiers = map[string]string{
	"LlamaForSequenceClassification":   "LlamaForCausalLM",
	"MistralForSequenceClassification": "MistralForCausalLM",
	"Qwen2ForSequenceClassification":   "Qwen2ForCausalLM",
}

// ClassifierOf is the reward-model architecture of a language model's.
func ClassifierOf(arch string) string {
	for c, a := range Classifiers {
		if a == arch {
			return c
		}
	}
	return ""
}

// supported lists every architecture for error messages.
func supported() string {
	all := append([]string(nil), Architectures...)
	for _, a := range Architectures {
		all = append(all, ClassifierOf(a))
	}
	return strings.Join(all, ", ")
}

// modelTypes maps each architecture to its config.json model_type.
var modelTypes = map[string]string{"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2"}

// Config is what alignflow reads of a config.json.
type Config struct {
	// Architecture is the language model's (LlamaForCausalLM, ...), also
	// for a classifier.
	Architecture string
	// Classifier is true for a reward model (XForSequenceClassification),
	// whose NumLabels outputs are read at the last token.
	Classifier bool
	NumLabels  int
	// Transformer is the architecture as alignflow runs it (MaxLen is the
	// model's max_position_embeddings; a run may use fewer).
	Transformer transformer.Config
	// DType is dtype (transformers v5) or torch_dtype (v4): the dtype an
	// export writes back.
	DType string
	// BOS and EOS are config.json's token ids (EOS may list several).
	BOS *int32
	EOS []int32
	// Window is the sliding attention window of the layers that have one,
	// in tokens; 0 for none. alignflow attends over the whole sequence,
	// which is the same as long as a sequence fits the window: a run's
	// sequence length is checked against it (CheckLen).
	Window int
	// windowLayers are the layers Window applies to (nil: every layer),
	// and windowFields names the config.json fields that give it, for
	// errors.
	windowLayers []int
	windowFields string
}

// CheckLen refuses sequences of n tokens that do not fit the model's
// sliding attention window. A query attends to the keys less than Window
// positions before it (transformers' masking_utils.py:
// sliding_window_overlay keeps kv_idx > q_idx - sliding_window), so a
// sequence of at most Window tokens sees every earlier token, as
// alignflow's attention does.
func (c *Config) CheckLen(n int) error {
	if c.Window == 0 || n <= c.Window {
		return nil
	}
	return fmt.Errorf("sequences of up to %d tokens do not fit config.json's %s: %s attends over at most the last %d tokens, alignflow over the whole sequence, which is the same only for sequences of at most %d tokens",
		n, c.windowFields, c.Architecture, c.Window, c.Window)
}

type rawConfig struct {
	Architectures         []string        `json:"architectures"`
	ModelType             string          `json:"model_type"`
	HiddenSize            int             `json:"hidden_size"`
	IntermediateSize      int             `json:"intermediate_size"`
	NumHiddenLayers       int             `json:"num_hidden_layers"`
	NumAttentionHeads     int             `json:"num_attention_heads"`
	NumKeyValueHeads      *int            `json:"num_key_value_heads"`
	HeadDim               *int            `json:"head_dim"`
	VocabSize             int             `json:"vocab_size"`
	MaxPositionEmbeddings int             `json:"max_position_embeddings"`
	RMSNormEps            *float64        `json:"rms_norm_eps"`
	RopeTheta             *float64        `json:"rope_theta"`
	RopeScaling           json.RawMessage `json:"rope_scaling"`
	RopeParameters        json.RawMessage `json:"rope_parameters"`
	HiddenAct             string          `json:"hidden_act"`
	TieWordEmbeddings     *bool           `json:"tie_word_embeddings"`
	AttentionBias         *bool           `json:"attention_bias"`
	MLPBias               bool            `json:"mlp_bias"`
	SlidingWindow         json.RawMessage `json:"sliding_window"`
	UseSlidingWindow      bool            `json:"use_sliding_window"`
	MaxWindowLayers       *int            `json:"max_window_layers"`
	LayerTypes            []string        `json:"layer_types"`
	DType                 string          `json:"dtype"`
	TorchDType            string          `json:"torch_dtype"`
	BOSTokenID            *int32          `json:"bos_token_id"`
	EOSTokenID            json.RawMessage `json:"eos_token_id"`
	PretrainingTP         int             `json:"pretraining_tp"`
	NumLabels             int             `json:"num_labels"`
	ID2Label              map[string]any  `json:"id2label"`
}

// ReadConfig reads dir/config.json.
func ReadConfig(dir string) (*Config, error) {
	path := filepath.Join(dir, ConfigFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: no %s: not a Hugging Face model directory", dir, ConfigFile)
	}
	if err != nil {
		return nil, err
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseConfig reads the contents of a config.json.
func ParseConfig(b []byte) (*Config, error) {
	var r rawConfig
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("not a config.json: %w", err)
	}
	if len(r.Architectures) != 1 {
		return nil, fmt.Errorf("architectures: %q must name one architecture (supported: %s)", r.Architectures, supported())
	}
	arch := r.Architectures[0]
	causal, classifier := Classifiers[arch]
	if classifier {
		arch = causal
	}
	if !slices.Contains(Architectures, arch) {
		return nil, fmt.Errorf("architectures: %q is not supported (supported: %s)", arch, supported())
	}
	if r.ModelType != "" && r.ModelType != modelTypes[arch] {
		return nil, fmt.Errorf("model_type: %q does not go with %s (want %q)", r.ModelType, arch, modelTypes[arch])
	}
	positive := func(field string, v int) error {
		if v <= 0 {
			return fmt.Errorf("%s: must be a positive integer, got %d", field, v)
		}
		return nil
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"hidden_size", r.HiddenSize}, {"intermediate_size", r.IntermediateSize}, {"num_hidden_layers", r.NumHiddenLayers},
		{"num_attention_heads", r.NumAttentionHeads}, {"vocab_size", r.VocabSize}, {"max_position_embeddings", r.MaxPositionEmbeddings}} {
		if err := positive(f.name, f.v); err != nil {
			return nil, err
		}
	}
	if r.HiddenAct != "" && r.HiddenAct != "silu" {
		return nil, fmt.Errorf("hidden_act: %q is not supported (supported: silu)", r.HiddenAct)
	}
	if r.MLPBias {
		return nil, fmt.Errorf("mlp_bias: true is not supported (supported: false)")
	}
	if r.PretrainingTP > 1 {
		return nil, fmt.Errorf("pretraining_tp: %d is not supported (supported: 1)", r.PretrainingTP)
	}
	t := transformer.Config{Vocab: r.VocabSize, Dim: r.HiddenSize, Heads: r.NumAttentionHeads, Layers: r.NumHiddenLayers,
		Hidden: r.IntermediateSize, MaxLen: r.MaxPositionEmbeddings, GatedMLP: true, NormEps: defaultNormEps}
	if r.NumKeyValueHeads != nil {
		if err := positive("num_key_value_heads", *r.NumKeyValueHeads); err != nil {
			return nil, err
		}
		t.KVHeads = *r.NumKeyValueHeads
	}
	if r.HeadDim != nil {
		if err := positive("head_dim", *r.HeadDim); err != nil {
			return nil, err
		}
		t.HeadSize = *r.HeadDim
	}
	if r.RMSNormEps != nil {
		if !(*r.RMSNormEps > 0) {
			return nil, fmt.Errorf("rms_norm_eps: must be positive, got %v", *r.RMSNormEps)
		}
		t.NormEps = *r.RMSNormEps
	}
	// Qwen2's attention has q/k/v biases (Qwen2Attention: bias=True on
	// q_proj, k_proj and v_proj, False on o_proj); Llama's has them on all
	// four where attention_bias says so (LlamaAttention:
	// bias=config.attention_bias); Mistral's never (MistralAttention:
	// bias=False on all four, whatever attention_bias says).
	switch arch {
	case "Qwen2ForCausalLM":
		t.QKVBias = true
	case "LlamaForCausalLM":
		t.QKVBias = r.AttentionBias != nil && *r.AttentionBias
		t.OBias = t.QKVBias
	}
	// Llama's, Mistral's and Qwen2's configs default tie_word_embeddings to false.
	t.TiedEmbeddings = r.TieWordEmbeddings != nil && *r.TieWordEmbeddings
	// The canonical form: a field equal to what it defaults to is left zero.
	if t.HeadSize*t.Heads == t.Dim {
		t.HeadSize = 0
	}
	if t.KVHeads == t.Heads {
		t.KVHeads = 0
	}
	var err error
	if t.RopeTheta, t.RopeScaling, err = rope(r); err != nil {
		return nil, err
	}
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c := &Config{Architecture: arch, Transformer: t, BOS: r.BOSTokenID, Classifier: classifier}
	if c.Window, c.windowLayers, c.windowFields, err = window(arch, r); err != nil {
		return nil, err
	}
	if classifier {
		c.NumLabels = r.NumLabels
		if c.NumLabels == 0 {
			c.NumLabels = len(r.ID2Label)
		}
		if c.NumLabels != RewardLabels {
			return nil, fmt.Errorf("num_labels: %d; alignflow's reward models have %d outputs (%s)", c.NumLabels, RewardLabels, strings.Join(LabelNames[:], ", "))
		}
	}
	// transformers v5 writes dtype, v4 torch_dtype; where both are given,
	// dtype is kept (configuration_utils.py: PreTrainedConfig.__post_init__).
	dtype, field := r.DType, "dtype"
	if dtype == "" {
		dtype, field = r.TorchDType, "torch_dtype"
	}
	if dtype == "" {
		dtype = "float32"
	}
	if _, ok := dtypes[dtype]; !ok {
		return nil, fmt.Errorf("%s: %q is not supported (supported: float32, bfloat16, float16)", field, dtype)
	}
	c.DType = dtype
	if c.EOS, err = tokenIDs(r.EOSTokenID, "eos_token_id"); err != nil {
		return nil, err
	}
	return c, nil
}

// defaultNormEps is rms_norm_eps where a config leaves it out: 1e-6 in
// each architecture's config class (configuration_llama.py: LlamaConfig,
// configuration_mistral.py: MistralConfig, configuration_qwen2.py:
// Qwen2Config all default rms_norm_eps to 1e-6).
const defaultNormEps = 1e-6

// defaultRopeTheta is the rotary base where no field gives one
// (modeling_rope_utils.py: RotaryEmbeddingConfigMixin.default_theta).
const defaultRopeTheta = 10000

// rope reads the rotary base and scaling from either layout transformers
// writes: v4's top-level rope_theta and rope_scaling, or v5's
// rope_parameters, which holds both. As v5 reads them
// (modeling_rope_utils.py: RotaryEmbeddingConfigMixin.convert_rope_params_to_dict):
// rope_scaling where it is given (as v4 does), else rope_parameters; the
// rope_theta in it, else the top-level one, else 10000. A top-level
// rope_theta that disagrees with the one v5 reads is refused: transformers
// v4 and v5 would run the file differently.
func rope(r rawConfig) (float64, *transformer.RopeScaling, error) {
	scaling, err := ropeDict("rope_scaling", r.RopeScaling)
	if err != nil {
		return 0, nil, err
	}
	params, err := ropeDict("rope_parameters", r.RopeParameters)
	if err != nil {
		return 0, nil, err
	}
	d, field := params, "rope_parameters"
	if scaling != nil {
		d, field = scaling, "rope_scaling"
	}
	if d == nil {
		d = &ropeParams{}
	}
	theta, from := float64(defaultRopeTheta), "rope_theta"
	switch {
	case d.Theta != nil && r.RopeTheta != nil && *d.Theta != *r.RopeTheta:
		return 0, nil, fmt.Errorf("rope_theta %v and %s.rope_theta %v disagree (transformers v4 reads the first, v5 the second)", *r.RopeTheta, field, *d.Theta)
	case d.Theta != nil:
		theta, from = *d.Theta, field+".rope_theta"
	case r.RopeTheta != nil:
		theta = *r.RopeTheta
	}
	if !(theta > 0) {
		return 0, nil, fmt.Errorf("%s: must be positive, got %v", from, theta)
	}
	return theta, d.Scaling, nil
}

// ropeParams is what a rope_scaling or rope_parameters object says.
type ropeParams struct {
	Theta   *float64
	Scaling *transformer.RopeScaling // nil: rope_type "default"
}

// ropeDict reads a rope_scaling or rope_parameters object: nil for none
// (absent, null or empty, which transformers treats alike), else its
// rope_theta and its scaling, "llama3" or "linear" (the type also spelt
// "type", as older files do), or none for "default". Other types are
// refused, and so are rope parameters per layer type.
func ropeDict(field string, raw json.RawMessage) (*ropeParams, error) {
	var keys map[string]json.RawMessage
	if s := strings.TrimSpace(string(raw)); s == "" || s == "null" {
		return nil, nil
	}
	if err := json.Unmarshal(raw, &keys); err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	if len(keys) == 0 {
		return nil, nil
	}
	var v struct {
		RopeTheta *float64 `json:"rope_theta"`
		RopeType  string   `json:"rope_type"`
		Type      string   `json:"type"`
		transformer.RopeScaling
		FullAttention    json.RawMessage `json:"full_attention"`
		SlidingAttention json.RawMessage `json:"sliding_attention"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	if v.FullAttention != nil || v.SlidingAttention != nil {
		return nil, fmt.Errorf("%s: parameters per layer type (full_attention, sliding_attention) are not supported (supported: one set for every layer)", field)
	}
	rs := v.RopeScaling
	rs.Type = v.RopeType
	if rs.Type == "" {
		rs.Type = v.Type
	}
	p := &ropeParams{Theta: v.RopeTheta, Scaling: &rs}
	switch rs.Type {
	case transformer.RopeLlama3, transformer.RopeLinear:
	case "default", "":
		p.Scaling = nil
	default:
		return nil, fmt.Errorf("%s: type %q is not supported (supported: default, %s, %s)", field, rs.Type, transformer.RopeLlama3, transformer.RopeLinear)
	}
	return p, nil
}

// defaultWindow is sliding_window where a config leaves it out
// (configuration_mistral.py: MistralConfig, sliding_window=4096;
// configuration_qwen2.py: Qwen2Config, sliding_window 4096, applied only
// with use_sliding_window), and defaultWindowLayers Qwen2's
// max_window_layers (28).
const (
	defaultWindow       = 4096
	defaultWindowLayers = 28
)

// window is the sliding attention window transformers gives the model, and
// the fields that say so. Mistral's applies to every layer wherever
// sliding_window is not null (MistralModel.forward masks with
// create_sliding_window_causal_mask then). Qwen2's applies with
// use_sliding_window to the layers layer_types marks "sliding_attention",
// or, without layer_types, to layers max_window_layers (default 28) and
// after (Qwen2Config.__post_init__); with no such layer there is no
// window. Llama has none (LlamaAttention has no window).
func window(arch string, r rawConfig) (size int, layers []int, fields string, err error) {
	size, fields = defaultWindow, fmt.Sprintf("sliding_window (left out: %d by default)", defaultWindow)
	if s := strings.TrimSpace(string(r.SlidingWindow)); s == "null" {
		size = 0
	} else if s != "" {
		if err := json.Unmarshal(r.SlidingWindow, &size); err != nil || size <= 0 {
			return 0, nil, "", fmt.Errorf("sliding_window: %s is neither a positive integer nor null", s)
		}
		fields = fmt.Sprintf("sliding_window %d", size)
	}
	switch {
	case arch == "MistralForCausalLM":
		return size, nil, fields, nil
	case arch != "Qwen2ForCausalLM":
		return 0, nil, "", nil
	case !r.UseSlidingWindow:
		size = 0
	}
	if r.LayerTypes != nil {
		if len(r.LayerTypes) != r.NumHiddenLayers {
			return 0, nil, "", fmt.Errorf("layer_types: %d entries for num_hidden_layers %d", len(r.LayerTypes), r.NumHiddenLayers)
		}
		for i, lt := range r.LayerTypes {
			switch lt {
			case "sliding_attention":
				layers = append(layers, i)
			case "full_attention":
			default:
				return 0, nil, "", fmt.Errorf("layer_types[%d]: %q is not supported (supported: full_attention, sliding_attention)", i, lt)
			}
		}
		if len(layers) > 0 && size == 0 {
			return 0, nil, "", fmt.Errorf("layer_types: layer %d is sliding_attention but the config has no window (use_sliding_window false or sliding_window null), which transformers cannot run either", layers[0])
		}
		fields += fmt.Sprintf(" with use_sliding_window true on layers %v (layer_types)", layers)
	} else {
		from := defaultWindowLayers
		if r.MaxWindowLayers != nil {
			from = *r.MaxWindowLayers
		}
		for i := max(from, 0); i < r.NumHiddenLayers; i++ {
			layers = append(layers, i)
		}
		fields += fmt.Sprintf(" with use_sliding_window true on layers %d and after (max_window_layers %d)", from, from)
	}
	if size == 0 || len(layers) == 0 {
		return 0, nil, "", nil
	}
	return size, layers, fields, nil
}

// tokenIDs reads a token id written as a number or a list of numbers.
func tokenIDs(raw json.RawMessage, field string) ([]int32, error) {
	if s := strings.TrimSpace(string(raw)); s == "" || s == "null" {
		return nil, nil
	}
	var one int32
	if err := json.Unmarshal(raw, &one); err == nil {
		return []int32{one}, nil
	}
	var many []int32
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, fmt.Errorf("%s: neither a token id nor a list of them", field)
	}
	return many, nil
}
