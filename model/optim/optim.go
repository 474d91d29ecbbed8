// Package optim trains parameter sets with AdamW and global-norm gradient
// clipping: one compiled GoMLX graph per loss computes the loss and the
// gradients, and Go computes their global norm (clip.go) and updates the
// parameters and moments in one fused AdamW pass (adamw.go). A Session keeps them on the device from one step to the next
// and writes them back to their weights.Sets when asked (Sync, Close), so
// a training loop can be checkpointed, hashed and resumed exactly without
// copying a model's weights three times per step. A Loss declares the
// batch tensors it reads, and Session.Step checks every Batch against them
// before it runs.
package optim

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/alignflow/alignflow/model/progress"
	"github.com/alignflow/alignflow/model/weights"
)

// AdamW holds the optimizer's hyperparameters; the learning rate is given per step.
type AdamW struct {
	Beta1, Beta2, Eps float64
	// WeightDecay is decoupled weight decay applied to matrices (rank >= 2).
	WeightDecay float64
	// ClipNorm scales gradients down when their global L2 norm exceeds it; 0 disables.
	ClipNorm float64
}

// DefaultAdamW is what the models in this project train with.
var DefaultAdamW = AdamW{Beta1: 0.9, Beta2: 0.99, Eps: 1e-8, WeightDecay: 0.0, ClipNorm: 1.0}

// State is everything the optimizer carries between steps.
type State struct {
	Step int64
	M, V *weights.Set
}

// NewState returns a fresh state for params.
func NewState(params *weights.Set) *State {
	return &State{M: params.ZerosLike(), V: params.ZerosLike()}
}

// Save stores the state in one set: moments as "m/<name>" and "v/<name>", step in metadata.
func (s *State) Save() *weights.Set {
	out := weights.NewSet()
	for _, n := range s.M.Names() {
		out.Put("m/"+n, s.M.Get(n))
		out.Put("v/"+n, s.V.Get(n))
	}
	out.Metadata["step"] = strconv.FormatInt(s.Step, 10)
	return out
}

// LoadState is the inverse of State.Save.
func LoadState(set *weights.Set) (*State, error) {
	step, err := strconv.ParseInt(set.Metadata["step"], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("optimizer state: step metadata %q: %w", set.Metadata["step"], err)
	}
	s := &State{Step: step, M: weights.NewSet(), V: weights.NewSet()}
	for _, n := range set.Names() {
		switch {
		case len(n) > 2 && n[:2] == "m/":
			s.M.Put(n[2:], set.Get(n))
		case len(n) > 2 && n[:2] == "v/":
			s.V.Put(n[2:], set.Get(n))
		default:
			return nil, fmt.Errorf("optimizer state: unexpected tensor %q", n)
		}
	}
	return s, nil
}

// LossFn builds a scalar loss from the parameters (by name) and the batch
// tensors, in the order Loss.Inputs declares them, plus any scalar metrics to
// report alongside it.
type LossFn func(params map[string]*graph.Node, batch []*graph.Node) (loss *graph.Node, metrics []*graph.Node)

// Loss is a training objective: the batch tensors it reads and the graph
// that computes it from them. Declaring the inputs lets Session.Step refuse
// a batch of another kind with an error naming the loss, where the graph
// would read the wrong tensor, or fail to compile with an index error.
type Loss struct {
	Name   string // names the loss in errors
	Inputs []Input
	Fn     LossFn
	// RNG, when set, is the name under which Fn finds a random state
	// (graph.RNGStateShape) among the parameters, for draws that differ
	// from step to step (LoRA dropout). The session derives each step's
	// state from the trainer's seed (WithSeed) and the step's number, so a
	// resumed run draws what an uninterrupted one did.
	RNG string
}

// Input declares one batch tensor a loss reads. Axes name its dimensions:
// an axis named by a number has that size, and one name stands for one size
// across the batch, so "B", the rows, must agree between all the tensors.
type Input struct {
	Name  string
	DType dtypes.DType
	Axes  []string
}

// Batch is what Session.Step trains on: the batch's tensors, in the order
// its loss declares them (Loss.Inputs).
type Batch interface {
	Tensors() []*tensors.Tensor
}

// check reports the first way ts is not the batch the loss reads: their
// count, a tensor's dtype or rank, or an axis whose size disagrees with
// the axis's number or with another tensor's axis of the same name.
func (l Loss) check(ts []*tensors.Tensor) error {
	if len(ts) != len(l.Inputs) {
		names := make([]string, len(l.Inputs))
		for i, in := range l.Inputs {
			names[i] = in.Name
		}
		return fmt.Errorf("%s loss: the batch holds %d tensors, the loss reads %d (%s)", l.Name, len(ts), len(l.Inputs), strings.Join(names, ", "))
	}
	size, from := map[string]int{}, map[string]string{}
	for i, in := range l.Inputs {
		sh := ts[i].Shape()
		if sh.DType != in.DType || sh.Rank() != len(in.Axes) {
			return fmt.Errorf("%s loss: batch tensor %d (%s) is %s, the loss reads %s [%s]", l.Name, i, in.Name, sh, in.DType, strings.Join(in.Axes, ","))
		}
		for a, axis := range in.Axes {
			d := sh.Dimensions[a]
			if n, err := strconv.Atoi(axis); err == nil && d != n {
				return fmt.Errorf("%s loss: %s has %d along axis %d, the loss reads %d", l.Name, in.Name, d, a, n)
			}
			switch want, seen := size[axis]; {
			case !seen:
				size[axis], from[axis] = d, in.Name
			case d != want:
				return fmt.Errorf("%s loss: %s has %s = %d, but %s has %s = %d", l.Name, in.Name, axis, d, from[axis], axis, want)
			}
		}
	}
	return nil
}

// Trainer runs optimizer steps of one loss, in Sessions (Start). It compiles
// once per batch shape.
type Trainer struct {
	backend backends.Backend
	exec    *graph.Exec
	names   []string
	// frozen names the tensors the loss reads but never trains (a LoRA
	// adapter's base); frozenSet holds them (WithFrozen).
	frozen    []string
	frozenSet *weights.Set
	// seed derives the random state of each step of a loss with an RNG.
	seed    int64
	hasSeed bool
	opt     AdamW
	loss    Loss
	// meter is told of every step taken (WithProgress); nil for none.
	meter progress.Meter
}

// WithProgress is the trainer with its compiled step, reporting every step
// it takes to m and stopping with m's error (the step is taken): one
// computation's view of a trainer that others share.
func (t *Trainer) WithProgress(m progress.Meter) *Trainer {
	v := *t
	v.meter = m
	return &v
}

// WithFrozen is the trainer reading its frozen tensors from set: the base
// a session's steps train an adapter over. The set is only read; a session
// uploads it once (Start) and reads no gradient or moment of it.
func (t *Trainer) WithFrozen(set *weights.Set) *Trainer {
	v := *t
	v.frozenSet = set
	return &v
}

// WithSeed is the trainer drawing its loss's random numbers (Loss.RNG)
// from seed: step n's state is a function of seed and n alone.
func (t *Trainer) WithSeed(seed int64) *Trainer {
	v := *t
	v.seed, v.hasSeed = seed, true
	return &v
}

// Frozen is the set WithFrozen gave (nil for none).
func (t *Trainer) Frozen() *weights.Set { return t.frozenSet }

// StepResult reports one step.
type StepResult struct {
	Loss     float64
	GradNorm float64
	Metrics  []float64
}

// The outputs of the trainer's graph, in order; the gradients follow them,
// in the order of names, then the loss's metrics.
const (
	outLoss = iota
	outGrads
)

// NewTrainer prepares a trainer of objective for parameters with the given
// names (sorted, as weights.Set.Names returns them), and for frozen
// tensors the objective reads beside them without training them (a LoRA
// adapter's base, given by WithFrozen): the graph takes no gradient of
// them, so GoMLX's reverse pass computes none of their weight gradients,
// and the session keeps no moments of them.
//
// The graph computes the loss, its metrics and the gradients. The
// gradients' global norm, the clipping scale (clip.go) and AdamW's update
// (adamw.go) are not in it but computed in Go by the session, in one pass
// over each tensor each: as graph ops the update took about ten passes,
// each allocating a tensor the size of the parameters, and the norm's
// squares and sums two more. The graph reads the parameters in place and
// never produces new ones, so the parameters stay where the session keeps
// them.
func NewTrainer(b backends.Backend, names []string, opt AdamW, objective Loss, frozen ...string) *Trainer {
	np, nf := len(names), len(frozen)
	t := &Trainer{backend: b, names: names, frozen: frozen, opt: opt, loss: objective}
	t.exec = graph.MustNewExec(b, func(in []*graph.Node) []*graph.Node {
		params, batch := in[:np], in[np+nf:]
		byName := make(map[string]*graph.Node, np+nf)
		for i, n := range names {
			byName[n] = params[i]
		}
		for i, n := range frozen {
			byName[n] = in[np+i]
		}
		if objective.RNG != "" {
			byName[objective.RNG], batch = batch[0], batch[1:]
		}
		loss, metrics := objective.Fn(byName, batch)
		grads := graph.Gradient(loss, params...)
		out := append(make([]*graph.Node, 0, outGrads+np+len(metrics)), loss)
		out = append(out, grads...)
		return append(out, metrics...)
	})
	t.exec.SetMaxCache(-1)
	return t
}

// NonFiniteError reports a NaN or Inf loss or gradient: a diverged run that
// retrying will not fix.
type NonFiniteError struct {
	Step           int64
	Loss, GradNorm float64
}

func (e *NonFiniteError) Error() string {
	return fmt.Sprintf("step %d: loss %v, gradient norm %v: training diverged (lower the learning rate)", e.Step, e.Loss, e.GradNorm)
}

// Scalar converts a scalar float GoMLX tensor to float64.
func Scalar(t *tensors.Tensor) float64 {
	switch v := t.Value().(type) {
	case float32:
		return float64(v)
	case float64:
		return v
	default:
		panic(fmt.Sprintf("scalar: unexpected %T", v))
	}
}
