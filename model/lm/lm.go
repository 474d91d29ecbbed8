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
	"os"
	"path/filepath"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/model/hf/chattemplate"
	"github.com/alignflow/alignflow/model/hf/hfmodel"
	"github.com/alignflow/alignflow/model/hf/hftokenizer"
	"github.com/alignflow/alignflow/model/tokenizer"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/model/weights"
)

// Tokenizer turns text into ids and back.
type Tokenizer interface {
	// Encode returns the ids of text; addSpecial adds what the model puts
	// around a sequence (BOS).
	Encode(text string, addSpecial bool) []int32
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
	// without a tokenizer_config.json naming one).
	EOS []int32
	// Config and Params are the architecture and weights (nil for a
	// tokenizer-only directory).
	Config *transformer.Config
	Params *weights.Set
	// Reward is true for a reward model (a classifier directory or an
	// alignflow reward checkpoint): Params are then a reward model's.
	Reward bool
	// Verified is true for a checkpoint whose manifest digest matched.
	Verified bool

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
// written by alignflow. Only a model's weights are read when needWeights.
func Open(path string, needWeights bool) (*Model, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", path, err)
	}
	if !st.IsDir() {
		return openCheckpoint(path)
	}
	if _, err := os.Stat(filepath.Join(path, hfmodel.ConfigFile)); err == nil && needWeights {
		hf, err := hfmodel.Load(path)
		if err != nil {
			return nil, err
		}
		m := &Model{Path: path, Kind: KindHF, Tokenizer: hf.Tokenizer, EOS: hf.EOS, Config: &hf.Config.Transformer, Params: hf.Params, Reward: hf.Config.Classifier}
		return m, m.useTemplate(hf.Chat)
	}
	tok, err := hftokenizer.Load(filepath.Join(path, hftokenizer.File))
	if err != nil {
		return nil, fmt.Errorf("model %s: neither a Hugging Face model (config.json and weights) nor a tokenizer: %w", path, err)
	}
	m := &Model{Path: path, Kind: KindTokenizer, Tokenizer: tok}
	chat, err := chattemplate.LoadConfig(path)
	switch {
	case err == nil:
		if chat.EOS != "" {
			if id, ok := tok.TokenID(chat.EOS); ok {
				m.EOS = []int32{id}
			}
		}
		if err := m.useTemplate(chat); err != nil {
			return nil, err
		}
	case !errors.Is(err, chattemplate.ErrNoConfig):
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(path, hfmodel.ConfigFile)); err == nil {
		m.Kind = KindHF // a model directory opened for its tokens only
	}
	return m, nil
}

// useTemplate takes the default chat template, if the config has one.
func (m *Model) useTemplate(c *chattemplate.Config) error {
	if c == nil || len(c.Templates) == 0 {
		return nil
	}
	t, err := c.Template("")
	if err != nil {
		return err
	}
	m.chat = t
	return nil
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

func (byteTokenizer) Encode(text string, addSpecial bool) []int32 {
	ids := tokenizer.Encode(text)
	if addSpecial {
		ids = append([]int32{tokenizer.BOS}, ids...)
	}
	return ids
}

// Decode returns the bytes of ids; the byte tokenizer's special tokens have
// no text either way.
func (byteTokenizer) Decode(ids []int32, _ bool) string { return tokenizer.Decode(ids) }
