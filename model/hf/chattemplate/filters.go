package chattemplate

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/ardanlabs/jinja"
)

// filters are the filters transformers' templates have that the engine
// has not, or has otherwise, and the engine's filters that can grow without
// bound (guard.go), by name, for one render (they bound what they write
// by its Limits); prepare renames them in templates to the variables they
// are given as (filterVars), since the engine looks its own filters up
// first.
func (r *run) filters() map[string]jinja.Value {
	m := r.boundedFilters()
	m["tojson"] = jinja.NewCallable("tojson", func(args []jinja.Value, kwargs map[string]jinja.Value) (jinja.Value, error) {
		return toJSON(args, kwargs, r.lim.Value)
	})
	m["format"] = jinja.NewCallable("format", func(args []jinja.Value, kwargs map[string]jinja.Value) (jinja.Value, error) {
		return formatFilter(args, kwargs, r.lim.Value)
	})
	return m
}

// filterVars maps each filter's name to the variable it is given as.
var filterVars = func() map[string]string {
	m := map[string]string{}
	for name := range (&run{}).filters() {
		m[name] = "__alignflow_" + name
	}
	return m
}()

// toJSON is transformers' tojson filter
// (transformers/utils/chat_template_utils.py: _compile_jinja_template):
// json.dumps(x, ensure_ascii=False, indent=None, separators=None,
// sort_keys=False), which unlike jinja2's own neither escapes HTML nor
// sorts keys. Its arguments are Python's: positional in that order, or by
// name.
//
// What it writes is bounded by limit bytes (an indent of a billion spaces
// would otherwise be written at every level).
func toJSON(args []jinja.Value, kwargs map[string]jinja.Value, limit int) (jinja.Value, error) {
	names := []string{"ensure_ascii", "indent", "separators", "sort_keys"}
	if len(args) == 0 || len(args) > 1+len(names) {
		return jinja.Undefined(), fmt.Errorf("tojson takes a value and at most %d arguments (%s)", len(names), strings.Join(names, ", "))
	}
	opt := map[string]jinja.Value{}
	for i, a := range args[1:] {
		opt[names[i]] = a
	}
	for k, v := range kwargs {
		if !slices.Contains(names, k) {
			return jinja.Undefined(), fmt.Errorf("tojson: unexpected argument %q (arguments: %s)", k, strings.Join(names, ", "))
		}
		if _, dup := opt[k]; dup {
			return jinja.Undefined(), fmt.Errorf("tojson: argument %q given twice", k)
		}
		opt[k] = v
	}
	// An argument left out is undefined, false like Python's defaults.
	e := jsonEncoder{ascii: opt["ensure_ascii"].IsTruthy(), sortKeys: opt["sort_keys"].IsTruthy(), item: ", ", key: ": ", max: limit}
	if in, ok := opt["indent"]; ok && !in.IsNone() && !in.IsUndefined() {
		switch {
		case in.IsString():
			e.indent = in.AsString()
		case in.IsInt():
			if in.AsInt() > int64(e.max) {
				return jinja.Undefined(), limitError("tojson: an indent of %d spaces is more than %d bytes", in.AsInt(), e.max)
			}
			e.indent = strings.Repeat(" ", int(max(in.AsInt(), 0)))
		case in.IsBool() && in.AsBool():
			e.indent = " "
		case !in.IsBool():
			return jinja.Undefined(), fmt.Errorf("tojson: indent must be a number of spaces or a string, not %s", in)
		}
		e.indented, e.item = true, ","
	}
	if sep, ok := opt["separators"]; ok && !sep.IsNone() && !sep.IsUndefined() {
		if !sep.IsList() || sep.AsList().Len() != 2 || !sep.AsList().Get(0).IsString() || !sep.AsList().Get(1).IsString() {
			return jinja.Undefined(), fmt.Errorf("tojson: separators must be two strings (item, key), not %s", sep)
		}
		e.item, e.key = sep.AsList().Get(0).AsString(), sep.AsList().Get(1).AsString()
	}
	var b strings.Builder
	if err := e.encode(&b, args[0], 0); err != nil {
		return jinja.Undefined(), fmt.Errorf("tojson: %w", err)
	}
	return jinja.NewString(b.String()), nil
}

// jsonEncoder writes JSON as Python's json.dumps does (json/encoder.py).
type jsonEncoder struct {
	ascii, sortKeys, indented bool
	indent, item, key         string
	max                       int // bytes written at most
}

func (e jsonEncoder) encode(b *strings.Builder, v jinja.Value, level int) error {
	switch {
	case v.IsNone():
		b.WriteString("null")
	case v.IsBool():
		b.WriteString(strconv.FormatBool(v.AsBool()))
	case v.IsInt():
		b.WriteString(strconv.FormatInt(v.AsInt(), 10))
	case v.IsFloat():
		f := v.AsFloat()
		switch {
		case math.IsNaN(f):
			b.WriteString("NaN")
		case math.IsInf(f, 1):
			b.WriteString("Infinity")
		case math.IsInf(f, -1):
			b.WriteString("-Infinity")
		default:
			b.WriteString(pyFloat(f))
		}
	case v.IsString():
		b.WriteString(jsonString(v.AsString(), e.ascii))
	case v.IsList():
		items := v.AsList().Items
		return e.container(b, '[', ']', len(items), level, func(i int, level int) error {
			return e.encode(b, items[i], level)
		})
	case v.IsDict():
		d := v.AsDict()
		keys := d.OrderedKeys()
		if e.sortKeys {
			sort.Strings(keys)
		}
		return e.container(b, '{', '}', len(keys), level, func(i int, level int) error {
			b.WriteString(jsonString(keys[i], e.ascii))
			b.WriteString(e.key)
			val, _ := d.Get(keys[i])
			return e.encode(b, val, level)
		})
	case v.IsUndefined():
		return fmt.Errorf("Object of type Undefined is not JSON serializable")
	default:
		return fmt.Errorf("%s is not JSON serializable", v)
	}
	return nil
}

// container writes n items between open and close, each on its own line
// when indented.
func (e jsonEncoder) container(b *strings.Builder, open, close byte, n, level int, item func(i, level int) error) error {
	if level >= maxNesting {
		return limitError("a value nests deeper than %d levels", maxNesting)
	}
	b.WriteByte(open)
	if n == 0 {
		b.WriteByte(close)
		return nil
	}
	newline := ""
	if e.indented {
		if len(e.indent)*(level+1) > e.max {
			return limitError("more than %d bytes", e.max)
		}
		newline = "\n" + strings.Repeat(e.indent, level+1)
	}
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(e.item)
		}
		b.WriteString(newline)
		if err := item(i, level+1); err != nil {
			return err
		}
		if b.Len() > e.max {
			return limitError("more than %d bytes", e.max)
		}
	}
	if e.indented {
		b.WriteString("\n" + strings.Repeat(e.indent, level))
	}
	b.WriteByte(close)
	return nil
}

// jsonString is a JSON string as json.dumps writes it: ", \ and control
// characters escaped (\n \r \t \b \f, else \u00XX), and with ascii every
// other non-ASCII character too (\uXXXX, in surrogate pairs above U+FFFF).
func jsonString(s string, ascii bool) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r < 0x20 || ascii && r > 0x7e:
			if r > 0xffff {
				r -= 0x10000
				fmt.Fprintf(&b, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
			} else {
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// pyFloat is Python's repr of a float (Python/pystrtod.c:
// format_float_short): the shortest digits that read back, positional with
// at least one decimal when the exponent is from -4 to 15, else in
// exponent notation with at least two exponent digits; inf, -inf, nan.
func pyFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "nan"
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	}
	if exp := exponent(f); exp < -4 || exp >= 16 {
		return strconv.FormatFloat(f, 'e', -1, 64)
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return s
}

// exponent is the decimal exponent of f's shortest digits (f = d.ddd × 10^exp).
func exponent(f float64) int {
	if f == 0 {
		return 0
	}
	s := strconv.FormatFloat(f, 'e', -1, 64)
	exp, _ := strconv.Atoi(s[strings.IndexByte(s, 'e')+1:])
	return exp
}

// formatFilter is jinja2's format filter (jinja2/filters.py: do_format):
// Python's printf-style value % args, with kwargs instead of args as the
// mapping of %(name)s; not both.
//
// What it writes is bounded by limit bytes, widths and precisions included.
func formatFilter(args []jinja.Value, kwargs map[string]jinja.Value, limit int) (jinja.Value, error) {
	if len(args) == 0 {
		return jinja.Undefined(), fmt.Errorf("format takes a format string")
	}
	if len(args) > 1 && len(kwargs) > 0 {
		return jinja.Undefined(), fmt.Errorf("format: can't handle positional and keyword arguments at the same time")
	}
	f := formatter{args: args[1:], max: limit}
	if len(kwargs) > 0 {
		f.dict = jinja.NewDict()
		keys := make([]string, 0, len(kwargs))
		for k := range kwargs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			f.dict.AsDict().Set(k, kwargs[k])
		}
	}
	out, err := f.format(pyStr(args[0]))
	if err != nil {
		return jinja.Undefined(), fmt.Errorf("format: %w", err)
	}
	return jinja.NewString(out), nil
}

// formatter is Python's str % args (Objects/unicodeobject.c:
// PyUnicode_Format): args a tuple, or dict a mapping.
type formatter struct {
	args  []jinja.Value
	next  int
	dict  jinja.Value // a dict, or undefined
	taken bool        // the mapping was used as a value
	max   int         // bytes written at most
}

func (f *formatter) arg() (jinja.Value, error) {
	if !f.dict.IsUndefined() {
		if f.taken {
			return jinja.Undefined(), fmt.Errorf("not enough arguments for format string")
		}
		f.taken = true
		return f.dict, nil
	}
	if f.next >= len(f.args) {
		return jinja.Undefined(), fmt.Errorf("not enough arguments for format string")
	}
	f.next++
	return f.args[f.next-1], nil
}

func (f *formatter) format(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		i++
		var v jinja.Value
		keyed := false
		if i < len(s) && s[i] == '(' {
			depth, j := 1, i+1
			for ; j < len(s) && depth > 0; j++ {
				switch s[j] {
				case '(':
					depth++
				case ')':
					depth--
				}
			}
			if depth > 0 {
				return "", fmt.Errorf("incomplete format key")
			}
			if f.dict.IsUndefined() {
				return "", fmt.Errorf("format requires a mapping")
			}
			val, ok := f.dict.AsDict().Get(s[i+1 : j-1])
			if !ok {
				return "", fmt.Errorf("KeyError: %s", pyRepr(jinja.NewString(s[i+1:j-1])))
			}
			v, keyed, i = val, true, j
		}
		flags := ""
		for i < len(s) && strings.IndexByte("-+ #0", s[i]) >= 0 {
			flags += s[i : i+1]
			i++
		}
		width, err := f.number(s, &i)
		if err != nil {
			return "", err
		}
		prec := -1
		if i < len(s) && s[i] == '.' {
			i++
			if prec, err = f.number(s, &i); err != nil {
				return "", err
			}
			prec = max(prec, 0)
		}
		for i < len(s) && strings.IndexByte("hlL", s[i]) >= 0 {
			i++
		}
		if i >= len(s) {
			return "", fmt.Errorf("incomplete format")
		}
		conv := s[i]
		if conv == '%' {
			b.WriteByte('%')
			continue
		}
		if !keyed {
			if v, err = f.arg(); err != nil {
				return "", err
			}
		}
		if width > f.max || prec > f.max {
			return "", limitError("a width or precision of %d is more than %d bytes", max(width, prec), f.max)
		}
		out, err := convert(v, conv, flags, width, prec)
		if err != nil {
			if strings.HasPrefix(err.Error(), "unsupported") {
				return "", fmt.Errorf("%w at index %d", err, i)
			}
			return "", err
		}
		if b.WriteString(out); b.Len() > f.max {
			return "", limitError("more than %d bytes", f.max)
		}
	}
	if f.dict.IsUndefined() && f.next < len(f.args) {
		return "", fmt.Errorf("not all arguments converted during string formatting")
	}
	return b.String(), nil
}

// number reads a width or precision: digits, or * for the next argument;
// -1 when there is neither.
func (f *formatter) number(s string, i *int) (int, error) {
	if *i < len(s) && s[*i] == '*' {
		*i++
		v, err := f.arg()
		if err != nil {
			return 0, err
		}
		if !v.IsInt() {
			return 0, fmt.Errorf("* wants int")
		}
		return int(v.AsInt()), nil
	}
	j := *i
	for *i < len(s) && s[*i] >= '0' && s[*i] <= '9' {
		*i++
	}
	if j == *i {
		return -1, nil
	}
	return strconv.Atoi(s[j:*i])
}

// convert formats v by one conversion of Python's printf-style formatting.
func convert(v jinja.Value, conv byte, flags string, width, prec int) (string, error) {
	spec := func(flags string, verb byte) string {
		s := "%" + flags
		if width >= 0 {
			s += strconv.Itoa(width)
		}
		if prec >= 0 {
			s += "." + strconv.Itoa(prec)
		}
		return s + string(verb)
	}
	text := func(s string) string { // only - applies to text: it is padded with spaces
		f := ""
		if strings.Contains(flags, "-") {
			f = "-"
		}
		return fmt.Sprintf(spec(f, 's'), s)
	}
	switch conv {
	case 's', 'r', 'a':
		s := pyStr(v)
		if conv != 's' {
			s = pyRepr(v)
		}
		if conv == 'a' {
			s = asciiEscape(s)
		}
		return text(s), nil
	case 'c':
		switch {
		case v.IsInt() && v.AsInt() >= 0 && v.AsInt() <= unicode.MaxRune:
			return text(string(rune(v.AsInt()))), nil
		case v.IsString() && utf8.RuneCountInString(v.AsString()) == 1:
			return text(v.AsString()), nil
		}
		return "", fmt.Errorf("%%c requires an int or a unicode character, not %s", pyType(v))
	case 'd', 'i', 'u', 'o', 'x', 'X':
		var n int64
		switch {
		case v.IsInt():
			n = v.AsInt()
		case v.IsBool() && v.AsBool():
			n = 1
		case v.IsBool():
		case v.IsFloat() && (conv == 'd' || conv == 'i' || conv == 'u'):
			n = int64(v.AsFloat())
		case conv == 'd' || conv == 'i' || conv == 'u':
			return "", fmt.Errorf("%%%c format: a real number is required, not %s", conv, pyType(v))
		default:
			return "", fmt.Errorf("%%%c format: an integer is required, not %s", conv, pyType(v))
		}
		switch {
		case conv == 'o' && strings.Contains(flags, "#"): // Python's prefix is 0o, Go's %#o 0
			return fmt.Sprintf(spec(strings.ReplaceAll(flags, "#", ""), 'O'), n), nil
		case conv == 'i' || conv == 'u':
			conv = 'd'
		}
		return fmt.Sprintf(spec(flags, conv), n), nil
	case 'e', 'E', 'f', 'F', 'g', 'G':
		var x float64
		switch {
		case v.IsFloat():
			x = v.AsFloat()
		case v.IsInt():
			x = float64(v.AsInt())
		case v.IsBool() && v.AsBool():
			x = 1
		case v.IsBool():
		default:
			return "", fmt.Errorf("must be real number, not %s", pyType(v))
		}
		if math.IsInf(x, 0) || math.IsNaN(x) {
			s := pyFloat(x)
			if x > 0 && strings.Contains(flags, "+") {
				s = "+" + s
			}
			if conv >= 'A' && conv <= 'Z' {
				s = strings.ToUpper(s)
			}
			return text(s), nil
		}
		if prec < 0 {
			prec = 6
		}
		if conv == 'F' {
			conv = 'f'
		}
		return fmt.Sprintf(spec(flags, conv), x), nil
	}
	return "", fmt.Errorf("unsupported format character %q (0x%x)", conv, conv)
}

// pyType names v's Python type for errors.
func pyType(v jinja.Value) string {
	switch {
	case v.IsNone():
		return "NoneType"
	case v.IsBool():
		return "bool"
	case v.IsInt():
		return "int"
	case v.IsFloat():
		return "float"
	case v.IsString():
		return "str"
	case v.IsList():
		return "list"
	case v.IsDict():
		return "dict"
	case v.IsUndefined():
		return "Undefined"
	}
	return "function"
}

// pyStr is Python's str(v) (an undefined value is "", as jinja2's
// Undefined prints).
func pyStr(v jinja.Value) string {
	switch {
	case v.IsString():
		return v.AsString()
	case v.IsUndefined():
		return ""
	}
	return pyRepr(v)
}

// pyRepr is Python's repr(v).
func pyRepr(v jinja.Value) string {
	switch {
	case v.IsNone():
		return "None"
	case v.IsBool() && v.AsBool():
		return "True"
	case v.IsBool():
		return "False"
	case v.IsInt():
		return strconv.FormatInt(v.AsInt(), 10)
	case v.IsFloat():
		return pyFloat(v.AsFloat())
	case v.IsString():
		return pyStringRepr(v.AsString())
	case v.IsList():
		parts := make([]string, v.AsList().Len())
		for i, item := range v.AsList().Items {
			parts[i] = pyRepr(item)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case v.IsDict():
		d := v.AsDict()
		parts := make([]string, 0, d.Len())
		for _, k := range d.OrderedKeys() {
			val, _ := d.Get(k)
			parts = append(parts, pyStringRepr(k)+": "+pyRepr(val))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	case v.IsUndefined():
		return "Undefined"
	}
	return v.String()
}

// pyStringRepr is Python's repr of a str: in single quotes unless it has
// ' and no ", with \\, the quote, \t \n \r and unprintable characters
// escaped.
func pyStringRepr(s string) string {
	quote := '\''
	if strings.ContainsRune(s, '\'') && !strings.ContainsRune(s, '"') {
		quote = '"'
	}
	var b strings.Builder
	b.WriteRune(quote)
	for _, r := range s {
		switch {
		case r == quote || r == '\\':
			b.WriteRune('\\')
			b.WriteRune(r)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			b.WriteString(pyEscape(r))
		}
	}
	b.WriteRune(quote)
	return b.String()
}

// asciiEscape is Python's ascii(): non-ASCII characters escaped.
func asciiEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < utf8.RuneSelf {
			b.WriteRune(r)
		} else {
			b.WriteString(pyEscape(r))
		}
	}
	return b.String()
}

// pyEscape is Python's escape of a character: \xNN, \uNNNN or \UNNNNNNNN.
func pyEscape(r rune) string {
	switch {
	case r < 0x100:
		return fmt.Sprintf(`\x%02x`, r)
	case r < 0x10000:
		return fmt.Sprintf(`\u%04x`, r)
	}
	return fmt.Sprintf(`\U%08x`, r)
}
