package benchkit

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/policy"
	"github.com/alignflow/alignflow/reinforce"
	"github.com/alignflow/alignflow/reward"
)

// The objective variants the reference replays take every choice of the
// Objective between them: each estimator, aggregation and KL placement,
// clipped passes with either ratio and asymmetric bounds, and optimizer
// steps over one batch, several and all of an iteration's.
func TestObjectiveVariantsCoverEveryChoice(t *testing.T) {
	s := DefaultSizes()
	batches := (s.Reinforce.PromptsPerIteration*s.Reinforce.SamplesPerPrompt + RLObjectiveBatchSize - 1) / RLObjectiveBatchSize
	require.Greater(t, batches, 2, "an iteration's rollouts make more than two batches")
	seen := map[string]bool{}
	names := map[string]bool{}
	for _, v := range RLObjectiveVariants {
		assert.False(t, names[v.Name], "variant names are unique: %s", v.Name)
		names[v.Name] = true
		o := v.Settings(s).Objective
		seen["advantage "+o.Advantage] = true
		seen["aggregation "+o.Aggregation] = true
		seen["kl_in "+o.KLIn] = true
		if o.KLIn == reinforce.KLInLoss {
			seen["kl_in loss "+o.KLEstimator] = true
		}
		if o.Clipped() {
			seen["clipped "+o.Ratio] = true
			if o.ClipHigh > o.ClipLow {
				seen["clip-higher "+o.Ratio] = true
			}
		}
		switch mb := o.Minibatches; {
		case mb <= 0 || mb >= batches:
			seen["steps per batch"] = true
		case mb == 1:
			seen["one step per pass"] = true // every batch's gradients summed
		default:
			seen["steps over several batches"] = true
		}
	}
	var want []string
	for _, a := range reinforce.AdvantageEstimators {
		want = append(want, "advantage "+a)
	}
	for _, a := range reinforce.LossAggregations {
		want = append(want, "aggregation "+a)
	}
	for _, k := range reinforce.KLPlacements {
		want = append(want, "kl_in "+k)
	}
	for _, r := range reinforce.RatioLevels {
		want = append(want, "clipped "+r, "clip-higher "+r)
	}
	want = append(want, "kl_in loss "+reinforce.KLK3, "steps per batch", "one step per pass", "steps over several batches")
	for _, w := range want {
		assert.True(t, seen[w], "no variant takes %s", w)
	}
}

// RecordObjectives runs every variant from the fixture policy and records
// what the reference replays, under the run spec's names. On short
// responses from the fresh policy, so that it stays quick (the harness's
// run checks the values, with the reference).
func TestRecordObjectives(t *testing.T) {
	be, err := backend.New(backend.Go)
	require.NoError(t, err)
	s := DefaultSizes()
	s.Reinforce.PolicySFTSteps = 0
	s.Sample.MaxTokens = 6
	f, err := NewFixtures(be, s, Counts{TrainWarmup: 0, TrainSteps: 1, GenWarmup: 0, GenSteps: 1}, LoadData(s))
	require.NoError(t, err)
	pe := policy.NewEngine(be, s.Model, f.RLPolicy)
	re := reward.NewEngine(be, s.Model, f.Reward)
	checks, err := RecordObjectives(be, f, pe, re)
	require.NoError(t, err)
	require.Len(t, checks, len(RLObjectiveVariants))
	rows := s.Reinforce.PromptsPerIteration * s.Reinforce.SamplesPerPrompt
	batches := (rows + RLObjectiveBatchSize - 1) / RLObjectiveBatchSize
	for i, c := range checks {
		v := RLObjectiveVariants[i]
		o := v.Settings(s).Objective
		assert.Equal(t, v.Name, c.Variant)
		assert.Equal(t, o.Advantage, c.Settings.Advantage)
		assert.Equal(t, RLObjectiveBatchSize, c.Settings.BatchSize)
		require.Len(t, c.Iterations, RLCheckIterations, v.Name)
		mb := o.Minibatches
		if mb <= 0 || mb > batches {
			mb = batches
		}
		for j, it := range c.Iterations {
			assert.Equal(t, f.RLPrompts[j], it.Prompts)
			assert.Equal(t, c.Settings, it.Settings)
			require.Len(t, it.Rollouts, rows)
			assert.Equal(t, o.Epochs*mb, it.Steps, v.Name)
			require.Len(t, it.StepLosses, it.Steps)
			mean := 0.0
			for _, l := range it.StepLosses {
				mean += l / float64(it.Steps)
			}
			assert.InDelta(t, it.Loss, mean, 1e-12)
			if o.Clipped() {
				// The fresh policy's responses rarely end, so the
				// advantages may all be 0 and the ratio stay 1.
				assert.Greater(t, it.RatioMean, 0.0, v.Name)
				assert.True(t, it.ClipFraction >= 0 && it.ClipFraction <= 1, v.Name)
			} else {
				assert.Equal(t, 1.0, it.RatioMean)
				assert.Zero(t, it.ClipFraction)
			}
			for _, r := range it.Rollouts {
				assert.LessOrEqual(t, r.LogProb, 0.0)
				if o.KLIn != reinforce.KLInReward {
					assert.Equal(t, r.Reward, r.Shaped, "%s: the KL is not in the reward", v.Name)
				}
			}
		}
	}

	// Written with the reference's names.
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, ChecksDir), 0o755))
	require.NoError(t, WriteCheck(dir, &Stage{Name: ReinforceIteration, Checks: map[string]any{RLObjectivesCheck: checks}}))
	b, err := os.ReadFile(filepath.Join(dir, ChecksDir, RLObjectivesCheck+".json"))
	require.NoError(t, err)
	var raw []map[string]any
	require.NoError(t, json.Unmarshal(b, &raw))
	require.Len(t, raw, len(checks))
	var keys []string
	for k := range raw[0]["settings"].(map[string]any) {
		keys = append(keys, k)
	}
	for _, k := range []string{"advantage", "loss_aggregation", "kl_in", "kl_estimator", "kl_beta", "update_epochs",
		"minibatches", "clip_low", "clip_high", "ratio", "max_tokens"} {
		assert.True(t, slices.Contains(keys, k), "settings name %s", k)
	}
	it := raw[0]["iterations"].([]any)[0].(map[string]any)
	ro := it["rollouts"].([]any)[0].(map[string]any)
	for _, k := range []string{"prompt", "response", "ended", "reward", "kl", "shaped", "baseline", "advantage", "logprob"} {
		assert.Contains(t, ro, k)
	}
	for _, k := range []string{"loss", "grad_norm", "ratio_mean", "clip_fraction", "steps", "step_losses"} {
		assert.Contains(t, it, k)
	}
}
