package chattemplate

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/internal/fixtures"
	"github.com/alignflow/alignflow/model/tokenizer"
)

// TestRealTemplatesRenderAsHuggingFace renders the five real chat
// templates of the fixtures (Zephyr, Qwen1.5, Mistral-Nemo, DeepSeek-R1,
// SmolLM3) and gets exactly the text Hugging Face's renders. SmolLM3's
// template prints today's date; the expected text was made on 10 July 2025.
func TestRealTemplatesRenderAsHuggingFace(t *testing.T) {
	f, err := os.Open(fixtures.Path(t, "chat_templates.jsonl"))
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	n := 0
	for sc.Scan() {
		var c struct {
			Name                string         `json:"name"`
			ChatTemplate        string         `json:"chat_template"`
			Messages            []Message      `json:"messages"`
			BOS                 *string        `json:"bos_token"`
			EOS                 *string        `json:"eos_token"`
			AddGenerationPrompt bool           `json:"add_generation_prompt"`
			Other               map[string]any `json:"other"`
			Target              string         `json:"target"`
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &c))
		tmpl, err := Compile(c.ChatTemplate)
		require.NoError(t, err, c.Name)
		if c.BOS != nil {
			tmpl.BOS = *c.BOS
		}
		if c.EOS != nil {
			tmpl.EOS = *c.EOS
		}
		tmpl.Vars = c.Other
		tmpl.Now = func() time.Time { return time.Date(2025, time.July, 10, 12, 0, 0, 0, time.UTC) }
		got, err := tmpl.Render(c.Messages, c.AddGenerationPrompt)
		require.NoError(t, err, c.Name)
		assert.Equal(t, c.Target, got, c.Name)
		n++
	}
	require.NoError(t, sc.Err())
	assert.Equal(t, 5, n)
}

func TestConfigForms(t *testing.T) {
	c, err := ParseConfig([]byte(`{"chat_template": "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}",
		"bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": false}, "eos_token": "</s>"}`))
	require.NoError(t, err)
	assert.Equal(t, "<s>", c.BOS)
	assert.Equal(t, "</s>", c.EOS)
	tmpl, err := c.Template("")
	require.NoError(t, err)
	got, err := tmpl.Render([]Message{{Role: "user", Content: "hi"}}, true)
	require.NoError(t, err)
	assert.Equal(t, "<s>[user] hi[assistant]", got)

	named, err := ParseConfig([]byte(`{"chat_template": [{"name": "default", "template": "d"}, {"name": "tool_use", "template": "t{{ raise_exception('no tools here') }}"}]}`))
	require.NoError(t, err)
	assert.Equal(t, []string{"default", "tool_use"}, named.Names())
	tool, err := named.Template("tool_use")
	require.NoError(t, err)
	_, err = tool.Render(nil, false)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no tools here", "raise_exception's message reaches the caller")
	_, err = named.Template("rag")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `no chat template "rag" (templates: default, tool_use)`)

	none, err := ParseConfig([]byte(`{"bos_token": null}`))
	require.NoError(t, err)
	_, err = none.Template("")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "has no chat_template")

	for _, bad := range []string{`{"chat_template": 3}`, `{"bos_token": 3}`, `{"chat_template": [{"template": "x"}]}`, `[`} {
		_, err := ParseConfig([]byte(bad))
		assert.Error(t, err, bad)
	}
	_, err = LoadConfig(t.TempDir())
	assert.ErrorIs(t, err, ErrNoConfig)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, ConfigFile), []byte(`{"chat_template": "{% if %}"}`), 0o644))
	bad, err := LoadConfig(dir)
	require.NoError(t, err)
	_, err = bad.Template("")
	require.Error(t, err)
	assert.Contains(t, err.Error(), filepath.Join(dir, ConfigFile))
}

func TestMessagesOfHelpSteerPrompts(t *testing.T) {
	got, err := MessagesOf("hi<extra_id_1>Assistant\nhello<extra_id_1>User\nwhy?")
	require.NoError(t, err)
	assert.Equal(t, []Message{{"user", "hi"}, {"assistant", "hello"}, {"user", "why?"}}, got)
	got, err = MessagesOf("just one")
	require.NoError(t, err)
	assert.Equal(t, []Message{{"user", "just one"}}, got)
	_, err = MessagesOf("hi<extra_id_1>System\nx")
	assert.Error(t, err)
}

func TestStrftime(t *testing.T) {
	at := time.Date(2025, time.July, 4, 9, 5, 7, 0, time.UTC)
	assert.Equal(t, "04 July 2025, Fri 09:05:07 AM (185) %q", strftime(at, "%d %B %Y, %a %H:%M:%S %p (%j) %%q"))
}

// TestPlainIsTheBundledFormat: a HelpSteer2 prompt rendered in the plain
// format, with the generation prompt, is exactly the text the bundled
// model reads for it.
func TestPlainIsTheBundledFormat(t *testing.T) {
	for _, p := range []string{"opposite of hot?", "hi<extra_id_1>Assistant\nhello<extra_id_1>User\nwhy?"} {
		msgs, err := MessagesOf(p)
		require.NoError(t, err)
		assert.Equal(t, tokenizer.EncodePrompt(p)[1:], tokenizer.Encode(Plain(msgs, true)), "%q", p)
	}
	assert.Equal(t, "System: be brief\nUser: hi", Plain([]Message{{"system", "be brief"}, {"user", "hi"}}, false))
}
