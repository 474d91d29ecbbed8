package hfmodel

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/alignflow/alignflow/data/helpsteer"
	"github.com/alignflow/alignflow/model/hf/chattemplate"
	"github.com/alignflow/alignflow/model/hf/hftokenizer"
	"github.com/alignflow/alignflow/model/hf/safetensors"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/policy"
	"github.com/alignflow/alignflow/reward"
)

// dtypes maps torch_dtype to the safetensors dtype an export writes.
var dtypes = map[string]safetensors.DType{"float32": safetensors.F32, "bfloat16": safetensors.BF16, "float16": safetensors.F16}

// GenerationConfigFile holds the EOS a model stops generating at.
const GenerationConfigFile = "generation_config.json"

// Model is a loaded Hugging Face model directory: its description and its
// weights.
type Model struct {
	*Description
	// Params are the weights as a policy: alignflow's names and layout,
	// the transformer config in the metadata.
	Params *weights.Set
}

// Description is what describes a model beside its weights, read once:
// the exact bytes of its description files (what a run stores and an
// export writes back) and what they say. Every reader of a model
// directory, or of a model a run stored, parses it here.
type Description struct {
	// Dir is where the files were read from (a directory, or the store).
	Dir string
	// Files are the description files the model has, by name
	// (DescriptionFiles), as they were parsed.
	Files map[string][]byte
	// Config is config.json's (nil for a tokenizer-only directory).
	Config    *Config
	Tokenizer *hftokenizer.Tokenizer
	// Chat is the chat template (chat_template.jinja's, else
	// tokenizer_config.json's) and tokenizer_config.json's BOS/EOS text;
	// nil when the directory has no file about chats
	// (chattemplate.ParseFiles).
	Chat *chattemplate.Config
	// EOS are the tokens generation stops at: generation_config.json's
	// eos_token_id, else config.json's, else the tokenizer's eos_token;
	// nil when none names one (EOSErr says why).
	EOS    []int32
	EOSErr error
}

// maxDescriptionBytes bounds a description file: the largest real
// tokenizer.json files (Gemma's, Qwen2's) are about 35 MB.
const maxDescriptionBytes = 256 << 20

// Load reads a model directory: its description (config.json,
// tokenizer.json and, where present, the other DescriptionFiles) and its
// safetensors weights.
func Load(dir string) (*Model, error) { return LoadFS(dirFS(dir), dir) }

// LoadFS is Load of the directory fsys, every file opened through it (a
// worker's data roots, config.Roots.FS); dir names it in errors.
func LoadFS(fsys fs.FS, dir string) (*Model, error) {
	files, err := readFiles(fsys, dir)
	if err != nil {
		return nil, err
	}
	if _, ok := files[ConfigFile]; !ok {
		return nil, fmt.Errorf("%s: no %s: not a Hugging Face model directory", dir, ConfigFile)
	}
	d, err := ParseDescription(dir, files)
	if err != nil {
		return nil, err
	}
	if d.EOS == nil {
		return nil, d.EOSErr
	}
	m := &Model{Description: d}
	if m.Params, err = LoadWeightsFS(fsys, dir, d.Config); err != nil {
		return nil, err
	}
	return m, nil
}

// ReadDescription reads the description files dir has, each once, and
// parses them (ParseDescription).
func ReadDescription(dir string) (*Description, error) { return ReadDescriptionFS(dirFS(dir), dir) }

// ReadDescriptionFS is ReadDescription of the directory fsys.
func ReadDescriptionFS(fsys fs.FS, dir string) (*Description, error) {
	files, err := readFiles(fsys, dir)
	if err != nil {
		return nil, err
	}
	return ParseDescription(dir, files)
}

// readFiles reads the description files dir has, by name, each from the
// handle it was opened and measured with.
func readFiles(fsys fs.FS, dir string) (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, name := range DescriptionFiles {
		path := filepath.Join(dir, name)
		b, err := readFile(fsys, name, path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		files[name] = b
	}
	return files, nil
}

// readFile reads one description file, refusing what is not a regular
// file or is larger than any model's.
func readFile(fsys fs.FS, name, path string) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	if st.Size() > maxDescriptionBytes {
		return nil, fmt.Errorf("%s: %d bytes is more than any model's %s (at most %d)", path, st.Size(), name, maxDescriptionBytes)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxDescriptionBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > maxDescriptionBytes {
		return nil, fmt.Errorf("%s: more than any model's %s (at most %d bytes)", path, name, maxDescriptionBytes)
	}
	return b, nil
}

// ParseDescription parses a model's description files, given by name as
// ReadDescription reads them; dir names where they came from in errors.
// tokenizer.json is required; config.json is not (a tokenizer-only
// directory), but when present the tokenizer must fit its vocabulary.
func ParseDescription(dir string, files map[string][]byte) (*Description, error) {
	d := &Description{Dir: dir, Files: files}
	if b, ok := files[ConfigFile]; ok {
		c, err := ParseConfig(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ConfigFile), err)
		}
		d.Config = c
	}
	b, ok := files[hftokenizer.File]
	if !ok {
		return nil, fmt.Errorf("%s: no %s (alignflow reads Hugging Face tokenizers from tokenizer.json)", dir, hftokenizer.File)
	}
	tok, err := hftokenizer.ParseWithConfig(b, files[chattemplate.ConfigFile])
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s: %w", filepath.Join(dir, hftokenizer.File), err)
	}
	tok.Path = filepath.Join(dir, hftokenizer.File)
	d.Tokenizer = tok
	if d.Config != nil && tok.VocabSize() > d.Config.Transformer.Vocab {
		return nil, fmt.Errorf("%s: the tokenizer has ids up to %d but config.json's vocab_size is %d", dir, tok.VocabSize()-1, d.Config.Transformer.Vocab)
	}
	if d.Chat, err = chattemplate.ParseFiles(dir, files); err != nil {
		return nil, err
	}
	if d.EOS, err = d.eos(); err != nil {
		d.EOS, d.EOSErr = nil, err
	}
	return d, nil
}

func (d *Description) eos() ([]int32, error) {
	if b, ok := d.Files[GenerationConfigFile]; ok {
		path := filepath.Join(d.Dir, GenerationConfigFile)
		var g struct {
			EOS json.RawMessage `json:"eos_token_id"`
		}
		if err := json.Unmarshal(b, &g); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		ids, err := tokenIDs(g.EOS, "eos_token_id")
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(ids) > 0 {
			return ids, nil
		}
	}
	if d.Config != nil && len(d.Config.EOS) > 0 {
		return d.Config.EOS, nil
	}
	if d.Chat != nil && d.Chat.EOS != "" {
		if id, ok := d.Tokenizer.TokenID(d.Chat.EOS); ok {
			return []int32{id}, nil
		}
		return nil, fmt.Errorf("%s: eos_token %q is not a token of %s", d.Chat.Path, d.Chat.EOS, d.Tokenizer.Path)
	}
	return nil, fmt.Errorf("%s: no EOS: neither %s, %s nor %s gives eos_token_id or eos_token", d.Dir, GenerationConfigFile, ConfigFile, chattemplate.ConfigFile)
}

// ChatTemplate is the model's default chat template, nil when it has none
// (the plain format).
func (d *Description) ChatTemplate() (*chattemplate.Template, error) {
	if d.Chat == nil {
		return nil, nil
	}
	return d.Chat.Default()
}

// mapping is one tensor in Hugging Face's naming and in alignflow's.
type mapping struct {
	hf, ours string
	shape    []int // Hugging Face's shape
	// transpose: Hugging Face stores the matrix [out, in], alignflow [in, out].
	transpose bool
}

// RewardLabels and LabelNames are a reward model's outputs, in order: the
// HelpSteer attributes, helpfulness (the reward) first.
var (
	RewardLabels = reward.NumAttributes
	LabelNames   = helpsteer.AttributeNames
)

// mappings lists a language model's tensors in Hugging Face's and
// alignflow's names: the backbone and, unless tied, the head.
func mappings(t transformer.Config) []mapping {
	out := backbone(t)
	if !t.TiedEmbeddings {
		out = append(out, mapping{"lm_head.weight", policy.LMHead, []int{t.Vocab, t.Dim}, true})
	}
	return out
}

// rewardMappings lists a reward model's: the backbone and the score layer,
// XForSequenceClassification's score.weight [labels, hidden].
func rewardMappings(t transformer.Config) []mapping {
	return append(backbone(t), mapping{"score.weight", reward.HeadW, []int{RewardLabels, t.Dim}, true})
}

// backbone lists the tensors every model built on the transformer has.
func backbone(t transformer.Config) []mapping {
	d, q, kv := t.Dim, t.Heads*t.HeadDim(), t.KVHeadCount()*t.HeadDim()
	out := []mapping{{"model.embed_tokens.weight", transformer.Embed, []int{t.Vocab, d}, false}}
	for l := 0; l < t.Layers; l++ {
		hf := func(s string) string { return fmt.Sprintf("model.layers.%d.%s", l, s) }
		ours := func(s string) string { return fmt.Sprintf("layer%d.%s", l, s) }
		out = append(out,
			mapping{hf("input_layernorm.weight"), ours("attn_norm"), []int{d}, false},
			mapping{hf("self_attn.q_proj.weight"), ours("wq"), []int{q, d}, true},
			mapping{hf("self_attn.k_proj.weight"), ours("wk"), []int{kv, d}, true},
			mapping{hf("self_attn.v_proj.weight"), ours("wv"), []int{kv, d}, true},
			mapping{hf("self_attn.o_proj.weight"), ours("wo"), []int{d, q}, true},
			mapping{hf("post_attention_layernorm.weight"), ours("mlp_norm"), []int{d}, false},
			mapping{hf("mlp.gate_proj.weight"), ours("w1"), []int{t.Hidden, d}, true},
			mapping{hf("mlp.up_proj.weight"), ours("w3"), []int{t.Hidden, d}, true},
			mapping{hf("mlp.down_proj.weight"), ours("w2"), []int{d, t.Hidden}, true},
		)
		if t.QKVBias {
			out = append(out,
				mapping{hf("self_attn.q_proj.bias"), ours("bq"), []int{q}, false},
				mapping{hf("self_attn.k_proj.bias"), ours("bk"), []int{kv}, false},
				mapping{hf("self_attn.v_proj.bias"), ours("bv"), []int{kv}, false})
		}
		if t.OBias {
			out = append(out, mapping{hf("self_attn.o_proj.bias"), ours("bo"), []int{d}, false})
		}
	}
	return append(out, mapping{"model.norm.weight", transformer.FinalNorm, []int{d}, false})
}

// ignorable are tensors some checkpoints carry that the model does not
// use: rotary tables recomputed from the config, and the language-model
// head of a tied model or of a classifier.
func ignorable(name string, cfg *Config) bool {
	return strings.HasSuffix(name, ".rotary_emb.inv_freq") || (cfg.Transformer.TiedEmbeddings || cfg.Classifier) && name == "lm_head.weight"
}

// LoadWeights reads a directory's weights (model.safetensors or its shards)
// into a policy's parameters, or a reward model's for a classifier,
// checking every tensor's presence, shape and dtype against the config;
// each is read and converted on its own.
func LoadWeights(dir string, cfg *Config) (*weights.Set, error) {
	return LoadWeightsFS(dirFS(dir), dir, cfg)
}

// LoadWeightsFS is LoadWeights of the directory fsys, every weights file
// opened through it.
func LoadWeightsFS(fsys fs.FS, dir string, cfg *Config) (*weights.Set, error) {
	st, err := safetensors.OpenDirFS(fsys, dir)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	t := cfg.Transformer
	want, kind := mappings(t), "policy"
	if cfg.Classifier {
		want, kind = rewardMappings(t), "reward"
	}
	known := map[string]bool{}
	for _, m := range want {
		known[m.hf] = true
	}
	var extra []string
	for _, n := range st.Names() {
		if !known[n] && !ignorable(n, cfg) {
			extra = append(extra, n)
		}
	}
	if len(extra) > 0 {
		return nil, fmt.Errorf("%s: tensors a %s does not have: %s", dir, cfg.Architecture, strings.Join(first(extra, 5), ", "))
	}
	params := weights.NewSet()
	for _, m := range want {
		info, file, ok := st.Info(m.hf)
		if !ok {
			return nil, fmt.Errorf("%s: tensor %s is missing (config.json describes a %s with %d layers)", dir, m.hf, cfg.Architecture, t.Layers)
		}
		if !slices.Equal(info.Shape, m.shape) {
			return nil, fmt.Errorf("%s: tensor %s has shape %v, but config.json gives %v", file, m.hf, info.Shape, m.shape)
		}
		vals, err := st.Float32(m.hf)
		if err != nil {
			return nil, err
		}
		tt := &weights.Tensor{Shape: append([]int(nil), m.shape...), Data: vals}
		if m.transpose {
			tt = transposed(tt)
		}
		params.Put(m.ours, tt)
	}
	if err := params.CheckFinite(); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	transformer.SetConfig(params, t)
	params.Metadata["kind"] = kind
	params.Metadata["hf_architecture"] = cfg.Architecture
	params.Metadata["hf_torch_dtype"] = cfg.DType
	return params, nil
}

func first(s []string, n int) []string {
	if len(s) <= n {
		return s
	}
	return append(s[:n:n], fmt.Sprintf("and %d more", len(s)-n))
}

// transposed returns a matrix's transpose.
func transposed(m *weights.Tensor) *weights.Tensor {
	rows, cols := m.Shape[0], m.Shape[1]
	out := weights.NewTensor(cols, rows)
	for i := 0; i < rows; i++ {
		for j := 0; j < cols; j++ {
			out.Data[j*rows+i] = m.Data[i*cols+j]
		}
	}
	return out
}

// DescriptionFiles are the files beside the weights that describe a model:
// its architecture, tokenizer, chat templates and generation settings. A
// run keeps them, and an export writes them back.
var DescriptionFiles = []string{ConfigFile, hftokenizer.File, chattemplate.ConfigFile, chattemplate.TemplateFile, chattemplate.ProcessorFile, GenerationConfigFile}

// dirFS is dir as a file system (dir "" is the current directory, as
// filepath.Join reads it).
func dirFS(dir string) fs.FS {
	if dir == "" {
		dir = "."
	}
	return os.DirFS(dir)
}
