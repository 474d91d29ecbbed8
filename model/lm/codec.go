package lm

import (
	"fmt"

	"github.com/alignflow/alignflow/model/hf/chattemplate"
	"github.com/alignflow/alignflow/model/hf/hfmodel"
	"github.com/alignflow/alignflow/model/tokenizer"
)

// Codec turns the pipeline's texts into a model's ids and back:
// HelpSteer2 prompts (as the model's chat, up to the start of the
// assistant's turn), responses (ending in EOS) and generated ids.
type Codec struct {
	tok  Tokenizer
	chat *chattemplate.Template // nil: the plain format
	eos  []int32
	// bundled is the byte-level model, whose prompt format predates chat
	// templates (tokenizer.EncodePrompt) and stays as it was.
	bundled bool
}

// Bundled is the bundled byte-level model's codec.
func Bundled() *Codec {
	return &Codec{tok: byteTokenizer{}, eos: []int32{tokenizer.EOS}, bundled: true}
}

// Codec returns the model's codec; a model without an EOS cannot end a
// response and has none.
func (m *Model) Codec() (*Codec, error) {
	if m.Kind == KindCheckpoint {
		return Bundled(), nil
	}
	if len(m.EOS) == 0 {
		return nil, fmt.Errorf("model %s: no EOS token, so a response could not end", m.Path)
	}
	return &Codec{tok: m.Tokenizer, chat: m.chat, eos: m.EOS}, nil
}

// Prompt returns the ids the model reads before a response to a HelpSteer2
// prompt: its turns rendered by the chat template with the generation
// prompt and encoded as transformers' apply_chat_template does (the
// template writes any BOS itself), or, without a template, the plain
// format encoded with the tokenizer's special tokens.
func (c *Codec) Prompt(prompt string) ([]int32, error) {
	if c.bundled {
		return tokenizer.EncodePrompt(prompt), nil
	}
	msgs, err := chattemplate.MessagesOf(prompt)
	if err != nil {
		return nil, err
	}
	if c.chat == nil {
		return c.tok.Encode(chattemplate.Plain(msgs, true), true), nil
	}
	text, err := c.chat.Render(msgs, true)
	if err != nil {
		return nil, err
	}
	return c.tok.Encode(text, false), nil
}

// Response returns a response's ids, ending in EOS.
func (c *Codec) Response(response string) []int32 {
	if c.bundled {
		return tokenizer.EncodeResponse(response)
	}
	return append(c.tok.Encode(response, false), c.eos[0])
}

// Text returns the text of generated ids, without their EOS and other
// special tokens.
func (c *Codec) Text(ids []int32) string { return c.tok.Decode(ids, true) }

// Stop returns the tokens that end a response.
func (c *Codec) Stop() []int32 { return append([]int32(nil), c.eos...) }

// NewCodec makes the codec of a Hugging Face model from its description
// (as a run stored it) and the tokens its responses end with.
func NewCodec(d *hfmodel.Description, eos []int32) (*Codec, error) {
	if len(eos) == 0 {
		return nil, fmt.Errorf("codec: no EOS token")
	}
	chat, err := d.ChatTemplate()
	if err != nil {
		return nil, err
	}
	return &Codec{tok: d.Tokenizer, chat: chat, eos: eos}, nil
}
