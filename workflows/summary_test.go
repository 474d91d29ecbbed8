package workflows

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/pipeline"
)

// TestSummaryTakesEachFieldFromItsSource builds summaries from an
// alignment's end state in which every number is distinct, and compares
// them with summaries written out by hand: a field taken from the wrong
// place (before for after, the first iteration for the last, planned for
// run) shows.
func TestSummaryTakesEachFieldFromItsSource(t *testing.T) {
	spec := config.Spec{Name: "n", Seed: 7, Backend: "go",
		Reward:    config.Reward{Recipe: "bt-scaled"},
		Reinforce: config.Reinforce{Iterations: 5, KLEstimator: "k3"},
		Retention: config.Retention{KeepIterations: 2}}
	data := pipeline.Data{Ratings: ref("ratings"), TrainPairs: 11}
	before := pipeline.PolicyEval{GoldScore: gold(1), Reward: 2, KLSequence: 3, KLPenalty: 4, EndedFraction: 0.5, MeanLength: 6, Prompts: 7, Verifier: gold(0.125),
		Samples: []pipeline.SampleText{{Prompt: "p1", Response: "b1"}, {Prompt: "p2", Response: "b2"}}}
	after := pipeline.PolicyEval{GoldScore: gold(11), Reward: 12, KLSequence: 13, KLPenalty: 14, EndedFraction: 0.75, MeanLength: 16, Prompts: 17, Verifier: gold(0.625),
		Samples: []pipeline.SampleText{{Prompt: "p1", Response: "a1"}, {Prompt: "p2", Response: "a2"}, {Prompt: "p3", Response: "a3"}}}
	first := pipeline.IterationMetrics{Iteration: 0, RewardMean: 0.1}
	last := pipeline.IterationResult{Iteration: 2, RewardMean: 0.3, Loss: 0.4, Policy: ref("pol-2"), WorkerQueue: "w"}
	st := &Continuation{
		Data: data, Before: before, Iteration: 3, Runs: 1, Sampling: &pipeline.Sampling{Rounds: 5, Dropped: 6, Filled: 7, Surplus: 8},
		SFT:         pipeline.TrainResult{Checkpoint: ref("sft"), Digest: "sft-d", Steps: 21, FirstLoss: 22, FinalLoss: 23, TrainSeconds: 24},
		RewardModel: pipeline.TrainResult{Checkpoint: ref("rm"), Digest: "rm-d", Steps: 31, ExPOAlpha: 0.25},
		RewardEval:  pipeline.RewardEval{HeldoutAccuracy: 0.8, HeldoutPairs: 41, TrainAccuracy: 0.9, ByStrength: []pipeline.StrengthAccuracy{{Strength: 1, Pairs: 41, Accuracy: 0.8}}},
		Policy:      ref("pol-2"), PolicyDigest: "pol-d", First: &first, Last: &last, Curve: refTo("curve-2"),
	}
	points := []pipeline.IterationMetrics{{Iteration: 1}, {Iteration: 2}}
	common := pipeline.Summary{
		WorkflowID: "wf", Name: "n", Seed: 7, Backend: "go", Data: data, KeepIterations: 2, Runs: 2,
		SFT:         pipeline.StageModel{Checkpoint: ref("sft"), Digest: "sft-d", Steps: 21, FirstLoss: 22, FinalLoss: 23, Seconds: 24},
		RewardModel: pipeline.RewardModelSummary{StageModel: pipeline.StageModel{Checkpoint: ref("rm"), Digest: "rm-d", Steps: 31}, Recipe: "bt-scaled", ExPOAlpha: 0.25, HeldoutAccuracy: 0.8, HeldoutPairs: 41, TrainAccuracy: 0.9, ByStrength: st.RewardEval.ByStrength},
		Policy: pipeline.PolicySummary{Checkpoint: ref("pol-2"), Digest: "pol-d", Iterations: 3, StoppedEarly: true,
			GoldScoreBefore: gold(1), GoldScoreAfter: gold(11), RewardBefore: 2, RewardAfter: 12, KLSequenceBefore: 3, KLSequenceAfter: 13,
			KLEstimator: "k3", KLPenaltyBefore: 4, KLPenaltyAfter: 14, EndedBefore: 0.5, EndedAfter: 0.75, LengthBefore: 6, LengthAfter: 16, EvalPrompts: 17,
			VerifierBefore: gold(0.125), VerifierAfter: gold(0.625), Sampling: &pipeline.Sampling{Rounds: 5, Dropped: 6, Filled: 7, Surplus: 8}},
		Samples: []pipeline.SamplePair{
			{Prompt: "p1", Before: before.Samples[0], After: after.Samples[0]},
			{Prompt: "p2", Before: before.Samples[1], After: after.Samples[1]}},
	}

	segmented := common
	segmented.CurveRef = refTo("curve-2")
	segmented.Policy.FirstIteration = &first
	segmented.Policy.LastIteration = &pipeline.IterationMetrics{Iteration: 2, RewardMean: 0.3, Loss: 0.4}
	inline := common
	inline.Curve = points

	for name, c := range map[string]struct {
		segmented bool
		want      pipeline.Summary
	}{
		"curve in segments: the summary refers to the last and has the curve's ends": {true, segmented},
		"before segments: the summary carries the curve":                             {false, inline},
	} {
		t.Run(name, func(t *testing.T) {
			r := &run{id: "wf", spec: spec, v: versions{segmented: c.segmented}}
			assert.Equal(t, &c.want, r.summary(st, after, points))
		})
	}
}

func refTo(p string) *artifact.Ref { r := ref(p); return &r }

// TestSummaryOfACompleteRun: a run that ran every planned iteration did
// not stop early; one without samples has none (null in summary.json, as
// before).
func TestSummaryOfACompleteRun(t *testing.T) {
	r := &run{spec: config.Spec{Reinforce: config.Reinforce{Iterations: 4}}, v: versions{segmented: true}}
	s := r.summary(&Continuation{Iteration: 4}, pipeline.PolicyEval{Samples: []pipeline.SampleText{{Prompt: "p"}}}, nil)
	assert.False(t, s.Policy.StoppedEarly)
	assert.Equal(t, 4, s.Policy.Iterations)
	assert.Nil(t, s.Samples, "no sample before alignment: nothing to pair")
	assert.Nil(t, s.Policy.LastIteration)
	b, err := json.Marshal(s)
	require.NoError(t, err)
	assert.Contains(t, string(b), `"samples":null`)
}
