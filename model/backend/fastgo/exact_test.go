package fastgo_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/tokenizer"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/policy"
	"github.com/alignflow/alignflow/reinforce"
	"github.com/alignflow/alignflow/reward"
)

// tolerance is how far fastgo may be from the stock pure-Go backend,
// relative: the kernel sums each product in another order than simplego.
const tolerance = 1e-5

// architectures are the bundled model at the default run spec's sizes and
// a Llama-family model: grouped-query attention, gated MLP, q/k/v and
// output biases, tied embeddings and llama3 rope scaling.
func architectures() map[string]transformer.Config {
	m := config.Default().Model
	return map[string]transformer.Config{
		"bundled": {Vocab: tokenizer.VocabSize, Dim: m.Dim, Heads: m.Heads, Layers: m.Layers, Hidden: m.Hidden, MaxLen: m.MaxLen},
		"llama": {Vocab: tokenizer.VocabSize, Dim: 48, Heads: 6, KVHeads: 2, Layers: 2, Hidden: 80, MaxLen: 64,
			GatedMLP: true, QKVBias: true, OBias: true, TiedEmbeddings: true, RopeTheta: 500000,
			RopeScaling: &transformer.RopeScaling{Type: transformer.RopeLlama3, Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositions: 16}},
	}
}

// pair runs the same work on fastgo and on the stock pure-Go backend.
type pair struct{ fast, stock backends.Backend }

func newPair(t *testing.T) pair {
	fast, err := backend.New(backend.Go)
	require.NoError(t, err)
	stock, err := backend.New(backend.GoStock)
	require.NoError(t, err)
	require.Equal(t, "fastgo", fast.String())
	return pair{fast, stock}
}

// withBiases gives the model's zero-initialised biases values, so that
// their paths carry signal.
func withBiases(s *weights.Set, seed uint64) *weights.Set {
	r := rand.New(rand.NewPCG(seed, 9))
	for _, n := range s.Names() {
		if i := strings.LastIndex(n, "."); i >= 0 && strings.HasPrefix(n[i+1:], "b") {
			for j := range s.Get(n).Data {
				s.Get(n).Data[j] = float32(r.NormFloat64() * 0.1)
			}
		}
	}
	return s
}

// texts are prompts and responses of varied lengths.
func texts(r *rand.Rand, n int) (prompts, responses [][]int32) {
	words := strings.Fields("the a cold hot river small night day up down big light dark stone water over under quick slow")
	sentence := func(k int) string {
		var w []string
		for range k {
			w = append(w, words[r.IntN(len(words))])
		}
		return strings.Join(w, " ")
	}
	for range n {
		prompts = append(prompts, tokenizer.EncodePrompt(sentence(1+r.IntN(4))))
		responses = append(responses, tokenizer.EncodeResponse(sentence(1+r.IntN(5))))
	}
	return prompts, responses
}

// closeness compares flat values: each element within tolerance of the
// larger of its magnitude and the RMS of the non-zero values (an element
// that cancels to near zero is held to the scale of the rest; the rows of
// an embedding gradient that no token touched do not count). It returns
// the largest relative error.
func closeness(t *testing.T, what string, want, got []float32) float64 {
	t.Helper()
	require.Len(t, got, len(want), what)
	var ss float64
	nonzero := 0
	for _, v := range want {
		if v != 0 {
			ss += float64(v) * float64(v)
			nonzero++
		}
	}
	rms := math.Sqrt(ss / float64(max(1, nonzero)))
	worst := 0.0
	for i := range want {
		scale := max(math.Abs(float64(want[i])), rms, 1e-30)
		e := math.Abs(float64(want[i])-float64(got[i])) / scale
		if !(e <= tolerance) {
			t.Fatalf("%s: element %d of %d is %g on fastgo, %g on go-stock (relative error %.3g)", what, i, len(want), got[i], want[i], e)
		}
		worst = max(worst, e)
	}
	return worst
}

func closeSets(t *testing.T, what string, want, got *weights.Set) float64 {
	t.Helper()
	worst := 0.0
	require.Equal(t, want.Names(), got.Names(), what)
	for _, n := range want.Names() {
		worst = max(worst, closeness(t, what+" "+n, want.Get(n).Data, got.Get(n).Data))
	}
	return worst
}

func closeScalar(t *testing.T, what string, want, got float64) float64 {
	return closeness(t, what, []float32{float32(want)}, []float32{float32(got)})
}

// adamW is the project's AdamW with a larger epsilon and weight decay on.
// With the default epsilon (1e-8), AdamW's first steps move each parameter
// by about the learning rate times the sign of its gradient, so a gradient
// that cancels to almost zero moves its parameter by +lr on one backend
// and -lr on the other whatever the precision of the gradient: the
// comparison would measure Adam's normalisation, not the backend. With
// epsilon 1e-4 the update is a smooth function of the gradient; the graph
// is the same.
var adamW = optim.AdamW{Beta1: optim.DefaultAdamW.Beta1, Beta2: optim.DefaultAdamW.Beta2, Eps: 1e-4, WeightDecay: 0.01, ClipNorm: optim.DefaultAdamW.ClipNorm}

// trainSteps runs steps optimizer steps of loss on each backend from the
// same parameters and batch and compares every step's loss, gradient norm
// and metrics, and the parameters and moments after the steps.
func trainSteps(t *testing.T, be pair, params *weights.Set, loss optim.Loss, batch optim.Batch, steps int) {
	t.Helper()
	const lr = 1e-3
	run := func(b backends.Backend) (*weights.Set, *optim.State, []optim.StepResult) {
		p := params.Clone()
		st := optim.NewState(p)
		sess, err := optim.NewTrainer(b, p.Names(), adamW, loss).Start(p, st)
		require.NoError(t, err)
		var res []optim.StepResult
		for range steps {
			r, err := sess.Step(lr, batch)
			require.NoError(t, err)
			res = append(res, r)
		}
		require.NoError(t, sess.Close())
		return p, st, res
	}
	wp, ws, wr := run(be.stock)
	gp, gs, gr := run(be.fast)
	worst := 0.0
	for i := range wr {
		worst = max(worst, closeScalar(t, fmt.Sprintf("step %d loss", i), wr[i].Loss, gr[i].Loss))
		worst = max(worst, closeScalar(t, fmt.Sprintf("step %d gradient norm", i), wr[i].GradNorm, gr[i].GradNorm))
		for j := range wr[i].Metrics {
			worst = max(worst, closeScalar(t, fmt.Sprintf("step %d metric %d", i, j), wr[i].Metrics[j], gr[i].Metrics[j]))
		}
	}
	worst = max(worst, closeSets(t, "parameters", wp, gp))
	worst = max(worst, closeSets(t, "moment m", ws.M, gs.M))
	worst = max(worst, closeSets(t, "moment v", ws.V, gs.V))
	t.Logf("%s: %d steps, loss %.5f -> %.5f, largest relative difference %.2g", loss.Name, steps, wr[0].Loss, wr[steps-1].Loss, worst)
}

// TestEveryGraphMatchesTheStockBackend runs every graph alignflow compiles
// on fastgo and on the stock pure-Go backend with the same inputs.
func TestEveryGraphMatchesTheStockBackend(t *testing.T) {
	be := newPair(t)
	for name, cfg := range architectures() {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, cfg.Validate())
			r := rand.New(rand.NewPCG(11, 12))
			pol := withBiases(policy.Init(cfg, 5), 6)
			prompts, responses := texts(r, 16)
			batch, err := policy.MakeBatch(cfg, 16, prompts, responses)
			require.NoError(t, err)

			t.Run("sft train step", func(t *testing.T) {
				trainSteps(t, be, pol, policy.SFTLoss(cfg), batch, 2)
			})
			t.Run("reinforce policy-loss train step", func(t *testing.T) {
				adv := make([]float32, 16)
				for i := range adv {
					adv[i] = float32(r.NormFloat64())
				}
				obj := reinforce.Objective{}.WithDefaults()
				trainSteps(t, be, pol, reinforce.PolicyLoss(cfg, obj), obj.OnPolicyBatch(batch, adv), 2)
			})

			rm, err := reward.InitFromBackbone(pol, 8)
			require.NoError(t, err)
			var pairs []reward.Pair
			var rated []reward.Rated
			// The pairs are of unrelated sequences that stop before their EOS.
			// A real pair shares its prompt and ends on EOS, and in an
			// untrained model its two sequences then have nearly the same
			// hidden states: the Bradley-Terry gradient, which follows their
			// difference, cancels and magnifies float32 rounding (on any two
			// backends) past a fixed tolerance. The graph is the same.
			cut := func(s []int32) []int32 { return s[:len(s)-1] }
			for i := range prompts {
				otherPrompt, otherResponse := texts(r, 1)
				pairs = append(pairs, reward.Pair{
					Chosen:    append(append([]int32(nil), prompts[i]...), cut(responses[i])...),
					Rejected:  append(append([]int32(nil), otherPrompt[0]...), cut(otherResponse[0])...),
					Magnitude: float64(1 + i%3),
				})
				var rt reward.Rated
				rt.Sequence = pairs[i].Chosen
				for a := range reward.NumAttributes {
					rt.Ratings[a], rt.Present[a] = float32(r.IntN(5)), a%2 == 0 || i%3 == 0
				}
				rated = append(rated, rt)
			}
			t.Run("reward bradley-terry train step", func(t *testing.T) {
				pb, err := reward.MakePairBatch(pairs[:12], 16, cfg, reward.LossBTScaled)
				require.NoError(t, err)
				trainSteps(t, be, rm, reward.BTLoss(cfg), pb, 2)
			})
			t.Run("reward regression train step", func(t *testing.T) {
				rb, err := reward.MakeRatingBatch(rated, 16, cfg, false)
				require.NoError(t, err)
				trainSteps(t, be, rm, reward.RegressionTrainingLoss(cfg), rb, 2)
			})
			t.Run("reward scores", func(t *testing.T) {
				var seqs [][]int32
				for _, p := range pairs {
					seqs = append(seqs, p.Chosen, p.Rejected)
				}
				score := func(b backends.Backend) []float32 {
					s, err := reward.NewEngine(b, cfg, rm).Score(rm, seqs, 16)
					require.NoError(t, err)
					var flat []float32
					for _, row := range s {
						flat = append(flat, row[:]...)
					}
					return flat
				}
				t.Logf("largest relative difference %.2g", closeness(t, "scores", score(be.stock), score(be.fast)))
			})
			t.Run("log-probs", func(t *testing.T) {
				lp := func(b backends.Backend) []float32 {
					rows, err := policy.NewEngine(b, cfg, pol).LogProbs(pol, batch)
					require.NoError(t, err)
					var flat []float32
					for _, row := range rows {
						flat = append(flat, row...)
					}
					return flat
				}
				t.Logf("largest relative difference %.2g", closeness(t, "log-probs", lp(be.stock), lp(be.fast)))
			})
			t.Run("prefill and decode steps", func(t *testing.T) {
				decoder := func(b backends.Backend) *policy.Decoder {
					d, err := policy.NewEngine(b, cfg, pol).Decoding(pol)
					require.NoError(t, err)
					dec, err := d.Prefill(prompts[:12], 16)
					require.NoError(t, err)
					return dec
				}
				want, got := decoder(be.stock), decoder(be.fast)
				defer want.Close()
				defer got.Close()
				worst := closeness(t, "prefill logits", want.Logits, got.Logits)
				for step := range 4 {
					// Both are fed the stock backend's greedy tokens.
					next := make([]int32, 16)
					for row := range next {
						l := want.Logits[row*cfg.Vocab : (row+1)*cfg.Vocab]
						for id, v := range l {
							if v > l[next[row]] {
								next[row] = int32(id)
							}
						}
					}
					require.NoError(t, want.Step(next))
					require.NoError(t, got.Step(next))
					worst = max(worst, closeness(t, fmt.Sprintf("decode step %d logits", step), want.Logits, got.Logits))
				}
				t.Logf("largest relative difference %.2g", worst)
			})
		})
	}
}

// TestDotGradientsMatchTheStockBackend differentiates the einsum patterns
// of model/backend's fast DotGeneral gradient, and of GoMLX's own, on both
// backends.
func TestDotGradientsMatchTheStockBackend(t *testing.T) {
	be := newPair(t)
	cases := []struct {
		name    string
		lhsDims []int
		lc, lb  []int
		rhsDims []int
		rc, rb  []int
	}{
		{"linear", []int{3, 5, 4}, []int{2}, nil, []int{4, 6}, []int{0}, nil},
		{"linear, transposed weight", []int{3, 5, 4}, []int{2}, nil, []int{6, 4}, []int{1}, nil},
		{"scores bhtd,bhsd->bhts", []int{2, 3, 4, 5}, []int{3}, []int{0, 1}, []int{2, 3, 6, 5}, []int{3}, []int{0, 1}},
		{"context bhts,bhsd->bhtd", []int{2, 3, 4, 6}, []int{3}, []int{0, 1}, []int{2, 3, 6, 5}, []int{2}, []int{0, 1}},
		{"context, V transposed", []int{2, 3, 4, 6}, []int{3}, []int{0, 1}, []int{2, 3, 5, 6}, []int{3}, []int{0, 1}},
		{"grouped-query scores", []int{2, 2, 3, 4, 5}, []int{4}, []int{0, 1}, []int{2, 2, 6, 5}, []int{3}, []int{0, 1}},
		{"weight on the left", []int{6, 4}, []int{0}, nil, []int{3, 6, 2}, []int{1}, nil},
		{"batch last, two contracting swapped", []int{4, 5, 3, 2}, []int{0, 1}, []int{3}, []int{2, 5, 4, 7}, []int{2, 1}, []int{0}},
		{"pick a position", []int{3, 7, 4}, []int{1}, nil, []int{7}, []int{0}, nil},
		{"outer product with ones", []int{3, 5, 1}, []int{2}, nil, []int{1, 4}, []int{0}, nil},
	}
	r := rand.New(rand.NewPCG(1, 2))
	randT := func(dims ...int) *tensors.Tensor {
		n := 1
		for _, d := range dims {
			n *= d
		}
		data := make([]float32, n)
		for i := range data {
			data[i] = float32(r.NormFloat64())
		}
		return tensors.FromFlatDataAndDimensions(data, dims...)
	}
	for _, tc := range cases {
		for _, fast := range []bool{true, false} {
			name := tc.name + ", GoMLX's gradient"
			if fast {
				name = tc.name + ", backend.Dot's gradient"
			}
			t.Run(name, func(t *testing.T) {
				lhs, rhs := randT(tc.lhsDims...), randT(tc.rhsDims...)
				var w *tensors.Tensor
				grads := func(b backends.Backend) []*tensors.Tensor {
					fn := func(l, rr, ww *graph.Node) []*graph.Node {
						var out *graph.Node
						if fast {
							out = backend.Dot(l, tc.lc, tc.lb, rr, tc.rc, tc.rb)
						} else {
							out = graph.DotGeneral(l, tc.lc, tc.lb, rr, tc.rc, tc.rb)
						}
						loss := graph.ReduceAllSum(graph.Mul(graph.Tanh(out), ww))
						return append([]*graph.Node{loss}, graph.Gradient(loss, l, rr)...)
					}
					if w == nil {
						probe := graph.MustExecOnce(b, func(l, rr *graph.Node) *graph.Node {
							return graph.DotGeneral(l, tc.lc, tc.lb, rr, tc.rc, tc.rb)
						}, clone(lhs), clone(rhs))
						w = randT(probe.Shape().Dimensions...)
					}
					return graph.MustExecOnceN(b, fn, clone(lhs), clone(rhs), clone(w))
				}
				want, got := grads(be.stock), grads(be.fast)
				for i := range want {
					closeness(t, fmt.Sprintf("output %d", i), tensors.MustCopyFlatData[float32](want[i]), tensors.MustCopyFlatData[float32](got[i]))
				}
			})
		}
	}
}

func clone(t *tensors.Tensor) *tensors.Tensor {
	c, err := t.LocalClone()
	if err != nil {
		panic(err)
	}
	return c
}

// TestTrainStepIsTheSameAtAnyParallelism: a bundled-model SFT step gives
// the same bits whatever the pure-Go backend's parallelism.
func TestTrainStepIsTheSameAtAnyParallelism(t *testing.T) {
	cfg := architectures()["bundled"]
	pol := policy.Init(cfg, 5)
	prompts, responses := texts(rand.New(rand.NewPCG(1, 1)), 16)
	batch, err := policy.MakeBatch(cfg, 16, prompts, responses)
	require.NoError(t, err)
	var first *weights.Set
	for _, conf := range []string{"fastgo:parallelism=-1", "fastgo:parallelism=1", "fastgo:parallelism=2,ops_sequential"} {
		b, err := backends.NewWithConfig(conf)
		require.NoError(t, err)
		p := pol.Clone()
		sess, err := optim.NewTrainer(b, p.Names(), optim.DefaultAdamW, policy.SFTLoss(cfg)).Start(p, optim.NewState(p))
		require.NoError(t, err)
		for range 2 {
			_, err := sess.Step(4e-3, batch)
			require.NoError(t, err)
		}
		require.NoError(t, sess.Close())
		if first == nil {
			first = p
			continue
		}
		require.Equal(t, first.Digest(), p.Digest(), conf)
	}
}
