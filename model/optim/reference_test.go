package optim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/model/weights"
)

// graphUpdate is AdamW's update of one tensor as graph ops, as the trainer
// computed it inside its graph before the fused pass (adamw.go) replaced
// it: the reference the fused pass must match bit for bit.
func graphUpdate(opt AdamW, p, m, v, g, scale, lr, c1, c2 *graph.Node) (newP, newM, newV *graph.Node) {
	gr := graph.Mul(g, scale)
	newM = graph.Add(graph.MulScalar(m, opt.Beta1), graph.MulScalar(gr, 1-opt.Beta1))
	newV = graph.Add(graph.MulScalar(v, opt.Beta2), graph.MulScalar(graph.Square(gr), 1-opt.Beta2))
	mHat := graph.Div(newM, c1)
	vHat := graph.Div(newV, c2)
	update := graph.Div(mHat, graph.AddScalar(graph.Sqrt(vHat), opt.Eps))
	if opt.WeightDecay > 0 && p.Rank() >= 2 {
		update = graph.Add(update, graph.MulScalar(p, opt.WeightDecay))
	}
	return graph.Sub(p, graph.Mul(lr, update)), newM, newV
}

// ReferenceTrainer is the trainer as it was before sessions: one graph that
// takes the parameters and moments from weights.Sets, computes the loss,
// the gradients and AdamW's update (graphUpdate), and returns the new
// parameters and moments, which Step copies back into the sets. Tests
// check that sessions train bit for bit as it did.
type ReferenceTrainer struct {
	exec  *graph.Exec
	names []string
	opt   AdamW
}

// NewReferenceTrainer is NewTrainer's reference (ReferenceTrainer).
func NewReferenceTrainer(b backends.Backend, names []string, opt AdamW, objective Loss) *ReferenceTrainer {
	np := len(names)
	t := &ReferenceTrainer{names: names, opt: opt}
	t.exec = graph.MustNewExec(b, func(in []*graph.Node) []*graph.Node {
		params, m, v := in[:np], in[np:2*np], in[2*np:3*np]
		lr, c1, c2 := in[3*np], in[3*np+1], in[3*np+2]
		batch := in[3*np+3:]
		byName := make(map[string]*graph.Node, np)
		for i, n := range names {
			byName[n] = params[i]
		}
		loss, metrics := objective.Fn(byName, batch)
		grads := graph.Gradient(loss, params...)
		g := loss.Graph()
		sq := graph.ScalarZero(g, loss.DType())
		for _, gr := range grads {
			sq = graph.Add(sq, graph.ReduceAllSum(graph.Square(gr)))
		}
		norm := graph.Sqrt(sq)
		scale := graph.ScalarOne(g, loss.DType())
		if opt.ClipNorm > 0 {
			scale = graph.Min(scale, graph.Div(graph.Scalar(g, loss.DType(), opt.ClipNorm), graph.AddScalar(norm, 1e-6)))
		}
		newP, newM, newV := make([]*graph.Node, np), make([]*graph.Node, np), make([]*graph.Node, np)
		for i := range params {
			newP[i], newM[i], newV[i] = graphUpdate(opt, params[i], m[i], v[i], grads[i], scale, lr, c1, c2)
		}
		out := append(append(append([]*graph.Node{}, newP...), newM...), newV...)
		out = append(out, loss, norm)
		return append(out, metrics...)
	})
	t.exec.SetMaxCache(-1)
	return t
}

// Step is one step in place on params and st.
func (t *ReferenceTrainer) Step(params *weights.Set, st *State, lr float64, batch Batch) (StepResult, error) {
	np := len(t.names)
	var args []any
	for _, s := range []*weights.Set{params, st.M, st.V} {
		a, err := s.Args(t.names)
		if err != nil {
			return StepResult{}, err
		}
		args = append(args, a...)
	}
	step := st.Step + 1
	c1 := 1 - math.Pow(t.opt.Beta1, float64(step))
	c2 := 1 - math.Pow(t.opt.Beta2, float64(step))
	args = append(args, float32(lr), float32(c1), float32(c2))
	for _, x := range batch.Tensors() {
		args = append(args, x)
	}
	outs, err := t.exec.Exec(args...)
	if err != nil {
		return StepResult{}, err
	}
	res := StepResult{Loss: Scalar(outs[3*np]), GradNorm: Scalar(outs[3*np+1])}
	for _, o := range outs[3*np+2:] {
		res.Metrics = append(res.Metrics, Scalar(o))
	}
	for i, n := range t.names {
		params.Put(n, weights.FromGoMLX(outs[i]))
		st.M.Put(n, weights.FromGoMLX(outs[np+i]))
		st.V.Put(n, weights.FromGoMLX(outs[2*np+i]))
	}
	st.Step = step
	return res, nil
}

// TestFusedAdamWIsTheGraphUpdate: the fused pass gives, bit for bit, what
// the graph ops it replaced gave, on values from tiny to large with zero
// moments among them, early steps (strong bias correction) and late ones,
// clipped and unclipped gradients, with and without weight decay, on a
// vector and on a matrix large enough to be split among goroutines.
func TestFusedAdamWIsTheGraphUpdate(t *testing.T) {
	be, err := backend.New(backend.Go)
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(1, 2))
	value := func() float32 { // sign, magnitude 1e-9 .. 1e3, and some zeros
		if rng.IntN(20) == 0 {
			return 0
		}
		x := float32(math.Pow(10, -9+12*rng.Float64()))
		if rng.IntN(2) == 0 {
			x = -x
		}
		return x
	}
	for _, shape := range [][]int{{1000}, {3, applyChunk + 1234}} {
		n := shape[0]
		if len(shape) == 2 {
			n *= shape[1]
		}
		p, m, v, g := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
		for i := range n {
			p[i], m[i], g[i] = value(), value(), value()
			v[i] = float32(math.Abs(float64(value())))
		}
		for _, opt := range []AdamW{
			DefaultAdamW,
			{Beta1: 0.8, Beta2: 0.95, Eps: 1e-6, WeightDecay: 0.1},
			{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01, ClipNorm: 1},
		} {
			ref := graph.MustNewExec(be, func(in []*graph.Node) []*graph.Node {
				newP, newM, newV := graphUpdate(opt, in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7])
				return []*graph.Node{newP, newM, newV}
			})
			for _, step := range []int64{1, 2, 10, 5000} {
				for _, scale := range []float32{1, 0.37} {
					t.Run(fmt.Sprintf("%v/%+v/step %d/scale %v", shape, opt, step, scale), func(t *testing.T) {
						const lr = 3e-4
						a := newAdamWStep(opt, step, lr, scale)
						outs := ref.MustExec(
							tensors.FromFlatDataAndDimensions(p, shape...), tensors.FromFlatDataAndDimensions(m, shape...),
							tensors.FromFlatDataAndDimensions(v, shape...), tensors.FromFlatDataAndDimensions(g, shape...),
							scale, float32(lr), a.c1, a.c2)
						gotP, gotM, gotV := append([]float32(nil), p...), append([]float32(nil), m...), append([]float32(nil), v...)
						a.applyParallel(gotP, gotM, gotV, g, opt.WeightDecay > 0 && len(shape) >= 2)
						for k, got := range [][]float32{gotP, gotM, gotV} {
							want := tensors.MustCopyFlatData[float32](outs[k])
							for i := range want {
								if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
									t.Fatalf("%s[%d]: fused %v (%08x), graph %v (%08x), from p %v m %v v %v g %v",
										[]string{"p", "m", "v"}[k], i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]), p[i], m[i], v[i], g[i])
								}
							}
						}
					})
				}
			}
		}
	}
}

// TestFusedAdamWIsTheSameAtAnyThreadCount: the fused pass over a tensor of
// many chunks gives the same bits on one goroutine as on several.
func TestFusedAdamWIsTheSameAtAnyThreadCount(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	n := 5*applyChunk + 17
	p, m, v, g := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
	for i := range n {
		p[i], m[i], v[i], g[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64()*1e-2), float32(rng.Float64()*1e-4), float32(rng.NormFloat64())
	}
	a := newAdamWStep(AdamW{Beta1: 0.9, Beta2: 0.99, Eps: 1e-8, WeightDecay: 0.1}, 7, 1e-3, 0.5)
	var first [3][]float32
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, procs := range []int{1, 2, 5} {
		runtime.GOMAXPROCS(procs)
		gotP, gotM, gotV := append([]float32(nil), p...), append([]float32(nil), m...), append([]float32(nil), v...)
		a.applyParallel(gotP, gotM, gotV, g, true)
		if first[0] == nil {
			first = [3][]float32{gotP, gotM, gotV}
			continue
		}
		require.Equal(t, first, [3][]float32{gotP, gotM, gotV}, "GOMAXPROCS %d", procs)
	}
}
