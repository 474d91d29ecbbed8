package chattemplate

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
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

// TestTemplateFiles: a model's chat template is chat_template.jinja where
// it has one, replacing tokenizer_config.json's chat_template (a string or
// named templates), as transformers' tokenizer reads it
// (tokenization_utils_base.py: PreTrainedTokenizerBase._from_pretrained);
// chat_template.json is a processor's, which the tokenizer never reads
// (processing_utils.py: ProcessorMixin.get_processor_dict), so a model
// whose only template it is is refused rather than rendered plain.
func TestTemplateFiles(t *testing.T) {
	const (
		inline    = `{"chat_template": "inline {{ bos_token }}", "bos_token": "<s>"}`
		named     = `{"chat_template": [{"name": "default", "template": "inline"}, {"name": "tool_use", "template": "tools"}], "bos_token": "<s>"}`
		sidecar   = "sidecar {{ bos_token }}{{ messages[0].content }}\n"
		processor = `{"chat_template": "processor"}`
	)
	dir := filepath.Join("models", "m")
	for _, c := range []struct {
		name   string
		files  map[string]string
		want   string // the default template's render of "hi"; "" for none
		names  []string
		source string // the file the template comes from
		err    string
	}{
		{name: "only the sidecar", files: map[string]string{TemplateFile: sidecar}, want: "sidecar hi", names: []string{"default"}, source: TemplateFile},
		{name: "the sidecar beats the inline template", files: map[string]string{ConfigFile: inline, TemplateFile: sidecar}, want: "sidecar <s>hi", names: []string{"default"}, source: TemplateFile},
		{name: "the sidecar replaces named templates", files: map[string]string{ConfigFile: named, TemplateFile: sidecar}, want: "sidecar <s>hi", names: []string{"default"}, source: TemplateFile},
		{name: "inline only", files: map[string]string{ConfigFile: inline}, want: "inline <s>", names: []string{"default"}, source: ConfigFile},
		{name: "a processor's template is not the tokenizer's", files: map[string]string{ConfigFile: inline, ProcessorFile: processor}, want: "inline <s>", names: []string{"default"}, source: ConfigFile},
		{name: "only a processor's template", files: map[string]string{ProcessorFile: processor}, err: filepath.Join(dir, ProcessorFile) + " is a processor's chat template, which transformers' tokenizers do not read"},
		{name: "no template", files: map[string]string{ConfigFile: `{"eos_token": "</s>"}`}},
		{name: "a broken sidecar names its file", files: map[string]string{ConfigFile: inline, TemplateFile: "{% if %}"}, err: filepath.Join(dir, TemplateFile) + `: chat template "default"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			files := map[string][]byte{}
			for k, v := range c.files {
				files[k] = []byte(v)
			}
			cfg, err := ParseFiles(dir, files)
			require.NoError(t, err)
			require.NotNil(t, cfg)
			tmpl, err := cfg.Default()
			if c.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), c.err)
				return
			}
			require.NoError(t, err)
			if c.want == "" {
				assert.Nil(t, tmpl, "the plain format")
				return
			}
			assert.Equal(t, c.names, cfg.Names())
			assert.Equal(t, filepath.Join(dir, c.source), cfg.TemplatePath)
			got, err := tmpl.Render([]Message{{"user", "hi"}}, false)
			require.NoError(t, err)
			assert.Equal(t, c.want, got, "the sidecar's final newline is dropped, as jinja2 drops it")
		})
	}
	none, err := ParseFiles(dir, map[string][]byte{"tokenizer.json": []byte("{}")})
	require.NoError(t, err)
	assert.Nil(t, none)
	_, err = ParseFiles(dir, map[string][]byte{ConfigFile: []byte(`{"chat_template": 3}`)})
	require.Error(t, err)
	assert.Contains(t, err.Error(), filepath.Join(dir, ConfigFile))
}

// render compiles and renders a template with one user message "hi" and
// bos_token <s>; an error comes back as "ERROR ...".
func render(t *testing.T, src string, vars map[string]any) string {
	t.Helper()
	tmpl, err := Compile(src)
	if err == nil {
		tmpl.BOS, tmpl.Vars = "<s>", vars
		var out string
		if out, err = tmpl.Render([]Message{{"user", "hi"}}, false); err == nil {
			return out
		}
	}
	return "ERROR " + err.Error()
}

// The expected renders below are jinja2 3.1.6's in transformers'
// environment (transformers/utils/chat_template_utils.py:
// _compile_jinja_template: ImmutableSandboxedEnvironment(trim_blocks=True,
// lstrip_blocks=True) with its tojson), rendered with messages, tools=None,
// documents=None and bos_token as apply_chat_template passes them.

// TestWhitespaceControlAsJinja2: whitespace control follows jinja2's lexer
// (jinja2/lexer.py: Lexer.tokeniter): + turns lstrip_blocks (on {%+, {#+)
// or trim_blocks (on +%}, +#}) off for one tag, a tag trims only the text
// next to it, lstrip strips any Unicode whitespace, newlines are \n and the
// last one is dropped (keep_trailing_newline=False); raw blocks and
// string escapes are jinja2's too.
func TestWhitespaceControlAsJinja2(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{"a\n  {%+ if true %}x{% endif %}\nb", "a\n  xb"},
		{"a\n  {% if true +%}\nx{% endif %}\nb", "a\n\nxb"},
		{"a\n\t{#+ c #}x\n  {# c +#}\ny", "a\n\tx\n\ny"},
		{"a  {{ 'X' }}{%- if true %}Y{% endif %}", "a  XY"},
		{"a\n  {{ 'X' }}{% if true %}Y{% endif %}", "a\n  XY"},
		{"{% if true %}{{ 'X' }}\nfoo{% endif %}", "X\nfoo"},
		{"{% if true -%}{{ 'X' }}  foo{% endif %}", "X  foo"},
		{"{% if true %}{% if true %}\n\nX{% endif %}{% endif %}", "\nX"},
		{"a\r\nb\rc\n\n", "a\nb\nc\n"},
		{"  {% if true %}x{% endif %}", "x"},
		{"a\n \u00a0\u2003{% if true %}x{% endif %}", "a\nx"},
		{"x {# c #}\n  {%- raw %}{{ y }}{% endraw %}\ny\n", "x {{ y }}y"},
		{"{{ {'a': {'b': 1}} }}", "{'a': {'b': 1}}"},
		{"{{ '\\u00e9\\x41\\101\\t|\\q' }}", "éAA\t|\\q"},
	} {
		assert.Equal(t, c.want, render(t, c.src, nil), "%q", c.src)
	}
	// Errors name the template's line, comments and trimmed lines counted.
	for _, c := range []struct{ src, err string }{
		{"line1\n{# two\nlines #}\n  {%- if true %}\n\n{{ x + }}{% endif %}", "line 6"},
		{"{% if true %}\n{# a", "line 2: missing end of comment tag"},
		{"a\n{{ 'b }}", "line 2: unexpected char '\\'': the string is not closed"},
		{"a\n{{ b ) }}", "line 2: unexpected ')'"},
		{"a\n\n{{ '\\x4' }}", `line 3: string '\x4': truncated \xXX escape`},
		{"a\n\n{{ b", "line 3: the tag is not closed"},
	} {
		_, err := Compile(c.src)
		require.Error(t, err, "%q", c.src)
		assert.Contains(t, err.Error(), c.err, "%q", c.src)
	}
}

// TestVariablesAsApplyChatTemplate: tools and documents are defined and
// none, as apply_chat_template passes them (tokenization_utils_base.py:
// PreTrainedTokenizerBase.apply_chat_template), unless Vars give them;
// Vars may replace the special tokens; messages keep role before content.
func TestVariablesAsApplyChatTemplate(t *testing.T) {
	src := "{% if tools is defined %}D{% endif %}{% if tools is none %}N{% endif %}{% if documents is none %}d{% endif %}"
	assert.Equal(t, "DNd", render(t, src, nil))
	assert.Equal(t, "Dd", render(t, src, map[string]any{"tools": []any{map[string]any{"type": "function"}}}))
	assert.Equal(t, "<b>", render(t, "{{ bos_token }}", map[string]any{"bos_token": "<b>"}))
	assert.Equal(t, "role=user content=hi ", render(t, "{% for k, v in messages[0].items() %}{{ k }}={{ v }} {% endfor %}", nil))
}

// TestToJSONAsTransformers: tojson is transformers' json.dumps(x,
// ensure_ascii=False, indent=None, separators=None, sort_keys=False): no
// HTML escaping, keys in order, Python's floats, and its arguments.
func TestToJSONAsTransformers(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{"{{ {\"b\": 1, \"a\": \"<&>é\u2028\", \"c\": [1.0, 2.5, 1234567.0, 0.0001, 12345678901234567.0, -0.0, none, true]} | tojson }}", "{\"b\": 1, \"a\": \"<&>é\u2028\", \"c\": [1.0, 2.5, 1234567.0, 0.0001, 1.2345678901234568e+16, -0.0, null, true]}"},
		{"{{ {\"b\": 1, \"a\": [2, {}], \"c\": {\"x\": []}} | tojson(indent=2) }}", "{\n  \"b\": 1,\n  \"a\": [\n    2,\n    {}\n  ],\n  \"c\": {\n    \"x\": []\n  }\n}"},
		{"{{ {\"b\": 1, \"a\": [2]} | tojson(indent=2, separators=(';', '=')) }}", "{\n  \"b\"=1;\n  \"a\"=[\n    2\n  ]\n}"},
		{"{{ {\"b\": 1, \"a\": 2} | tojson(sort_keys=true) }}", "{\"a\": 2, \"b\": 1}"},
		{"{{ {\"b\": 1, \"a\": \"é\U0001f600\x7f\"} | tojson(true) }}", "{\"b\": 1, \"a\": \"\\u00e9\\ud83d\\ude00\\u007f\"}"},
		{"{{ [1, 'a'] | tojson(separators=(',', ':')) }}", "[1,\"a\"]"},
		{"{{ messages | tojson }}", "[{\"role\": \"user\", \"content\": \"hi\"}]"},
		{"{% set out = messages[0]|tojson %}{{ out[:-1] }}", "{\"role\": \"user\", \"content\": \"hi\""},
	} {
		assert.Equal(t, c.want, render(t, c.src, nil), "%q", c.src)
	}
	for src, err := range map[string]string{
		"{{ x | tojson }}":                           "Object of type Undefined is not JSON serializable",
		"{{ 1 | tojson(false, ensure_ascii=true) }}": "given twice",
		"{{ 1 | tojson(width=2) }}":                  `unexpected argument "width"`,
	} {
		assert.Contains(t, render(t, src, nil), err, src)
	}
}

// TestFormatAsJinja2: the format filter is jinja2's (jinja2/filters.py:
// do_format), Python's printf-style formatting.
func TestFormatAsJinja2(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{"{{ \"%s-%d %05.1f %-4s| %x %#o %r %5.2s|%+d %e %g %G %c %%\" | format(\"x\", 3, 2.25, \"ab\", 255, 8, \"it's\", \"abc\", 7, 1234.5, 0.00001234, 100000000000000000000.0, 65) }}", "x-3 002.2 ab  | ff 0o10 \"it's\"    ab|+7 1.234500e+03 1.234e-05 1E+20 A %"},
		{"{{ \"%(a)s %(b)d\" | format(a=\"x\", b=3) }}", "x 3"},
		{"{{ \"%s\" | format([1, 'a', none, true, {'k': 1.5}]) }}", "[1, 'a', None, True, {'k': 1.5}]"},
		{"{{ \"%s %s\" | format(\"x\") }}", "not enough arguments for format string"},
		{"{{ \"%s\" | format(\"x\", \"y\") }}", "not all arguments converted during string formatting"},
		{"{{ \"%d\" | format(\"x\") }}", "%d format: a real number is required, not str"},
	} {
		if got := render(t, c.src, nil); strings.HasPrefix(got, "ERROR") {
			assert.Contains(t, got, c.want, "%q", c.src)
		} else {
			assert.Equal(t, c.want, got, "%q", c.src)
		}
	}
}

// FuzzCompile feeds arbitrary templates to Compile and Render: a template
// or an error, never a panic.
func FuzzCompile(f *testing.F) {
	for _, seed := range []string{"a\n  {%+ if true %}x{% endif %}\nb", "{%- raw -%} {{ x }} {%+ endraw +%}", "{{ {'a': [1, (2)]} | tojson(indent=2) }}", "{# x -#}\r\n{{ '\\u00e9\\x4' }}", "{{ '%s %(a)d' | format(1) }}", "{% if x %}{{ y", "{"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, src string) {
		tmpl, err := Compile(src)
		if err == nil {
			_, _ = tmpl.Render([]Message{{"user", "hi"}}, true)
		}
	})
}
