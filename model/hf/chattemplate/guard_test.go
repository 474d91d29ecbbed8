package chattemplate

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ardanlabs/jinja"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPoisonTemplatesFailWithinBounds: chat templates that would kill the
// worker that renders them (fatal out-of-memory or stack overflow, which no
// recover stops, or a panic in the engine) fail their render, or their
// compilation, with an error wrapping ErrLimit that names the template.
// Each input would take far more memory or time than its bound allows.
func TestPoisonTemplatesFailWithinBounds(t *testing.T) {
	cases := []struct {
		name, src, want string
	}{
		{"range of three billion", `{% for i in range(3000000000) %}x{% endfor %}`, "range of 3000000000 items, more than 100000"},
		{"a string times three billion", `{{ 'x' * 3000000000 }}`, "a string of 1 bytes times 3000000000 is more than"},
		{"a recursive macro", `{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}`, "macros call each other more than 64 deep"},
		{"macros calling each other", `{% macro a() %}{{ b() }}{% endmacro %}{% macro b() %}{{ a() }}{% endmacro %}{{ a() }}`, "macros call each other more than 64 deep"},
		{"doubling in a loop", `{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}`, "a value of more than"},
		{"doubling with +", `{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}`, "a value of more than"},
		{"nested loops", `{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}`, "more than 1000000 loop iterations"},
		{"output in a loop", `{% set s = 'x' * 60000000 %}{% for i in range(100) %}{{ s }}{% endfor %}`, "output of more than"},
		{"text in a loop", `{% for i in range(100000) %}` + strings.Repeat("y", 1000) + `{% endfor %}`, "output of more than"},
		{"a list made to contain itself", `{% set l = [] %}{% set _ = l.append(l) %}{{ l }}`, "append would make a list contain itself"},
		{"a namespace made to contain itself", `{% set ns = namespace(a=1) %}{% set ns.me = ns %}{{ ns }}`, "set would make a namespace contain itself"},
		{"replace of every character", `{% set s = 'x' * 10000 %}{{ s|replace('', s) }}`, "replace would make a string of"},
		{"the replace method", `{% set s = 'x' * 10000 %}{{ s.replace('x', s) }}`, "replace would make a string of"},
		{"the format method", `{% set s = '{0}' * 10000 %}{{ s.format(s) }}`, "replace would make a string of"},
		{"join with a long separator", `{% set s = 'x' * 10000 %}{{ range(10000)|join(s) }}`, "join would make a string of"},
		{"indent by a billion", `{{ 'a\nb'|indent(1000000000) }}`, "indent would make a string of"},
		{"tojson indented by a billion", `{{ [1]|tojson(indent=1000000000) }}`, "an indent of 1000000000 spaces"},
		{"format with a huge width", `{{ '%1000000000d'|format(1) }}`, "a width or precision of 1000000000"},
		{"a doubling filter chain", `{% set s = '\\' * 1000000 %}{{ s|tojson|tojson|tojson|tojson|tojson|tojson|tojson|tojson }}`, "more than 67108864 bytes"},
		{"a filter block", `{% for i in range(100000) %}{% filter upper %}` + strings.Repeat("y", 1000) + `{% endfilter %}{% endfor %}`, "output of more than"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &Config{Templates: map[string]string{DefaultName: tc.src}, TemplatePath: "/models/m/chat_template.jinja"}
			tmpl, err := c.Template("")
			require.NoError(t, err)
			_, err = tmpl.Render([]Message{{Role: "user", Content: "hi"}}, true)
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrLimit)
			assert.Contains(t, err.Error(), "render chat template /models/m/chat_template.jinja: ")
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestTemplatesTheGuardsRefuse: what the guards could not bound from
// inside a render is refused at compile time: names reserved for the
// guards (and so the engine's unguarded builtins), nesting deeper than the
// engine's recursion can take, and a source larger than any template.
func TestTemplatesTheGuardsRefuse(t *testing.T) {
	for _, tc := range []struct{ name, src, want string }{
		{"a guard's name", `{{ __alignflow_out }}`, "names that start with __ are reserved"},
		{"the engine's builtin filter", `{{ __filter_replace('x', '', 'y') }}`, "names that start with __ are reserved"},
		{"deep brackets", strings.Repeat("{{ ", 1) + strings.Repeat("(", 100) + "1" + strings.Repeat(")", 100) + " }}", "brackets nest deeper than 64"},
		{"deep blocks", strings.Repeat("{% if true %}", 100) + strings.Repeat("{% endif %}", 100), "blocks nest deeper than 64"},
		{"deep operators", "{{ " + strings.Repeat("not ", 300) + "x }}", "nests deeper than"},
		{"a huge source", strings.Repeat("x", maxSource+1), "more than 1048576"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(tc.src)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestGuardsKeepTheEngineResults: the guarded operators, methods and
// filters give what the engine gives, and 'x' * -1 gives the empty string, as in Python
// (the engine panics); a render within its bounds is untouched.
func TestGuardsKeepTheEngineResults(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{`{{ 'ab' * 3 }}|{{ 2 * 3 }}|{{ 1.5 * 2 }}|{{ 'x' * -1 }}|{{ 'x' * 0 }}`, "ababab|6|3||"},
		{`{{ 'a' + 'b' }}|{{ 1 + 2 }}|{{ [1] + [2] }}|{{ 'n' + 1 }}|{{ 1 ~ 2 ~ 'x' }}`, "ab|3|[1, 2]|n1|12x"},
		{`{{ 1 + 2 * 3 }}|{{ (1 + 2) * 3 }}|{{ 2 ** 3 * 2 }}|{{ -2 * 3 }}|{{ 7 // 2 * 2 }}|{{ 1 + 2 ~ 3 }}`, "7|9|16|-6|6|33"},
		{`{% set ns = namespace(l=[]) %}{% for m in messages %}{% set _ = ns.l.append(m.role) %}{% endfor %}{{ ns.l|join(',') }}`, "user,assistant"},
		{`{% set l = [3, 1] %}{% set _ = l.insert(1, 2) %}{{ l }}|{% set d = {'a': 1} %}{% set _ = d.update({'b': 2}) %}{{ d.b }}`, "[3, 2, 1]|2"},
		{`{{ 'a-b-c'.replace('-', '+') }}|{{ 'a-b-c'|replace('-', '+', 1) }}|{{ '{0}{1}{}'.format('x', 'y') }}`, "a+b+c|a+b-c|xyx"},
		{`{{ 'a\nb\n\nc'|indent(2) }}|{{ 'a\nb'|indent(2, true) }}|{{ range(3)|join }}|{{ [{'n': 'x'}, {'n': 'y'}]|join('/', attribute='n') }}`, "a\n  b\n\n  c|  a\n  b|012|x/y"},
		{`{% for i in range(10, 0, -3) %}{{ i }},{% endfor %}{% for c in 'ab' if c != 'a' %}{{ c }}{% endfor %}`, "10,7,4,1,b"},
		{`{% macro f(x, y='-' * 2) %}{{ x ~ y }}{% endmacro %}{{ f('a') }}{% call f('b') %}{% endcall %}`, "a--b--"},
		{`{% filter upper %}a{{ 'b' }}{% endfilter %}{% set s %}c{{ 1 + 1 }}{% endset %}{{ s }}`, "ABc2"},
		{`{{ messages[0]['content'][1:] }}{{ messages|length * 2 }}{{ messages[-1].role|upper }}`, "i4ASSISTANT"},
	} {
		tmpl, err := Compile(tc.src)
		require.NoError(t, err, tc.src)
		got, err := tmpl.Render([]Message{{Role: "user", Content: "hi"}, {Role: "assistant", Content: "ok"}}, true)
		require.NoError(t, err, tc.src)
		assert.Equal(t, tc.want, got, tc.src)
	}
}

// TestRenderTimeIsBounded: a render that would take far longer than its
// time bound (here 20 ms, for the test: nested loops of 10^12 iterations
// under a steps bound that lets them run) stops at the bound.
func TestRenderTimeIsBounded(t *testing.T) {
	tmpl, err := Compile(`{% for i in range(1000000) %}{% for j in range(1000000) %}{% endfor %}{% endfor %}`)
	require.NoError(t, err)
	tmpl.Limits = DefaultLimits
	tmpl.Limits.Range, tmpl.Limits.Steps, tmpl.Limits.Time = 1<<30, 1<<60, 20*time.Millisecond
	_, err = tmpl.Render(nil, false)
	require.ErrorIs(t, err, ErrLimit)
	assert.Contains(t, err.Error(), "rendering took longer than 20ms")
}

// TestGuardsRenderRealTemplatesAsTheEngine renders every real template the
// engine's module tests with (seventeen of 2025-26's models: Qwen3, Llama
// 3.2, Gemma, gpt-oss, DeepSeek, Mistral...) on every captured request
// (tools, tool calls, reasoning), guarded and unguarded: the renderings
// (or errors) are the same.
func TestGuardsRenderRealTemplatesAsTheEngine(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/ardanlabs/jinja").Output()
	if err != nil {
		t.Skipf("the engine's module is not at hand: %v", err)
	}
	dir := strings.TrimSpace(string(out))
	templates, _ := filepath.Glob(filepath.Join(dir, "testdata", "templates", "*.jinja"))
	requests, _ := filepath.Glob(filepath.Join(dir, "testdata", "requests", "*.json"))
	if len(templates) == 0 || len(requests) == 0 {
		t.Skipf("no templates or requests in %s/testdata", dir)
	}
	sort.Strings(templates)
	plain := map[string]string{"tojson": filterVars["tojson"], "format": filterVars["format"]}
	rendered := 0
	for _, tf := range templates {
		b, err := os.ReadFile(tf)
		require.NoError(t, err)
		guarded, err := Compile(string(b))
		require.NoError(t, err, tf)
		src, err := prepareGuarded(string(b), plain, false)
		require.NoError(t, err)
		engine, err := jinja.Compile(src)
		require.NoError(t, err, tf)
		for _, rf := range requests {
			rb, err := os.ReadFile(rf)
			require.NoError(t, err)
			var req map[string]any
			require.NoError(t, json.Unmarshal(rb, &req))
			values := func() map[string]jinja.Value {
				v := map[string]jinja.Value{}
				for k, x := range map[string]any{"messages": req["messages"], "tools": req["tools"], "add_generation_prompt": true,
					"bos_token": "<s>", "eos_token": "</s>", "enable_thinking": false, "thinking": false, "reasoning_effort": "medium",
					"model_identity": "You are a helpful assistant.", "builtin_tools": []any{}, "date": "2024-01-01",
					"date_string": "2024-01-01", "tools_in_user_message": false} {
					v[k] = jinja.FromGoValue(x)
				}
				return v
			}
			got, gerr := guarded.render(values())
			r := &run{lim: DefaultLimits, deadline: time.Now().Add(time.Minute)}
			vals := values()
			for name, f := range r.filters() {
				vals[filterVars[name]] = f
			}
			want, werr := engine.RenderValues(vals)
			name := filepath.Base(tf) + "/" + filepath.Base(rf)
			if werr != nil {
				assert.Error(t, gerr, name)
				continue
			}
			require.NoError(t, gerr, name)
			assert.Equal(t, want, got, name)
			rendered++
		}
	}
	t.Logf("%d renderings of %d templates compared", rendered, len(templates))
	assert.Greater(t, rendered, len(templates)*len(requests)/2)
}

// TestLimitErrorsAreErrLimit: every bound's error wraps ErrLimit, so the
// activities can tell a template past its bounds (the model's fault) from
// other failures.
func TestLimitErrorsAreErrLimit(t *testing.T) {
	assert.True(t, errors.Is(limitError("x %d", 1), ErrLimit))
	assert.Equal(t, "x 1 (chat template past its bounds)", limitError("x %d", 1).Error())
}
