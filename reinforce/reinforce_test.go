package reinforce

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/tokenizer"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/policy"
)

func TestLeaveOneOutBaselineByHand(t *testing.T) {
	cases := []struct {
		name    string
		rewards []float64
		ended   []bool
		want    []float64
	}{
		{"all ended", []float64{1, 2, 3, 6}, []bool{true, true, true, true},
			[]float64{11.0 / 3, 10.0 / 3, 3, 2}},
		{"truncated sample gets the mean of the ended ones and stays out of theirs",
			[]float64{1, 2, 3, 100}, []bool{true, true, true, false},
			[]float64{2.5, 2, 1.5, 2}},
		{"one ended sample: every advantage is zero",
			[]float64{4, -1, 7, 2}, []bool{false, true, false, false},
			[]float64{4, -1, 7, 2}},
		{"two groups are independent",
			[]float64{1, 3, 10, 20}, []bool{true, true, true, true},
			[]float64{3, 1, 20, 10}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := 4
			if tc.name == "two groups are independent" {
				k = 2
			}
			got, err := LeaveOneOutBaseline(tc.rewards, tc.ended, k)
			require.NoError(t, err)
			assert.InDeltaSlice(t, tc.want, got, 1e-12)
		})
	}
	_, err := LeaveOneOutBaseline([]float64{1}, []bool{true}, 1)
	require.ErrorContains(t, err, "at least 2")
}

func TestKLPenaltyByHand(t *testing.T) {
	logp := []float32{-1, -2, -0.5, -3}
	ref := []float32{-1.5, -1, -0.5, -9}
	mask := []float32{1, 1, 1, 0} // the last token is padding
	// log-ratios over the response: 0.5, -1, 0.
	cases := map[string]float64{
		KLAbs: (0.5 + 1 + 0) / 3,
		KLK1:  (0.5 - 1 + 0) / 3,
		KLK2:  (0.125 + 0.5 + 0) / 3,
		KLK3:  ((math.Exp(-0.5) - 1 + 0.5) + (math.Exp(1) - 1 - 1) + 0) / 3,
	}
	for est, want := range cases {
		got, err := SequenceKL(logp, ref, mask, est)
		require.NoError(t, err)
		assert.InDelta(t, want, got, 1e-6, est)
	}
	_, err := SequenceKL(logp, ref, mask, "k9")
	require.ErrorContains(t, err, "allowed")
	// Shaped reward r' = r - beta*KL with NeMo-Aligner's default beta.
	kl, _ := SequenceKL(logp, ref, mask, KLAbs)
	assert.InDelta(t, 2.0-0.01*0.5, 2.0-0.01*kl, 1e-9)
}

// TestPolicyLossValueAndGradientSign checks the REINFORCE loss against the
// formula evaluated from the policy's own log-probs, and that a step raises the
// probability of a positively advantaged response and lowers a negative one.
func TestPolicyLossValueAndGradientSign(t *testing.T) {
	b, err := backend.New(backend.Go)
	require.NoError(t, err)
	cfg := transformer.Config{Vocab: tokenizer.VocabSize, Dim: 32, Heads: 4, Layers: 1, Hidden: 64, MaxLen: 16}
	pol := policy.Init(cfg, 11)
	pe := policy.NewEngine(b, cfg, pol)
	prompts := [][]int32{tokenizer.EncodePrompt("hot"), tokenizer.EncodePrompt("hot")}
	responses := [][]int32{tokenizer.EncodeResponse("cold"), tokenizer.EncodeResponse("warm")}
	batch, err := policy.MakeBatch(cfg, 2, prompts, responses)
	require.NoError(t, err)
	lp, err := pe.LogProbs(pol, batch)
	require.NoError(t, err)
	adv := []float32{1.5, -0.5}
	want, n := 0.0, 0.0
	seqLP := func(lp [][]float32) []float64 {
		out := make([]float64, len(lp))
		for r := range lp {
			for j, m := range batch.Mask[r] {
				out[r] += float64(lp[r][j] * m)
			}
		}
		return out
	}
	for r := range lp {
		for j, m := range batch.Mask[r] {
			want += float64(lp[r][j] * m * adv[r])
			n += float64(m)
		}
	}
	want = -want / n
	before := seqLP(lp)

	tr := optim.NewTrainer(b, pol.Names(), optim.AdamW{Beta1: 0, Beta2: 0.9, Eps: 1e-8}, PolicyLoss(cfg, Objective{}))
	sess, err := tr.Start(pol, optim.NewState(pol))
	require.NoError(t, err)
	res, err := sess.Step(1e-3, Objective{}.WithDefaults().OnPolicyBatch(batch, adv))
	require.NoError(t, err)
	require.NoError(t, sess.Close())
	assert.InDelta(t, want, res.Loss, 1e-5, "loss equals -masked_mean(logp * advantage)")

	lp2, err := pe.LogProbs(pol, batch)
	require.NoError(t, err)
	after := seqLP(lp2)
	assert.Greater(t, after[0], before[0], "positive advantage: response more likely")
	assert.Less(t, after[1], before[1], "negative advantage: response less likely")
}
