package chattemplate

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ardanlabs/jinja"
)

// Limits bound one render of a chat template. A chat template is code from
// the model's files, run on a worker: without bounds, range(3000000000),
// 'x' * 3000000000 or a macro that calls itself would exhaust the worker's
// memory or stack (fatal errors, which no recover stops), and 'x' * -1
// would panic in the engine. Every bound passed is an error wrapping
// ErrLimit.
type Limits struct {
	// Output bounds what a render writes, counted as it is written
	// (including what set blocks, macros and call blocks capture).
	Output int
	// Value bounds a string a render makes (by *, +, ~, a filter, a
	// method), and the written size of a list or dict.
	Value int
	// Range bounds the items of one range() (jinja2's sandbox allows
	// 100000, MAX_RANGE).
	Range int
	// Steps bounds a render's loop iterations, range() items and macro
	// calls together.
	Steps int
	// Depth bounds how deeply macros call each other.
	Depth int
	// Time bounds a render, checked at every loop iteration, macro call
	// and guarded operation.
	Time time.Duration
}

// DefaultLimits are generous for real templates, which write a few KB per
// conversation with loops over the messages and tools.
var DefaultLimits = Limits{
	Output: 64 << 20,
	Value:  64 << 20,
	Range:  100000,
	Steps:  1000000,
	Depth:  64,
	Time:   10 * time.Second,
}

// maxSource bounds a template's source (real ones are a few KB to tens of
// KB).
const maxSource = 1 << 20

// ErrLimit is what a render past its Limits, or a template refused for
// what could not be bounded, wraps.
var ErrLimit = errors.New("chat template past its bounds")

// limitError is one bound passed.
func limitError(format string, args ...any) error {
	return fmt.Errorf("%s (%w)", fmt.Sprintf(format, args...), ErrLimit)
}

// run is one render's counts.
type run struct {
	lim      Limits
	out      int
	steps    int
	depth    int
	deadline time.Time
}

func (r *run) step(n int) error {
	r.steps += n
	if r.steps > r.lim.Steps {
		return limitError("more than %d loop iterations, range() items and macro calls", r.lim.Steps)
	}
	if time.Now().After(r.deadline) {
		return limitError("rendering took longer than %v", r.lim.Time)
	}
	return nil
}

// size is v's size as the engine writes it, or an error once it passes
// the value bound (or nests past maxNesting, which only a structure that
// contains itself would).
func (r *run) size(v jinja.Value) (int, error) {
	n, err := r.sized(v, 0, 0)
	if err != nil {
		return 0, err
	}
	return n, nil
}

func (r *run) sized(v jinja.Value, n, level int) (int, error) {
	if level > maxNesting {
		return 0, limitError("a value nests deeper than %d levels", maxNesting)
	}
	switch {
	case v.IsString():
		if level > 0 {
			n += 2*len(v.AsString()) + 4 // quoted and escaped inside a list
		} else {
			n += len(v.AsString())
		}
	case v.IsList():
		n += 2
		for _, it := range v.AsList().Items {
			var err error
			if n, err = r.sized(it, n+2, level+1); err != nil {
				return 0, err
			}
		}
	case v.IsDict():
		d := v.AsDict()
		n += 2
		for _, k := range d.Keys {
			var err error
			if n, err = r.sized(d.Data[k], n+2*len(k)+8, level+1); err != nil {
				return 0, err
			}
		}
	default:
		n += 24
	}
	if n > r.lim.Value {
		return 0, limitError("a value of more than %d bytes", r.lim.Value)
	}
	return n, nil
}

// reaches reports whether v contains (or is) the container c.
func reaches(v, c jinja.Value, level int) bool {
	if level > maxNesting {
		return true
	}
	switch {
	case v.IsList():
		if c.IsList() && v.AsList() == c.AsList() {
			return true
		}
		for _, it := range v.AsList().Items {
			if reaches(it, c, level+1) {
				return true
			}
		}
	case v.IsDict():
		if c.IsDict() && v.AsDict() == c.AsDict() {
			return true
		}
		for _, k := range v.AsDict().Keys {
			if reaches(v.AsDict().Data[k], c, level+1) {
				return true
			}
		}
	}
	return false
}

// printed is v as the engine writes it (its printValue).
func printed(v jinja.Value) string {
	switch {
	case v.IsUndefined(), v.IsNone(), v.IsCallable():
		return ""
	case v.IsBool():
		if v.AsBool() {
			return "True"
		}
		return "False"
	case v.IsInt():
		return fmt.Sprintf("%d", v.AsInt())
	case v.IsFloat():
		return fmt.Sprintf("%g", v.AsFloat())
	case v.IsString():
		return v.AsString()
	}
	return v.String()
}

// toInt and toFloat are the engine's number conversions (toInt64,
// toFloat64).
func toInt(v jinja.Value) int64 {
	switch {
	case v.IsInt():
		return v.AsInt()
	case v.IsFloat():
		return int64(v.AsFloat())
	case v.IsBool():
		if v.AsBool() {
			return 1
		}
		return 0
	case v.IsString():
		var n int64
		fmt.Sscanf(v.AsString(), "%d", &n)
		return n
	}
	return 0
}

func toFloat(v jinja.Value) float64 {
	switch {
	case v.IsFloat():
		return v.AsFloat()
	case v.IsInt():
		return float64(v.AsInt())
	case v.IsBool():
		if v.AsBool() {
			return 1
		}
		return 0
	case v.IsString():
		var f float64
		fmt.Sscanf(v.AsString(), "%f", &f)
		return f
	}
	return 0
}

// guards are the render's guard callables by variable name, and its
// bounded range.
func (r *run) guards() map[string]jinja.Value {
	empty := jinja.NewString("")
	fn := func(name string, f func(args []jinja.Value, kwargs map[string]jinja.Value) (jinja.Value, error)) jinja.Value {
		return jinja.NewCallable(name, f)
	}
	arg := func(args []jinja.Value, i int) jinja.Value {
		if i < len(args) {
			return args[i]
		}
		return jinja.Undefined()
	}
	checked := func(v jinja.Value, err error) (jinja.Value, error) {
		if err != nil {
			return jinja.Undefined(), err
		}
		if _, err := r.size(v); err != nil {
			return jinja.Undefined(), err
		}
		return v, nil
	}
	str := func(s string, err error) (jinja.Value, error) {
		if err != nil {
			return jinja.Undefined(), err
		}
		return jinja.NewString(s), nil
	}
	return map[string]jinja.Value{
		guardOut: fn("out", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			v := arg(args, 0)
			n, err := r.size(v)
			if err != nil {
				return jinja.Undefined(), err
			}
			if r.out += n; r.out > r.lim.Output {
				return jinja.Undefined(), limitError("output of more than %d bytes", r.lim.Output)
			}
			return v, nil
		}),
		guardChk: fn("chk", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			return checked(arg(args, 0), nil)
		}),
		guardIter: fn("iter", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			v := arg(args, 0)
			n := 0
			switch {
			case v.IsList():
				n = v.AsList().Len()
			case v.IsDict():
				n = v.AsDict().Len()
			case v.IsString():
				n = utf8.RuneCountInString(v.AsString())
			}
			return v, r.step(n)
		}),
		guardTick: fn("tick", func([]jinja.Value, map[string]jinja.Value) (jinja.Value, error) {
			return empty, r.step(0)
		}),
		guardEnter: fn("enter", func([]jinja.Value, map[string]jinja.Value) (jinja.Value, error) {
			if r.depth++; r.depth > r.lim.Depth {
				return jinja.Undefined(), limitError("macros call each other more than %d deep", r.lim.Depth)
			}
			return empty, r.step(1)
		}),
		guardLeave: fn("leave", func([]jinja.Value, map[string]jinja.Value) (jinja.Value, error) {
			r.depth--
			return empty, nil
		}),
		guardMul: fn("*", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			return r.mul(arg(args, 0), arg(args, 1))
		}),
		guardAdd: fn("+", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			return r.add(arg(args, 0), arg(args, 1))
		}),
		guardCat: fn("~", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			a, b := arg(args, 0), arg(args, 1)
			if err := r.fits(a, b); err != nil {
				return jinja.Undefined(), err
			}
			return jinja.NewString(printed(a) + printed(b)), nil
		}),
		guardInto: fn("set", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			v, ns := arg(args, 0), arg(args, 1)
			if (ns.IsDict() || ns.IsList()) && reaches(v, ns, 0) {
				return jinja.Undefined(), limitError("set would make a namespace contain itself")
			}
			return checked(v, nil)
		}),
		"range": fn("range", r.rangeOf),
		guardMethod + "append": fn("append", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			l := arg(args, 0)
			if !l.IsList() {
				return jinja.Undefined(), fmt.Errorf("%s has no method append", kindOf(l))
			}
			if len(args) > 1 {
				if err := r.element(args[1], l, "append"); err != nil {
					return jinja.Undefined(), err
				}
				l.AsList().Append(args[1])
			}
			return jinja.None(), nil
		}),
		guardMethod + "insert": fn("insert", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			l := arg(args, 0)
			if !l.IsList() {
				return jinja.Undefined(), fmt.Errorf("%s has no method insert", kindOf(l))
			}
			if len(args) < 3 {
				return jinja.None(), nil
			}
			if err := r.element(args[2], l, "insert"); err != nil {
				return jinja.Undefined(), err
			}
			list := l.AsList()
			idx := min(max(int(toInt(args[1])), 0), list.Len())
			list.Items = append(list.Items, jinja.Undefined())
			copy(list.Items[idx+1:], list.Items[idx:])
			list.Items[idx] = args[2]
			return jinja.None(), nil
		}),
		guardMethod + "update": fn("update", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			d := arg(args, 0)
			if !d.IsDict() {
				return jinja.Undefined(), fmt.Errorf("%s has no method update", kindOf(d))
			}
			if len(args) > 1 && args[1].IsDict() {
				if err := r.element(args[1], d, "update"); err != nil {
					return jinja.Undefined(), err
				}
				other := args[1].AsDict()
				for _, k := range other.Keys {
					d.AsDict().Set(k, other.Data[k])
				}
			}
			return jinja.None(), nil
		}),
		guardMethod + "replace": fn("replace", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			s := arg(args, 0)
			if !s.IsString() {
				return jinja.Undefined(), fmt.Errorf("%s has no method replace", kindOf(s))
			}
			if len(args) < 3 {
				return s, nil
			}
			count := -1
			if len(args) > 3 {
				count = int(toInt(args[3]))
			}
			return str(r.replace(s.AsString(), printed(args[1]), printed(args[2]), count))
		}),
		guardMethod + "format": fn("format", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			s := arg(args, 0)
			if !s.IsString() {
				return jinja.Undefined(), fmt.Errorf("%s has no method format", kindOf(s))
			}
			// The engine's str.format: each argument replaces {i}, then the
			// first {}.
			out := s.AsString()
			for i, a := range args[1:] {
				var err error
				if out, err = r.replace(out, fmt.Sprintf("{%d}", i), printed(a), -1); err != nil {
					return jinja.Undefined(), err
				}
				if out, err = r.replace(out, "{}", printed(a), 1); err != nil {
					return jinja.Undefined(), err
				}
			}
			return jinja.NewString(out), nil
		}),
	}
}

// element checks v before a method puts it into the container c: v must
// not contain c (a structure that contains itself would send the engine's
// printing and comparing into endless recursion), and must be in the
// value bound. The container grows by one element per call, and calls
// are counted as steps, so its size needs no walk of its own here.
func (r *run) element(v, c jinja.Value, method string) error {
	if reaches(v, c, 0) {
		return limitError("%s would make a %s contain itself", method, strings.TrimPrefix(kindOf(c), "a "))
	}
	if _, err := r.size(v); err != nil {
		return err
	}
	return r.step(1)
}

// kindOf names v's type for errors.
func kindOf(v jinja.Value) string {
	switch {
	case v.IsUndefined():
		return "an undefined value"
	case v.IsNone():
		return "none"
	case v.IsList():
		return "a list"
	case v.IsDict():
		return "a dict"
	case v.IsString():
		return "a string"
	case v.IsCallable():
		return "a callable"
	}
	return "a number"
}

// fits checks that a and b written one after the other stay in the value
// bound.
func (r *run) fits(a, b jinja.Value) error {
	na, err := r.size(a)
	if err != nil {
		return err
	}
	nb, err := r.size(b)
	if err != nil {
		return err
	}
	if na+nb > r.lim.Value {
		return limitError("a value of more than %d bytes", r.lim.Value)
	}
	return r.step(0)
}

// mul is the engine's * (mulValues) within the bounds; a string times a
// negative count is "", as in Python (the engine's strings.Repeat panics).
func (r *run) mul(a, b jinja.Value) (jinja.Value, error) {
	if a.IsString() && b.IsInt() {
		n := b.AsInt()
		if n <= 0 || a.AsString() == "" {
			return jinja.NewString(""), nil
		}
		if n > int64(r.lim.Value) || int64(len(a.AsString()))*n > int64(r.lim.Value) {
			return jinja.Undefined(), limitError("a string of %d bytes times %d is more than %d bytes", len(a.AsString()), n, r.lim.Value)
		}
		return jinja.NewString(strings.Repeat(a.AsString(), int(n))), nil
	}
	if a.IsFloat() || b.IsFloat() {
		return jinja.NewFloat(toFloat(a) * toFloat(b)), nil
	}
	return jinja.NewInt(toInt(a) * toInt(b)), nil
}

// add is the engine's + (addValues) within the bounds.
func (r *run) add(a, b jinja.Value) (jinja.Value, error) {
	switch {
	case a.IsString() || b.IsString():
		if err := r.fits(a, b); err != nil {
			return jinja.Undefined(), err
		}
		return jinja.NewString(printed(a) + printed(b)), nil
	case a.IsList() && b.IsList():
		if err := r.fits(a, b); err != nil {
			return jinja.Undefined(), err
		}
		items := make([]jinja.Value, 0, a.AsList().Len()+b.AsList().Len())
		items = append(items, a.AsList().Items...)
		return jinja.NewList(append(items, b.AsList().Items...)), nil
	case a.IsFloat() || b.IsFloat():
		return jinja.NewFloat(toFloat(a) + toFloat(b)), nil
	}
	return jinja.NewInt(toInt(a) + toInt(b)), nil
}

// replace is strings.Replace within the value bound, its size known first.
func (r *run) replace(s, old, new string, count int) (string, error) {
	n := strings.Count(s, old)
	if count >= 0 {
		n = min(n, count)
	}
	if size := int64(len(s)) + int64(n)*(int64(len(new))-int64(len(old))); size > int64(r.lim.Value) {
		return "", limitError("replace would make a string of %d bytes, more than %d", size, r.lim.Value)
	}
	if err := r.step(0); err != nil {
		return "", err
	}
	return strings.Replace(s, old, new, count), nil
}

// rangeOf is range() with at most Range items, each a step.
func (r *run) rangeOf(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
	var start, stop, step int64 = 0, 0, 1
	switch len(args) {
	case 1:
		stop = toInt(args[0])
	case 2:
		start, stop = toInt(args[0]), toInt(args[1])
	case 3:
		start, stop, step = toInt(args[0]), toInt(args[1]), toInt(args[2])
	default:
		return jinja.Undefined(), fmt.Errorf("range: expected 1-3 arguments, got %d", len(args))
	}
	if step == 0 {
		return jinja.Undefined(), fmt.Errorf("range: step must not be zero")
	}
	var n int64
	switch {
	case step > 0 && stop > start:
		n = (stop - start + step - 1) / step
	case step < 0 && stop < start:
		n = (start - stop - step - 1) / -step
	}
	if n > int64(r.lim.Range) || n < 0 {
		return jinja.Undefined(), limitError("range of %d items, more than %d (the bound of jinja2's sandbox)", n, r.lim.Range)
	}
	if err := r.step(int(n)); err != nil {
		return jinja.Undefined(), err
	}
	items := make([]jinja.Value, n)
	for i := range items {
		items[i] = jinja.NewInt(start + int64(i)*step)
	}
	return jinja.NewList(items), nil
}

// boundedFilters are the engine's filters whose one application can grow
// without bound (join of many items with a long separator, indent by a
// huge width, replace of many matches), reimplemented as the engine has
// them with their size known first; prepare renames them to these, as it
// renames tojson and format.
func (r *run) boundedFilters() map[string]jinja.Value {
	return map[string]jinja.Value{
		"join": jinja.NewCallable("join", func(args []jinja.Value, kwargs map[string]jinja.Value) (jinja.Value, error) {
			if len(args) == 0 {
				return jinja.NewString(""), nil
			}
			if !args[0].IsList() {
				return jinja.NewString(printed(args[0])), nil
			}
			sep := ""
			if len(args) > 1 {
				sep = printed(args[1])
			}
			if s, ok := kwargs["d"]; ok {
				sep = printed(s)
			}
			attr := ""
			if a, ok := kwargs["attribute"]; ok {
				attr = printed(a)
			}
			items := args[0].AsList().Items
			parts := make([]string, len(items))
			total := 0
			for i, item := range items {
				if attr != "" && item.IsDict() {
					if v, ok := item.AsDict().Get(attr); ok {
						item = v
					}
				}
				if _, err := r.size(item); err != nil {
					return jinja.Undefined(), err
				}
				parts[i] = printed(item)
				if total += len(parts[i]) + len(sep); total > r.lim.Value {
					return jinja.Undefined(), limitError("join would make a string of more than %d bytes", r.lim.Value)
				}
			}
			return jinja.NewString(strings.Join(parts, sep)), nil
		}),
		"indent": jinja.NewCallable("indent", func(args []jinja.Value, kwargs map[string]jinja.Value) (jinja.Value, error) {
			if len(args) == 0 {
				return jinja.NewString(""), nil
			}
			s := printed(args[0])
			width := int64(4)
			if len(args) > 1 {
				width = toInt(args[1])
			}
			if w, ok := kwargs["width"]; ok {
				width = toInt(w)
			}
			first := false
			if len(args) > 2 {
				first = args[2].IsTruthy()
			}
			if f, ok := kwargs["first"]; ok {
				first = f.IsTruthy()
			}
			width = max(width, 0) // the engine's strings.Repeat panics below 0
			lines := strings.Split(s, "\n")
			if width*int64(len(lines))+int64(len(s)) > int64(r.lim.Value) {
				return jinja.Undefined(), limitError("indent would make a string of more than %d bytes", r.lim.Value)
			}
			pad := strings.Repeat(" ", int(width))
			for i, line := range lines {
				if i == 0 && !first {
					continue
				}
				if line != "" {
					lines[i] = pad + line
				}
			}
			return jinja.NewString(strings.Join(lines, "\n")), nil
		}),
		"replace": jinja.NewCallable("replace", func(args []jinja.Value, kwargs map[string]jinja.Value) (jinja.Value, error) {
			if len(args) < 3 {
				return jinja.NewString(""), fmt.Errorf("replace: expected at least 3 arguments")
			}
			count := -1
			if len(args) > 3 {
				count = int(toInt(args[3]))
			}
			if c, ok := kwargs["count"]; ok {
				count = int(toInt(c))
			}
			s, err := r.replace(printed(args[0]), printed(args[1]), printed(args[2]), count)
			if err != nil {
				return jinja.Undefined(), err
			}
			return jinja.NewString(s), nil
		}),
	}
}
