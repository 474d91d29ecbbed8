package activities

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
)

func TestPipelineExperiment(t *testing.T) {
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	a := New(store)
	spec := config.Default()
	ctx := context.Background()
	t0 := time.Now()
	data, err := a.PrepareData(ctx, PrepareDataInput{RunID: "exp", Spec: spec})
	require.NoError(t, err)
	t.Logf("data %+v %v", data, time.Since(t0))
	sft, err := a.TrainSFT(ctx, TrainInput{RunID: "exp", Spec: spec, Data: data})
	require.NoError(t, err)
	t.Logf("sft %+v %v", sft, time.Since(t0))
	rm, err := a.TrainRewardModel(ctx, TrainInput{RunID: "exp", Spec: spec, Data: data, Base: sft.Checkpoint})
	require.NoError(t, err)
	t.Logf("rm %+v %v", rm, time.Since(t0))
	ev, err := a.EvaluateRewardModel(ctx, RewardEvalInput{RunID: "exp", Spec: spec, Data: data, RewardModel: rm.Checkpoint})
	require.NoError(t, err)
	t.Logf("rm eval %+v %v", ev, time.Since(t0))
	before, err := a.EvaluatePolicy(ctx, PolicyEvalInput{RunID: "exp", Spec: spec, Data: data, Policy: sft.Checkpoint, Reference: sft.Checkpoint, RewardModel: rm.Checkpoint})
	require.NoError(t, err)
	t.Logf("before gold %.3f reward %.3f ended %.2f len %.1f %v", *before.GoldScore, before.Reward, before.EndedFraction, before.MeanLength, time.Since(t0))
	for _, s := range before.Samples {
		t.Logf("  %q -> %q gold %.2f r %.2f", s.Prompt, s.Response, s.Gold, s.Reward)
	}
	pol := sft.Checkpoint
	var opt artifact.Ref
	for i := 0; i < spec.Reinforce.Iterations; i++ {
		r, err := a.ReinforceIteration(ctx, IterationInput{RunID: "exp", Spec: spec, Data: data, Iteration: i, Policy: pol, Optimizer: opt, Reference: sft.Checkpoint, RewardModel: rm.Checkpoint})
		require.NoError(t, err)
		pol, opt = r.Policy, r.Optimizer
		t.Logf("iter %d reward %.3f kl %.4f gold %.3f ended %.2f loss %.4f %.2fs", i, r.RewardMean, r.KLMean, *r.GoldMean, r.EndedFraction, r.Loss, r.Seconds)
	}
	after, err := a.EvaluatePolicy(ctx, PolicyEvalInput{RunID: "exp", Spec: spec, Data: data, Policy: pol, Reference: sft.Checkpoint, RewardModel: rm.Checkpoint})
	require.NoError(t, err)
	t.Logf("after gold %.3f reward %.3f kl %.3f ended %.2f len %.1f %v", *after.GoldScore, after.Reward, after.KLToReference, after.EndedFraction, after.MeanLength, time.Since(t0))
	for _, s := range after.Samples {
		t.Logf("  %q -> %q gold %.2f r %.2f", s.Prompt, s.Response, s.Gold, s.Reward)
	}
}
