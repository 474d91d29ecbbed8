package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/ops/devserver"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/workflows"
)

// TestCorruptArtifactThenResume pauses a run before REINFORCE, damages its
// reward model on disk and resumes it: the run fails at once, non-retryably,
// naming the file. After the file is restored, `alignflow resume` continues
// the run from just before the failed activity: the completed stages are not
// run again and the run completes. `alignflow runs show` tells the story.
func TestCorruptArtifactThenResume(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run takes minutes")
	}
	srv, cl := startEmbedded(t, devserver.Options{})
	store := startInProcessWorker(t, cl)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	spec := faultSpec()
	spec.SFT.Steps, spec.Reward.Steps, spec.Reward.RegressionSteps = 60, 30, 30
	const id = "resume-after-corruption"
	run, err := cl.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: workflows.TaskQueue}, workflows.AlignmentName, spec)
	require.NoError(t, err)
	require.NoError(t, cl.SignalWorkflow(ctx, id, "", workflows.PauseSignal, nil))
	progress := func() workflows.Progress {
		var p workflows.Progress
		if v, err := cl.QueryWorkflow(ctx, id, "", workflows.ProgressQuery); err == nil {
			_ = v.Get(&p)
		}
		return p
	}
	require.Eventually(t, func() bool { return progress().Stage == workflows.StagePaused }, 3*time.Minute, 200*time.Millisecond)

	rmPath := store.Abs(artifact.Ref{Path: "runs/" + id + "/reward/model.safetensors"})
	good, err := os.ReadFile(rmPath)
	require.NoError(t, err)
	bad := append([]byte(nil), good...)
	bad[len(bad)-1] ^= 0xff
	require.NoError(t, os.WriteFile(rmPath, bad, 0o644))
	require.NoError(t, cl.SignalWorkflow(ctx, id, "", workflows.ResumeSignal, nil))

	err = run.Get(ctx, nil)
	var app *temporal.ApplicationError
	require.True(t, errors.As(err, &app), "%v", err)
	assert.Equal(t, pipeline.ErrCorruptArtifact, app.Type())
	assert.Contains(t, err.Error(), rmPath)
	assert.Equal(t, int32(1), maxAttempt(t, cl, id, pipeline.ActivityRolloutShard), "a corrupt artifact is not retried")

	require.NoError(t, os.WriteFile(rmPath, good, 0o644))
	addr := []string{"--address", srv.FrontendHostPort()}
	out, err := exec.Command(alignflowBinary(t), append([]string{"resume", id, "--wait"}, addr...)...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "before the first failed activity, RolloutShard")
	assert.Contains(t, string(out), "temporal workflow reset --workflow-id "+id)

	var s pipeline.Summary
	require.NoError(t, cl.GetWorkflow(ctx, id, "").Get(ctx, &s))
	assert.Equal(t, spec.Reinforce.Iterations, s.Policy.Iterations)
	out, err = exec.Command(alignflowBinary(t), append([]string{"runs", "show", id}, addr...)...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	t.Logf("alignflow runs show:\n%s", out)
	assert.Contains(t, string(out), "completed")
	assert.Contains(t, string(out), pipeline.ActivityTrainSFT)
	out, err = exec.Command(alignflowBinary(t), append([]string{"runs", "list", "--query", `AlignmentStage="done"`}, addr...)...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), id)
}
