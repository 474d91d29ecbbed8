package fastgo

import (
	"sync/atomic"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/pkg/errors"
)

// Executable runs a compiled fastgo graph: its steps in order, on buffers
// held in slots, one per value that passes between steps.
type Executable struct {
	backend  *Backend
	names    []string
	inShapes []shapes.Shape

	steps    []execStep
	numSlots int
	end      int // the step index that stands for "returned to the caller"

	outSlots  []int
	outShapes []shapes.Shape

	consts    []*node           // constants read from slots (by kernel calls, or returned)
	constBufs []backends.Buffer // their buffers, made once
	owned     []backends.Buffer // buffers the executable frees at Finalize

	stats     Stats
	finalized bool

	// held counts the buffers runs own at the moment (computed by a step,
	// or donated, and not yet freed or returned); peakHeld is its largest
	// value. They show that intermediates are freed after their last use.
	held, peakHeld atomic.Int64
}

var _ backends.Executable = (*Executable)(nil)

// execStep is a segment or a Go call, and the slots whose last reader it
// is.
type execStep struct {
	seg   *segmentPlan
	call  *goCall
	frees []int
}

// segmentPlan is a compiled segment: the slots that feed its parameters
// (-1 where a placeholder does), whether it may take each over, and the
// slots its outputs fill (-1 for a sentinel, discarded).
type segmentPlan struct {
	exe         backends.Executable
	in          []int
	placeholder []backends.Buffer
	donate      []bool
	out         []int
}

// Inputs implements backends.Executable.
func (e *Executable) Inputs() (names []string, inputShapes []shapes.Shape) {
	return e.names, e.inShapes
}

// Outputs implements backends.Executable.
func (e *Executable) Outputs() []shapes.Shape { return e.outShapes }

// Stats describe the executable's steps.
func (e *Executable) Stats() Stats { return e.stats }

// Finalize implements backends.Executable.
func (e *Executable) Finalize() {
	for _, st := range e.steps {
		if st.seg != nil && st.seg.exe != nil {
			st.seg.exe.Finalize()
		}
	}
	for _, buf := range e.owned {
		_ = e.backend.BufferFinalize(buf)
	}
	e.steps, e.owned, e.constBufs = nil, nil, nil
	e.finalized = true
}

// run is one Execute's state: each slot's buffer and whether this run owns
// it (computed here, or donated by the caller) and so may free it or hand
// it over.
type run struct {
	e     *Executable
	buf   []backends.Buffer
	owned []bool
}

// take puts a buffer the run owns into slot s.
func (r *run) take(s int, buf backends.Buffer) {
	r.buf[s], r.owned[s] = buf, true
	held := r.e.held.Add(1)
	for {
		peak := r.e.peakHeld.Load()
		if held <= peak || r.e.peakHeld.CompareAndSwap(peak, held) {
			return
		}
	}
}

// disown gives up slot s's buffer (freed, donated or returned): the slot
// keeps it only to be read.
func (r *run) disown(s int) {
	if r.owned[s] {
		r.owned[s] = false
		r.e.held.Add(-1)
	}
}

// release frees the owned buffer in slot s and empties the slot.
func (r *run) release(s int) {
	if r.owned[s] && r.buf[s] != nil {
		_ = r.e.backend.BufferFinalize(r.buf[s])
	}
	r.disown(s)
	r.buf[s] = nil
}

// releaseAll frees every owned buffer left, after an error or at the end.
func (r *run) releaseAll() {
	for s := range r.buf {
		r.release(s)
	}
}

// Execute implements backends.Executable. A buffer computed by one step is
// freed (returned to simplego's pool) after the last step that reads it,
// or handed to that step's segment to reuse; donated inputs are treated as
// the run's own.
func (e *Executable) Execute(inputs []backends.Buffer, donate []bool, _ backends.DeviceNum) ([]backends.Buffer, error) {
	if e.finalized {
		return nil, errors.New("fastgo Execute: the executable was finalized")
	}
	if len(inputs) != len(e.inShapes) {
		return nil, errors.Errorf("fastgo Execute: %d inputs, want %d", len(inputs), len(e.inShapes))
	}
	r := &run{e: e, buf: make([]backends.Buffer, e.numSlots), owned: make([]bool, e.numSlots)}
	for i, in := range inputs {
		if in == nil {
			return nil, errors.Errorf("fastgo Execute: input #%d is nil", i)
		}
		shape, err := e.backend.BufferShape(in)
		if err != nil {
			return nil, errors.WithMessagef(err, "fastgo Execute: input #%d", i)
		}
		if !shape.Equal(e.inShapes[i]) {
			return nil, errors.Errorf("fastgo Execute: input #%d (%s) is %s, want %s", i, e.names[i], shape, e.inShapes[i])
		}
	}
	for i, in := range inputs {
		if len(donate) > i && donate[i] {
			r.take(i, in)
		} else {
			r.buf[i] = in
		}
	}
	for i, n := range e.consts {
		r.buf[n.slot] = e.constBufs[i]
	}
	for _, st := range e.steps {
		var err error
		if st.seg != nil {
			err = r.segment(st.seg)
		} else {
			err = r.call(st.call)
		}
		if err != nil {
			r.releaseAll()
			return nil, err
		}
		for _, s := range st.frees {
			r.release(s)
		}
	}
	out := make([]backends.Buffer, len(e.outSlots))
	for i, s := range e.outSlots {
		if r.owned[s] {
			out[i] = r.buf[s]
			r.disown(s) // kept in the slot in case it is returned twice
			continue
		}
		// A caller's undonated input, a constant, or a value returned twice:
		// the caller gets a copy it can finalize.
		c, err := e.copyBuffer(r.buf[s], e.outShapes[i])
		if err != nil {
			r.releaseAll()
			for _, b := range out[:i] {
				_ = e.backend.BufferFinalize(b)
			}
			return nil, err
		}
		out[i] = c
	}
	r.releaseAll()
	return out, nil
}

func (e *Executable) copyBuffer(buf backends.Buffer, shape shapes.Shape) (backends.Buffer, error) {
	flat, err := e.backend.BufferData(buf)
	if err != nil {
		return nil, err
	}
	return e.backend.BufferFromFlatData(0, flat, shape)
}

// segment runs a compiled segment. The inputs it may take over and this
// run owns are donated: simplego then reuses or frees them itself.
func (r *run) segment(p *segmentPlan) error {
	in := make([]backends.Buffer, len(p.in))
	donate := make([]bool, len(p.in))
	for j, s := range p.in {
		if s < 0 {
			in[j] = p.placeholder[j]
			continue
		}
		in[j] = r.buf[s]
		if p.donate[j] && r.owned[s] {
			donate[j] = true
		}
	}
	outs, err := p.exe.Execute(in, donate, 0)
	if err != nil {
		// simplego invalidates donated inputs even when it fails.
		for j, s := range p.in {
			if donate[j] {
				r.disown(s)
				r.buf[s] = nil
			}
		}
		return err
	}
	for j, s := range p.in {
		if donate[j] {
			r.disown(s)
			r.buf[s] = nil
		}
	}
	for j, s := range p.out {
		if s < 0 {
			_ = r.e.backend.BufferFinalize(outs[j]) // the sentinel (see Compile)
			continue
		}
		r.take(s, outs[j])
	}
	return nil
}

// errNotFloat32 is returned when a Go call finds a buffer of another dtype.
var errNotFloat32 = errors.New("fastgo: a Go call read a buffer that is not float32")

// call runs a Go call into a new buffer from simplego's pool, reading its
// inputs' buffers in place.
func (r *run) call(c *goCall) error {
	be := r.e.backend
	in := make([][]float32, len(c.in))
	for j, n := range c.in {
		flat, err := be.BufferData(r.buf[n.slot])
		if err != nil {
			return err
		}
		var ok bool
		if in[j], ok = flat.([]float32); !ok {
			return errNotFloat32
		}
	}
	out, flat, err := be.NewSharedBuffer(0, c.out.shape)
	if err != nil {
		return err
	}
	c.run(in, flat.([]float32))
	r.take(c.out.slot, out)
	return nil
}
