package reinforce

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/tokenizer"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/policy"
	"github.com/alignflow/alignflow/reward"
)

// stepsFixture is a tiny policy, a different reference and a reward model
// on the byte tokenizer, with rollouts of 2 prompts x 3 samples.
type stepsFixture struct {
	cfg      transformer.Config
	pe       *policy.Engine
	re       *reward.Engine
	pol, ref *weights.Set
	rm       *weights.Set
	prompts  [][]int32
}

func newStepsFixture(t *testing.T) *stepsFixture {
	t.Helper()
	b, err := backend.New(backend.Go)
	require.NoError(t, err)
	cfg := transformer.Config{Vocab: tokenizer.VocabSize, Dim: 16, Heads: 2, Layers: 1, Hidden: 32, MaxLen: 24}
	pol := policy.Init(cfg, 3)
	rm, err := reward.InitFromBackbone(pol, 4)
	require.NoError(t, err)
	return &stepsFixture{cfg: cfg, pe: policy.NewEngine(b, cfg, pol), re: reward.NewEngine(b, cfg, rm),
		pol: pol, ref: policy.Init(cfg, 5), rm: rm,
		prompts: [][]int32{tokenizer.EncodePrompt("hot"), tokenizer.EncodePrompt("a longer prompt")}}
}

func (f *stepsFixture) rollout(t *testing.T, seed uint64) *Rollouts {
	t.Helper()
	r, err := Rollout(f.pe, f.pol, f.prompts, 3, 4, policy.SampleOptions{Temperature: 1, TopP: 1, MaxTokens: 6}, rand.New(rand.NewPCG(seed, 0)))
	require.NoError(t, err)
	return r
}

func TestRolloutSamplesKPerPromptReproducibly(t *testing.T) {
	f := newStepsFixture(t)
	r := f.rollout(t, 7)
	require.Len(t, r.Samples, 6)
	require.Len(t, r.Contexts, 6)
	for i, c := range r.Contexts {
		assert.Equal(t, f.prompts[i/3], c, "row %d answers prompt %d", i, i/3)
		assert.Equal(t, append(append([]int32(nil), c...), r.Samples[i].Tokens...), r.Sequences()[i])
		assert.Equal(t, r.Samples[i].Tokens, r.Responses()[i])
		assert.Equal(t, r.Samples[i].Ended, r.Ended()[i])
		assert.NotEmpty(t, r.Samples[i].Tokens)
	}
	again := f.rollout(t, 7)
	assert.Equal(t, r.Samples, again.Samples, "the same seed samples the same")
	other := f.rollout(t, 8)
	assert.NotEqual(t, r.Samples, other.Samples, "another seed samples otherwise")
}

func TestScoreIsEachSequenceScoredAlone(t *testing.T) {
	f := newStepsFixture(t)
	r := f.rollout(t, 7)
	got, err := Score(f.re, f.rm, r, 4)
	require.NoError(t, err)
	require.Len(t, got, 6)
	for i, seq := range r.Sequences() {
		alone, err := f.re.Rewards(f.rm, [][]int32{seq}, 1)
		require.NoError(t, err)
		assert.InDelta(t, alone[0], got[i], 1e-5, "row %d: batching changes no score", i)
	}
}

func TestLogProbsAndKL(t *testing.T) {
	f := newStepsFixture(t)
	r := f.rollout(t, 7)

	// Against itself every KL estimate and log-ratio is zero.
	self, err := LogProbs(f.pe, f.pol, f.pol, r, 4)
	require.NoError(t, err)
	require.Len(t, self.Batches, 2, "6 rows in batches of 4")
	for _, est := range KLEstimators {
		kl, err := self.KL(est)
		require.NoError(t, err)
		assert.Equal(t, make([]float64, 6), kl, est)
	}
	for _, d := range self.LogRatios() {
		for _, x := range d {
			assert.Zero(t, x)
		}
	}

	// Against another reference: the KL of row i is SequenceKL of the rows'
	// own log-probabilities, each row taken alone.
	lp, err := LogProbs(f.pe, f.pol, f.ref, r, 4)
	require.NoError(t, err)
	kl, err := lp.KL(KLK1)
	require.NoError(t, err)
	ratios := lp.LogRatios()
	require.Len(t, kl, 6)
	for i := range r.Samples {
		b, err := policy.MakeBatch(f.cfg, 1, r.Contexts[i:i+1], r.Responses()[i:i+1])
		require.NoError(t, err)
		p, err := f.pe.LogProbs(f.pol, b)
		require.NoError(t, err)
		q, err := f.pe.LogProbs(f.ref, b)
		require.NoError(t, err)
		want, err := SequenceKL(p[0], q[0], b.Mask[0], KLK1)
		require.NoError(t, err)
		assert.InDelta(t, want, kl[i], 1e-5, "row %d", i)
		sum, n := 0.0, 0
		for _, x := range ratios[i] {
			sum += float64(x)
			if x != 0 {
				n++
			}
		}
		assert.InDelta(t, want*float64(n), sum, 1e-4, "row %d: the log-ratios sum to k1's total", i)
	}
	_, err = lp.KL("k9")
	require.ErrorContains(t, err, "allowed")
}

func TestAdvantagesByHand(t *testing.T) {
	rewards := []float64{1, 2, 3, 6}
	kl := []float64{0.5, 1, 0, 2}
	ended := []bool{true, true, true, true}
	obj := Objective{KLBeta: 0.1}
	shaped, base, adv, err := Advantages(rewards, kl, ended, obj, 2)
	require.NoError(t, err)
	assert.InDeltaSlice(t, []float64{0.95, 1.9, 3, 5.8}, shaped, 1e-12)
	assert.InDeltaSlice(t, []float64{1.9, 0.95, 5.8, 3}, base, 1e-12, "each prompt's other sample")
	assert.InDeltaSlice(t, []float64{-0.95, 0.95, -2.8, 2.8}, adv, 1e-12)
	_, _, _, err = Advantages(rewards, kl[:3], ended, obj, 2)
	require.ErrorContains(t, err, "3 KL values")
}

func TestUpdateStepsOncePerBatchInOrder(t *testing.T) {
	f := newStepsFixture(t)
	r := f.rollout(t, 7)
	lp, err := LogProbs(f.pe, f.pol, f.ref, r, 4)
	require.NoError(t, err)
	adv := []float64{1, -1, 0.5, -0.5, 2, -2}
	obj := Objective{}.WithDefaults()
	tr := NewTrainer(f.pe, obj)

	got := f.pol.Clone()
	st := optim.NewState(got)
	res, err := Update(tr, got, st, 1e-3, lp, adv, obj)
	require.NoError(t, err)
	assert.Equal(t, 2, res.Steps)

	// The same steps by hand: batch 0 with rows 0-3, batch 1 with rows 4-5
	// and two padding rows of advantage 0.
	want := f.pol.Clone()
	sess, err := tr.Start(want, optim.NewState(want))
	require.NoError(t, err)
	loss := 0.0
	for bi, a := range [][]float32{{1, -1, 0.5, -0.5}, {2, -2, 0, 0}} {
		s, err := sess.Step(1e-3, obj.OnPolicyBatch(lp.Batches[bi], a))
		require.NoError(t, err)
		loss += s.Loss / 2
	}
	require.NoError(t, sess.Close())
	assert.Equal(t, int64(2), st.Step, "Update wrote the state back")
	assert.InDelta(t, loss, res.Loss, 1e-12)
	for _, n := range want.Names() {
		assert.Equal(t, want.Get(n).Data, got.Get(n).Data, n)
	}
	assert.NotEqual(t, f.pol.Get(policy.LMHead).Data, got.Get(policy.LMHead).Data, "the update changed the policy")
}

// TestRolloutEachIsTheSameInShards: with a random stream per row, rows
// generated in separate calls that start at multiples of the batch size
// (shards, on other workers) get exactly the samples of one call.
func TestRolloutEachIsTheSameInShards(t *testing.T) {
	f := newStepsFixture(t)
	contexts := Repeat(f.prompts, 4) // 8 rows: two batches of 4
	streams := func(from, to int) []*rand.Rand {
		var out []*rand.Rand
		for i := from; i < to; i++ {
			out = append(out, rand.New(rand.NewPCG(11, uint64(i))))
		}
		return out
	}
	opts := policy.SampleOptions{Temperature: 1, TopP: 1, MaxTokens: 6}
	whole, err := RolloutEach(f.pe, f.pol, contexts, 4, opts, streams(0, 8))
	require.NoError(t, err)
	first, err := RolloutEach(f.pe, f.pol, contexts[:4], 4, opts, streams(0, 4))
	require.NoError(t, err)
	second, err := RolloutEach(f.pe, f.pol, contexts[4:], 4, opts, streams(4, 8))
	require.NoError(t, err)
	assert.Equal(t, whole.Samples, append(first.Samples, second.Samples...))
	one, err := Rollout(f.pe, f.pol, f.prompts, 4, 4, opts, rand.New(rand.NewPCG(11, 0)))
	require.NoError(t, err)
	assert.NotEqual(t, whole.Samples, one.Samples, "one shared stream samples otherwise")
	_, err = RolloutEach(f.pe, f.pol, contexts, 4, opts, streams(0, 3))
	require.ErrorContains(t, err, "3 random streams for 8 prompts")
}

// TestPolicyLossRefusesAnotherBatch: the policy loss reads advantages too,
// so a plain teacher-forced batch (what SFT trains on), or advantages for
// fewer rows than the batch has, fail the step with an error naming the
// loss, and the policy is left as it was.
func TestPolicyLossRefusesAnotherBatch(t *testing.T) {
	f := newStepsFixture(t)
	b, err := policy.MakeBatch(f.cfg, 2, f.prompts, [][]int32{tokenizer.EncodeResponse("cold"), tokenizer.EncodeResponse("up")})
	require.NoError(t, err)
	obj := Objective{}.WithDefaults()
	tr := NewTrainer(f.pe, obj)
	pol := f.pol.Clone()
	sess, err := tr.Start(pol, optim.NewState(pol))
	require.NoError(t, err)
	for _, tc := range []struct {
		batch optim.Batch
		want  string
	}{
		{b, "train step: reinforce policy loss: the batch holds 3 tensors, the loss reads 5 (inputs, targets, mask, advantages, norm)"},
		{obj.OnPolicyBatch(b, []float32{1}), "train step: reinforce policy loss: advantages has B = 1, but inputs has B = 2"},
	} {
		_, err := sess.Step(1e-3, tc.batch)
		assert.EqualError(t, err, tc.want)
	}
	require.NoError(t, sess.Close())
	assert.Equal(t, f.pol.Digest(), pol.Digest())
}

// TestSequencesCompleteATemplatesTurn: a rollout that stopped at the chat
// template's end-of-turn token is scored with what the template writes
// after it, as the reward model's training turns end; one that stopped at
// another EOS, or did not end, is scored as sampled.
func TestSequencesCompleteATemplatesTurn(t *testing.T) {
	const end, eos, nl = 90, 91, 92
	r := &Rollouts{
		Contexts: [][]int32{{1, 2}, {1, 2}, {1, 2}},
		Samples:  []policy.Sample{{Tokens: []int32{5, end}, Ended: true}, {Tokens: []int32{5, eos}, Ended: true}, {Tokens: []int32{5, end}}},
		Turn:     policy.Turn{End: end, Trailer: []int32{nl}},
	}
	assert.Equal(t, [][]int32{{1, 2, 5, end, nl}, {1, 2, 5, eos}, {1, 2, 5, end}}, r.Sequences())
	assert.Equal(t, [][]int32{{5, end}, {5, eos}, {5, end}}, r.Responses(), "the sampled tokens stay as sampled")
	r.Turn = policy.Turn{}
	assert.Equal(t, []int32{1, 2, 5, end}, r.Sequences()[0], "the plain format has no trailer")
}
