package lm

import (
	"fmt"
	"slices"
	"strings"

	"github.com/alignflow/alignflow/model/hf/chattemplate"
	"github.com/alignflow/alignflow/model/hf/hfmodel"
	"github.com/alignflow/alignflow/model/hf/hftokenizer"
	"github.com/alignflow/alignflow/model/tokenizer"
)

// Codec turns the pipeline's texts into a model's ids and back:
// HelpSteer2 prompts (as the model's chat, up to the start of the
// assistant's turn), responses (as the chat template ends an assistant
// turn) and generated ids.
//
// With a chat template, a response's ids are what rendering the
// conversation with the assistant's turn adds to rendering it up to the
// generation prompt, as transformers' apply_chat_template renders a
// conversation (and TRL trains on it): the response, the template's
// end-of-turn token (Llama 3's <|eot_id|>, ChatML's <|im_end|>, Llama 2's
// </s>) and whatever the template writes after it (ChatML's newline).
// Generation stops at the EOS ids or the end-of-turn token; a rollout that
// stopped at the end-of-turn token is scored with the rest of the turn
// (Trailer), as the reward model trained on whole turns and as a reward
// model exported to transformers reads a rendered conversation. Without a
// template, the plain format: the response and the first EOS id.
type Codec struct {
	tok  Tokenizer
	chat *chattemplate.Template // nil: the plain format
	eos  []int32
	// bos is the id Fit keeps at the start of a cut prompt, when the
	// prompt starts with it (-1: none).
	bos int32
	// turn is the template's end-of-turn token and trailer what it
	// writes after it (turn -1: no template, or none in its turns).
	turn    int32
	trailer []int32
	// bundled is the byte-level model, whose prompt format predates chat
	// templates (tokenizer.EncodePrompt) and stays as it was.
	bundled bool
}

// Bundled is the bundled byte-level model's codec.
func Bundled() *Codec {
	return &Codec{tok: byteTokenizer{}, eos: []int32{tokenizer.EOS}, bos: tokenizer.BOS, turn: -1, bundled: true}
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
	return NewCodec(m.HF, m.EOS)
}

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
	c := &Codec{tok: d.Tokenizer, chat: chat, eos: eos, bos: bosOf(d), turn: -1}
	if chat != nil {
		if err := c.findTurnEnd(d.Tokenizer); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// bosOf is the model's BOS id: config.json's bos_token_id, else the id of
// tokenizer_config.json's bos_token; -1 when neither names one.
func bosOf(d *hfmodel.Description) int32 {
	if d.Config != nil && d.Config.BOS != nil {
		return *d.Config.BOS
	}
	if d.Chat != nil && d.Chat.BOS != "" {
		if id, ok := d.Tokenizer.TokenID(d.Chat.BOS); ok {
			return id
		}
	}
	return -1
}

// probe is the reply findTurnEnd renders to see how the template ends an
// assistant turn.
const probe = "ok"

// findTurnEnd renders a probe turn and takes the first special token after
// the reply as the template's end-of-turn token, and the ids after it as
// its trailer.
func (c *Codec) findTurnEnd(tok *hftokenizer.Tokenizer) error {
	ids, err := c.turnIDs("hi", probe)
	if err != nil {
		return err
	}
	for i, id := range ids {
		if tok.IsSpecial(id) {
			c.turn, c.trailer = id, slices.Clone(ids[i+1:])
			return nil
		}
	}
	return nil
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
		return c.tok.EncodeChecked(chattemplate.Plain(msgs, true), true)
	}
	text, err := c.chat.Render(msgs, true)
	if err != nil {
		return nil, err
	}
	return c.tok.EncodeChecked(text, false)
}

// Response returns the ids a response to prompt adds after Prompt(prompt):
// with a chat template, what the conversation with the assistant's turn
// renders after the prompt's rendering (the response and the end of the
// turn), taken from the ids of the whole conversation so that the ids at
// the seam are the ones the tokenizer gives the whole; a template whose
// turn holds no special token gets the first EOS id after it, so that every
// response ends. Without a template: the response and the first EOS id.
// The prompt is needed because a template may render a turn differently
// after different conversations.
func (c *Codec) Response(prompt, response string) ([]int32, error) {
	if c.bundled {
		return tokenizer.EncodeResponse(response), nil
	}
	if c.chat == nil {
		ids, err := c.tok.EncodeChecked(response, false)
		if err != nil {
			return nil, err
		}
		return append(ids, c.eos[0]), nil
	}
	ids, err := c.turnIDs(prompt, response)
	if err != nil {
		return nil, err
	}
	if c.turn < 0 {
		ids = append(ids, c.eos[0])
	}
	return ids, nil
}

// turnIDs are the ids the assistant's turn adds to the conversation's
// rendering up to its generation prompt.
func (c *Codec) turnIDs(prompt, response string) ([]int32, error) {
	msgs, err := chattemplate.MessagesOf(prompt)
	if err != nil {
		return nil, err
	}
	pre, err := c.chat.Render(msgs, true)
	if err != nil {
		return nil, err
	}
	full, err := c.chat.Render(append(msgs, chattemplate.Message{Role: "assistant", Content: response}), false)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(full, pre) {
		return nil, fmt.Errorf("the chat template's rendering of the assistant's turn does not continue its generation prompt (%q then %q)", tail(pre), tail(full))
	}
	preIDs, err := c.tok.EncodeChecked(pre, false)
	if err != nil {
		return nil, err
	}
	fullIDs, err := c.tok.EncodeChecked(full, false)
	if err != nil {
		return nil, err
	}
	if len(fullIDs) > len(preIDs) && slices.Equal(fullIDs[:len(preIDs)], preIDs) {
		return slices.Clone(fullIDs[len(preIDs):]), nil
	}
	return c.tok.EncodeChecked(full[len(pre):], false)
}

// tail is the end of a rendering, for a message.
func tail(s string) string {
	if len(s) > 40 {
		return "..." + s[len(s)-40:]
	}
	return s
}

// Fit is the sequence the model reads for a response after a prompt, at
// most maxLen ids (tokenizer.Fit): the prompt loses its start first,
// keeping the BOS where it starts with one.
func (c *Codec) Fit(prompt, response []int32, maxLen int) (seq []int32, whole, cut bool) {
	return tokenizer.Fit(prompt, response, maxLen, c.Keep(prompt))
}

// Keep is how many of a prompt's first ids a cut keeps: its BOS, when it
// starts with one (a template without BOS, as Qwen2's and SmolLM2's, keeps
// none: its first id starts a turn, and keeping it alone would splice it
// into the middle of one).
func (c *Codec) Keep(prompt []int32) int {
	if len(prompt) > 0 && c.bos >= 0 && prompt[0] == c.bos {
		return 1
	}
	return 0
}

// Sequence is Fit of a response to a prompt, from their texts.
func (c *Codec) Sequence(prompt, response string, maxLen int) (seq []int32, whole, cut bool, err error) {
	p, err := c.Prompt(prompt)
	if err != nil {
		return nil, false, false, err
	}
	r, err := c.Response(prompt, response)
	if err != nil {
		return nil, false, false, err
	}
	seq, whole, cut = c.Fit(p, r, maxLen)
	return seq, whole, cut, nil
}

// Text returns the text of generated ids, without their EOS and other
// special tokens.
func (c *Codec) Text(ids []int32) string { return c.tok.Decode(ids, true) }

// Texts is Text of each sequence.
func (c *Codec) Texts(seqs [][]int32) []string {
	out := make([]string, len(seqs))
	for i, ids := range seqs {
		out[i] = c.Text(ids)
	}
	return out
}

// Stop returns the tokens that end a response: the EOS ids and the chat
// template's end-of-turn token.
func (c *Codec) Stop() []int32 {
	stop := slices.Clone(c.eos)
	if c.turn >= 0 && !slices.Contains(stop, c.turn) {
		stop = append(stop, c.turn)
	}
	return stop
}

// Trailer is what the chat template writes after its end-of-turn token
// (ChatML's newline), and that token: a rollout that stopped at it is
// scored with the trailer after it. Empty for the plain format and for
// templates that end a turn with their last token.
func (c *Codec) Trailer() (after int32, tokens []int32) {
	return c.turn, slices.Clone(c.trailer)
}
