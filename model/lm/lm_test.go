package lm

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/internal/fixtures"
	"github.com/alignflow/alignflow/model/hf/hfmodel"
	"github.com/alignflow/alignflow/model/tokenizer"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/policy"
)

// TestOpenEveryForm opens stories260K's directory with and without its
// weights, a directory with only its tokenizer, and a bundled checkpoint,
// and checks what each gives.
func TestOpenEveryForm(t *testing.T) {
	src := fixtures.Path(t, "models", "stories260K")

	m, err := Open(src, true)
	require.NoError(t, err)
	assert.Equal(t, KindHF, m.Kind)
	assert.Equal(t, []int32{2}, m.EOS, "generation_config.json's eos_token_id")
	require.NotNil(t, m.Config)
	assert.Equal(t, 4, m.Config.KVHeadCount())
	assert.False(t, m.Reward)
	require.NotNil(t, m.Params)
	for _, name := range []string{hfmodel.ConfigFile, "tokenizer.json", "tokenizer_config.json", hfmodel.GenerationConfigFile} {
		want, err := os.ReadFile(filepath.Join(src, name))
		require.NoError(t, err)
		assert.Equal(t, want, m.HF.Files[name], "%s: the exact bytes that were parsed", name)
	}
	assert.False(t, m.HasTemplate(), "stories260K has no chat template")

	tokensOnly, err := Open(src, false)
	require.NoError(t, err)
	assert.Equal(t, KindHF, tokensOnly.Kind)
	assert.Nil(t, tokensOnly.Params, "no weights read")
	assert.Equal(t, encode(t, m, "Once upon a time", true), encode(t, tokensOnly, "Once upon a time", true))

	tokDir := t.TempDir()
	for _, name := range []string{"tokenizer.json", "tokenizer_config.json"} {
		b, err := os.ReadFile(filepath.Join(src, name))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(tokDir, name), b, 0o644))
	}
	tok, err := Open(tokDir, true)
	require.NoError(t, err)
	assert.Equal(t, KindTokenizer, tok.Kind)
	assert.Equal(t, []int32{2}, tok.EOS, "tokenizer_config.json's eos_token </s>")
	assert.Nil(t, tok.Config)

	cfg := transformer.Config{Vocab: tokenizer.VocabSize, Dim: 16, Heads: 2, Layers: 1, Hidden: 32, MaxLen: 24}
	params := policy.Init(cfg, 1)
	params.Metadata["kind"] = "policy"
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	ref, err := store.PutWeights("runs/r/sft/policy.safetensors", params)
	require.NoError(t, err)
	ck, err := Open(store.Abs(ref), true)
	require.NoError(t, err)
	assert.Equal(t, KindCheckpoint, ck.Kind)
	assert.True(t, ck.Verified, "its manifest's digest matched")
	assert.Equal(t, cfg, *ck.Config)
	assert.Equal(t, []int32{tokenizer.EOS}, ck.EOS)

	_, err = Open(t.TempDir(), false)
	assert.ErrorContains(t, err, "neither a Hugging Face model (config.json and weights) nor a tokenizer")
}

// TestCodecs: the bundled model's prompts and responses keep their byte
// format; a Hugging Face model without a template reads the plain format
// with the tokenizer's special tokens, with one the template's rendering;
// the codec made from a stored description equals the opened model's.
func TestCodecs(t *testing.T) {
	b := Bundled()
	p, err := b.Prompt("hot?")
	require.NoError(t, err)
	assert.Equal(t, tokenizer.EncodePrompt("hot?"), p)
	r, err := b.Response("hot?", "cold")
	require.NoError(t, err)
	assert.Equal(t, tokenizer.EncodeResponse("cold"), r)
	assert.Equal(t, "cold", b.Text(tokenizer.Encode("cold")))

	src := fixtures.Path(t, "models", "stories260K")
	m, err := Open(src, false)
	require.NoError(t, err)
	c, err := m.Codec()
	require.NoError(t, err)
	p, err = c.Prompt("Once upon a time")
	require.NoError(t, err)
	assert.Equal(t, encode(t, m, "Once upon a time\n", true), p, "the plain format (the prompt, then the newline that starts the response), BOS added by the tokenizer")
	resp, err := c.Response("Once upon a time", " there was")
	require.NoError(t, err)
	assert.Equal(t, int32(2), resp[len(resp)-1], "a response ends with the first EOS")
	assert.Equal(t, []int32{2}, c.Stop())

	stored, err := hfmodel.ParseDescription("store", m.HF.Files)
	require.NoError(t, err)
	again, err := NewCodec(stored, m.EOS)
	require.NoError(t, err)
	p2, err := again.Prompt("Once upon a time")
	require.NoError(t, err)
	assert.Equal(t, p, p2, "the stored description reads prompts as the directory did")
	_, err = NewCodec(stored, nil)
	assert.ErrorContains(t, err, "no EOS")

	dir := t.TempDir()
	for name, data := range m.HF.Files {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), data, 0o644))
	}
	template := `{"chat_template": "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}", "eos_token": "</s>"}`
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(template), 0o644))
	chat, err := Open(dir, false)
	require.NoError(t, err)
	require.True(t, chat.HasTemplate())
	cc, err := chat.Codec()
	require.NoError(t, err)
	p, err = cc.Prompt("hi")
	require.NoError(t, err)
	assert.Equal(t, encode(t, chat, "<user>hi<assistant>", false), p, "the template's text, no special tokens added")
}

// chatML is a ChatML template as Qwen2 and SmolLM2 write it: every turn ends
// with <|im_end|> and a newline; the generation prompt opens the
// assistant's turn.
const chatML = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"

// chatMLModel is GPT-2's tokenizer with ChatML's two special tokens added,
// the template above, and <|endoftext|> as generation_config's EOS (as
// Qwen2.5's base models have it).
func chatMLModel(t *testing.T) *hfmodel.Description {
	t.Helper()
	raw, err := os.ReadFile(fixtures.Path(t, "tokenizers", "gpt2", "tokenizer.json"))
	require.NoError(t, err)
	var tj map[string]any
	require.NoError(t, json.Unmarshal(raw, &tj))
	added := tj["added_tokens"].([]any)
	for i, tok := range []string{"<|im_start|>", "<|im_end|>"} {
		added = append(added, map[string]any{"id": 50257 + i, "content": tok, "single_word": false, "lstrip": false,
			"rstrip": false, "normalized": false, "special": true})
	}
	tj["added_tokens"] = added
	tokJSON, err := json.Marshal(tj)
	require.NoError(t, err)
	cfg, err := json.Marshal(map[string]any{"chat_template": chatML, "eos_token": "<|endoftext|>"})
	require.NoError(t, err)
	d, err := hfmodel.ParseDescription("chatml", map[string][]byte{"tokenizer.json": tokJSON, "tokenizer_config.json": cfg})
	require.NoError(t, err)
	return d
}

// TestResponsesEndAsTheTemplateEndsATurn: with a template, a response is
// what rendering the conversation with the assistant's turn adds to the
// prompt's rendering (transformers' apply_chat_template, as TRL's SFT
// trains on it): the reply, <|im_end|> and the newline after it, not the
// reply and generation_config's <|endoftext|>. Generation stops at either;
// a rollout that stopped at <|im_end|> is scored with its newline.
func TestResponsesEndAsTheTemplateEndsATurn(t *testing.T) {
	d := chatMLModel(t)
	c, err := NewCodec(d, []int32{50256})
	require.NoError(t, err)
	tok := d.Tokenizer
	imEnd, nl := int32(50258), tok.Encode("\n", false)
	require.Len(t, nl, 1)

	p, err := c.Prompt("hot?")
	require.NoError(t, err)
	assert.Equal(t, tok.Encode("<|im_start|>user\nhot?<|im_end|>\n<|im_start|>assistant\n", false), p)
	r, err := c.Response("hot?", "cold")
	require.NoError(t, err)
	want := append(append(tok.Encode("cold", false), imEnd), nl...)
	assert.Equal(t, want, r)
	whole := tok.Encode("<|im_start|>user\nhot?<|im_end|>\n<|im_start|>assistant\ncold<|im_end|>\n", false)
	assert.Equal(t, whole, append(p, r...), "prompt and response are the rendered conversation's ids")

	assert.Equal(t, []int32{50256, imEnd}, c.Stop(), "the EOS ids and the template's end of turn")
	end, trailer := c.Trailer()
	assert.Equal(t, imEnd, end)
	assert.Equal(t, nl, trailer)
	assert.Equal(t, 0, c.Keep(p), "no BOS: a cut prompt keeps nothing of its start")
	seq, wholeFit, cut := c.Fit(p, r, 8)
	assert.Equal(t, append(p[len(p)+len(r)-8:], r...)[:8], seq)
	assert.True(t, wholeFit)
	assert.True(t, cut)
}

// TestATemplateWithoutATurnEndGetsEOS: a template that ends an assistant
// turn without any special token gets the first EOS id after the turn, so
// every trained response still ends where generation stops.
func TestATemplateWithoutATurnEndGetsEOS(t *testing.T) {
	d := chatMLModel(t)
	cfg, err := json.Marshal(map[string]any{"chat_template": "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"})
	require.NoError(t, err)
	d.Files["tokenizer_config.json"] = cfg
	d, err = hfmodel.ParseDescription("plain-turns", d.Files)
	require.NoError(t, err)
	c, err := NewCodec(d, []int32{50256})
	require.NoError(t, err)
	r, err := c.Response("hot?", "cold")
	require.NoError(t, err)
	assert.Equal(t, int32(50256), r[len(r)-1])
	assert.Equal(t, []int32{50256}, c.Stop())
	end, trailer := c.Trailer()
	assert.Equal(t, int32(-1), end)
	assert.Empty(t, trailer)
}

// encode is m's ids of text.
func encode(t *testing.T, m *Model, text string, addSpecial bool) []int32 {
	t.Helper()
	ids, err := m.Tokenizer.EncodeChecked(text, addSpecial)
	require.NoError(t, err)
	return ids
}
