package hfmodel

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/alignflow/alignflow/model/hf/safetensors"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/reward"
)

// ShardBytes is transformers' default max_shard_size: weights larger than
// it are written as shards with an index.
const ShardBytes = 5_000_000_000

// DTypeOf is the safetensors dtype of a torch_dtype.
func DTypeOf(torchDType string) (safetensors.DType, error) {
	d, ok := dtypes[torchDType]
	if !ok {
		return "", fmt.Errorf("torch_dtype %q is not supported (supported: float32, bfloat16, float16)", torchDType)
	}
	return d, nil
}

// WriteWeights writes params (a policy's, in alignflow's names and layout)
// into dir in Hugging Face's names and layout, converted to dtype: one
// model.safetensors, or shards of at most shardBytes and
// model.safetensors.index.json. Tensors are converted one at a time.
func WriteWeights(dir string, t transformer.Config, params *weights.Set, dtype safetensors.DType, shardBytes int64) error {
	return writeWeights(dir, mappings(t), params, dtype, shardBytes)
}

// WriteRewardWeights writes a reward model's parameters as an
// XForSequenceClassification's: the backbone and score.weight.
func WriteRewardWeights(dir string, t transformer.Config, params *weights.Set, dtype safetensors.DType, shardBytes int64) error {
	if params.Get(reward.HeadB) != nil {
		return fmt.Errorf("write reward weights: the head has a bias, which a Hugging Face classifier's score layer cannot hold (only reward models trained from a Hugging Face model export)")
	}
	return writeWeights(dir, rewardMappings(t), params, dtype, shardBytes)
}

func writeWeights(dir string, maps []mapping, params *weights.Set, dtype safetensors.DType, shardBytes int64) error {
	var tensors []safetensors.Tensor
	total := int64(0)
	for _, m := range maps {
		p := params.Get(m.ours)
		if p == nil {
			return fmt.Errorf("write weights: parameter %s (%s) missing", m.ours, m.hf)
		}
		m, p := m, p
		tensors = append(tensors, safetensors.Tensor{Name: m.hf, DType: dtype, Shape: m.shape, Get: func() []float32 {
			if m.transpose {
				return transposed(p).Data
			}
			return p.Data
		}})
		total += int64(len(p.Data)) * int64(dtype.Size())
	}
	meta := map[string]string{"format": "pt"}
	if total <= shardBytes {
		return writeFile(filepath.Join(dir, safetensors.Single), tensors, meta)
	}
	var shards [][]safetensors.Tensor
	size := int64(0)
	for _, ts := range tensors {
		n := int64(dtype.Size())
		for _, d := range ts.Shape {
			n *= int64(d)
		}
		if len(shards) == 0 || size+n > shardBytes && size > 0 {
			shards = append(shards, nil)
			size = 0
		}
		shards[len(shards)-1] = append(shards[len(shards)-1], ts)
		size += n
	}
	index := struct {
		Metadata  map[string]int64  `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}{map[string]int64{"total_size": total}, map[string]string{}}
	for i, shard := range shards {
		name := fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(shards))
		if err := writeFile(filepath.Join(dir, name), shard, meta); err != nil {
			return err
		}
		for _, ts := range shard {
			index.WeightMap[ts.Name] = name
		}
	}
	b, err := json.MarshalIndent(index, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, safetensors.Index), append(b, '\n'), 0o644)
}

func writeFile(path string, tensors []safetensors.Tensor, meta map[string]string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	err = safetensors.Write(w, tensors, meta)
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// ConfigJSON renders a config.json for an architecture alignflow loads,
// with the fields transformers reads for it.
func ConfigJSON(c *Config) ([]byte, error) {
	t := c.Transformer
	if !biasesFit(c.Architecture, t) {
		return nil, fmt.Errorf("config.json: a %s cannot have q/k/v biases %v and an o_proj bias %v", c.Architecture, t.QKVBias, t.OBias)
	}
	m := map[string]any{
		"architectures":           []string{c.Architecture},
		"model_type":              modelTypes[c.Architecture],
		"hidden_size":             t.Dim,
		"intermediate_size":       t.Hidden,
		"num_hidden_layers":       t.Layers,
		"num_attention_heads":     t.Heads,
		"num_key_value_heads":     t.KVHeadCount(),
		"head_dim":                t.HeadDim(),
		"vocab_size":              t.Vocab,
		"max_position_embeddings": t.MaxLen,
		"rms_norm_eps":            t.NormEps,
		"rope_theta":              t.RopeTheta,
		"rope_scaling":            nil,
		"hidden_act":              "silu",
		"tie_word_embeddings":     t.TiedEmbeddings,
		"torch_dtype":             c.DType,
	}
	switch c.Architecture {
	case "LlamaForCausalLM":
		m["attention_bias"] = t.QKVBias
		m["mlp_bias"] = false
	case "MistralForCausalLM":
		m["sliding_window"] = nil
		if c.Window > 0 {
			m["sliding_window"] = c.Window
		}
	case "Qwen2ForCausalLM":
		if c.Window > 0 {
			types := slices.Repeat([]string{"full_attention"}, t.Layers)
			for _, l := range c.windowLayers {
				types[l] = "sliding_attention"
			}
			m["use_sliding_window"], m["sliding_window"], m["layer_types"] = true, c.Window, types
			// Older transformers, without layer_types, put the window on
			// the layers from max_window_layers on.
			m["max_window_layers"] = t.Layers
			if first := c.windowLayers[0]; len(c.windowLayers) == t.Layers-first {
				m["max_window_layers"] = first
			}
		}
	}
	if r := t.RopeScaling; r != nil {
		rs := map[string]any{"rope_type": r.Type, "factor": r.Factor}
		if r.Type == transformer.RopeLlama3 {
			rs["low_freq_factor"], rs["high_freq_factor"], rs["original_max_position_embeddings"] = r.LowFreqFactor, r.HighFreqFactor, r.OriginalMaxPositions
		}
		m["rope_scaling"] = rs
	}
	if c.BOS != nil {
		m["bos_token_id"] = *c.BOS
	}
	if len(c.EOS) == 1 {
		m["eos_token_id"] = c.EOS[0]
	} else if len(c.EOS) > 1 {
		m["eos_token_id"] = c.EOS
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Export writes a policy as a Hugging Face model directory at out: the
// given files (config.json, tokenizer files, generation_config.json, as
// the source model had them) and the weights in dtype. It writes into a
// temporary directory beside out and renames it into place, so a failed
// export leaves no directory that looks complete; out must not exist.
func Export(out string, files map[string][]byte, t transformer.Config, params *weights.Set, dtype safetensors.DType) error {
	if _, ok := files[ConfigFile]; !ok {
		return fmt.Errorf("export: no %s to write", ConfigFile)
	}
	return exportDir(out, files, func(dir string) error { return WriteWeights(dir, t, params, dtype, ShardBytes) })
}

// ExportReward writes a reward model as an XForSequenceClassification
// directory at out, as Export does: the source's files with config.json
// made a classifier's (ClassifierConfig), and the backbone and score.weight
// in dtype.
func ExportReward(out string, files map[string][]byte, t transformer.Config, params *weights.Set, dtype safetensors.DType) error {
	src, ok := files[ConfigFile]
	if !ok {
		return fmt.Errorf("export: no %s to write", ConfigFile)
	}
	cfg, err := ClassifierConfig(src)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	withCfg := map[string][]byte{}
	for k, v := range files {
		withCfg[k] = v
	}
	withCfg[ConfigFile] = cfg
	return exportDir(out, withCfg, func(dir string) error { return WriteRewardWeights(dir, t, params, dtype, ShardBytes) })
}

// ClassifierConfig turns a language model's config.json into its reward
// model's: architectures XForSequenceClassification, num_labels 5 and the
// labels in alignflow's order; every other field stays.
func ClassifierConfig(src []byte) ([]byte, error) {
	c, err := ParseConfig(src)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(src, &m); err != nil {
		return nil, err
	}
	m["architectures"] = []string{ClassifierOf(c.Architecture)}
	m["num_labels"] = RewardLabels
	id2label, label2id := map[string]string{}, map[string]int{}
	for i, name := range LabelNames {
		id2label[fmt.Sprint(i)] = name
		label2id[name] = i
	}
	m["id2label"], m["label2id"] = id2label, label2id
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// biasesFit says whether an architecture's attention has the biases t
// gives it: Qwen2's always q/k/v, Llama's all four or none, Mistral's none
// (see ParseConfig).
func biasesFit(arch string, t transformer.Config) bool {
	switch arch {
	case "Qwen2ForCausalLM":
		return t.QKVBias && !t.OBias
	case "LlamaForCausalLM":
		return t.QKVBias == t.OBias
	}
	return !t.QKVBias && !t.OBias
}

// exportDir writes files and, by write, the weights into a temporary
// directory beside out and renames it to out.
func exportDir(out string, files map[string][]byte, write func(dir string) error) error {
	if _, err := os.Stat(out); err == nil {
		return fmt.Errorf("export: %s already exists", out)
	}
	parent := filepath.Dir(out)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(out)+".partial-")
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	for name, b := range files {
		if name != filepath.Base(name) {
			return fmt.Errorf("export: %q is not a file name", name)
		}
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o644); err != nil {
			return fmt.Errorf("export: %w", err)
		}
	}
	if err := write(tmp); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	done = true
	return nil
}
