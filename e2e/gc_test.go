package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/ops/devserver"
	"github.com/alignflow/alignflow/ops/retention"
	"github.com/alignflow/alignflow/ops/temporalconn"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/worker"
	"github.com/alignflow/alignflow/workflows"
)

// TestGCKeepsWhatRunsNeed finishes a run with retention.keep_iterations 1
// and collects the store: the older iterations' checkpoints and the
// training checkpoints go; the summary's artifacts, the last iteration, a
// reuse record's artifacts, an unfinished run and fresh temporary files
// stay, and everything kept still loads, verified. A new run under the
// finished run's workflow ID is refused before it writes anything into its
// folder, and the collection asks the server which runs are open.
func TestGCKeepsWhatRunsNeed(t *testing.T) {
	_, cl := startEmbedded(t, devserver.Options{})
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	w := worker.New(cl, store, worker.Options{HeartbeatInterval: testHeartbeatInterval})
	require.NoError(t, w.Start())
	defer w.Stop()
	spec := clusterSpec()
	spec.Reinforce.Iterations, spec.Reinforce.ContinueAsNewEvery, spec.Retention.KeepIterations = 3, 10, 1
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r, err := cl.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "gc", TaskQueue: workflows.TaskQueue}, workflows.AlignmentName, spec)
	require.NoError(t, err)
	var s pipeline.Summary
	require.NoError(t, r.Get(ctx, &s))
	assert.Equal(t, 1, s.KeepIterations)

	again, err := cl.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "gc", TaskQueue: workflows.TaskQueue}, workflows.AlignmentName, spec)
	require.NoError(t, err, "Temporal lets a closed run's ID be used again")
	err = again.Get(ctx, nil)
	var app *temporal.ApplicationError
	require.True(t, errors.As(err, &app), "%v", err)
	assert.Equal(t, pipeline.ErrRunExists, app.Type())

	// Iteration 0's policy named by a reuse record; an unfinished run; a
	// stale and a fresh temporary file.
	iter0 := artifact.Ref{Path: "runs/gc/reinforce/iter-00000/policy.safetensors"}
	b, err := os.ReadFile(store.Abs(iter0))
	require.NoError(t, err)
	iter0, err = store.Put(iter0.Path, b) // the ref of what is there
	require.NoError(t, err)
	rec, _ := json.Marshal(map[string]any{"run_id": "other", "result": map[string]any{"policy": iter0}})
	_, err = store.PutRecord("reuse/reinforce/k.json", rec)
	require.NoError(t, err)
	pending, err := store.Put("runs/pending/reinforce/iter-00000/policy.safetensors", []byte("x"))
	require.NoError(t, err)
	stale := filepath.Join(store.Root, "tmp", "stale")
	require.NoError(t, os.MkdirAll(filepath.Dir(stale), 0o755))
	require.NoError(t, os.WriteFile(stale, []byte("old"), 0o644))
	require.NoError(t, os.Chtimes(stale, time.Now().Add(-48*time.Hour), time.Now().Add(-48*time.Hour)))
	fresh := filepath.Join(store.Root, "tmp", "fresh")
	require.NoError(t, os.WriteFile(fresh, []byte("new"), 0o644))

	runs := temporalconn.OpenRuns{Client: cl}
	plan, err := retention.Collect(store, retention.Options{KeepIterations: -1, Runs: runs})
	require.NoError(t, err)
	var removed []string
	for _, o := range plan.Remove {
		removed = append(removed, o.Key)
	}
	joined := strings.Join(removed, "\n")
	assert.Contains(t, joined, "runs/gc/reinforce/iter-00001/policy.safetensors", "an old iteration goes")
	assert.Contains(t, joined, "runs/gc/reinforce/iter-00001/optimizer.safetensors")
	assert.Contains(t, joined, "runs/gc/sft/", "training checkpoints go")
	assert.Contains(t, joined, "tmp/stale")
	assert.Contains(t, joined, "runs/gc/reinforce/iter-00002/shard-0-of-1.json", "merged shards go")
	for _, key := range removed {
		for _, kept := range []string{"policy", "optimizer", "rollouts"} {
			assert.NotContains(t, key, "iter-00002/"+kept, "the last iteration's checkpoint stays (its shards, merged, go)")
		}
		assert.NotEqual(t, iter0.Path, key, "a reuse record's artifact stays")
		assert.NotContains(t, key, "runs/pending/", "an unfinished run stays whole")
		assert.NotEqual(t, "tmp/fresh", key)
		assert.NotEqual(t, "runs/gc/summary.json", key)
		assert.NotContains(t, key, "runs/gc/report/", "the report stays")
		assert.NotContains(t, key, "runs/gc/metrics", "the metrics log stays")
	}
	assert.Equal(t, []string{"pending"}, plan.Unfinished)
	assert.Positive(t, plan.RemoveBytes)
	freed, err := plan.Apply(store)
	require.NoError(t, err)
	assert.Equal(t, plan.RemoveBytes, freed)

	// Everything the summary names, and the kept artifacts, still load.
	sb, err := store.GetRecord("runs/gc/" + pipeline.SummaryFile)
	require.NoError(t, err)
	var v any
	require.NoError(t, json.Unmarshal(sb, &v))
	for _, ref := range append(artifact.RefsIn(v), iter0, pending) {
		_, err := store.Get(ref)
		assert.NoError(t, err, ref.Path)
	}
	_, err = store.GetWeights(s.Policy.Checkpoint)
	require.NoError(t, err)
	_, err = os.Stat(store.Abs(artifact.Ref{Path: "runs/gc/reinforce/iter-00001"}))
	assert.True(t, os.IsNotExist(err), "emptied folders go too")

	second, err := retention.Collect(store, retention.Options{KeepIterations: -1, Runs: runs})
	require.NoError(t, err)
	assert.Empty(t, second.Remove, "a second collection finds nothing")
}
