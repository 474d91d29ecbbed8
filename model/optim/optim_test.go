package optim_test

import (
	"errors"
	"math"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/weights"
)

// batch is an optim.Batch of the tensors given.
type batch []*tensors.Tensor

func (b batch) Tensors() []*tensors.Tensor { return b }

// quadratic is a tiny least-squares loss over rows x [B,2] weighted by s [B]:
//
//	L = 0.5/B * sum_b s_b * sum_j r_bj^2,  r = x w + b
//
// with w [2,3] (a matrix: weight decay applies) and b [3] (a vector: it does
// not). It reports sum(x) as a metric.
var quadratic = optim.Loss{
	Name: "quadratic",
	Inputs: []optim.Input{
		{Name: "x", DType: dtypes.Float32, Axes: []string{"B", "2"}},
		{Name: "s", DType: dtypes.Float32, Axes: []string{"B"}},
	},
	Fn: func(p map[string]*graph.Node, in []*graph.Node) (*graph.Node, []*graph.Node) {
		x, s := in[0], in[1]
		rows := x.Shape().Dimensions[0]
		r := graph.Add(backend.Linear(x, p["w"]), graph.BroadcastPrefix(p["b"], rows))
		perRow := graph.Mul(graph.ReduceSum(graph.Square(r), -1), s)
		return graph.MulScalar(graph.ReduceAllSum(perRow), 0.5/float64(rows)), []*graph.Node{graph.ReduceAllSum(x)}
	},
}

var (
	x0 = [][]float32{{1, 2}, {-1, 0.5}, {0.3, -2}}
	s0 = []float32{1, 0.5, 2}
)

func initialParams() *weights.Set {
	p := weights.NewSet()
	p.Put("w", &weights.Tensor{Shape: []int{2, 3}, Data: []float32{0.5, -1, 2, 1.5, 0.3, -0.7}})
	p.Put("b", &weights.Tensor{Shape: []int{3}, Data: []float32{0.2, -0.4, 1}})
	return p
}

// reference is AdamW with global-norm clipping worked by hand in float64,
// on the quadratic's gradient written out: dL/dw_ij = 1/B sum_b s_b x_bi r_bj
// and dL/db_j = 1/B sum_b s_b r_bj.
type reference struct {
	opt        optim.AdamW
	w, b       []float64 // w row-major [2,3]
	mw, vw     []float64
	mb, vb     []float64
	step       int
	loss, norm float64
}

func newReference(opt optim.AdamW, p *weights.Set) *reference {
	r := &reference{opt: opt, mw: make([]float64, 6), vw: make([]float64, 6), mb: make([]float64, 3), vb: make([]float64, 3)}
	for _, v := range p.Get("w").Data {
		r.w = append(r.w, float64(v))
	}
	for _, v := range p.Get("b").Data {
		r.b = append(r.b, float64(v))
	}
	return r
}

func (r *reference) stepOn(x [][]float32, s []float32, lr float64) {
	rows := float64(len(x))
	gw, gb := make([]float64, 6), make([]float64, 3)
	r.loss = 0
	for bi, row := range x {
		for j := 0; j < 3; j++ {
			res := float64(row[0])*r.w[j] + float64(row[1])*r.w[3+j] + r.b[j]
			r.loss += 0.5 / rows * float64(s[bi]) * res * res
			for i := 0; i < 2; i++ {
				gw[i*3+j] += float64(s[bi]) * float64(row[i]) * res / rows
			}
			gb[j] += float64(s[bi]) * res / rows
		}
	}
	sq := 0.0
	for _, g := range append(append([]float64(nil), gw...), gb...) {
		sq += g * g
	}
	r.norm = math.Sqrt(sq)
	scale := 1.0
	if r.opt.ClipNorm > 0 {
		scale = math.Min(1, r.opt.ClipNorm/(r.norm+1e-6))
	}
	r.step++
	c1 := 1 - math.Pow(r.opt.Beta1, float64(r.step))
	c2 := 1 - math.Pow(r.opt.Beta2, float64(r.step))
	update := func(p, m, v, g []float64, decay float64) {
		for k := range p {
			gs := g[k] * scale
			m[k] = r.opt.Beta1*m[k] + (1-r.opt.Beta1)*gs
			v[k] = r.opt.Beta2*v[k] + (1-r.opt.Beta2)*gs*gs
			u := (m[k]/c1)/(math.Sqrt(v[k]/c2)+r.opt.Eps) + decay*p[k]
			p[k] -= lr * u
		}
	}
	update(r.w, r.mw, r.vw, gw, r.opt.WeightDecay)
	update(r.b, r.mb, r.vb, gb, 0) // rank 1: no weight decay
}

func asFloat64(t *weights.Tensor) []float64 {
	out := make([]float64, len(t.Data))
	for i, v := range t.Data {
		out[i] = float64(v)
	}
	return out
}

// TestAdamWStepIsTheFormula: three AdamW steps on the quadratic give the
// parameters, moments, loss and (unclipped) gradient norm of the formula
// worked by hand: bias-corrected moments, gradients scaled down to
// ClipNorm when their global norm exceeds it, weight decay on matrices only.
func TestAdamWStepIsTheFormula(t *testing.T) {
	be, err := backend.New(backend.Go)
	require.NoError(t, err)
	for _, tc := range []struct {
		name    string
		opt     optim.AdamW
		clipped bool
	}{
		{"clipped, decayed", optim.AdamW{Beta1: 0.9, Beta2: 0.99, Eps: 1e-8, WeightDecay: 0.1, ClipNorm: 0.5}, true},
		{"clip above the norm", optim.AdamW{Beta1: 0.8, Beta2: 0.9, Eps: 1e-3, WeightDecay: 0.3, ClipNorm: 100}, false},
		{"no clipping, no decay", optim.AdamW{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			params := initialParams()
			tr := optim.NewTrainer(be, params.Names(), tc.opt, quadratic)
			st := optim.NewState(params)
			ref := newReference(tc.opt, params)
			const lr = 0.05
			for step := 1; step <= 3; step++ {
				res, err := tr.Step(params, st, lr, batch{tensors.FromValue(x0), tensors.FromValue(s0)})
				require.NoError(t, err)
				ref.stepOn(x0, s0, lr)
				if step == 1 {
					assert.Equal(t, tc.clipped, ref.norm > tc.opt.ClipNorm && tc.opt.ClipNorm > 0, "the case clips as it says")
				}
				assert.InEpsilon(t, ref.loss, res.Loss, 1e-5, "step %d loss", step)
				assert.InEpsilon(t, ref.norm, res.GradNorm, 1e-5, "step %d gradient norm, before clipping", step)
				assert.InDelta(t, 1+2-1+0.5+0.3-2, res.Metrics[0], 1e-6, "the metric: sum(x)")
				assert.Equal(t, int64(step), st.Step)
				assert.InDeltaSlice(t, ref.w, asFloat64(params.Get("w")), 1e-5, "step %d w", step)
				assert.InDeltaSlice(t, ref.b, asFloat64(params.Get("b")), 1e-5, "step %d b", step)
				assert.InDeltaSlice(t, ref.mw, asFloat64(st.M.Get("w")), 1e-6, "step %d m of w", step)
				assert.InDeltaSlice(t, ref.vb, asFloat64(st.V.Get("b")), 1e-6, "step %d v of b", step)
			}
		})
	}
}

// TestStateSaveLoadRoundTrip: a saved and reloaded optimizer state
// continues training bit for bit as the state it was saved from.
func TestStateSaveLoadRoundTrip(t *testing.T) {
	be, err := backend.New(backend.Go)
	require.NoError(t, err)
	params := initialParams()
	tr := optim.NewTrainer(be, params.Names(), optim.DefaultAdamW, quadratic)
	st := optim.NewState(params)
	b := batch{tensors.FromValue(x0), tensors.FromValue(s0)}
	for i := 0; i < 2; i++ {
		_, err := tr.Step(params, st, 0.01, b)
		require.NoError(t, err)
	}
	saved := st.Save()
	assert.ElementsMatch(t, []string{"m/b", "m/w", "v/b", "v/w"}, saved.Names())
	loaded, err := optim.LoadState(saved)
	require.NoError(t, err)
	assert.Equal(t, st.Step, loaded.Step)
	assert.Equal(t, st.M.Digest(), loaded.M.Digest())
	assert.Equal(t, st.V.Digest(), loaded.V.Digest())

	p1, p2 := params.Clone(), params.Clone()
	_, err = tr.Step(p1, st, 0.01, b)
	require.NoError(t, err)
	_, err = tr.Step(p2, loaded, 0.01, b)
	require.NoError(t, err)
	assert.Equal(t, p1.Digest(), p2.Digest(), "the reloaded state trains exactly as the original")
	assert.Equal(t, st.M.Digest(), loaded.M.Digest())

	for name, broken := range map[string]func(*weights.Set){
		`step metadata "x"`:           func(s *weights.Set) { s.Metadata["step"] = "x" },
		`unexpected tensor "w"`:       func(s *weights.Set) { s.Put("w", weights.NewTensor(1)) },
		`step metadata "": strconv.P`: func(s *weights.Set) { delete(s.Metadata, "step") },
	} {
		s := st.Save()
		broken(s)
		_, err := optim.LoadState(s)
		assert.ErrorContains(t, err, name)
	}
}

// TestNonFiniteLossLeavesParamsUnchanged: a NaN in the batch makes the loss
// NaN; the step reports a *NonFiniteError and changes neither the
// parameters nor the optimizer state, so the run can stop at its last good
// weights.
func TestNonFiniteLossLeavesParamsUnchanged(t *testing.T) {
	be, err := backend.New(backend.Go)
	require.NoError(t, err)
	params := initialParams()
	tr := optim.NewTrainer(be, params.Names(), optim.DefaultAdamW, quadratic)
	st := optim.NewState(params)
	_, err = tr.Step(params, st, 0.01, batch{tensors.FromValue(x0), tensors.FromValue(s0)})
	require.NoError(t, err)
	before, m, v := params.Digest(), st.M.Digest(), st.V.Digest()

	bad := [][]float32{{1, 2}, {float32(math.NaN()), 0.5}, {0.3, -2}}
	res, err := tr.Step(params, st, 0.01, batch{tensors.FromValue(bad), tensors.FromValue(s0)})
	var nf *optim.NonFiniteError
	require.True(t, errors.As(err, &nf), "got %v", err)
	assert.Equal(t, int64(2), nf.Step, "the step that failed")
	assert.True(t, math.IsNaN(res.Loss))
	assert.Contains(t, err.Error(), "training diverged")
	assert.Equal(t, before, params.Digest())
	assert.Equal(t, m, st.M.Digest())
	assert.Equal(t, v, st.V.Digest())
	assert.Equal(t, int64(1), st.Step)
}

// TestStepRefusesAnotherBatch: a batch whose tensors are not the ones the
// loss declares fails before anything runs, with an error that names the
// loss and what differs.
func TestStepRefusesAnotherBatch(t *testing.T) {
	be, err := backend.New(backend.Go)
	require.NoError(t, err)
	x, s := tensors.FromValue(x0), tensors.FromValue(s0)
	for _, tc := range []struct {
		name  string
		batch batch
		want  string
	}{
		{"too few", batch{x}, "train step: quadratic loss: the batch holds 1 tensors, the loss reads 2 (x, s)"},
		{"too many", batch{x, s, s}, "the batch holds 3 tensors, the loss reads 2"},
		{"dtype", batch{tensors.FromValue([][]int32{{1, 2}, {3, 4}, {5, 6}}), s}, "quadratic loss: batch tensor 0 (x) is (Int32)[3 2], the loss reads Float32 [B,2]"},
		{"rank", batch{x, tensors.FromValue([][]float32{{1}, {2}, {3}})}, "batch tensor 1 (s) is (Float32)[3 1], the loss reads Float32 [B]"},
		{"rows", batch{x, tensors.FromValue([]float32{1, 2})}, "quadratic loss: s has B = 2, but x has B = 3"},
		{"fixed axis", batch{tensors.FromValue([][]float32{{1, 2, 3}}), tensors.FromValue([]float32{1})}, "quadratic loss: x has 3 along axis 1, the loss reads 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			params := initialParams()
			tr := optim.NewTrainer(be, params.Names(), optim.DefaultAdamW, quadratic)
			st := optim.NewState(params)
			before := params.Digest()
			_, err := tr.Step(params, st, 0.01, tc.batch)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Equal(t, before, params.Digest())
			assert.Equal(t, int64(0), st.Step)
		})
	}
}

// TestStepNamesAMissingTensor: parameters or moments without one of the
// trainer's names fail the step, saying which set lacks which tensor.
func TestStepNamesAMissingTensor(t *testing.T) {
	be, err := backend.New(backend.Go)
	require.NoError(t, err)
	params := initialParams()
	tr := optim.NewTrainer(be, params.Names(), optim.DefaultAdamW, quadratic)
	b := batch{tensors.FromValue(x0), tensors.FromValue(s0)}
	st := optim.NewState(params)
	partial := weights.NewSet()
	partial.Put("b", st.V.Get("b"))
	st.V = partial
	_, err = tr.Step(params, st, 0.01, b)
	assert.EqualError(t, err, `train step: optimizer moment v: tensor "w" missing`)
}
