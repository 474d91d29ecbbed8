package e2e

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/workflows"
)

// TestXLARunOnAWorkerWithoutXLA starts a run with backend "xla:cuda" on a
// worker built without XLA. The workflow takes the name (its validation
// depends on the spelling alone, not on the worker's build), prepares the
// data, and the first stage that needs the backend fails non-retryably,
// saying how to get it. Its history
// (workflows/testdata/alignment-history-xla-name.json, written with
// -update-history) replays on every build: before the workflow checked
// only the name, a worker with XLA accepted this spec and one without
// failed it at once, so the same run replayed differently on the two.
// (alignment-history-xla.json is one recorded before plugin names were
// plain: its "xla:/opt/pjrt/xla_cuda_plugin.so" still replays.) A spec
// that names a plugin file instead fails at once, before any activity: a
// worker loads only the plugins its operator allows by name.
func TestXLARunOnAWorkerWithoutXLA(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a Temporal server")
	}
	if backend.CheckAvailable(backend.XLA) == nil {
		t.Skip("this build has the XLA backend")
	}
	cl, _ := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	spec := e2eSpec()
	spec.Name, spec.Backend = "xla", "xla:cuda"
	run, err := cl.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "xla-run", TaskQueue: workflows.TaskQueue}, workflows.AlignmentName, spec)
	require.NoError(t, err)
	err = run.Get(ctx, nil)
	var app *temporal.ApplicationError
	require.True(t, errors.As(err, &app), "%v", err)
	assert.Equal(t, pipeline.ErrInvalidSpec, app.Type())
	assert.Contains(t, err.Error(), "stage sft")
	assert.Contains(t, err.Error(), "-tags xla")
	assert.Equal(t, int32(1), maxAttempt(t, cl, "xla-run", pipeline.ActivityPrepareData), "the data stage ran")
	assert.Equal(t, int32(1), maxAttempt(t, cl, "xla-run", pipeline.ActivityTrainSFT), "no retries")
	if *updateHistory {
		hists := runHistories(t, cl, "xla-run")
		require.Len(t, hists, 1)
		recordHistory(t, "alignment-history-xla-name.json", hists[0])
	}

	spec.Backend = "xla:/opt/pjrt/xla_cuda_plugin.so"
	run, err = cl.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "xla-file-run", TaskQueue: workflows.TaskQueue}, workflows.AlignmentName, spec)
	require.NoError(t, err)
	err = run.Get(ctx, nil)
	require.True(t, errors.As(err, &app), "%v", err)
	assert.Equal(t, pipeline.ErrInvalidSpec, app.Type())
	assert.Contains(t, err.Error(), "spec field backend")
	assert.Contains(t, err.Error(), "not a plain name")
	assert.Zero(t, maxAttempt(t, cl, "xla-file-run", pipeline.ActivityPrepareData), "no activity ran")
}
