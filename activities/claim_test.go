package activities

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/pipeline"
)

// TestARunFolderBelongsToOneAlignment starts data stages under workflow
// IDs that Temporal lets a caller use again once their run closed: a new
// alignment under the ID of a finished one, or of one that claimed the
// folder, fails before it writes anything (its data and checkpoints would
// mix with the earlier run's, and gc would take them for that finished
// run's leftovers); the same alignment again (a retried attempt, a reset
// by `alignflow resume`, which keep the first run ID), a folder of a run
// from before claims that never finished, and the ID of a run whose data
// stage failed on bad input (which claims nothing) go on.
func TestARunFolderBelongsToOneAlignment(t *testing.T) {
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	a := New(store)
	spec := tinySpec()
	prepare := func(runID, first string) error {
		_, err := a.PrepareData(context.Background(), pipeline.PrepareDataInput{RunID: runID, Spec: spec, FirstRunID: first})
		return err
	}
	refused := func(t *testing.T, err error, why string) {
		t.Helper()
		var app *temporal.ApplicationError
		require.True(t, errors.As(err, &app), "%v", err)
		assert.Equal(t, pipeline.ErrRunExists, app.Type())
		assert.True(t, app.NonRetryable())
		assert.Contains(t, err.Error(), why)
		assert.Contains(t, err.Error(), "start this run under another workflow ID")
	}

	require.NoError(t, prepare("x", "first"))
	b, err := store.GetRecord("runs/x/" + pipeline.RunFile)
	require.NoError(t, err)
	assert.JSONEq(t, `{"workflow_id": "x", "first_run_id": "first"}`, string(b))
	require.NoError(t, prepare("x", "first"), "the same alignment: a retry, a reset")
	refused(t, prepare("x", "second"), "holds the artifacts of an earlier run under this ID (first run first)")

	// A finished run from before claims: its summary, no claim.
	_, err = store.PutRecord("runs/old/"+pipeline.SummaryFile, []byte(`{"workflow_id": "old"}`))
	require.NoError(t, err)
	refused(t, prepare("old", "new"), "summary.json is the summary of a finished run under this ID")
	_, err = store.GetRecord("runs/old/data/ratings.jsonl.gz")
	assert.Error(t, err, "nothing written into the finished run's folder")

	// An unfinished run from before claims is taken over.
	_, err = store.Put("runs/legacy/sft/checkpoints/sft-000004.json", []byte("{}"))
	require.NoError(t, err)
	require.NoError(t, prepare("legacy", "resumed"))
	require.NoError(t, prepare("unclaimed", ""), "a workflow from before claims claims nothing")
	_, err = store.GetRecord("runs/unclaimed/" + pipeline.RunFile)
	assert.Error(t, err)

	// A data stage that fails on its input claims nothing: the ID is free
	// for the run with the input fixed.
	bad := spec
	bad.Data.Ratings, bad.Data.Preferences = "/nonexistent/ratings.jsonl", "/nonexistent/preferences.jsonl"
	_, err = a.PrepareData(context.Background(), pipeline.PrepareDataInput{RunID: "fixed", Spec: bad, FirstRunID: "try-1"})
	require.Error(t, err)
	_, err = store.GetRecord("runs/fixed/" + pipeline.RunFile)
	assert.Error(t, err, "no claim after a failed data stage")
	require.NoError(t, prepare("fixed", "try-2"))
}
