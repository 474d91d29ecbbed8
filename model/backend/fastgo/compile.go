package fastgo

import (
	"slices"

	"github.com/gomlx/gomlx/backends"
	"github.com/pkg/errors"
)

// Compile implements backends.Builder. It finds the nodes the outputs
// need, gives a run-time slot to each value that passes between steps,
// makes each needed segment's outputs the values later steps read from it,
// compiles the segments with simplego and drops the steps nothing needs
// (gradients of constants, say), which simplego would have skipped too.
func (b *Builder) Compile(outputs []backends.Op, shardings []*backends.ShardingSpec) (backends.Executable, error) {
	if len(shardings) != 0 {
		return nil, errors.New("fastgo Compile: sharding is not supported")
	}
	outs, err := b.nodes("Compile", outputs)
	if err != nil {
		return nil, err
	}
	b.compiled = true
	markLive(outs)

	e := &Executable{backend: b.backend, names: b.names, end: len(b.steps), stats: Stats{Name: b.name}}
	for _, p := range b.params {
		e.inShapes = append(e.inShapes, p.shape)
	}
	// Slots: the parameters first, then every value read by a later step.
	var lastUse []int
	need := func(n *node, at int) {
		if n.slot < 0 {
			n.slot = len(lastUse)
			lastUse = append(lastUse, at)
			if n.konst != nil {
				e.consts = append(e.consts, n)
			}
		}
		lastUse[n.slot] = max(lastUse[n.slot], at)
	}
	for _, p := range b.params {
		need(p, -1)
	}
	needed := make([]map[*node]bool, len(b.steps)) // per segment: the imports its live ops read
	for i, st := range b.steps {
		switch {
		case st.seg != nil:
			needed[i] = map[*node]bool{}
			for _, n := range st.seg.nodes {
				if !n.live {
					continue
				}
				for _, in := range n.inputs {
					if in.seg != st.seg && in.konst == nil {
						need(in, i)
						needed[i][in] = true
					}
				}
			}
		case st.call.out.live:
			for _, in := range st.call.in {
				need(in, i)
			}
		}
	}
	for _, n := range outs {
		need(n, e.end)
		e.outSlots = append(e.outSlots, n.slot)
		e.outShapes = append(e.outShapes, n.shape)
	}
	e.numSlots = len(lastUse)

	// Steps, in order; a segment runs if a later step or the caller reads a
	// value of it.
	placeholders := map[string]backends.Buffer{}
	for i, st := range b.steps {
		if c := st.call; c != nil {
			if c.out.live {
				slots := make([]int, len(c.in))
				for j, in := range c.in {
					slots[j] = in.slot
				}
				e.steps = append(e.steps, execStep{call: c, frees: freedAt(lastUse, i, slots...)})
				switch {
				case c.dot != nil:
					e.stats.KernelCalls++
				case c.cp != nil:
					e.stats.Copies++
				case c.sum != nil:
					e.stats.Reductions++
				default:
					e.stats.Elementwise++
				}
			}
			continue
		}
		s := st.seg
		var exports []backends.Op
		plan := &segmentPlan{}
		lastExport := 0
		for _, n := range s.nodes {
			if n.live && n.slot >= 0 {
				exports = append(exports, n.op)
				plan.out = append(plan.out, n.slot)
				lastExport = n.seq
			}
		}
		if len(exports) == 0 {
			continue
		}
		if s.lastParam > lastExport {
			// simplego's Execute sizes its tables by the last output and
			// fails on a parameter made after it (one only dead ops read):
			// a one-value constant made last is an output it discards.
			op, err := s.b.Constant([]float32{0})
			if err != nil {
				e.Finalize()
				return nil, err
			}
			exports = append(exports, op)
			plan.out = append(plan.out, -1)
		}
		for _, n := range s.order {
			if !needed[i][n] {
				// Only ops nothing needs read this parameter: simplego
				// skips them, but the parameter must still be fed.
				key := n.shape.String()
				if placeholders[key] == nil {
					buf, _, err := b.backend.NewSharedBuffer(0, n.shape)
					if err != nil {
						e.Finalize()
						return nil, err
					}
					placeholders[key] = buf
					e.owned = append(e.owned, buf)
					e.stats.Placeholders++
				}
				plan.in = append(plan.in, -1)
				plan.placeholder = append(plan.placeholder, placeholders[key])
				continue
			}
			plan.in = append(plan.in, n.slot)
			plan.placeholder = append(plan.placeholder, nil)
		}
		plan.donate = donations(plan.in, lastUse, i)
		exe, err := s.b.Compile(exports, nil)
		if err != nil {
			e.Finalize()
			return nil, errors.WithMessagef(err, "fastgo: compile segment %d of %q", i, b.name)
		}
		plan.exe = exe
		e.steps = append(e.steps, execStep{seg: plan, frees: freedAt(lastUse, i, plan.in...)})
		e.stats.Segments++
	}
	for _, n := range e.consts {
		buf, err := b.backend.BufferFromFlatData(0, n.konst, n.shape)
		if err != nil {
			e.Finalize()
			return nil, err
		}
		e.constBufs = append(e.constBufs, buf)
		e.owned = append(e.owned, buf)
	}
	b.steps, b.params, b.cur = nil, nil, nil
	if fn := b.backend.observer.Load(); fn != nil {
		(*fn)(e.stats)
	}
	return e, nil
}

// markLive marks the nodes the outputs are computed from.
func markLive(outs []*node) {
	stack := slices.Clone(outs)
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if n.live {
			continue
		}
		n.live = true
		stack = append(stack, n.inputs...)
	}
}

// donations says which of a segment's inputs (slots, -1 for a placeholder)
// it may take over: those read for the last time at step i. Whether the
// run owns the buffer (not a caller's undonated input, nor a constant) is
// decided per Execute.
func donations(in []int, lastUse []int, i int) []bool {
	d := make([]bool, len(in))
	for j, s := range in {
		d[j] = s >= 0 && lastUse[s] == i
	}
	return d
}

// freedAt lists the slots among read whose last reader is step i, once
// each.
func freedAt(lastUse []int, i int, read ...int) []int {
	var out []int
	for _, s := range read {
		if s >= 0 && lastUse[s] == i && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
