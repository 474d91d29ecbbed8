package chattemplate

import (
	"fmt"
	"strings"
)

// The engine (github.com/ardanlabs/jinja) has no hooks: no sandbox, no
// limits, no way to stop a render. So prepare rewrites every tag's
// expressions, with a parser that groups them exactly as the engine's
// parser (parse.go: parseExpression down to parseAtom) does, to route what
// can grow without bound through the guards of guard.go, which count and
// bound it per render:
//   - the binary operators *, + and ~ become (a)|__alignflow_mul(b) and
//     the like: the size of the result is known before it is built;
//   - the results of calls, filters and method calls, and list and dict
//     literals, pass through __alignflow_chk, which bounds their size (and
//     their nesting) before anything else sees them;
//   - the methods that mutate (list append and insert, dict update) or
//     multiply (str replace and format) are guarded versions;
//   - a for loop's iterable passes through __alignflow_iter, which counts
//     its items against the render's steps before the engine makes them;
//   - every {{ }} passes through __alignflow_out, which counts its size
//     against the render's output.
// The rewrite adds no comma and no "=" outside parentheses, so the
// engine's string-based statement parsing (macro parameters, set, for)
// splits the rewritten tags where it split the originals.

// Guard names: variables of every render (guard.go). Templates may not use
// names that start with "__" (checkName), so they can neither shadow nor
// reach them, nor the engine's own "__filter_" builtins.
const (
	guardOut    = "__alignflow_out"
	guardChk    = "__alignflow_chk"
	guardIter   = "__alignflow_iter"
	guardTick   = "__alignflow_tick"
	guardEnter  = "__alignflow_enter"
	guardLeave  = "__alignflow_leave"
	guardMul    = "__alignflow_mul"
	guardAdd    = "__alignflow_add"
	guardCat    = "__alignflow_cat"
	guardInto   = "__alignflow_into"
	guardMethod = "__alignflow_m_" // + append, insert, update, replace, format
)

// guardedMethods are the methods rewritten to guards: (x).m(args) becomes
// (x)|__alignflow_m_m(args).
var guardedMethods = map[string]bool{"append": true, "insert": true, "update": true, "replace": true, "format": true}

// maxNesting bounds how deeply brackets, operators and blocks nest in a
// template: the engine parses and renders recursively, and a deep enough
// nesting would overflow the stack (a fatal error, not a panic). Real
// templates nest a few levels.
const maxNesting = 64

type etokKind int

const (
	etEOF etokKind = iota
	etName
	etInt
	etFloat
	etString
	etOp // + - * / % < > = == != <= >= ** //
	etPunct
)

type etok struct {
	kind etokKind
	text string
}

// tokenize splits an expression as the engine's tokenizeExpr does, keeping
// each token's text (string literals as written: prepare has already
// written them in the engine's escapes). Characters the engine skips are
// skipped.
func tokenize(s string) []etok {
	var out []etok
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '\'' || c == '"':
			j := i + 1
			for j < len(s) && s[j] != c {
				if s[j] == '\\' && j+1 < len(s) {
					j++
				}
				j++
			}
			if j < len(s) {
				j++
			}
			out = append(out, etok{etString, s[i:j]})
			i = j
		case c >= '0' && c <= '9':
			j := i
			for j < len(s) && s[j] >= '0' && s[j] <= '9' {
				j++
			}
			kind := etInt
			if j+1 < len(s) && s[j] == '.' && s[j+1] >= '0' && s[j+1] <= '9' {
				kind = etFloat
				j++
				for j < len(s) && s[j] >= '0' && s[j] <= '9' {
					j++
				}
				if j < len(s) && (s[j] == 'e' || s[j] == 'E') {
					j++
					if j < len(s) && (s[j] == '+' || s[j] == '-') {
						j++
					}
					for j < len(s) && s[j] >= '0' && s[j] <= '9' {
						j++
					}
				}
			}
			out = append(out, etok{kind, s[i:j]})
			i = j
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			j := i
			for j < len(s) && isNameByte(s[j]) {
				j++
			}
			out = append(out, etok{etName, s[i:j]})
			i = j
		default:
			if i+1 < len(s) {
				switch two := s[i : i+2]; two {
				case "**", "//", "==", "!=", "<=", ">=":
					out = append(out, etok{etOp, two})
					i += 2
					continue
				}
			}
			switch c {
			case ',', '.', ':', '(', ')', '[', ']', '{', '}', '|', '~':
				out = append(out, etok{etPunct, string(c)})
			case '+', '-', '*', '/', '%', '<', '>', '=':
				out = append(out, etok{etOp, string(c)})
			}
			i++ // anything else the engine skips too
		}
	}
	return append(out, etok{etEOF, ""})
}

// rewriter rewrites one expression.
type rewriter struct {
	toks  []etok
	pos   int
	depth int
}

// rewriteExpr rewrites a whole expression (the body of {{ }}, an if's
// condition, a set's value).
func rewriteExpr(s string) (string, error) {
	r := &rewriter{toks: tokenize(s)}
	if r.peek().kind == etEOF {
		return s, nil // the engine reads nothing as none
	}
	out, err := r.expression()
	if err != nil {
		return "", err
	}
	if r.peek().kind != etEOF {
		return "", fmt.Errorf("unexpected token %q after expression", r.peek().text)
	}
	return out, nil
}

func (r *rewriter) peek() etok { return r.toks[r.pos] }

func (r *rewriter) next() etok {
	t := r.toks[r.pos]
	if t.kind != etEOF {
		r.pos++
	}
	return t
}

func (r *rewriter) isName(name string) bool {
	t := r.peek()
	return t.kind == etName && t.text == name
}

func (r *rewriter) isPunct(p string) bool {
	t := r.peek()
	return t.kind == etPunct && t.text == p
}

func (r *rewriter) isOp(ops ...string) bool {
	t := r.peek()
	if t.kind != etOp {
		return false
	}
	for _, o := range ops {
		if t.text == o {
			return true
		}
	}
	return false
}

func (r *rewriter) expect(p string) error {
	if !r.isPunct(p) {
		return fmt.Errorf("expected %q, got %q", p, r.peek().text)
	}
	r.next()
	return nil
}

// enter bounds the rewriter's recursion, and so the engine's: both descend
// once per nested operand.
func (r *rewriter) enter() error {
	r.depth++
	if r.depth > 4*maxNesting {
		return fmt.Errorf("the expression nests deeper than %d levels", 4*maxNesting)
	}
	return nil
}

func (r *rewriter) leave() { r.depth-- }

// guard writes the guarded form of a binary operator: (a)|g(b).
func guard(g, a, b string) string { return "(" + a + ")|" + g + "(" + b + ")" }

// checked writes x through __alignflow_chk.
func checked(x string) string { return "((" + x + ")|" + guardChk + ")" }

func (r *rewriter) expression() (string, error) {
	if err := r.enter(); err != nil {
		return "", err
	}
	defer r.leave()
	e, err := r.or()
	if err != nil {
		return "", err
	}
	if !r.isName("if") {
		return e, nil
	}
	r.next()
	cond, err := r.or()
	if err != nil {
		return "", err
	}
	out := e + " if " + cond
	if r.isName("else") {
		r.next()
		f, err := r.expression()
		if err != nil {
			return "", err
		}
		out += " else " + f
	}
	return out, nil
}

// binary parses operands joined by the operators ops accepts, left to
// right, writing each with join.
func (r *rewriter) binary(operand func() (string, error), op func() (string, bool), join func(op, a, b string) string) (string, error) {
	left, err := operand()
	if err != nil {
		return "", err
	}
	for {
		o, ok := op()
		if !ok {
			return left, nil
		}
		right, err := operand()
		if err != nil {
			return "", err
		}
		left = join(o, left, right)
	}
}

func infix(op, a, b string) string { return a + " " + op + " " + b }

func (r *rewriter) or() (string, error) {
	return r.binary(r.and, func() (string, bool) { return "or", r.isName("or") && r.next().kind == etName }, infix)
}

func (r *rewriter) and() (string, error) {
	return r.binary(r.not, func() (string, bool) { return "and", r.isName("and") && r.next().kind == etName }, infix)
}

func (r *rewriter) not() (string, error) {
	if r.isName("not") {
		r.next()
		if err := r.enter(); err != nil {
			return "", err
		}
		defer r.leave()
		x, err := r.not()
		if err != nil {
			return "", err
		}
		return "not " + x, nil
	}
	return r.comparison()
}

func (r *rewriter) comparison() (string, error) {
	left, err := r.concat()
	if err != nil {
		return "", err
	}
	for {
		switch t := r.peek(); {
		case t.kind == etOp && (t.text == "==" || t.text == "!=" || t.text == "<" || t.text == ">" || t.text == "<=" || t.text == ">="):
			r.next()
			right, err := r.concat()
			if err != nil {
				return "", err
			}
			left = infix(t.text, left, right)
		case r.isName("in"):
			r.next()
			right, err := r.concat()
			if err != nil {
				return "", err
			}
			left = infix("in", left, right)
		case r.isName("not") && r.toks[r.pos+1].kind == etName && r.toks[r.pos+1].text == "in":
			r.next()
			r.next()
			right, err := r.concat()
			if err != nil {
				return "", err
			}
			left = infix("not in", left, right)
		case r.isName("is"):
			r.next()
			test := left + " is "
			if r.isName("not") {
				r.next()
				test += "not "
			}
			test += r.next().text // the test's name: any token, as the engine takes it
			if r.isPunct("(") {
				r.next()
				var args []string
				for !r.isPunct(")") && r.peek().kind != etEOF {
					a, err := r.expression()
					if err != nil {
						return "", err
					}
					args = append(args, a)
					if r.isPunct(",") {
						r.next()
					}
				}
				if err := r.expect(")"); err != nil {
					return "", err
				}
				test += "(" + strings.Join(args, ", ") + ")"
			}
			left = test
		default:
			return left, nil
		}
	}
}

func (r *rewriter) concat() (string, error) {
	return r.binary(r.addSub, func() (string, bool) {
		if r.isPunct("~") {
			r.next()
			return "~", true
		}
		return "", false
	}, func(_, a, b string) string { return guard(guardCat, a, b) })
}

func (r *rewriter) addSub() (string, error) {
	return r.binary(r.mulDiv, func() (string, bool) {
		if r.isOp("+", "-") {
			return r.next().text, true
		}
		return "", false
	}, func(op, a, b string) string {
		if op == "+" {
			return guard(guardAdd, a, b)
		}
		return infix(op, a, b)
	})
}

func (r *rewriter) mulDiv() (string, error) {
	return r.binary(r.power, func() (string, bool) {
		if r.isOp("*", "/", "%", "//") {
			return r.next().text, true
		}
		return "", false
	}, func(op, a, b string) string {
		if op == "*" {
			return guard(guardMul, a, b)
		}
		return infix(op, a, b)
	})
}

func (r *rewriter) power() (string, error) {
	base, err := r.unary()
	if err != nil {
		return "", err
	}
	if !r.isOp("**") {
		return base, nil
	}
	r.next()
	exp, err := r.unary()
	if err != nil {
		return "", err
	}
	return infix("**", base, exp), nil
}

func (r *rewriter) unary() (string, error) {
	if r.isOp("-", "+") {
		op := r.next().text
		if err := r.enter(); err != nil {
			return "", err
		}
		defer r.leave()
		x, err := r.unary()
		if err != nil {
			return "", err
		}
		return op + x, nil
	}
	return r.postfix()
}

func (r *rewriter) postfix() (string, error) {
	e, err := r.atom()
	if err != nil {
		return "", err
	}
	for {
		switch {
		case r.isPunct("."):
			r.next()
			attr := r.next()
			if attr.kind != etName && attr.kind != etInt {
				return "", fmt.Errorf("expected attribute name after '.', got %q", attr.text)
			}
			if !r.isPunct("(") {
				e = e + "." + attr.text
				continue
			}
			r.next()
			args, err := r.callArgs()
			if err != nil {
				return "", err
			}
			if guardedMethods[attr.text] {
				e = checked("(" + e + ")|" + guardMethod + attr.text + "(" + args + ")")
			} else {
				e = checked(e + "." + attr.text + "(" + args + ")")
			}
		case r.isPunct("["):
			r.next()
			sub, err := r.subscript()
			if err != nil {
				return "", err
			}
			e = e + "[" + sub + "]"
		case r.isPunct("("):
			r.next()
			args, err := r.callArgs()
			if err != nil {
				return "", err
			}
			e = checked(e + "(" + args + ")")
		case r.isPunct("|"):
			r.next()
			name := r.next()
			if name.kind != etName {
				return "", fmt.Errorf("expected filter name after '|', got %q", name.text)
			}
			f := e + "|" + name.text
			if r.isPunct("(") {
				r.next()
				args, err := r.callArgs()
				if err != nil {
					return "", err
				}
				f += "(" + args + ")"
			}
			e = checked(f)
		default:
			return e, nil
		}
	}
}

// subscript is what is between [ and ], the ] taken: a key or a slice.
func (r *rewriter) subscript() (string, error) {
	var parts []string
	var cur string
	for {
		switch {
		case r.isPunct("]"):
			r.next()
			return strings.Join(append(parts, cur), ":"), nil
		case r.isPunct(":"):
			r.next()
			parts, cur = append(parts, cur), ""
		case r.peek().kind == etEOF:
			return "", fmt.Errorf("expected \"]\"")
		default:
			if cur != "" {
				return "", fmt.Errorf("unexpected token %q in a subscript", r.peek().text)
			}
			x, err := r.expression()
			if err != nil {
				return "", err
			}
			cur = x
		}
	}
}

// callArgs is what is between ( and ), the ) taken: arguments and name=value.
func (r *rewriter) callArgs() (string, error) {
	var args []string
	for !r.isPunct(")") && r.peek().kind != etEOF {
		kw := ""
		if r.peek().kind == etName && r.toks[r.pos+1].kind == etOp && r.toks[r.pos+1].text == "=" {
			kw = r.next().text + "="
			r.next()
		}
		a, err := r.expression()
		if err != nil {
			return "", err
		}
		args = append(args, kw+a)
		if r.isPunct(",") {
			r.next()
		}
	}
	if err := r.expect(")"); err != nil {
		return "", err
	}
	return strings.Join(args, ", "), nil
}

func (r *rewriter) atom() (string, error) {
	if err := r.enter(); err != nil {
		return "", err
	}
	defer r.leave()
	t := r.peek()
	switch {
	case t.kind == etName || t.kind == etInt || t.kind == etFloat || t.kind == etString:
		r.next()
		return t.text, nil
	case r.isPunct("("):
		r.next()
		if r.isPunct(")") {
			r.next()
			return "()", nil
		}
		e, err := r.expression()
		if err != nil {
			return "", err
		}
		if !r.isPunct(",") {
			if err := r.expect(")"); err != nil {
				return "", err
			}
			return "(" + e + ")", nil
		}
		items := []string{e}
		for r.isPunct(",") {
			r.next()
			if r.isPunct(")") {
				break
			}
			x, err := r.expression()
			if err != nil {
				return "", err
			}
			items = append(items, x)
		}
		if err := r.expect(")"); err != nil {
			return "", err
		}
		return checked("(" + strings.Join(items, ", ") + ",)"), nil
	case r.isPunct("["):
		r.next()
		var items []string
		for !r.isPunct("]") && r.peek().kind != etEOF {
			x, err := r.expression()
			if err != nil {
				return "", err
			}
			items = append(items, x)
			if r.isPunct(",") {
				r.next()
			}
		}
		if err := r.expect("]"); err != nil {
			return "", err
		}
		return checked("[" + strings.Join(items, ", ") + "]"), nil
	case r.isPunct("{"):
		r.next()
		var pairs []string
		for !r.isPunct("}") && r.peek().kind != etEOF {
			k, err := r.expression()
			if err != nil {
				return "", err
			}
			if err := r.expect(":"); err != nil {
				return "", err
			}
			v, err := r.expression()
			if err != nil {
				return "", err
			}
			pairs = append(pairs, k+": "+v)
			if r.isPunct(",") {
				r.next()
			}
		}
		if err := r.expect("}"); err != nil {
			return "", err
		}
		return checked("{" + strings.Join(pairs, ", ") + "}"), nil
	case r.isOp("-"):
		r.next()
		x, err := r.atom()
		if err != nil {
			return "", err
		}
		return "-" + x, nil
	}
	return "", fmt.Errorf("unexpected token %q", t.text)
}

// rewriteTag rewrites the content of a {% %} tag: the expressions of the
// statements the engine knows (if, elif, for, set, macro, call, filter),
// split as the engine's template parser splits them; other statements
// (else, end tags, break, continue, generation) have none.
func rewriteTag(body string) (string, error) {
	text := strings.TrimSpace(body)
	kw := stmtKeyword(text)
	rest := strings.TrimSpace(strings.TrimPrefix(text, kw))
	switch kw {
	case "if", "elif":
		x, err := rewriteExpr(rest)
		if err != nil {
			return "", err
		}
		return kw + " " + x, nil
	case "for":
		return rewriteFor(rest)
	case "set":
		return rewriteSet(rest)
	case "macro":
		return rewriteMacro(rest)
	case "call":
		return rewriteCall(rest)
	}
	return body, nil
}

// stmtKeyword is the statement's keyword, as the engine's stmtKeyword reads
// it (the leading letters and underscores).
func stmtKeyword(text string) string {
	for i := 0; i < len(text); i++ {
		if c := text[i]; !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return text[:i]
		}
	}
	return text
}

// findKeyword is where kw stands as a word outside brackets and strings, as
// the engine's findKeyword finds it; -1 if it does not.
func findKeyword(s, kw string) int {
	depth, quote := 0, byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if quote != 0 {
			if c == '\\' && i+1 < len(s) {
				i++
			} else if c == quote {
				quote = 0
			}
			continue
		}
		switch {
		case c == '\'' || c == '"':
			quote = c
		case c == '(' || c == '[' || c == '{':
			depth++
		case c == ')' || c == ']' || c == '}':
			depth--
		case depth == 0 && strings.HasPrefix(s[i:], kw) &&
			(i == 0 || !isNameByte(s[i-1])) && (i+len(kw) >= len(s) || !isNameByte(s[i+len(kw)])):
			return i
		}
	}
	return -1
}

// rewriteFor rewrites "VARS in ITER [if COND] [recursive]": ITER through
// __alignflow_iter, COND's operators guarded.
func rewriteFor(rest string) (string, error) {
	in := findKeyword(rest, "in")
	if in < 0 {
		return "for " + rest, nil // the engine reports it
	}
	vars, iter := rest[:in], rest[in+2:]
	tail := ""
	if rec := findKeyword(iter, "recursive"); rec >= 0 {
		iter, tail = iter[:rec], " recursive"
	}
	cond := ""
	if i := findKeyword(iter, "if"); i >= 0 {
		c, err := rewriteExpr(iter[i+2:])
		if err != nil {
			return "", fmt.Errorf("for filter: %w", err)
		}
		iter, cond = iter[:i], " if "+c
	}
	it, err := rewriteExpr(iter)
	if err != nil {
		return "", fmt.Errorf("for iterable: %w", err)
	}
	return "for " + strings.TrimSpace(vars) + " in (" + it + ")|" + guardIter + cond + tail, nil
}

// rewriteSet rewrites "TARGET = VALUE": VALUE through __alignflow_chk, or,
// for a namespace's attribute (ns.attr), through __alignflow_into(ns),
// which also refuses to make the namespace contain itself. A block set
// ({% set x %}) has no value here.
func rewriteSet(rest string) (string, error) {
	target, value, ok := strings.Cut(rest, "=")
	if !ok {
		return "set " + rest, nil
	}
	v, err := rewriteExpr(value)
	if err != nil {
		return "", fmt.Errorf("set value: %w", err)
	}
	target = strings.TrimSpace(target)
	if ns, _, ok := strings.Cut(target, "."); ok {
		return "set " + target + " = (" + v + ")|" + guardInto + "(" + strings.TrimSpace(ns) + ")", nil
	}
	return "set " + target + " = (" + v + ")|" + guardChk, nil
}

// rewriteMacro rewrites the defaults of "NAME(PARAMS)", split as the
// engine splits them (at every comma, each at its first "=").
func rewriteMacro(rest string) (string, error) {
	name, params, ok := strings.Cut(rest, "(")
	if !ok {
		return "macro " + rest, nil
	}
	params = strings.TrimSuffix(params, ")")
	var out []string
	if strings.TrimSpace(params) != "" {
		for _, part := range strings.Split(params, ",") {
			p, def, ok := strings.Cut(part, "=")
			if !ok {
				out = append(out, strings.TrimSpace(part))
				continue
			}
			d, err := rewriteExpr(def)
			if err != nil {
				return "", fmt.Errorf("macro default: %w", err)
			}
			out = append(out, strings.TrimSpace(p)+"="+d)
		}
	}
	return "macro " + strings.TrimSpace(name) + "(" + strings.Join(out, ", ") + ")", nil
}

// rewriteCall rewrites "[(ARGS)] CALLEE(ARGS)": the callee's arguments
// only, since the engine needs the call expression itself.
func rewriteCall(rest string) (string, error) {
	head := ""
	if strings.HasPrefix(rest, "(") {
		if i := strings.Index(rest, ")"); i >= 0 {
			head, rest = rest[:i+1]+" ", strings.TrimSpace(rest[i+1:])
		}
	}
	open := strings.IndexByte(rest, '(')
	if open < 0 || !strings.HasSuffix(rest, ")") {
		x, err := rewriteExpr(rest)
		if err != nil {
			return "", err
		}
		return "call " + head + x, nil
	}
	r := &rewriter{toks: tokenize(rest[open+1:])}
	args, err := r.callArgs()
	if err != nil {
		return "", fmt.Errorf("call arguments: %w", err)
	}
	if r.peek().kind != etEOF {
		return "", fmt.Errorf("call: unexpected %q after the arguments", r.peek().text)
	}
	callee := strings.TrimSpace(rest[:open])
	if findKeyword(callee, "(") >= 0 || strings.ContainsAny(callee, "([{") {
		return "", fmt.Errorf("call: %q: only a macro's name may be called", callee)
	}
	return "call " + head + callee + "(" + args + ")", nil
}
