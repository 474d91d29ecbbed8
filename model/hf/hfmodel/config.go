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
	// DType is torch_dtype: the dtype an export writes back.
	DType string
	// BOS and EOS are config.json's token ids (EOS may list several).
	BOS *int32
	EOS []int32
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
	RMSNormEps            float64         `json:"rms_norm_eps"`
	RopeTheta             *float64        `json:"rope_theta"`
	RopeScaling           json.RawMessage `json:"rope_scaling"`
	HiddenAct             string          `json:"hidden_act"`
	TieWordEmbeddings     *bool           `json:"tie_word_embeddings"`
	AttentionBias         *bool           `json:"attention_bias"`
	MLPBias               bool            `json:"mlp_bias"`
	SlidingWindow         *int            `json:"sliding_window"`
	UseSlidingWindow      *bool           `json:"use_sliding_window"`
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
	if r.UseSlidingWindow != nil && *r.UseSlidingWindow {
		return nil, fmt.Errorf("use_sliding_window: true is not supported (alignflow attends over the whole sequence)")
	}
	if arch == "MistralForCausalLM" && r.SlidingWindow != nil && *r.SlidingWindow < r.MaxPositionEmbeddings {
		// Attention over more than the window would differ from Mistral's.
		return nil, fmt.Errorf("sliding_window: %d is shorter than max_position_embeddings %d, which alignflow does not support (supported: null, or at least max_position_embeddings)", *r.SlidingWindow, r.MaxPositionEmbeddings)
	}
	t := transformer.Config{Vocab: r.VocabSize, Dim: r.HiddenSize, Heads: r.NumAttentionHeads, Layers: r.NumHiddenLayers,
		Hidden: r.IntermediateSize, MaxLen: r.MaxPositionEmbeddings, GatedMLP: true, NormEps: r.RMSNormEps, RopeTheta: 10000}
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
	if r.RopeTheta != nil {
		if !(*r.RopeTheta > 0) {
			return nil, fmt.Errorf("rope_theta: must be positive, got %v", *r.RopeTheta)
		}
		t.RopeTheta = *r.RopeTheta
	}
	if !(r.RMSNormEps > 0) {
		return nil, fmt.Errorf("rms_norm_eps: must be positive, got %v", r.RMSNormEps)
	}
	// Qwen2 always has q/k/v biases; Llama and Mistral only where attention_bias says so.
	t.QKVBias = arch == "Qwen2ForCausalLM"
	if r.AttentionBias != nil && arch != "Qwen2ForCausalLM" {
		t.QKVBias = *r.AttentionBias
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
	if t.RopeScaling, err = ropeScaling(r.RopeScaling); err != nil {
		return nil, err
	}
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c := &Config{Architecture: arch, Transformer: t, DType: r.TorchDType, BOS: r.BOSTokenID, Classifier: classifier}
	if classifier {
		c.NumLabels = r.NumLabels
		if c.NumLabels == 0 {
			c.NumLabels = len(r.ID2Label)
		}
		if c.NumLabels != RewardLabels {
			return nil, fmt.Errorf("num_labels: %d; alignflow's reward models have %d outputs (%s)", c.NumLabels, RewardLabels, strings.Join(LabelNames[:], ", "))
		}
	}
	if c.DType == "" {
		c.DType = "float32"
	}
	if _, ok := dtypes[c.DType]; !ok {
		return nil, fmt.Errorf("torch_dtype: %q is not supported (supported: float32, bfloat16, float16)", c.DType)
	}
	if c.EOS, err = tokenIDs(r.EOSTokenID, "eos_token_id"); err != nil {
		return nil, err
	}
	return c, nil
}

// ropeScaling reads rope_scaling: null, or "llama3" or "linear" (also
// spelt with "type" in older files). Others are refused.
func ropeScaling(raw json.RawMessage) (*transformer.RopeScaling, error) {
	if s := strings.TrimSpace(string(raw)); s == "" || s == "null" {
		return nil, nil
	}
	var v struct {
		RopeType string `json:"rope_type"`
		Type     string `json:"type"`
		transformer.RopeScaling
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("rope_scaling: %w", err)
	}
	rs := v.RopeScaling
	rs.Type = v.RopeType
	if rs.Type == "" {
		rs.Type = v.Type
	}
	switch rs.Type {
	case transformer.RopeLlama3, transformer.RopeLinear:
	case "default":
		return nil, nil
	default:
		return nil, fmt.Errorf("rope_scaling: type %q is not supported (supported: %s, %s)", rs.Type, transformer.RopeLlama3, transformer.RopeLinear)
	}
	return &rs, nil
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
