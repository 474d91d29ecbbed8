package optim

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/alignflow/alignflow/model/progress"
	"github.com/alignflow/alignflow/model/weights"
)

// Session is a run of optimizer steps on one parameter set and its
// optimizer state, which it keeps in memory of its own from one step to
// the next: the parameters as GoMLX tensors on the trainer's device, the
// moments beside them. A step then copies nothing but the batch in: the
// graph reads the parameters where they are, and the fused AdamW pass
// (adamw.go) updates parameters and moments in place from the gradients.
// On the pure-Go backends the device's buffers are Go memory that GoMLX
// shares with the host (shared buffers), so the pass writes straight into
// the buffers the next step's graph reads, and no buffer is ever replaced
// (nothing to donate). On a backend without them (XLA on an accelerator)
// the parameters' host copy is the truth: each step uploads it and
// donates the upload to the graph, which may reuse its memory for the
// gradients, and the pass reads the gradients back, which is still a
// third of what copying parameters and both moments each way cost.
//
// While a session runs, its weights.Sets are lent to it (weights.Set.Lend):
// they hold no tensors, and reading them panics, so nothing reads weights
// the session has moved past. Sync writes the state back (a checkpoint, a
// digest); Close writes it back and ends the session. A session is for one
// goroutine.
type Session struct {
	t      *Trainer
	holder string // what the lent sets say holds them
	params *weights.Set
	st     *State
	shapes [][]int
	decay  []bool // weight decay applies (rank >= 2 with WeightDecay > 0)
	p      []*tensors.Tensor
	// frozen are the trainer's frozen tensors on the device, uploaded once.
	frozen []*tensors.Tensor
	m, v   [][]float32
	step   int64
	// synced is what the sets were given at the last Sync, by name, while
	// they are readable (nil while lent): the next step lends them again and
	// refuses to if anything was put into them since.
	synced map[*weights.Set]map[string]*weights.Tensor
	// untrained are the sets' tensors the trainer has no name for, which
	// Sync puts back as they were.
	untrained map[*weights.Set]map[string]*weights.Tensor
	closed    bool
	// broken is why the state is no longer whole (a step failed halfway
	// through its update): the session writes nothing back, and its sets
	// stay lent.
	broken error
}

// Start begins a session of steps on params and st, which it lends
// (weights.Set.Lend) until Sync or Close writes them back; tensors the
// trainer has no name for come back as they were. Parameters or moments
// without one of the trainer's names, of another shape than the
// parameter, a set lent already or given twice are errors, before
// anything is lent.
func (t *Trainer) Start(params *weights.Set, st *State) (*Session, error) {
	if params == st.M || params == st.V || st.M == st.V {
		return nil, errors.New("start training: the parameters and the two moments must be three sets")
	}
	for _, set := range []struct {
		what string
		s    *weights.Set
	}{{"parameters", params}, {"optimizer moment m", st.M}, {"optimizer moment v", st.V}} {
		if holder, lent := set.s.Lent(); lent {
			return nil, fmt.Errorf("start training: %s: the set is lent to %s already", set.what, holder)
		}
		for _, n := range t.names {
			x := set.s.Get(n)
			if x == nil {
				return nil, fmt.Errorf("start training: %s: tensor %q missing", set.what, n)
			}
			if p := params.Get(n); !slices.Equal(x.Shape, p.Shape) {
				return nil, fmt.Errorf("start training: %s: tensor %q is %v, the parameter %v", set.what, n, x.Shape, p.Shape)
			}
		}
	}
	s := &Session{t: t, holder: fmt.Sprintf("an optimizer session of the %s loss", t.loss.Name), params: params, st: st, step: st.Step,
		untrained: map[*weights.Set]map[string]*weights.Tensor{}}
	for _, set := range []*weights.Set{params, st.M, st.V} {
		s.untrained[set] = map[string]*weights.Tensor{}
		for _, n := range set.Names() {
			if !slices.Contains(t.names, n) {
				s.untrained[set][n] = set.Get(n)
			}
		}
	}
	for _, n := range t.names {
		x := params.Get(n)
		p := x.ToGoMLX()
		// Shared with the host where the backend can: the fused pass then
		// writes into the buffer the graph reads.
		if err := p.MaterializeOnDevice(t.backend, true, 0); err != nil {
			s.free()
			return nil, fmt.Errorf("start training: parameter %q: %w", n, err)
		}
		s.p = append(s.p, p)
		s.shapes = append(s.shapes, slices.Clone(x.Shape))
		s.decay = append(s.decay, t.opt.WeightDecay > 0 && len(x.Shape) >= 2)
		s.m = append(s.m, slices.Clone(st.M.Get(n).Data))
		s.v = append(s.v, slices.Clone(st.V.Get(n).Data))
	}
	if err := s.upload(); err != nil {
		s.free()
		return nil, err
	}
	s.lend()
	return s, nil
}

// stepRNG is the random state of the part-th batch (from 0) of step
// (1-based) of a trainer seeded seed: the part-th draw of the step's
// stream.
func stepRNG(seed, step int64, part int) (*tensors.Tensor, error) {
	src := rand.NewPCG(uint64(seed), uint64(step))
	x := src.Uint64()
	for range part {
		x = src.Uint64()
	}
	return graph.RNGStateFromSeed(int64(x >> 1))
}

// upload puts the trainer's frozen tensors on the device for the
// session's steps to read.
func (s *Session) upload() error {
	t := s.t
	if t.loss.RNG != "" && !t.hasSeed {
		return fmt.Errorf("start training: the %s loss draws random numbers and the trainer has no seed (Trainer.WithSeed)", t.loss.Name)
	}
	if len(t.frozen) > 0 && t.frozenSet == nil {
		return fmt.Errorf("start training: the %s loss reads %d frozen tensors and none were given (Trainer.WithFrozen)", t.loss.Name, len(t.frozen))
	}
	for _, n := range t.frozen {
		x := t.frozenSet.Get(n)
		if x == nil {
			return fmt.Errorf("start training: frozen tensor %q missing", n)
		}
		f := x.ToGoMLX()
		if err := f.MaterializeOnDevice(t.backend, true, 0); err != nil {
			f.FinalizeAll()
			return fmt.Errorf("start training: frozen tensor %q: %w", n, err)
		}
		s.frozen = append(s.frozen, f)
	}
	return nil
}

// lend hands the sets to the session, dropping their tensors.
func (s *Session) lend() {
	for _, set := range []*weights.Set{s.params, s.st.M, s.st.V} {
		set.Lend(s.holder)
	}
	s.synced = nil
}

// Step applies one optimizer step on batch at rate lr; with more batches,
// one step on the sum of their gradients (gradient accumulation: a loss
// that divides each batch's sum by the step's whole denominator then
// gives the loss of their union, whose value is the sum of theirs). The
// gradients are summed in Go in the batches' order, so the step is the
// same on any machine. A batch that is not the one the loss reads is an
// error before anything runs; a non-finite loss or gradient leaves the
// session's state unchanged and returns a *NonFiniteError. After a Sync,
// Step first lends the sets again: one that was given other tensors since
// is an error (Start a new session from them instead).
func (s *Session) Step(lr float64, batch Batch, more ...Batch) (StepResult, error) {
	if err := s.usable(); err != nil {
		return StepResult{}, fmt.Errorf("train step: %w", err)
	}
	t := s.t
	all := append([]Batch{batch}, more...)
	inputs := make([][]*tensors.Tensor, len(all))
	for i, b := range all {
		inputs[i] = b.Tensors()
		if err := t.loss.check(inputs[i]); err != nil {
			return StepResult{}, fmt.Errorf("train step: %w", err)
		}
	}
	if s.synced != nil {
		if err := s.unchangedSinceSync(); err != nil {
			return StepResult{}, fmt.Errorf("train step: %w", err)
		}
		s.lend()
	}
	np := len(t.names)
	var grads []*tensors.Tensor
	var res StepResult
	for i, ts := range inputs {
		outs, err := s.run(ts, i)
		if err != nil {
			return StepResult{}, fmt.Errorf("train step: %w", err)
		}
		res.Loss += Scalar(outs[outLoss])
		for j, o := range outs[outGrads+np:] {
			if i == 0 {
				res.Metrics = append(res.Metrics, 0)
			}
			res.Metrics[j] += Scalar(o) / float64(len(inputs))
		}
		if i == 0 {
			// The first batch's gradients hold the sum; the others are
			// added in and freed at once.
			defer finalize(outs)
			grads = outs[outGrads : outGrads+np]
			continue
		}
		err = addGradients(grads, outs[outGrads:outGrads+np])
		finalize(outs)
		if err != nil {
			return StepResult{}, fmt.Errorf("train step: %w", err)
		}
	}
	norm, scale, err := clipping(t.opt.ClipNorm, grads)
	if err != nil {
		return StepResult{}, fmt.Errorf("train step: %w", err)
	}
	res.GradNorm = float64(norm)
	step := s.step + 1
	if math.IsNaN(res.Loss) || math.IsInf(res.Loss, 0) || math.IsNaN(res.GradNorm) || math.IsInf(res.GradNorm, 0) {
		return res, &NonFiniteError{Step: step, Loss: res.Loss, GradNorm: res.GradNorm}
	}
	a := newAdamWStep(t.opt, step, lr, scale)
	for i, p := range s.p {
		var updateErr error
		err := p.MutableFlatData(func(flat any) {
			updateErr = tensors.ConstFlatData(grads[i], func(g []float32) {
				a.applyParallel(flat.([]float32), s.m[i], s.v[i], g, s.decay[i])
			})
		})
		if err = errors.Join(err, updateErr); err != nil {
			s.broken = fmt.Errorf("step %d updated some parameters and failed on %q: %w", step, t.names[i], err)
			return res, fmt.Errorf("train step: %w", s.broken)
		}
	}
	s.step = step
	return res, progress.Advance(t.meter, 1)
}

// addGradients adds more to sum, tensor by tensor.
func addGradients(sum, more []*tensors.Tensor) error {
	for j, g := range sum {
		var addErr error
		err := g.MutableFlatData(func(flat any) {
			addErr = tensors.ConstFlatData(more[j], func(h []float32) {
				acc := flat.([]float32)
				for k := range acc {
					acc[k] += h[k]
				}
			})
		})
		if err = errors.Join(err, addErr); err != nil {
			return fmt.Errorf("summing gradient %d: %w", j, err)
		}
	}
	return nil
}

func finalize(ts []*tensors.Tensor) {
	for _, o := range ts {
		o.FinalizeAll()
	}
}

// run executes the trainer's graph on one batch's tensors, the part-th of
// the step's batches: the loss, the gradients and the metrics.
func (s *Session) run(ts []*tensors.Tensor, part int) ([]*tensors.Tensor, error) {
	t := s.t
	args := make([]any, 0, len(s.p)+len(ts))
	for i, p := range s.p {
		if p.IsShared() {
			args = append(args, p) // the graph reads the buffer the update writes
			continue
		}
		// The host copy is the parameter (the update writes it); the
		// device's copy is for this batch only, so the graph may reuse its
		// memory for the gradients.
		d, err := graph.DonateTensorBuffer(p, t.backend, 0)
		if err != nil {
			return nil, fmt.Errorf("parameter %q: %w", t.names[i], err)
		}
		args = append(args, d)
	}
	for _, f := range s.frozen {
		args = append(args, f) // read, never donated: every step reads it
	}
	if t.loss.RNG != "" {
		state, err := stepRNG(t.seed, s.step+1, part)
		if err != nil {
			return nil, err
		}
		args = append(args, state)
	}
	for _, x := range ts {
		args = append(args, x)
	}
	return t.exec.Exec(args...)
}

// unchangedSinceSync reports a set given other tensors since the last Sync.
func (s *Session) unchangedSinceSync() error {
	for set, gave := range s.synced {
		if set.Len() != len(gave) {
			return fmt.Errorf("a set of the session holds %d tensors, %d at the last Sync", set.Len(), len(gave))
		}
		for n, x := range gave {
			if set.Get(n) != x {
				return fmt.Errorf("tensor %q was replaced since the last Sync", n)
			}
		}
	}
	return nil
}

// Steps is how many optimizer steps the state has taken: State.Step as
// Sync will write it.
func (s *Session) Steps() int64 { return s.step }

// Sync writes the session's parameters, moments and step count into the
// sets and State it started from, as copies: they are readable, and the
// session's next Step lends them again. A Sync with no Step since the last
// one does nothing.
func (s *Session) Sync() error {
	if err := s.usable(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	if s.synced != nil {
		return nil
	}
	params := make([]*weights.Tensor, len(s.p))
	for i, p := range s.p {
		if err := tensors.ConstFlatData(p, func(flat []float32) {
			params[i] = &weights.Tensor{Shape: slices.Clone(s.shapes[i]), Data: slices.Clone(flat)}
		}); err != nil {
			return fmt.Errorf("sync: parameter %q: %w", s.t.names[i], err)
		}
	}
	s.synced = map[*weights.Set]map[string]*weights.Tensor{}
	for _, set := range []struct {
		s    *weights.Set
		data func(i int) *weights.Tensor
	}{
		{s.params, func(i int) *weights.Tensor { return params[i] }},
		{s.st.M, func(i int) *weights.Tensor {
			return &weights.Tensor{Shape: slices.Clone(s.shapes[i]), Data: slices.Clone(s.m[i])}
		}},
		{s.st.V, func(i int) *weights.Tensor {
			return &weights.Tensor{Shape: slices.Clone(s.shapes[i]), Data: slices.Clone(s.v[i])}
		}},
	} {
		set.s.Reclaim()
		gave := maps.Clone(s.untrained[set.s])
		for n, x := range gave {
			set.s.Put(n, x)
		}
		for i, n := range s.t.names {
			gave[n] = set.data(i)
			set.s.Put(n, gave[n])
		}
		s.synced[set.s] = gave
	}
	s.st.Step = s.step
	return nil
}

// usable reports why the session can take no step and write nothing back.
func (s *Session) usable() error {
	switch {
	case s.broken != nil:
		return s.broken
	case s.closed:
		return errors.New("the session is closed")
	}
	return nil
}

// Close writes the state back (Sync) and ends the session, freeing its
// device buffers; closing a closed session does nothing. Callers defer it
// on every path, an error's too: a step that failed on a non-finite loss
// leaves the last good state, and Close writes that back. Only a session
// whose update failed halfway (a device error) writes nothing and leaves
// its sets lent: their state is no step's.
func (s *Session) Close() error {
	if s.closed {
		return nil
	}
	err := s.Sync()
	s.free()
	s.closed = true
	return err
}

// free releases the parameters' device buffers.
func (s *Session) free() {
	for _, p := range append(s.p, s.frozen...) {
		p.FinalizeAll()
	}
	s.p, s.frozen = nil, nil
}
