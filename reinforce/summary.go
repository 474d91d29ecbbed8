package reinforce

import (
	"fmt"
	"math/rand/v2"

	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/policy"
	"github.com/alignflow/alignflow/reward"
)

// Summary is what an iteration, an update after shards, or an evaluation
// reports of its rollouts: means over the samples, each a sum divided by
// the count, so every place that reports them gives the same numbers.
type Summary struct {
	RewardMean    float64 // the reward model's score
	KLMean        float64 // the per-token KL penalty (the estimator's mean over a response)
	EndedFraction float64 // of samples that ended with EOS
	MeanLength    float64 // response tokens
	// GoldMean is the gold rubric's mean score; nil without one.
	GoldMean *float64
}

// Summarize averages the samples' rewards, KL penalties and, where given
// (non-nil), gold scores, with their end and length.
func Summarize(samples []policy.Sample, rewards, kl, gold []float64) Summary {
	var s Summary
	var ended, tokens, goldSum float64
	for i, sm := range samples {
		s.RewardMean += rewards[i]
		s.KLMean += kl[i]
		if sm.Ended {
			ended++
		}
		tokens += float64(len(sm.Tokens))
		if gold != nil {
			goldSum += gold[i]
		}
	}
	n := float64(len(samples))
	s.RewardMean, s.KLMean, s.EndedFraction = s.RewardMean/n, s.KLMean/n, ended/n
	s.MeanLength = tokens / max(1, n)
	if gold != nil {
		g := goldSum / n
		s.GoldMean = &g
	}
	return s
}

// Evaluation is a policy's rollouts on held-out prompts and what they
// score: the reward model's rewards, the per-token KL penalty and the KL
// of whole responses to the reference.
type Evaluation struct {
	Rollouts *Rollouts
	Rewards  []float64
	KL       []float64
	// KLSequence is the mean over samples of the sum of log pi - log
	// pi_ref over the response: the estimate of KL(pi || pi_ref) between
	// whole responses, in nats.
	KLSequence float64
}

// Evaluate samples s.SamplesPerPrompt responses to each prompt from rng,
// scores them with the reward model and compares them with the reference:
// the steps of an iteration without the update.
func Evaluate(pe *policy.Engine, re *reward.Engine, pol, ref, rm *weights.Set, prompts [][]int32, s Settings, rng *rand.Rand) (*Evaluation, error) {
	ro, err := Rollout(pe, pol, prompts, s.SamplesPerPrompt, s.BatchSize, s.Sample, rng)
	if err != nil {
		return nil, err
	}
	rewards, lp, err := ScoreAndLogProbs(pe, re, pol, ref, rm, ro, s.BatchSize)
	if err != nil {
		return nil, err
	}
	kl, err := lp.KL(s.KLEstimator)
	if err != nil {
		return nil, fmt.Errorf("evaluate: %w", err)
	}
	ev := &Evaluation{Rollouts: ro, Rewards: rewards, KL: kl}
	n := float64(len(ro.Samples))
	for _, d := range lp.LogRatios() {
		for _, x := range d {
			ev.KLSequence += float64(x) / n
		}
	}
	return ev, nil
}
