// Package lm opens the language models alignflow works with, whatever form
// they come in: a Hugging Face model directory (config.json, weights,
// tokenizer), a tokenizer-only directory (tokenizer.json, where only tokens
// are needed), or an alignflow policy checkpoint (the bundled byte-level
// model). Each gives a tokenizer, a chat format and the tokens that end a
// response; the models also their architecture and weights.
package lm

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/model/hf/chattemplate"
	"github.com/alignflow/alignflow/model/hf/hfmodel"
	"github.com/alignflow/alignflow/model/lora"
	"github.com/alignflow/alignflow/model/tokenizer"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/reward"
)

// Tokenizer turns text into ids and back.
type Tokenizer interface {
	// EncodeChecked returns the ids of text; addSpecial adds what the model puts
	// around a sequence (BOS). An error is a bound the tokenizer's rules ran
	// past (a tokenizer.json regex that backtracks catastrophically).
	EncodeChecked(text string, addSpecial bool) ([]int32, error)
	// Decode returns the text of ids, leaving special tokens out when asked.
	Decode(ids []int32, skipSpecial bool) string
}

// Model is an opened model or tokenizer.
type Model struct {
	// Path is what was opened.
	Path string
	// Kind says which form it came in: KindHF, KindTokenizer or KindCheckpoint.
	Kind      string
	Tokenizer Tokenizer
	// EOS are the tokens that end a response (nil for a bare tokenizer
	// without a file naming one).
	EOS []int32
	// Config and Params are the architecture and weights (nil for a
	// tokenizer-only directory, or a directory opened for its tokens).
	Config *transformer.Config
	Params *weights.Set
	// Reward is true for a reward model (a classifier directory or an
	// alignflow reward checkpoint): Params are then a reward model's.
	Reward bool
	// Verified is true for a checkpoint whose manifest digest matched.
	Verified bool
	// HF is a directory's description as read and parsed: config,
	// tokenizer, chat template, EOS and the files' exact bytes (nil for a
	// checkpoint).
	HF *hfmodel.Description

	chat *chattemplate.Template // nil: the plain format
}

// Kinds of models.
const (
	KindHF         = "huggingface"
	KindTokenizer  = "tokenizer"
	KindCheckpoint = "checkpoint"
)

// Open opens path: a directory with config.json (a Hugging Face model),
// one with only tokenizer.json (a tokenizer), or a .safetensors checkpoint
// written by alignflow. A directory's description files are each read
// once (hfmodel.ReadDescription); its weights only when needWeights.
func Open(path string, needWeights bool) (*Model, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", path, err)
	}
	if !st.IsDir() {
		return openCheckpoint(path)
	}
	return OpenDir(os.DirFS(path), path, needWeights)
}

// OpenDir is Open of a directory read through fsys (a worker's data
// roots, config.Roots.FS, so that every file is opened beneath them);
// path names it.
func OpenDir(fsys fs.FS, path string, needWeights bool) (*Model, error) {
	desc, err := hfmodel.ReadDescriptionFS(fsys, path)
	if err != nil {
		if _, statErr := fs.Stat(fsys, hfmodel.ConfigFile); errors.Is(statErr, fs.ErrNotExist) {
			return nil, fmt.Errorf("model %s: neither a Hugging Face model (config.json and weights) nor a tokenizer: %w", path, err)
		}
		return nil, err
	}
	m := &Model{Path: path, Kind: KindTokenizer, Tokenizer: desc.Tokenizer, EOS: desc.EOS, HF: desc}
	if desc.Config != nil {
		m.Kind = KindHF
		if needWeights {
			if desc.EOS == nil {
				return nil, desc.EOSErr
			}
			if m.Params, err = hfmodel.LoadWeightsFS(fsys, path, desc.Config); err != nil {
				return nil, err
			}
			m.Config, m.Reward = &desc.Config.Transformer, desc.Config.Classifier
		}
	}
	if m.chat, err = desc.ChatTemplate(); err != nil {
		return nil, err
	}
	return m, nil
}

func openCheckpoint(path string) (*Model, error) {
	data, verified, err := artifact.ReadVerified(path)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", path, err)
	}
	set, err := weights.Read(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("model %s: not an alignflow checkpoint: %w", path, err)
	}
	kind := set.Metadata["kind"]
	if kind == "lora" {
		return nil, fmt.Errorf("model %s: a LoRA adapter, not a whole model: `alignflow export RUN_ID --format merged` writes the model it adapts (or use runs/<id>/sft/policy.safetensors, the merged SFT policy)", path)
	}
	if kind != "policy" && kind != "reward" {
		return nil, fmt.Errorf("model %s: a %q checkpoint, neither a policy nor a reward model (look for runs/<id>/sft/policy.safetensors or runs/<id>/reward/.../model.safetensors)", path, kind)
	}
	cfg, err := transformer.ConfigOf(set)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", path, err)
	}
	return &Model{Path: path, Kind: KindCheckpoint, Tokenizer: byteTokenizer{}, EOS: []int32{tokenizer.EOS}, Config: &cfg, Params: set,
		Reward: kind == "reward", Verified: verified}, nil
}

// HasTemplate reports whether the model has a chat template (otherwise
// RenderChat uses the plain format).
func (m *Model) HasTemplate() bool { return m.chat != nil }

// RenderChat renders messages with the model's chat template, or in the
// plain format (chattemplate.Plain) when it has none.
func (m *Model) RenderChat(messages []chattemplate.Message, addGenerationPrompt bool) (string, error) {
	if m.chat == nil {
		return chattemplate.Plain(messages, addGenerationPrompt), nil
	}
	return m.chat.Render(messages, addGenerationPrompt)
}

// byteTokenizer is the bundled model's tokenizer: bytes, with BOS in front
// when asked.
type byteTokenizer struct{}

func (byteTokenizer) EncodeChecked(text string, addSpecial bool) ([]int32, error) {
	ids := tokenizer.Encode(text)
	if addSpecial {
		ids = append([]int32{tokenizer.BOS}, ids...)
	}
	return ids, nil
}

// Decode returns the bytes of ids; the byte tokenizer's special tokens have
// no text either way.
func (byteTokenizer) Decode(ids []int32, _ bool) string { return tokenizer.Decode(ids) }

// ApplyAdapter folds the PEFT LoRA adapter directory dir into the model's
// weights (lora.Merge, PEFT's merge): a CAUSAL_LM adapter into a language
// model; a SEQ_CLS one, with its score layer, into a reward model, or into
// the language model it was trained from, which it then makes a reward
// model of (its backbone, the adapter merged, the adapter's score layer).
func (m *Model) ApplyAdapter(dir string) error {
	if m.Kind != KindHF || m.Params == nil {
		return fmt.Errorf("--adapter %s: a PEFT adapter applies to a Hugging Face model directory with its weights", dir)
	}
	ad, pc, err := hfmodel.ReadPEFT(os.DirFS(dir), dir, *m.Config)
	if err != nil {
		return fmt.Errorf("--adapter: %w", err)
	}
	base := m.Params
	switch {
	case pc.TaskType == hfmodel.TaskCausalLM && m.Reward:
		return fmt.Errorf("--adapter %s: a %s adapter, and %s is a reward model", dir, pc.TaskType, m.Path)
	case pc.TaskType == hfmodel.TaskSeqCls && !m.Reward:
		if base, err = reward.InitFromBackbone(base, 0); err != nil { // the head comes from the adapter
			return fmt.Errorf("--adapter %s: %w", dir, err)
		}
		m.Reward = true
	}
	if m.Params, err = lora.Merge(base, ad); err != nil {
		return fmt.Errorf("--adapter %s: %w", dir, err)
	}
	return nil
}
