// Package chattemplate renders Hugging Face chat templates: the Jinja
// template that turns a conversation into the text the model was trained
// on, in a model's chat_template.jinja or its tokenizer_config.json. It
// reads the template (a file, a string, or a list of named templates) and
// the BOS and EOS tokens (a string or an AddedToken object), and renders
// with messages, tools and documents (none), bos_token, eos_token,
// add_generation_prompt, raise_exception and strftime_now, as
// transformers' apply_chat_template does. Rendering uses
// github.com/ardanlabs/jinja, a Jinja2 engine in Go made for these
// templates, with jinja2's whitespace control and transformers' tojson
// and jinja2's format filters (lex.go, filters.go). A template is code
// from the model's files, so every render is bounded (Limits): the engine
// has no hooks, so the template is rewritten before it is compiled to pass
// what can grow through counting guards (rewrite.go, guard.go).
package chattemplate

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ardanlabs/jinja"

	"github.com/alignflow/alignflow/model/tokenizer"
)

// ConfigFile is the tokenizer's configuration: BOS and EOS, and the chat
// template of a model without TemplateFile.
const ConfigFile = "tokenizer_config.json"

// TemplateFile is where transformers (4.47 and later) keeps a model's chat
// template, and save_pretrained writes it. When a model has it, it is the
// model's template: transformers reads it as the "default" template and
// drops tokenizer_config.json's chat_template, string or named list
// (tokenization_utils_base.py: PreTrainedTokenizerBase._from_pretrained,
// "If independent chat template file(s) exist, they take priority"),
// without a warning.
const TemplateFile = "chat_template.jinja"

// ProcessorFile is the chat template of a processor (a multimodal model's
// AutoProcessor), {"chat_template": ...}. transformers' tokenizers never
// read it (processing_utils.py: ProcessorMixin.get_processor_dict reads it,
// tokenization_utils_base.py reads only TemplateFile and ConfigFile), so
// a text model's template is never this one; it is kept only to be
// exported with the model.
const ProcessorFile = "chat_template.json"

// DefaultName is the template used when none is named.
const DefaultName = "default"

// Message is one turn of a conversation.
type Message struct {
	Role    string `json:"role"` // system, user, assistant
	Content string `json:"content"`
}

// Config is what a model's files say about formatting chats.
type Config struct {
	// Path is the tokenizer_config.json it was read from ("" for none).
	Path string
	// Templates are the chat templates by name; a single template is
	// under DefaultName. Empty without any.
	Templates map[string]string
	// TemplatePath is the file Templates come from: a TemplateFile, or
	// Path.
	TemplatePath string
	// ProcessorPath is the model's ProcessorFile, "" for none.
	ProcessorPath string
	// BOS and EOS are the tokens' text ("" where the file has none).
	BOS, EOS string
}

// ParseFiles reads the chat template files among a model's files (by
// name; dir names where they came from), as transformers' tokenizer does:
// tokenizer_config.json's BOS, EOS and chat_template, replaced by
// chat_template.jinja where the model has it. It returns nil when the
// model has none of ConfigFile, TemplateFile and ProcessorFile.
func ParseFiles(dir string, files map[string][]byte) (*Config, error) {
	c := &Config{Templates: map[string]string{}}
	if b, ok := files[ConfigFile]; ok {
		path := filepath.Join(dir, ConfigFile)
		var err error
		if c, err = ParseConfig(b); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		c.Path, c.TemplatePath = path, path
	}
	if b, ok := files[TemplateFile]; ok {
		c.Templates = map[string]string{DefaultName: string(b)}
		c.TemplatePath = filepath.Join(dir, TemplateFile)
	}
	if _, ok := files[ProcessorFile]; ok {
		c.ProcessorPath = filepath.Join(dir, ProcessorFile)
	}
	if c.Path == "" && c.TemplatePath == "" && c.ProcessorPath == "" {
		return nil, nil
	}
	return c, nil
}

// ParseConfig reads the contents of a tokenizer_config.json.
func ParseConfig(data []byte) (*Config, error) {
	var raw struct {
		ChatTemplate json.RawMessage `json:"chat_template"`
		BOS          json.RawMessage `json:"bos_token"`
		EOS          json.RawMessage `json:"eos_token"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("not a tokenizer_config.json: %w", err)
	}
	c := &Config{Templates: map[string]string{}}
	var err error
	if c.BOS, err = tokenText(raw.BOS, "bos_token"); err != nil {
		return nil, err
	}
	if c.EOS, err = tokenText(raw.EOS, "eos_token"); err != nil {
		return nil, err
	}
	if isNull(raw.ChatTemplate) {
		return c, nil
	}
	var one string
	if err := json.Unmarshal(raw.ChatTemplate, &one); err == nil {
		c.Templates[DefaultName] = one
		return c, nil
	}
	var named []struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}
	if err := json.Unmarshal(raw.ChatTemplate, &named); err != nil {
		return nil, fmt.Errorf("chat_template: neither a template string nor a list of {name, template}")
	}
	for i, n := range named {
		if n.Name == "" {
			return nil, fmt.Errorf("chat_template[%d]: no name", i)
		}
		c.Templates[n.Name] = n.Template
	}
	return c, nil
}

func isNull(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null"
}

// tokenText reads a token written as a string or as an AddedToken object.
func tokenText(raw json.RawMessage, field string) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var obj struct {
		Content *string `json:"content"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil || obj.Content == nil {
		return "", fmt.Errorf("%s: neither a string nor an AddedToken with content", field)
	}
	return *obj.Content, nil
}

// Names lists the templates, sorted.
func (c *Config) Names() []string {
	names := make([]string, 0, len(c.Templates))
	for n := range c.Templates {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Default compiles the template a chat is rendered with: DefaultName's;
// nil when the model has no template (alignflow then uses the plain
// format). A model whose only template is a processor's chat_template.json
// is refused: transformers' tokenizer would not render with it, and the
// plain format is surely not the model's.
func (c *Config) Default() (*Template, error) {
	if len(c.Templates) > 0 {
		return c.Template("")
	}
	if c.ProcessorPath != "" {
		return nil, fmt.Errorf("%s is a processor's chat template, which transformers' tokenizers do not read, and the model has no other (neither %s nor a chat_template in %s): save the template as %s", c.ProcessorPath, TemplateFile, ConfigFile, TemplateFile)
	}
	return nil, nil
}

// Template compiles the named template ("" for DefaultName).
func (c *Config) Template(name string) (*Template, error) {
	if name == "" {
		name = DefaultName
	}
	src, ok := c.Templates[name]
	if !ok {
		if len(c.Templates) == 0 {
			return nil, fmt.Errorf("%s has no chat_template", c.where())
		}
		return nil, fmt.Errorf("%s: no chat template %q (templates: %s)", c.where(), name, strings.Join(c.Names(), ", "))
	}
	t, err := Compile(src)
	if err != nil {
		return nil, fmt.Errorf("%s: chat template %q: %w", c.where(), name, err)
	}
	t.BOS, t.EOS, t.Path = c.BOS, c.EOS, c.where()
	return t, nil
}

func (c *Config) where() string {
	if c.TemplatePath != "" {
		return c.TemplatePath
	}
	return ConfigFile
}

// Template is a compiled chat template.
type Template struct {
	tmpl *jinja.Template
	// BOS and EOS are given to the template as bos_token and eos_token.
	BOS, EOS string
	// Now is the clock strftime_now reads (time.Now when nil).
	Now func() time.Time
	// Vars are further template variables (such as enable_thinking).
	Vars map[string]any
	// Limits bound each render (DefaultLimits where zero).
	Limits Limits
	// Path is where the template came from, for errors ("" for none).
	Path string
}

// Compile compiles a chat template's source. A source longer than any
// real template (1 MiB), or one that nests deeper than the engine can
// parse and render without overflowing its stack, is refused.
func Compile(source string) (*Template, error) {
	if len(source) > maxSource {
		return nil, limitError("a template of %d bytes is more than %d", len(source), maxSource)
	}
	src, err := prepare(source, filterVars)
	if err != nil {
		return nil, err
	}
	t, err := jinja.Compile(src)
	if err != nil {
		return nil, err
	}
	return &Template{tmpl: t}, nil
}

// Render renders messages; addGenerationPrompt asks the template to end
// with the start of the assistant's turn. A template's raise_exception
// comes back as an error with its message.
//
// The variables are apply_chat_template's (tokenization_utils_base.py:
// PreTrainedTokenizerBase.apply_chat_template, which passes tools and
// documents, None by default, to the template): tools and documents are
// none, so "tools is defined" holds and "tools is none" decides; Vars come
// after the special tokens and may replace them, as apply_chat_template's
// kwargs do. Each message is {"role", "content"} in that order (tojson and
// items() keep it).
//
// A render is bounded by t.Limits (guard.go says how): what it writes, the
// size of every value it makes, range(), loop iterations and macro calls,
// how deeply macros call each other, and its time; a bound passed is an
// error wrapping ErrLimit, as is a panic in the engine.
func (t *Template) Render(messages []Message, addGenerationPrompt bool) (string, error) {
	msgs := make([]jinja.Value, len(messages))
	for i, m := range messages {
		msgs[i] = jinja.NewDict()
		msgs[i].AsDict().Set("role", jinja.NewString(m.Role))
		msgs[i].AsDict().Set("content", jinja.NewString(m.Content))
	}
	now := t.Now
	if now == nil {
		now = time.Now
	}
	values := map[string]jinja.Value{"tools": jinja.None(), "documents": jinja.None()}
	// A token the model does not have is left undefined, as
	// apply_chat_template leaves it (it renders as "", not "None").
	if t.BOS != "" {
		values["bos_token"] = jinja.NewString(t.BOS)
	}
	if t.EOS != "" {
		values["eos_token"] = jinja.NewString(t.EOS)
	}
	for k, v := range t.Vars {
		values[k] = jinja.FromGoValue(v)
	}
	values["messages"], values["add_generation_prompt"] = jinja.NewList(msgs), jinja.NewBool(addGenerationPrompt)
	values["strftime_now"] = jinja.NewCallable("strftime_now", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
		if len(args) != 1 || !args[0].IsString() {
			return jinja.Undefined(), fmt.Errorf("strftime_now takes one format string")
		}
		return jinja.NewString(strftime(now(), args[0].AsString())), nil
	})
	return t.render(values)
}

// render renders with values and the render's filters and guards, within
// t.Limits.
func (t *Template) render(values map[string]jinja.Value) (out string, err error) {
	lim := t.Limits
	if lim == (Limits{}) {
		lim = DefaultLimits
	}
	r := &run{lim: lim, deadline: time.Now().Add(lim.Time)}
	defer func() {
		if p := recover(); p != nil {
			out, err = "", t.failed(limitError("the engine failed: %v", p))
		}
	}()
	for name, f := range r.filters() {
		values[filterVars[name]] = f
	}
	for name, g := range r.guards() {
		values[name] = g
	}
	if out, err = t.tmpl.RenderValues(values); err != nil {
		return "", t.failed(err)
	}
	return out, nil
}

// failed is a render's error, naming the template.
func (t *Template) failed(err error) error {
	if t.Path != "" {
		return fmt.Errorf("render chat template %s: %w", t.Path, err)
	}
	return fmt.Errorf("render chat template: %w", err)
}

// MessagesOf turns a HelpSteer2 prompt into messages: its first turn is the
// user's, and each later turn (after <extra_id_1>User or
// <extra_id_1>Assistant) is the user's or the assistant's.
func MessagesOf(prompt string) ([]Message, error) {
	turns, err := tokenizer.ParseTurns(prompt)
	if err != nil {
		return nil, err
	}
	out := make([]Message, len(turns))
	for i, t := range turns {
		role := "user"
		if t.Role == tokenizer.RoleAssistant {
			role = "assistant"
		}
		out[i] = Message{Role: role, Content: t.Text}
	}
	return out, nil
}

// strftime formats t with Python's strftime directives that chat templates
// use (%d %m %Y %y %B %b %A %a %H %M %S %j %p %%); others stay as written.
func strftime(t time.Time, format string) string {
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		if format[i] != '%' || i+1 == len(format) {
			b.WriteByte(format[i])
			continue
		}
		i++
		switch format[i] {
		case 'd':
			b.WriteString(t.Format("02"))
		case 'm':
			b.WriteString(t.Format("01"))
		case 'Y':
			b.WriteString(t.Format("2006"))
		case 'y':
			b.WriteString(t.Format("06"))
		case 'B':
			b.WriteString(t.Format("January"))
		case 'b':
			b.WriteString(t.Format("Jan"))
		case 'A':
			b.WriteString(t.Format("Monday"))
		case 'a':
			b.WriteString(t.Format("Mon"))
		case 'H':
			b.WriteString(t.Format("15"))
		case 'M':
			b.WriteString(t.Format("04"))
		case 'S':
			b.WriteString(t.Format("05"))
		case 'j':
			fmt.Fprintf(&b, "%03d", t.YearDay())
		case 'p':
			b.WriteString(t.Format("PM"))
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(format[i])
		}
	}
	return b.String()
}

// Plain renders messages in the plain format of a model without a chat
// template (the bundled byte-level model's): the first user turn, then one
// line per later turn, "User: text" or "Assistant: text", and with
// addGenerationPrompt the newline that starts the assistant's response.
// A system message is a first line of its own.
func Plain(messages []Message, addGenerationPrompt bool) string {
	var b strings.Builder
	for i, m := range messages {
		if i > 0 {
			b.WriteString("\n")
		}
		switch {
		case i == 0 && m.Role == "user":
			b.WriteString(m.Content)
		case m.Role == "assistant":
			b.WriteString(tokenizer.RoleAssistant + ": " + m.Content)
		case m.Role == "system":
			b.WriteString("System: " + m.Content)
		default:
			b.WriteString(tokenizer.RoleUser + ": " + m.Content)
		}
	}
	if addGenerationPrompt {
		b.WriteString(tokenizer.Separator)
	}
	return b.String()
}
