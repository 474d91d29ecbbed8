package activities

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/data/helpsteer"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/reinforce"
)

// TestShardsGiveTheSameUpdate: an iteration split into 1, 2 or 3 rollout
// shards (3 generation batches) ends with bit-identical weights, rewards,
// KL and loss, and so does the next iteration from it; shards that do not
// fit the batches, or are merged out of order, are refused.
func TestShardsGiveTheSameUpdate(t *testing.T) {
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	a := New(store)
	ctx := context.Background()
	spec := tinySpec()
	spec.Reinforce.PromptsPerIteration, spec.Reinforce.SamplesPerPrompt, spec.Reinforce.BatchSize = 6, 4, 8 // 24 rows
	data, sft, rm := beforeReinforce(t, a, "shards", spec)

	iterate := func(runID string, shards int, from pipeline.IterationResult, iteration int) pipeline.IterationResult {
		t.Helper()
		in := pipeline.IterationInput{RunID: runID, Spec: spec, Data: data, Iteration: iteration, Policy: sft.Checkpoint,
			Reference: sft.Checkpoint, RewardModel: rm.Checkpoint}
		if iteration > 0 {
			in.Policy, in.Optimizer = from.Policy, from.Optimizer
		}
		up := pipeline.UpdateInput{IterationInput: in}
		for s := 0; s < shards; s++ {
			r, err := a.RolloutShard(ctx, pipeline.ShardInput{IterationInput: in, Shard: s, Shards: shards})
			require.NoError(t, err)
			up.Shards = append(up.Shards, r)
		}
		res, err := a.UpdatePolicy(ctx, up)
		require.NoError(t, err)
		return res
	}
	var first []pipeline.IterationResult
	for _, shards := range []int{1, 2, 3} {
		runID := "shards-" + string(rune('0'+shards))
		it0 := iterate(runID, shards, pipeline.IterationResult{}, 0)
		it1 := iterate(runID, shards, it0, 1)
		if first == nil {
			first = []pipeline.IterationResult{it0, it1}
			assert.NotEqual(t, sft.Digest, it0.PolicyDigest, "the update changed the policy")
			assert.Positive(t, it1.KLMean, "the second iteration moves away from the reference")
			continue
		}
		for i, got := range []pipeline.IterationResult{it0, it1} {
			want := first[i]
			assert.Equal(t, want.PolicyDigest, got.PolicyDigest, "%d shards, iteration %d: policy", shards, i)
			assert.Equal(t, want.RewardMean, got.RewardMean, "%d shards, iteration %d", shards, i)
			assert.Equal(t, want.KLMean, got.KLMean, "%d shards, iteration %d", shards, i)
			assert.Equal(t, want.Loss, got.Loss, "%d shards, iteration %d", shards, i)
			assert.Equal(t, want.Optimizer.SHA256, got.Optimizer.SHA256, "%d shards, iteration %d: optimizer state", shards, i)
		}
	}

	// A worker without the last update's state in memory reads it from the
	// store and makes the same update.
	fresh := New(store)
	in1 := pipeline.IterationInput{RunID: "shards-fresh", Spec: spec, Data: data, Iteration: 1, Policy: first[0].Policy,
		Optimizer: first[0].Optimizer, Reference: sft.Checkpoint, RewardModel: rm.Checkpoint}
	sh, err := fresh.RolloutShard(ctx, pipeline.ShardInput{IterationInput: in1, Shard: 0, Shards: 1})
	require.NoError(t, err)
	again, err := fresh.UpdatePolicy(ctx, pipeline.UpdateInput{IterationInput: in1, Shards: []pipeline.ShardResult{sh}})
	require.NoError(t, err)
	assert.Equal(t, first[1].PolicyDigest, again.PolicyDigest, "from the store as from memory")

	in := pipeline.IterationInput{RunID: "bad", Spec: spec, Data: data, Policy: sft.Checkpoint, Reference: sft.Checkpoint, RewardModel: rm.Checkpoint}
	_, err = a.RolloutShard(ctx, pipeline.ShardInput{IterationInput: in, Shard: 0, Shards: 4})
	var app *temporal.ApplicationError
	require.True(t, errors.As(err, &app), "%v", err)
	assert.Equal(t, pipeline.ErrInvalidSpec, app.Type())
	assert.Contains(t, err.Error(), "3 rollout batches")

	s0, err := a.RolloutShard(ctx, pipeline.ShardInput{IterationInput: in, Shard: 0, Shards: 2})
	require.NoError(t, err)
	s1, err := a.RolloutShard(ctx, pipeline.ShardInput{IterationInput: in, Shard: 1, Shards: 2})
	require.NoError(t, err)
	_, err = a.UpdatePolicy(ctx, pipeline.UpdateInput{IterationInput: in, Shards: []pipeline.ShardResult{s1, s0}})
	require.True(t, errors.As(err, &app), "%v", err)
	assert.Equal(t, pipeline.ErrCorruptArtifact, app.Type())
	_, err = a.UpdatePolicy(ctx, pipeline.UpdateInput{IterationInput: in, Shards: []pipeline.ShardResult{s0}})
	require.ErrorContains(t, err, "hold 8 of the iteration's 24 rollouts")
}

// TestDynamicSamplingSelectsGroups: this barely trained policy answers
// no prompt of the bundled task right, so every group is uniform: all
// three rounds are drawn, and round 0's groups fill the batch, so the
// update is the one without dynamic sampling.
func TestDynamicSamplingSelectsGroups(t *testing.T) {
	spec := tinySpec()
	zero := 0.0
	spec.Reward.Verifier, spec.Reward.ModelWeight = "normalized", &zero
	got := dynamicIteration(t, spec)
	assert.Equal(t, pipeline.Sampling{Rounds: 3, Dropped: 12, Filled: 6}, *got.res.Sampling)
	assert.Equal(t, got.plain, got.res.PolicyDigest)
}

// TestDynamicSamplingOnAPromptsFile: REINFORCE samples data.prompts'
// prompts, verified against their answers (regexes some responses match
// and others do not): rounds walk the file without drawing a prompt twice,
// the uniform groups are dropped and the update differs from the one on
// round 0 alone.
func TestDynamicSamplingOnAPromptsFile(t *testing.T) {
	spec := tinySpec()
	var rows []helpsteer.PromptRow
	for i := range 30 {
		rows = append(rows, helpsteer.PromptRow{Prompt: fmt.Sprintf("Name a word with the letter %c.", 'a'+i%26) + strings.Repeat("?", i/26), Answer: `(?s).*[aeiou].*`})
	}
	spec.Data.Prompts = filepath.Join(t.TempDir(), "prompts.jsonl")
	require.NoError(t, helpsteer.WritePrompts(spec.Data.Prompts, rows))
	zero := 0.0
	spec.Reward.Verifier, spec.Reward.ModelWeight = "regex", &zero
	got := dynamicIteration(t, spec)
	sm := *got.res.Sampling
	t.Logf("sampling %+v", sm)
	assert.Positive(t, sm.Dropped, "some groups are uniform")
	assert.Less(t, sm.Filled, 6, "some are not")
	assert.NotEqual(t, got.plain, got.res.PolicyDigest)
	seen := map[string]int{}
	for _, rec := range got.records {
		assert.Contains(t, rec.Prompt, "Name a word with the letter ")
		if rec.SampleIndex == 0 {
			seen[rec.Prompt]++
		}
	}
	assert.Len(t, seen, 6*sm.Rounds, "each round draws the next prompts of the walk")
	for p, n := range seen {
		assert.Equal(t, 1, n, p)
	}
}

// dynamicRun is an iteration with dynamic sampling: its result and
// records, and the policy digest of the same iteration without it.
type dynamicRun struct {
	res     pipeline.IterationResult
	records []pipeline.RolloutRecord
	plain   string
}

// dynamicIteration runs an iteration of spec with
// reinforce.skip_uniform_groups through the activities, rounds decided as
// the workflow decides them (pipeline.Uniform, reinforce.Varied), in one
// shard and in three (groups of 4 straddle the batches of 6). Both end
// with the same weights and rounds; the stored records list every sampled
// row once, and uniformity recomputed from their verifier scores agrees
// with what was dropped, filled and trained.
func dynamicIteration(t *testing.T, spec config.Spec) dynamicRun {
	t.Helper()
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	a := New(store)
	a.DataRoots = config.AnyFile() // data.prompts is a file in the test's folder
	ctx := context.Background()
	r := &spec.Reinforce
	r.PromptsPerIteration, r.SamplesPerPrompt, r.BatchSize = 6, 4, 6 // 24 rows in 4 batches
	r.SkipUniformGroups, r.MaxSamplingRounds = true, 3
	data, sft, rm := beforeReinforce(t, a, "dyn", spec)

	// The evaluation scores the held-out samples with the verifier too
	// (the bundled task answers every held-out prompt); without one it
	// does not.
	evalIn := pipeline.PolicyEvalInput{RunID: "dyn", Spec: spec, Data: data, Policy: sft.Checkpoint, Reference: sft.Checkpoint,
		RewardModel: rm.Checkpoint, Label: pipeline.StageEvalBefore}
	ev, err := a.EvaluatePolicy(ctx, evalIn)
	require.NoError(t, err)
	require.NotNil(t, ev.Verifier)
	assert.Equal(t, ev.Prompts, ev.VerifiedPrompts)
	assert.True(t, *ev.Verifier >= 0 && *ev.Verifier <= 1)
	evalIn.Spec.Reward.Verifier, evalIn.Spec.Reward.ModelWeight = "", nil
	ev, err = a.EvaluatePolicy(ctx, evalIn)
	require.NoError(t, err)
	assert.Nil(t, ev.Verifier)

	iterate := func(runID string, shards int) (pipeline.IterationResult, int) {
		t.Helper()
		in := pipeline.IterationInput{RunID: runID, Spec: spec, Data: data, Policy: sft.Checkpoint, Reference: sft.Checkpoint, RewardModel: rm.Checkpoint}
		up := pipeline.UpdateInput{IterationInput: in}
		var uniform [][]bool
		for round := 0; round < r.SamplingRounds(); round++ {
			var got []pipeline.ShardResult
			for s := 0; s < shards; s++ {
				res, err := a.RolloutShard(ctx, pipeline.ShardInput{IterationInput: in, Shard: s, Shards: shards, Round: round})
				require.NoError(t, err)
				got = append(got, res)
			}
			up.Shards = append(up.Shards, got...)
			if uniform = append(uniform, pipeline.Uniform(got, r.PromptsPerIteration)); reinforce.Varied(uniform) >= r.PromptsPerIteration {
				break
			}
		}
		res, err := a.UpdatePolicy(ctx, up)
		require.NoError(t, err)
		return res, len(uniform)
	}
	one, rounds := iterate("dyn-1", 1)
	three, rounds3 := iterate("dyn-3", 3)
	assert.Equal(t, one.PolicyDigest, three.PolicyDigest)
	assert.Equal(t, rounds, rounds3)
	require.NotNil(t, one.Sampling)
	assert.Equal(t, *one.Sampling, *three.Sampling)
	assert.Equal(t, rounds, one.Sampling.Rounds)

	var records []pipeline.RolloutRecord
	require.NoError(t, store.GetJSON(one.Rollouts, &records))
	require.Len(t, records, rounds*24, "every sampled row once")
	type group struct{ round, prompt int }
	verdicts := map[group][]float64{}
	dropped := map[group]bool{}
	for _, rec := range records {
		require.NotNil(t, rec.Verifier)
		g := group{rec.Round, rec.PromptIndex}
		verdicts[g] = append(verdicts[g], *rec.Verifier)
		dropped[g] = rec.Dropped
		if rec.Dropped {
			assert.Zero(t, rec.Advantage)
		}
	}
	var trainedUniform, droppedUniform, droppedVaried int
	for g, v := range verdicts {
		require.Len(t, v, 4)
		u := v[0] == v[1] && v[1] == v[2] && v[2] == v[3]
		switch {
		case !dropped[g] && u:
			trainedUniform++
		case dropped[g] && u:
			droppedUniform++
		case dropped[g]:
			droppedVaried++
		}
	}
	assert.Equal(t, pipeline.Sampling{Rounds: rounds, Dropped: droppedUniform, Filled: trainedUniform, Surplus: droppedVaried}, *one.Sampling)
	assert.Equal(t, 6*rounds-6, droppedUniform+droppedVaried, "the batch holds prompts_per_iteration groups")

	plain := spec
	plain.Reinforce.SkipUniformGroups, plain.Reinforce.MaxSamplingRounds = false, 0
	in := pipeline.IterationInput{RunID: "dyn-plain", Spec: plain, Data: data, Policy: sft.Checkpoint, Reference: sft.Checkpoint, RewardModel: rm.Checkpoint}
	sh, err := a.RolloutShard(ctx, pipeline.ShardInput{IterationInput: in, Shard: 0, Shards: 1})
	require.NoError(t, err)
	want, err := a.UpdatePolicy(ctx, pipeline.UpdateInput{IterationInput: in, Shards: []pipeline.ShardResult{sh}})
	require.NoError(t, err)
	return dynamicRun{res: one, records: records, plain: want.PolicyDigest}
}

// beforeReinforce runs run runID's data stage, SFT and reward model.
func beforeReinforce(t *testing.T, a *Activities, runID string, spec config.Spec) (pipeline.Data, pipeline.TrainResult, pipeline.TrainResult) {
	t.Helper()
	ctx := context.Background()
	data, err := a.PrepareData(ctx, pipeline.PrepareDataInput{RunID: runID, Spec: spec})
	require.NoError(t, err)
	sft, err := a.TrainSFT(ctx, pipeline.TrainInput{RunID: runID, Spec: spec, Data: data})
	require.NoError(t, err)
	rm, err := a.TrainRewardModel(ctx, pipeline.TrainInput{RunID: runID, Spec: spec, Data: data, Base: sft.Checkpoint})
	require.NoError(t, err)
	return data, sft, rm
}
