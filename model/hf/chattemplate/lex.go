package chattemplate

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// prepare rewrites a chat template so that github.com/ardanlabs/jinja
// renders it as jinja2 renders it in transformers: whitespace control is
// done here, by jinja2's own rules, and the engine's is left nothing to do.
//
// transformers compiles chat templates with trim_blocks and lstrip_blocks
// (transformers/utils/chat_template_utils.py: _compile_jinja_template) and
// jinja2's default keep_trailing_newline=False. The engine cannot be
// configured, and its own trimming differs from jinja2's lexer
// (jinja2/lexer.py: Lexer.tokeniter): it does not know {%+ or +%}
// (lstrip_blocks and trim_blocks turned off for one tag), it trims the
// text beyond an adjacent tag ("a {{ x }}{%- if %}" loses the space before
// {{ x }}), lstrips only spaces and tabs, and keeps \r\n and the final
// newline. So prepare lexes the template as jinja2 does, applies -, + and
// the two settings to the text, drops comments, takes {% raw %} blocks as
// text, and writes every text as a string literal ({{ '...' }}): the
// result has no text for the engine to trim. Tags keep their content,
// except that
//   - string literals are decoded as jinja2 decodes them (Python's escapes:
//     \uXXXX, \xXX, octal, \a, \v...; the engine knows only \n \t \\ \' \")
//     and written in the escapes the engine knows;
//   - the filters named in rename are renamed to their values (the engine
//     looks its own filters up before the template's variables, so
//     transformers' tojson can only be reached under another name);
//   - a "}" before "}" gets a space after it, as the engine would otherwise
//     end the tag there (jinja2 ends a tag only outside brackets).
//
// Each piece starts on the line it had in the template, so the engine's
// errors name the template's lines.
//
// Then every tag is rewritten with the guards that bound a render
// (guarded, rewrite.go, guard.go); unguarded leaves them out (for tests
// that compare the two).
func prepare(source string, rename map[string]string) (string, error) {
	return prepareGuarded(source, rename, true)
}

func prepareGuarded(source string, rename map[string]string, guards bool) (string, error) {
	src := normalizeNewlines(source)
	e := &emitter{src: src, line: 1, srcLine: 1, unguarded: !guards}
	pos, lineStarting := 0, true
	for pos < len(src) {
		k := nextTag(src, pos)
		if k < 0 {
			e.text(pos, src[pos:])
			break
		}
		kind, sign, open := tagAt(src, k)
		e.text(pos, lstrip(src[pos:k], sign, kind, lineStarting))
		var err error
		switch kind {
		case tagComment:
			pos, err = commentEnd(src, k+open)
		case tagRaw:
			pos, err = e.raw(k, k+open)
		default:
			pos, err = e.tag(k, k+open, kind, rename)
		}
		if err != nil {
			return "", fmt.Errorf("line %d: %w", lineOf(src, k), err)
		}
		lineStarting = src[pos-1] == '\n'
	}
	return e.finish(), nil
}

// normalizeNewlines makes \r\n and \r newlines and drops one final
// newline, as jinja2's lexer does without keep_trailing_newline.
func normalizeNewlines(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	return strings.TrimSuffix(s, "\n")
}

type tagKind int

const (
	tagVar     tagKind = iota // {{ ... }}
	tagBlock                  // {% ... %}
	tagComment                // {# ... #}
	tagRaw                    // {% raw %}
)

// nextTag is where the next tag opens at or after pos, -1 if none does.
func nextTag(src string, pos int) int {
	for {
		i := strings.IndexByte(src[pos:], '{')
		if i < 0 || pos+i+1 >= len(src) {
			return -1
		}
		pos += i
		if c := src[pos+1]; c == '{' || c == '%' || c == '#' {
			return pos
		}
		pos++
	}
}

// tagAt reads the opener at k: its kind, its whitespace sign (-, + or 0)
// and how many bytes the opener takes (for {% raw %}, the whole tag).
func tagAt(src string, k int) (kind tagKind, sign byte, open int) {
	open = 2
	if k+2 < len(src) && (src[k+2] == '-' || src[k+2] == '+') {
		sign, open = src[k+2], 3
	}
	switch src[k+1] {
	case '{':
		return tagVar, sign, open
	case '#':
		return tagComment, sign, open
	}
	if n := rawBegin(src[k+open:]); n > 0 {
		return tagRaw, sign, open + n
	}
	return tagBlock, sign, open
}

// lstrip applies the whitespace control of the tag after text: - strips
// all the whitespace before it; otherwise lstrip_blocks strips the
// whitespace between the line's start and a block or comment tag, unless
// the tag says +.
func lstrip(text string, sign byte, kind tagKind, lineStarting bool) string {
	if sign == '-' {
		return strings.TrimRightFunc(text, isPySpace)
	}
	if sign == '+' || kind == tagVar {
		return text
	}
	l := strings.LastIndexByte(text, '\n') + 1
	if (l > 0 || lineStarting) && l < len(text) && strings.TrimLeftFunc(text[l:], isPySpace) == "" {
		return text[:l]
	}
	return text
}

// isPySpace is Python's str.isspace, which jinja2's \s and rstrip use: Go's
// unicode.IsSpace and the separators \x1c-\x1f.
func isPySpace(r rune) bool { return unicode.IsSpace(r) || r >= 0x1c && r <= 0x1f }

// pySpaces is how many bytes of whitespace s starts with.
func pySpaces(s string) int { return len(s) - len(strings.TrimLeftFunc(s, isPySpace)) }

// blockEnd matches a block's end at s (+%}, -%} and the whitespace after
// it, or %} and one newline); n is 0 when s does not start with one.
func blockEnd(s string) int {
	switch {
	case strings.HasPrefix(s, "+%}"):
		return 3
	case strings.HasPrefix(s, "-%}"):
		return 3 + pySpaces(s[3:])
	case strings.HasPrefix(s, "%}"):
		if strings.HasPrefix(s[2:], "\n") {
			return 3
		}
		return 2
	}
	return 0
}

// rawBegin matches the rest of a {% raw %} tag at s (after "{%" and its
// sign); 0 when it is another tag. Its end keeps the newline after it:
// jinja2's raw rule has no trim_blocks suffix.
func rawBegin(s string) int {
	i := pySpaces(s)
	if !strings.HasPrefix(s[i:], "raw") {
		return 0
	}
	i += 3
	i += pySpaces(s[i:])
	switch {
	case strings.HasPrefix(s[i:], "-%}"):
		return i + 3 + pySpaces(s[i+3:])
	case strings.HasPrefix(s[i:], "%}"):
		return i + 2
	}
	return 0
}

// commentEnd is where the comment opened before start ends.
func commentEnd(src string, start int) (int, error) {
	for i := start; i+1 < len(src); i++ {
		switch {
		case strings.HasPrefix(src[i:], "+#}"):
			return i + 3, nil
		case strings.HasPrefix(src[i:], "-#}"):
			return i + 3 + pySpaces(src[i+3:]), nil
		case strings.HasPrefix(src[i:], "#}"):
			if strings.HasPrefix(src[i+2:], "\n") {
				return i + 3, nil
			}
			return i + 2, nil
		}
	}
	return 0, fmt.Errorf("missing end of comment tag")
}

// stringEnd is where the string literal at s[0] ends (jinja2's string_re:
// a backslash escapes the next byte), -1 if it does not.
func stringEnd(s string) int {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case s[0]:
			return i + 1
		}
	}
	return -1
}

// emitter writes the engine's template, keeping each piece on its
// template line.
type emitter struct {
	blocks    []string // the open blocks' keywords, innermost last
	filters   []string // the open filter blocks' closing output
	unguarded bool
	b         strings.Builder
	src       string
	line      int    // the line b ends on
	closer    string // the last piece's closer, not yet written
	srcAt     int    // srcLine is the line of src[srcAt]
	srcLine   int
}

// piece writes open+body and holds close back: newlines that the template
// had before at go in front of it, so the next piece starts on its line.
func (e *emitter) piece(at int, open, body, close string) {
	e.srcLine += strings.Count(e.src[e.srcAt:at], "\n")
	e.srcAt = at
	if pad := e.srcLine - e.line; pad > 0 {
		if e.closer == "" {
			e.write("{{ ''")
			e.closer = " }}"
		}
		e.write(strings.Repeat("\n", pad))
	}
	e.write(e.closer + open + body)
	e.closer = close
}

func (e *emitter) write(s string) {
	e.b.WriteString(s)
	e.line += strings.Count(s, "\n")
}

// text writes text (starting at src[at]) as a string literal.
func (e *emitter) text(at int, text string) {
	if text == "" {
		return
	}
	if e.unguarded {
		e.piece(at, "{{ ", engineString(text), " }}")
		return
	}
	e.piece(at, "{{ ", engineString(text)+"|"+guardOut, " }}")
}

// engineString is s as a string literal of the engine, on one line (its
// newlines escaped, so the template's lines stay where they were).
func engineString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`).Replace(s) + "'"
}

// pyUnescape decodes the body of a string literal as jinja2 does
// (jinja2/lexer.py: Lexer.wrap):
// body.encode("ascii", "backslashreplace").decode("unicode-escape"), so
// Python's escapes; a backslash before a non-ASCII character stays, with
// the character as its escape.
func pyUnescape(body string) (string, error) {
	s := asciiEscape(body)
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		i++
		if i == len(s) {
			return "", fmt.Errorf("\\ at end of string")
		}
		switch c := s[i]; c {
		case '\n': // a line continuation
		case '\\', '\'', '"':
			b.WriteByte(c)
		case 'a', 'b', 'f', 'n', 'r', 't', 'v':
			b.WriteByte(map[byte]byte{'a': '\a', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t', 'v': '\v'}[c])
		case '0', '1', '2', '3', '4', '5', '6', '7':
			n := 1
			for n < 3 && i+n < len(s) && s[i+n] >= '0' && s[i+n] <= '7' {
				n++
			}
			v, _ := strconv.ParseUint(s[i:i+n], 8, 32)
			b.WriteRune(rune(v))
			i += n - 1
		case 'x', 'u', 'U':
			n := map[byte]int{'x': 2, 'u': 4, 'U': 8}[c]
			v, err := strconv.ParseUint(s[i+1:min(i+1+n, len(s))], 16, 32)
			if err != nil || i+n >= len(s) {
				return "", fmt.Errorf("truncated \\%c%s escape", c, strings.Repeat("X", n))
			}
			if v > unicode.MaxRune {
				return "", fmt.Errorf("illegal Unicode character \\%c%s", c, s[i+1:i+1+n])
			}
			b.WriteRune(rune(v))
			i += n
		case 'N':
			return "", fmt.Errorf("\\N{name} escapes are not supported")
		default:
			b.WriteByte('\\')
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// raw writes the {% raw %} block opened at k, its text starting at start,
// and returns where its {% endraw %} ends.
func (e *emitter) raw(k, start int) (int, error) {
	for i := start; i+1 < len(e.src); i++ {
		if e.src[i] != '{' || e.src[i+1] != '%' {
			continue
		}
		j, sign := i+2, byte(0)
		if j < len(e.src) && (e.src[j] == '-' || e.src[j] == '+') {
			j, sign = j+1, e.src[j]
		}
		j += pySpaces(e.src[j:])
		if !strings.HasPrefix(e.src[j:], "endraw") {
			continue
		}
		j += len("endraw")
		j += pySpaces(e.src[j:])
		if n := blockEnd(e.src[j:]); n > 0 {
			e.text(start, lstrip(e.src[start:i], sign, tagBlock, e.src[start-1] == '\n'))
			return j + n, nil
		}
	}
	return 0, fmt.Errorf("missing end of raw directive")
}

// tag writes the {{ }} or {% %} tag opened at k, its content starting at
// start, and returns where it ends (with the whitespace its end takes).
func (e *emitter) tag(k, start int, kind tagKind, rename map[string]string) (int, error) {
	src := e.src
	var body strings.Builder
	var stack []byte
	last := byte(0) // the last byte of the content that is not space
	for i := start; i < len(src); {
		if len(stack) == 0 {
			n := 0
			if kind == tagBlock {
				n = blockEnd(src[i:])
			} else if strings.HasPrefix(src[i:], "-}}") {
				n = 3 + pySpaces(src[i+3:])
			} else if strings.HasPrefix(src[i:], "}}") {
				n = 2
			}
			if n > 0 {
				open, text, close, err := e.guarded(kind, body.String(), rename)
				if err != nil {
					return 0, err
				}
				e.piece(k, open, text, close)
				return i + n, nil
			}
		}
		c := src[i]
		switch {
		case c == '\'' || c == '"':
			n := stringEnd(src[i:])
			if n < 0 {
				return 0, fmt.Errorf("unexpected char %q: the string is not closed", c)
			}
			s, err := pyUnescape(src[i+1 : i+n-1])
			if err != nil {
				return 0, fmt.Errorf("string %s: %w", src[i:i+n], err)
			}
			body.WriteString(engineString(s))
			i, last = i+n, c
			continue
		case isNameByte(c) && (c < '0' || c > '9'):
			n := 1
			for i+n < len(src) && isNameByte(src[i+n]) {
				n++
			}
			name := src[i : i+n]
			if strings.HasPrefix(name, "__") {
				return 0, fmt.Errorf("%s: names that start with __ are reserved (alignflow's guards use them)", name)
			}
			if to, ok := rename[name]; ok && last == '|' {
				name = to
			}
			body.WriteString(name)
			i, last = i+n, 'a'
			continue
		case strings.IndexByte("([{", c) >= 0:
			if len(stack) >= maxNesting {
				return 0, fmt.Errorf("brackets nest deeper than %d levels", maxNesting)
			}
			stack = append(stack, ")]}"[strings.IndexByte("([{", c)])
		case strings.IndexByte(")]}", c) >= 0:
			if len(stack) == 0 {
				return 0, fmt.Errorf("unexpected %q", c)
			}
			if want := stack[len(stack)-1]; c != want {
				return 0, fmt.Errorf("unexpected %q, expected %q", c, want)
			}
			stack = stack[:len(stack)-1]
		}
		body.WriteByte(c)
		if (c == '}' || c == '%') && i+1 < len(src) && src[i+1] == '}' {
			body.WriteByte(' ')
		}
		if !isPySpace(rune(c)) {
			last = c
		}
		i++
	}
	return 0, fmt.Errorf("the tag is not closed")
}

// guarded is a tag's content rewritten with the guards (rewrite.go), and
// what to write before and after it: a {{ }}'s value goes through
// __alignflow_out; a for loop's body starts with __alignflow_tick and a
// macro's body runs between __alignflow_enter and __alignflow_leave, which
// count iterations and calls, check the time and bound how deeply macros
// call each other; a {% filter %} block becomes a block set whose value is
// written through the filter and the guards (the engine would write the
// filtered body unseen).
func (e *emitter) guarded(kind tagKind, body string, rename map[string]string) (open, text, close string, err error) {
	if e.unguarded {
		if kind == tagVar {
			return "{{ ", body, " }}", nil
		}
		return "{% ", body, " %}", nil
	}
	// A tag keeps its newlines, so later pieces stay on their lines.
	nl := strings.Repeat("\n", strings.Count(body, "\n"))
	if kind == tagVar {
		if strings.TrimSpace(body) == "" {
			return "{{ ", body, " }}", nil
		}
		x, err := rewriteExpr(body)
		if err != nil {
			return "", "", "", err
		}
		return "{{ ", "(" + x + ")|" + guardOut + nl, " }}", nil
	}
	open, close = "{% ", " %}"
	trimmed := strings.TrimSpace(body)
	switch kw := stmtKeyword(trimmed); kw {
	case "for", "if", "macro", "call", "generation", "filter", "set":
		if kw == "set" && strings.Contains(trimmed, "=") {
			break // an assignment, not a block
		}
		if len(e.blocks) >= maxNesting {
			return "", "", "", fmt.Errorf("blocks nest deeper than %d levels", maxNesting)
		}
		e.blocks = append(e.blocks, kw)
		switch kw {
		case "for":
			close += "{{ " + guardTick + "() }}"
		case "macro":
			close += "{{ " + guardEnter + "() }}"
		case "filter":
			v := fmt.Sprintf("__alignflow_filter%d", len(e.filters))
			name := strings.TrimSpace(strings.TrimPrefix(trimmed, "filter"))
			out := v
			if name != "" && strings.IndexFunc(name, func(r rune) bool { return r > 0x7f || !isNameByte(byte(r)) }) < 0 {
				if to, ok := rename[name]; ok {
					name = to
				}
				out = "(" + v + "|" + name + ")|" + guardChk // the engine applies a bare name only
			}
			e.filters = append(e.filters, "{{ ("+out+")|"+guardOut+" }}")
			return open, "set " + v + nl, close, nil
		}
	case "endfor", "endif", "endmacro", "endcall", "endgeneration", "endfilter", "endset":
		if len(e.blocks) > 0 {
			e.blocks = e.blocks[:len(e.blocks)-1]
		}
		switch kw {
		case "endmacro":
			open = "{{ " + guardLeave + "() }}" + open
		case "endfilter":
			if len(e.filters) == 0 {
				return open, body, close, nil // the engine reports it
			}
			close += e.filters[len(e.filters)-1]
			e.filters = e.filters[:len(e.filters)-1]
			return open, "endset" + nl, close, nil
		}
		return open, body, close, nil
	}
	if text, err = rewriteTag(body); err != nil || text == body {
		return open, text, close, err
	}
	return open, text + nl, close, nil
}

// isNameByte is whether c can be in an ASCII name (letters, digits, _).
func isNameByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// finish writes the last closer and returns the engine's template.
func (e *emitter) finish() string {
	e.b.WriteString(e.closer)
	return e.b.String()
}

// lineOf is the line of src[at].
func lineOf(src string, at int) int { return 1 + strings.Count(src[:at], "\n") }
