package reinforce

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/policy"
)

// TestGroupAdvantagesByHand computes one group per estimator by hand from
// the published formulas: GRPO (r - mean) / (std + 1e-6) with torch's
// unbiased std (veRL's compute_grpo_outcome_advantage; TRL's adds 1e-4),
// Dr. GRPO r - mean (Liu et al. 2025, eq. 3 without the std), RLOO the
// mean of the others (NeMo-Aligner), REINFORCE++ r - mean whitened over
// the batch (OpenRLHF's reinforce_baseline).
func TestGroupAdvantagesByHand(t *testing.T) {
	r := []float64{1, 2, 3, 6}
	all := []bool{true, true, true, true}
	std := math.Sqrt(14.0 / 3) // deviations -2, -1, 0, 3 from the mean 3
	truncStd := math.Sqrt(7.0) // the ended 1, 2, 6: deviations -2, -1, 3
	for _, tc := range []struct {
		estimator string
		ended     []bool
		want      []float64
	}{
		{AdvRLOO, all, []float64{1 - 11.0/3, 2 - 10.0/3, 3 - 3, 6 - 2}},
		{AdvGRPO, all, []float64{-2 / (std + 1e-6), -1 / (std + 1e-6), 0, 3 / (std + 1e-6)}},
		{AdvDrGRPO, all, []float64{-2, -1, 0, 3}},
		// A truncated sample takes no part in the statistics and gets an
		// advantage from them.
		{AdvGRPO, []bool{true, true, false, true}, []float64{-2 / (truncStd + 1e-6), -1 / (truncStd + 1e-6), 0, 3 / (truncStd + 1e-6)}},
		{AdvDrGRPO, []bool{true, true, false, true}, []float64{-2, -1, 0, 3}},
		{AdvRLOO, []bool{true, true, false, true}, []float64{1 - 4, 2 - 3.5, 3 - 3, 6 - 1.5}},
		// At most one ended sample: no baseline, advantage 0 for all.
		{AdvGRPO, []bool{false, true, false, false}, []float64{0, 0, 0, 0}},
		{AdvDrGRPO, []bool{false, false, false, false}, []float64{0, 0, 0, 0}},
	} {
		_, adv, err := GroupAdvantages(r, tc.ended, 4, tc.estimator)
		require.NoError(t, err, tc.estimator)
		assert.InDeltaSlice(t, tc.want, adv, 1e-12, "%s %v", tc.estimator, tc.ended)
	}

	// REINFORCE++: two groups' r - mean, then over the batch: mean 0 and
	// Bessel's std of -2, -1, 0, 3, -0.5, -0.5, 0.5, 0.5.
	two := append(append([]float64{}, r...), 0, 0, 1, 1)
	_, adv, err := GroupAdvantages(two, append(append([]bool{}, all...), all...), 4, AdvReinforcePP)
	require.NoError(t, err)
	bstd := math.Sqrt(15.0 / 7)
	want := []float64{-2, -1, 0, 3, -0.5, -0.5, 0.5, 0.5}
	for i := range want {
		want[i] /= bstd + 1e-6
	}
	assert.InDeltaSlice(t, want, adv, 1e-12)

	_, _, err = GroupAdvantages(r, all, 4, "ppo")
	require.ErrorContains(t, err, "allowed: [rloo grpo dr-grpo reinforce++]")
	_, _, err = GroupAdvantages(r, all, 3, AdvGRPO)
	require.ErrorContains(t, err, "groups of 3")
}

func TestShapeFollowsTheKLPlacement(t *testing.T) {
	rewards, kl := []float64{1, 2}, []float64{0.5, 1}
	assert.Equal(t, []float64{0.95, 1.9}, Objective{KLBeta: 0.1}.WithDefaults().Shape(rewards, kl))
	assert.Equal(t, rewards, Objective{KLBeta: 0.1, KLIn: KLInLoss}.Shape(rewards, kl))
	assert.Equal(t, rewards, Objective{KLBeta: 0.1, KLIn: KLInNone}.Shape(rewards, kl))
}

// TestNormByAggregation: token-mean divides by the step's tokens,
// seq-mean-token-mean by its sequences (each already a mean over its
// tokens), seq-mean-token-sum-norm by sequences times max_tokens.
func TestNormByAggregation(t *testing.T) {
	b := &policy.Batch{Mask: [][]float32{{0, 1, 1}, {1, 1, 1}, {0, 0, 0}}, Rows: 2}
	c := &policy.Batch{Mask: [][]float32{{0, 0, 1}, {0, 0, 0}}, Rows: 1}
	for agg, want := range map[string]float32{AggTokenMean: 6, AggSeqMeanTokenMean: 3, AggSeqMeanTokenSumNorm: 3 * 8} {
		assert.Equal(t, want, Objective{Aggregation: agg, MaxTokens: 8}.Norm([]*policy.Batch{b, c}), agg)
	}
	assert.Equal(t, float32(1), Objective{Aggregation: AggTokenMean}.Norm(nil), "at least 1")
}

// TestPolicyLossByHand checks every aggregation, the clipped surrogate
// and the KL in the loss against the loss computed here from the
// engine's log-probabilities with the formulas in PolicyLoss's comment.
func TestPolicyLossByHand(t *testing.T) {
	f := newStepsFixture(t)
	r := f.rollout(t, 3)
	lp, err := LogProbs(f.pe, f.pol, f.ref, r, 4)
	require.NoError(t, err)
	b := lp.Batches[0]
	cur := lp.Policy[0]
	adv := []float32{1.5, -1, 0.5, -2}
	// The old log-probabilities: the current ones moved per row, so that
	// ratios fall inside and outside [0.8, 1.28].
	shift := []float32{-0.5, -0.5, 0.4, 0.4}
	old := make([][]float32, len(cur))
	for i := range cur {
		old[i] = make([]float32, len(cur[i]))
		for j := range cur[i] {
			old[i][j] = cur[i][j] + shift[i]*b.Mask[i][j]
		}
	}
	kl3 := func(d float64) float64 { return math.Exp(-d) - 1 + d }
	for _, obj := range []Objective{
		{Aggregation: AggTokenMean},
		{Aggregation: AggSeqMeanTokenMean},
		{Aggregation: AggSeqMeanTokenSumNorm, MaxTokens: 9},
		{Aggregation: AggTokenMean, Epochs: 2, ClipLow: 0.2, ClipHigh: 0.28},
		{Aggregation: AggSeqMeanTokenMean, Epochs: 2, ClipLow: 0.2, ClipHigh: 0.28, Ratio: RatioSequence},
		{Aggregation: AggTokenMean, KLIn: KLInLoss, KLEstimator: KLK3, KLBeta: 0.3},
	} {
		obj = obj.WithDefaults()
		var want, ratioSum, clipped, tokens float64
		for i := 0; i < b.Rows; i++ {
			n, seqLog := 0.0, 0.0
			for j, m := range b.Mask[i] {
				n += float64(m)
				seqLog += float64(m) * float64(cur[i][j]-old[i][j])
			}
			var row float64
			for j, m := range b.Mask[i] {
				if m == 0 {
					continue
				}
				l := -float64(cur[i][j]) * float64(adv[i])
				if obj.Clipped() {
					ratio := math.Exp(float64(cur[i][j] - old[i][j]))
					if obj.Ratio == RatioSequence {
						ratio = math.Exp(seqLog / n)
					}
					a := float64(adv[i])
					c := math.Min(math.Max(ratio, 1-obj.ClipLow), 1+obj.ClipHigh)
					l = math.Max(-ratio*a, -c*a)
					ratioSum += ratio
					if -c*a > -ratio*a {
						clipped++
					}
				}
				if obj.KLIn == KLInLoss {
					l += obj.KLBeta * kl3(float64(cur[i][j]-lp.Reference[0][i][j]))
				}
				tokens++
				if obj.Aggregation == AggSeqMeanTokenMean {
					l /= n
				}
				row += l
			}
			want += row
		}
		ub := UpdateBatch{Batch: b, Advantages: adv, Old: old, Ref: lp.Reference[0], Norm: obj.Norm([]*policy.Batch{b}), Objective: obj}
		tr := NewTrainer(f.pe, obj)
		pol := f.pol.Clone()
		sess, err := tr.Start(pol, optim.NewState(pol))
		require.NoError(t, err)
		res, err := sess.Step(0, ub)
		require.NoError(t, err)
		require.NoError(t, sess.Close())
		assert.InDelta(t, want/float64(ub.Norm), res.Loss, 1e-5, "%+v", obj)
		if obj.Clipped() {
			require.Len(t, res.Metrics, 2)
			assert.InDelta(t, ratioSum/tokens, res.Metrics[0], 1e-5, "mean ratio")
			assert.InDelta(t, clipped/tokens, res.Metrics[1], 1e-6, "clipped fraction")
			assert.Greater(t, res.Metrics[1], 0.0, "some tokens were clipped")
		}
	}
}

// TestClippedUpdateAtRatioOneIsOnPolicy: with the old log-probabilities
// the policy's own, every ratio is 1 and a clipped step moves the policy
// as the on-policy step does (to float32 rounding: the graphs differ).
// So does the off-policy one of asynchronous rollouts (max_staleness)
// when the rollouts are the updated policy's own, as the first
// iterations' are.
func TestClippedUpdateAtRatioOneIsOnPolicy(t *testing.T) {
	for _, clipped := range []Objective{{Epochs: 2, ClipLow: 0.2, ClipHigh: 0.2}, {OffPolicy: true, ClipLow: 0.2, ClipHigh: 0.28}} {
		clipped = clipped.WithDefaults()
		require.True(t, clipped.Clipped())
		clippedStepAtRatioOne(t, clipped)
	}
}

func clippedStepAtRatioOne(t *testing.T, clipped Objective) {
	f := newStepsFixture(t)
	r := f.rollout(t, 5)
	lp, err := LogProbs(f.pe, f.pol, f.ref, r, 4)
	require.NoError(t, err)
	adv := []float64{1, -1, 0.5, -0.5, 2, -2}
	onPolicy := Objective{}.WithDefaults()
	a, b := f.pol.Clone(), f.pol.Clone()
	// One epoch of the clipped objective's first step against the
	// policy's own log-probabilities.
	sa, err := NewTrainer(f.pe, onPolicy).Start(a, optim.NewState(a))
	require.NoError(t, err)
	sb, err := NewTrainer(f.pe, clipped).Start(b, optim.NewState(b))
	require.NoError(t, err)
	adv32 := []float32{1, -1, 0.5, -0.5}
	ra, err := sa.Step(1e-3, onPolicy.OnPolicyBatch(lp.Batches[0], adv32))
	require.NoError(t, err)
	rb, err := sb.Step(1e-3, lp.updateBatch(0, adv, clipped.Norm(lp.Batches[:1]), clipped))
	require.NoError(t, err)
	require.NoError(t, sa.Close())
	require.NoError(t, sb.Close())
	assert.InDelta(t, ra.GradNorm, rb.GradNorm, 1e-6, "the surrogate's value differs (ratio x A, not lp x A), its gradient does not")
	assert.InDelta(t, 1, rb.Metrics[0], 1e-6, "the ratio is 1")
	assert.Equal(t, 0.0, rb.Metrics[1], "nothing is clipped")
	for _, n := range a.Names() {
		assert.InDeltaSlice(t, toF64(a.Get(n).Data), toF64(b.Get(n).Data), 1e-6, n)
	}
}

// TestMinibatchesSumGradients: one optimizer step over two generation
// batches (minibatches 1) is the step over their union: the same update
// as one batch holding all rows, to float32 rounding.
func TestMinibatchesSumGradients(t *testing.T) {
	f := newStepsFixture(t)
	r := f.rollout(t, 9)
	adv := []float64{1, -1, 0.5, -0.5, 2, -2}
	for _, agg := range LossAggregations {
		obj := Objective{Aggregation: agg, Minibatches: 1, MaxTokens: 6}.WithDefaults()
		split, err := LogProbs(f.pe, f.pol, f.ref, r, 4) // batches of 4 and 2 (+2 padding)
		require.NoError(t, err)
		whole, err := LogProbs(f.pe, f.pol, f.ref, r, 6)
		require.NoError(t, err)
		tr := NewTrainer(f.pe, obj)
		a, b := f.pol.Clone(), f.pol.Clone()
		ra, err := Update(tr, a, optim.NewState(a), 1e-3, split, adv, obj)
		require.NoError(t, err)
		rb, err := Update(tr, b, optim.NewState(b), 1e-3, whole, adv, obj)
		require.NoError(t, err)
		assert.Equal(t, 1, ra.Steps, agg)
		assert.InDelta(t, rb.Loss, ra.Loss, 1e-6, agg)
		for _, n := range a.Names() {
			assert.InDeltaSlice(t, toF64(b.Get(n).Data), toF64(a.Get(n).Data), 2e-6, "%s %s", agg, n)
		}
	}
}

// TestEpochsRepeatThePass: update_epochs 2 with 2 minibatches takes 4
// steps, and the second epoch sees ratios away from 1.
func TestEpochsRepeatThePass(t *testing.T) {
	f := newStepsFixture(t)
	r := f.rollout(t, 5)
	lp, err := LogProbs(f.pe, f.pol, f.ref, r, 4)
	require.NoError(t, err)
	obj := Objective{Epochs: 2, ClipLow: 0.2, ClipHigh: 0.2}.WithDefaults()
	pol := f.pol.Clone()
	res, err := Update(NewTrainer(f.pe, obj), pol, optim.NewState(pol), 5e-2, lp, []float64{1, -1, 0.5, -0.5, 2, -2}, obj)
	require.NoError(t, err)
	assert.Equal(t, 4, res.Steps)
	assert.NotEqual(t, 1.0, res.RatioMean)
}

func toF64(x []float32) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}
