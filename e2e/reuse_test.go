package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/workflows"
)

// TestNewRunReusesCompletedStages starts the same spec again under another
// name in the same data dir: the new run takes every stage's verified output
// from the first and ends with the same weights. After the first run's
// reward model is damaged on disk, a third run trains the reward model again
// (to the same digest) and still reuses the stages around it.
func TestNewRunReusesCompletedStages(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run takes minutes")
	}
	cl, store := startServer(t)
	spec := faultSpec()
	spec.ReuseStageOutputs = true
	spec.SFT.Steps, spec.Reward.Steps, spec.Reward.RegressionSteps = 60, 30, 30
	run := func(id, name string) pipeline.Summary {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		s := spec
		s.Name = name
		r, err := cl.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: workflows.TaskQueue}, workflows.AlignmentName, s)
		require.NoError(t, err)
		var sum pipeline.Summary
		require.NoError(t, r.Get(ctx, &sum), id)
		return sum
	}
	first := run("reuse-1", "first")
	assert.Empty(t, first.SFT.ReusedFrom)

	second := run("reuse-2", "second")
	assert.Equal(t, "reuse-1", second.SFT.ReusedFrom)
	assert.Equal(t, "reuse-1", second.RewardModel.ReusedFrom)
	assert.Equal(t, first.Policy.Digest, second.Policy.Digest)
	assert.Equal(t, first.Policy.GoldScoreAfter, second.Policy.GoldScoreAfter)
	for _, dir := range []string{"sft", "reward", "reinforce/iter-00000"} {
		_, err := os.Stat(filepath.Join(store.Root, "runs", "reuse-2", dir))
		assert.ErrorIs(t, err, os.ErrNotExist, "nothing recomputed: no %s in the second run", dir)
	}

	require.NoError(t, os.WriteFile(store.Abs(first.RewardModel.Checkpoint), []byte("damaged"), 0o644))
	third := run("reuse-3", "third")
	assert.Equal(t, "reuse-1", third.SFT.ReusedFrom)
	assert.Empty(t, third.RewardModel.ReusedFrom, "a damaged reward model is trained again")
	assert.Equal(t, first.RewardModel.Digest, third.RewardModel.Digest, "to the same weights")
	assert.Equal(t, first.Policy.Digest, third.Policy.Digest)
	assert.Contains(t, third.RewardModel.Checkpoint.Path, "runs/reuse-3/")
}
