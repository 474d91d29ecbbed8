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

// execStep is a segment or a kernel call, and the slots whose last reader
// it is.
type execStep struct {
	seg   *segmentPlan
	dot   *dotCall
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
			err = r.dot(st.dot)
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

// dot runs a kernel call into a new buffer from simplego's pool.
func (r *run) dot(d *dotCall) error {
	be := r.e.backend
	lhs, err := be.BufferData(r.buf[d.lhs.slot])
	if err != nil {
		return err
	}
	rhs, err := be.BufferData(r.buf[d.rhs.slot])
	if err != nil {
		return err
	}
	out, flat, err := be.NewSharedBuffer(0, d.out.shape)
	if err != nil {
		return err
	}
	a, b, c := lhs.([]float32), rhs.([]float32), flat.([]float32)
	mk, kn, mn := d.m*d.k, d.k*d.n, d.m*d.n
	for i := range d.batch {
		matMul(d.m, d.n, d.k, a[i*mk:(i+1)*mk], d.lda, d.transA, b[i*kn:(i+1)*kn], d.ldb, d.transB, c[i*mn:(i+1)*mn], d.n)
	}
	r.take(d.out.slot, out)
	return nil
}
