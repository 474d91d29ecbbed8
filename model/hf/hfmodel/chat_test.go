package hfmodel

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/model/hf/chattemplate"
	"github.com/alignflow/alignflow/model/hf/safetensors"
)

// TestChatTemplateFilesAreReadAndExported: a directory's
// chat_template.jinja is its chat template, over tokenizer_config.json's
// (as transformers reads it: tokenization_utils_base.py:
// PreTrainedTokenizerBase._from_pretrained), and it and chat_template.json
// are description files: read with the others, and written back byte for
// byte by an export, whose directory then renders the same.
func TestChatTemplateFilesAreReadAndExported(t *testing.T) {
	copyWeights := func(src string) []byte { b, _ := os.ReadFile(src); return b }
	const (
		inline    = `{"chat_template": "stale {{ messages[0].content }}", "bos_token": "<s>", "eos_token": "</s>"}`
		sidecar   = "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{% endfor %}\n"
		processor = `{"chat_template": "a processor's"}`
	)
	msgs := []chattemplate.Message{{Role: "user", Content: "hi"}}
	for _, c := range []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"only the sidecar", map[string]string{"chat_template.jinja": sidecar}, "<s>[user] hi"},
		{"the sidecar over the inline template", map[string]string{"chat_template.jinja": sidecar, "tokenizer_config.json": inline, "chat_template.json": processor}, "<s>[user] hi"},
		{"the inline template", map[string]string{"tokenizer_config.json": inline, "chat_template.json": processor}, "stale hi"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := stories(t, copyWeights)
			for name, text := range c.files {
				require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644))
			}
			m, err := Load(dir)
			require.NoError(t, err)
			for name, text := range c.files {
				assert.Equal(t, text, string(m.Files[name]), "%s is a description file", name)
			}
			tmpl, err := m.ChatTemplate()
			require.NoError(t, err)
			require.NotNil(t, tmpl, "the model has a chat template, not the plain format")
			got, err := tmpl.Render(msgs, false)
			require.NoError(t, err)
			assert.Equal(t, c.want, got)

			out := filepath.Join(t.TempDir(), "export")
			require.NoError(t, Export(out, m.Files, m.Config.Transformer, m.Params, safetensors.F32))
			for name, text := range c.files {
				b, err := os.ReadFile(filepath.Join(out, name))
				require.NoError(t, err, "the export writes %s", name)
				assert.Equal(t, text, string(b))
			}
			exported, err := ReadDescription(out)
			require.NoError(t, err)
			tmpl, err = exported.ChatTemplate()
			require.NoError(t, err)
			require.NotNil(t, tmpl)
			again, err := tmpl.Render(msgs, false)
			require.NoError(t, err)
			assert.Equal(t, got, again, "the exported directory renders as the source")
		})
	}
}
