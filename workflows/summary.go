package workflows

import (
	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/pipeline"
)

// summary makes the alignment's summary from its state at the end, st, and
// the evaluation of the aligned policy, after (st.Before is the SFT
// policy's). points are this workflow run's part of the curve: for runs
// recorded before segments, all of it, which the summary then carries
// instead of a reference to the last segment and the curve's ends.
func (r *run) summary(st *Continuation, after pipeline.PolicyEval, points []pipeline.IterationMetrics) *pipeline.Summary {
	spec := r.spec
	s := &pipeline.Summary{
		WorkflowID: r.id, Name: spec.Name, Seed: spec.Seed, Backend: spec.Backend, Data: st.Data,
		SFT:         pipeline.ModelOf(st.SFT),
		RewardModel: rewardModelSummary(spec.Reward.Recipe, st.RewardModel, st.RewardEval),
		Policy:      policySummary(st.Before, after),
		Runs:        st.Runs + 1, KeepIterations: spec.Retention.KeepIterations,
		Samples: pairSamples(st.Before.Samples, after.Samples),
	}
	p := &s.Policy
	p.Checkpoint, p.Digest, p.Iterations = st.Policy, st.PolicyDigest, st.Iteration
	p.StoppedEarly, p.KLEstimator, p.Sampling = st.Iteration < spec.Reinforce.Iterations, spec.Reinforce.KLEstimator, st.Sampling
	if !r.v.segmented {
		s.Curve = points
		return s
	}
	s.CurveRef, p.FirstIteration = st.Curve, st.First
	if st.Last != nil {
		last := st.Last.Metrics()
		p.LastIteration = &last
	}
	return s
}

// rewardModelSummary is the reward model trained with recipe and its
// evaluation; LeftOut when the run trained none.
func rewardModelSummary(recipe string, rm pipeline.TrainResult, eval pipeline.RewardEval) pipeline.RewardModelSummary {
	if rm.Checkpoint == (artifact.Ref{}) {
		return pipeline.RewardModelSummary{LeftOut: true}
	}
	return pipeline.RewardModelSummary{StageModel: pipeline.ModelOf(rm), Recipe: recipe, ExPOAlpha: rm.ExPOAlpha,
		HeldoutAccuracy: eval.HeldoutAccuracy, HeldoutPairs: eval.HeldoutPairs, TrainAccuracy: eval.TrainAccuracy,
		ByStrength: eval.ByStrength, Bench: eval.Bench}
}

// policySummary sets the evaluations of the SFT policy (before) and the
// aligned one (after) side by side.
func policySummary(before, after pipeline.PolicyEval) pipeline.PolicySummary {
	return pipeline.PolicySummary{
		GoldScoreBefore: before.GoldScore, GoldScoreAfter: after.GoldScore,
		RewardBefore: before.Reward, RewardAfter: after.Reward,
		KLSequenceBefore: before.KLSequence, KLSequenceAfter: after.KLSequence,
		KLPenaltyBefore: before.KLPenalty, KLPenaltyAfter: after.KLPenalty,
		EndedBefore: before.EndedFraction, EndedAfter: after.EndedFraction,
		LengthBefore: before.MeanLength, LengthAfter: after.MeanLength, EvalPrompts: after.Prompts,
		VerifierBefore: before.Verifier, VerifierAfter: after.Verifier,
	}
}

// pairSamples pairs the held-out prompts' answers before and after
// alignment, in order (both evaluations sample the same prompts); nil
// when there are none.
func pairSamples(before, after []pipeline.SampleText) []pipeline.SamplePair {
	var pairs []pipeline.SamplePair
	for i := range min(len(before), len(after)) {
		pairs = append(pairs, pipeline.SamplePair{Prompt: before[i].Prompt, Before: before[i], After: after[i]})
	}
	return pairs
}
