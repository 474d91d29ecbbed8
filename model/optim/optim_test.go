package optim_test

import (
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/tokenizer"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/policy"
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
// The steps run in one session, synced after each to read the state.
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
			sess, err := tr.Start(params, st)
			require.NoError(t, err)
			defer sess.Close()
			const lr = 0.05
			for step := 1; step <= 3; step++ {
				res, err := sess.Step(lr, batch{tensors.FromValue(x0), tensors.FromValue(s0)})
				require.NoError(t, err)
				require.NoError(t, sess.Sync())
				ref.stepOn(x0, s0, lr)
				if step == 1 {
					assert.Equal(t, tc.clipped, ref.norm > tc.opt.ClipNorm && tc.opt.ClipNorm > 0, "the case clips as it says")
				}
				assert.InEpsilon(t, ref.loss, res.Loss, 1e-5, "step %d loss", step)
				assert.InEpsilon(t, ref.norm, res.GradNorm, 1e-5, "step %d gradient norm, before clipping", step)
				assert.InDelta(t, 1+2-1+0.5+0.3-2, res.Metrics[0], 1e-6, "the metric: sum(x)")
				assert.Equal(t, int64(step), st.Step)
				assert.Equal(t, int64(step), sess.Steps())
				assert.InDeltaSlice(t, ref.w, asFloat64(params.Get("w")), 1e-5, "step %d w", step)
				assert.InDeltaSlice(t, ref.b, asFloat64(params.Get("b")), 1e-5, "step %d b", step)
				assert.InDeltaSlice(t, ref.mw, asFloat64(st.M.Get("w")), 1e-6, "step %d m of w", step)
				assert.InDeltaSlice(t, ref.vb, asFloat64(st.V.Get("b")), 1e-6, "step %d v of b", step)
			}
		})
	}
}

// steps runs n steps of tr on b from params and st in one session, and
// closes it: params and st then hold the state after the last step.
func steps(t *testing.T, tr *optim.Trainer, params *weights.Set, st *optim.State, lr float64, b optim.Batch, n int) {
	t.Helper()
	sess, err := tr.Start(params, st)
	require.NoError(t, err)
	for i := 0; i < n; i++ {
		_, err := sess.Step(lr, b)
		require.NoError(t, err)
	}
	require.NoError(t, sess.Close())
}

// TestSyncingChangesNoBits: a session synced after every step, a session
// synced once at the end and sessions of one step each end with the same
// bits: writing the state back and taking it again loses nothing, which
// is what lets a phase checkpoint mid-way and resume exactly.
func TestSyncingChangesNoBits(t *testing.T) {
	be, err := backend.New(backend.Go)
	require.NoError(t, err)
	opt := optim.AdamW{Beta1: 0.9, Beta2: 0.99, Eps: 1e-8, WeightDecay: 0.1, ClipNorm: 0.5}
	tr := optim.NewTrainer(be, initialParams().Names(), opt, quadratic)
	b := batch{tensors.FromValue(x0), tensors.FromValue(s0)}
	const n = 4

	once := initialParams()
	onceSt := optim.NewState(once)
	steps(t, tr, once, onceSt, 0.05, b, n)

	every := initialParams()
	everySt := optim.NewState(every)
	sess, err := tr.Start(every, everySt)
	require.NoError(t, err)
	for i := 0; i < n; i++ {
		_, err := sess.Step(0.05, b)
		require.NoError(t, err)
		require.NoError(t, sess.Sync())
		require.NoError(t, sess.Sync(), "a second Sync does nothing")
	}
	require.NoError(t, sess.Close())

	single := initialParams()
	singleSt := optim.NewState(single)
	for i := 0; i < n; i++ {
		steps(t, tr, single, singleSt, 0.05, b, 1)
	}
	for _, got := range []struct {
		p  *weights.Set
		st *optim.State
	}{{every, everySt}, {single, singleSt}} {
		assert.Equal(t, once.Digest(), got.p.Digest())
		assert.Equal(t, onceSt.M.Digest(), got.st.M.Digest())
		assert.Equal(t, onceSt.V.Digest(), got.st.V.Digest())
		assert.Equal(t, int64(n), got.st.Step)
	}
}

// quadraticTrainer is the quadratic loss's trainer on the default
// backend, with fresh parameters and their optimizer state.
func quadraticTrainer(t *testing.T) (*optim.Trainer, *weights.Set, *optim.State) {
	be, err := backend.New(backend.Go)
	require.NoError(t, err)
	params := initialParams()
	return optim.NewTrainer(be, params.Names(), optim.DefaultAdamW, quadratic), params, optim.NewState(params)
}

// TestSessionLendsTheSets: while a session holds the state, its sets hold
// no tensors and reading them panics, naming the session; after Sync they
// hold the state, until the next step takes them again; a tensor put into
// them after a Sync makes the next step an error, not a silent loss of
// the change; a closed session takes no step.
func TestSessionLendsTheSets(t *testing.T) {
	tr, params, st := quadraticTrainer(t)
	b := batch{tensors.FromValue(x0), tensors.FromValue(s0)}
	sess, err := tr.Start(params, st)
	require.NoError(t, err)
	const lent = "weights: the set is lent to an optimizer session of the quadratic loss"
	for _, read := range []func(){
		func() { params.Digest() },
		func() { params.Get("w") },
		func() { st.M.Names() },
		func() { st.V.Clone() },
		func() { params.Put("w", weights.NewTensor(2, 3)) },
	} {
		assert.PanicsWithValue(t, lent+", which holds its tensors until it writes them back (Sync or Close it first)", read)
	}
	_, err = tr.Start(params, st)
	assert.ErrorContains(t, err, "start training: parameters: the set is lent to an optimizer session of the quadratic loss already")

	_, err = sess.Step(0.01, b)
	require.NoError(t, err)
	require.NoError(t, sess.Sync())
	assert.Equal(t, []string{"b", "w"}, params.Names())
	assert.Equal(t, int64(1), st.Step)
	_, err = sess.Step(0.01, b)
	require.NoError(t, err)
	assert.Panics(t, func() { params.Get("w") }, "the step took the sets again")

	require.NoError(t, sess.Sync())
	params.Put("w", weights.NewTensor(2, 3))
	_, err = sess.Step(0.01, b)
	assert.EqualError(t, err, `train step: tensor "w" was replaced since the last Sync`)

	require.NoError(t, sess.Close())
	require.NoError(t, sess.Close(), "closing twice does nothing")
	_, err = sess.Step(0.01, b)
	assert.EqualError(t, err, "train step: the session is closed")
	assert.EqualError(t, sess.Sync(), "sync: the session is closed")
}

// TestStateSaveLoadRoundTrip: a saved and reloaded optimizer state
// continues training bit for bit as the state it was saved from.
func TestStateSaveLoadRoundTrip(t *testing.T) {
	tr, params, st := quadraticTrainer(t)
	b := batch{tensors.FromValue(x0), tensors.FromValue(s0)}
	steps(t, tr, params, st, 0.01, b, 2)
	saved := st.Save()
	assert.ElementsMatch(t, []string{"m/b", "m/w", "v/b", "v/w"}, saved.Names())
	loaded, err := optim.LoadState(saved)
	require.NoError(t, err)
	assert.Equal(t, st.Step, loaded.Step)
	assert.Equal(t, st.M.Digest(), loaded.M.Digest())
	assert.Equal(t, st.V.Digest(), loaded.V.Digest())

	p1, p2 := params.Clone(), params.Clone()
	steps(t, tr, p1, st, 0.01, b, 1)
	steps(t, tr, p2, loaded, 0.01, b, 1)
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
// weights, which closing the session writes back.
func TestNonFiniteLossLeavesParamsUnchanged(t *testing.T) {
	tr, params, st := quadraticTrainer(t)
	sess, err := tr.Start(params, st)
	require.NoError(t, err)
	_, err = sess.Step(0.01, batch{tensors.FromValue(x0), tensors.FromValue(s0)})
	require.NoError(t, err)
	require.NoError(t, sess.Sync())
	before, m, v := params.Digest(), st.M.Digest(), st.V.Digest()

	bad := [][]float32{{1, 2}, {float32(math.NaN()), 0.5}, {0.3, -2}}
	res, err := sess.Step(0.01, batch{tensors.FromValue(bad), tensors.FromValue(s0)})
	var nf *optim.NonFiniteError
	require.True(t, errors.As(err, &nf), "got %v", err)
	assert.Equal(t, int64(2), nf.Step, "the step that failed")
	assert.True(t, math.IsNaN(res.Loss))
	assert.Contains(t, err.Error(), "training diverged")
	require.NoError(t, sess.Close())
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
			sess, err := tr.Start(params, st)
			require.NoError(t, err)
			_, err = sess.Step(0.01, tc.batch)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			require.NoError(t, sess.Close())
			assert.Equal(t, before, params.Digest())
			assert.Equal(t, int64(0), st.Step)
		})
	}
}

// TestStartNamesAMissingTensor: parameters or moments without one of the
// trainer's names, or with another shape, fail to start a session, saying
// which set and which tensor, and lend nothing.
func TestStartNamesAMissingTensor(t *testing.T) {
	tr, params, st := quadraticTrainer(t)
	partial := weights.NewSet()
	partial.Put("b", st.V.Get("b"))
	_, err := tr.Start(params, &optim.State{M: st.M, V: partial})
	assert.EqualError(t, err, `start training: optimizer moment v: tensor "w" missing`)

	reshaped := st.M.Clone()
	reshaped.Put("w", weights.NewTensor(3, 2))
	_, err = tr.Start(params, &optim.State{M: reshaped, V: st.V})
	assert.EqualError(t, err, `start training: optimizer moment m: tensor "w" is [3 2], the parameter [2 3]`)
	assert.Equal(t, []string{"b", "w"}, params.Names(), "a failed start lends nothing")
	assert.Equal(t, []string{"b", "w"}, st.V.Names())

	_, err = tr.Start(params, &optim.State{M: st.M, V: st.M})
	assert.EqualError(t, err, "start training: the parameters and the two moments must be three sets")
}

// TestUntrainedTensorsComeBack: tensors of the sets that the trainer has
// no name for are not trained, and the session gives them back as they
// were.
func TestUntrainedTensorsComeBack(t *testing.T) {
	tr, params, _ := quadraticTrainer(t)
	frozen := &weights.Tensor{Shape: []int{2}, Data: []float32{7, 8}}
	params.Put("frozen", frozen)
	st := optim.NewState(params)
	steps(t, tr, params, st, 0.01, batch{tensors.FromValue(x0), tensors.FromValue(s0)}, 2)
	assert.Equal(t, []string{"b", "frozen", "w"}, params.Names())
	assert.Same(t, frozen, params.Get("frozen"))
	assert.Equal(t, []float32{7, 8}, frozen.Data)
	assert.Equal(t, []float32{0, 0}, st.M.Get("frozen").Data)
	assert.NotEqual(t, initialParams().Get("w").Data, params.Get("w").Data, "the named ones trained")
}

// unshared is a backend whose buffers GoMLX cannot share with the host, as
// XLA's on an accelerator: tensors copy to and from them.
type unshared struct{ backends.Backend }

func (unshared) HasSharedBuffers() bool { return false }

// TestSessionTrainsAsTheGraphTrainer: a session trains a small policy bit
// for bit as the trainer that computed AdamW inside its graph and copied
// the state in and out of weights.Sets every step (ReferenceTrainer): the
// same losses and gradient norms every step, the same parameters and
// moments after them, with weight decay and clipping on or off, and on a
// backend without shared buffers, where the session's parameters go to the
// device and its gradients come back every step.
func TestSessionTrainsAsTheGraphTrainer(t *testing.T) {
	goBackend, err := backend.New(backend.Go)
	require.NoError(t, err)
	cfg := transformer.Config{Vocab: tokenizer.VocabSize, Dim: 32, Heads: 4, Layers: 2, Hidden: 64, MaxLen: 24}
	var batches []*policy.Batch
	for _, words := range [][2][]string{
		{{"hot", "up", "big"}, {"cold", "down", "small"}},
		{{"day", "left", "in"}, {"night", "right", "out"}},
	} {
		var prompts, responses [][]int32
		for i := range words[0] {
			prompts = append(prompts, tokenizer.EncodePrompt(words[0][i]))
			responses = append(responses, tokenizer.EncodeResponse(words[1][i]))
		}
		b, err := policy.MakeBatch(cfg, 3, prompts, responses)
		require.NoError(t, err)
		batches = append(batches, b)
	}
	for _, tc := range []struct {
		backend string
		opt     optim.AdamW
	}{
		{"go", optim.DefaultAdamW},
		{"go", optim.AdamW{Beta1: 0.8, Beta2: 0.95, Eps: 1e-6, WeightDecay: 0.1, ClipNorm: 0.05}},
		{"unshared", optim.AdamW{Beta1: 0.8, Beta2: 0.95, Eps: 1e-6, WeightDecay: 0.1, ClipNorm: 0.05}},
	} {
		be, opt := goBackend, tc.opt
		if tc.backend == "unshared" {
			be = unshared{goBackend}
		}
		t.Run(fmt.Sprintf("%s %+v", tc.backend, opt), func(t *testing.T) {
			want, got := policy.Init(cfg, 3), policy.Init(cfg, 3)
			wantSt, gotSt := optim.NewState(want), optim.NewState(got)
			ref := optim.NewReferenceTrainer(be, want.Names(), opt, policy.SFTLoss(cfg))
			sess, err := optim.NewTrainer(be, got.Names(), opt, policy.SFTLoss(cfg)).Start(got, gotSt)
			require.NoError(t, err)
			for i := 0; i < 6; i++ {
				b, lr := batches[i%len(batches)], 1e-2*float64(i+1)/6
				w, err := ref.Step(want, wantSt, lr, b)
				require.NoError(t, err)
				g, err := sess.Step(lr, b)
				require.NoError(t, err)
				assert.Equal(t, w, g, "step %d: loss, gradient norm, metrics", i+1)
			}
			require.NoError(t, sess.Close())
			assert.Equal(t, want.Digest(), got.Digest(), "parameters")
			assert.Equal(t, wantSt.M.Digest(), gotSt.M.Digest(), "first moments")
			assert.Equal(t, wantSt.V.Digest(), gotSt.V.Digest(), "second moments")
			assert.Equal(t, wantSt.Step, gotSt.Step)
		})
	}
}
