package e2e

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/alignflow/alignflow/ops/devserver"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/workflows"
)

// TestServerRestartMidRun stops the embedded server (as Ctrl-C on `alignflow
// dev` does) while SFT runs, starts it again on the same SQLite file and
// port, and expects the run to complete: its history, and the worker's
// progress, survive the restart. So does a run with asynchronous rollouts
// restarted with shards and an update in flight, to the digest.
func TestServerRestartMidRun(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run takes minutes")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	opts := devserver.Options{DBFile: filepath.Join(t.TempDir(), "temporal.db"), Port: port}
	srv, cl := startEmbedded(t, opts)
	startInProcessWorker(t, cl)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	spec := faultSpec()
	const id = "restart-mid-run"
	run, err := cl.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: workflows.TaskQueue}, workflows.AlignmentName, spec)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		act, p := pendingHeartbeat(ctx, cl, id)
		return act == pipeline.ActivityTrainSFT && p.Step >= 20
	}, 3*time.Minute, 100*time.Millisecond)

	require.NoError(t, srv.Stop())
	time.Sleep(2 * time.Second)
	opts.SearchAttributes = workflows.SearchAttributes
	srv, err = devserver.Start(context.Background(), opts)
	require.NoError(t, err, "the server starts again on the same file and port")
	t.Cleanup(func() { _ = srv.Stop() })

	var s pipeline.Summary
	require.NoError(t, run.Get(ctx, &s))
	assert.Equal(t, spec.Reinforce.Iterations, s.Policy.Iterations)
	assert.NotEmpty(t, s.Policy.Digest)

	// Asynchronous rollouts: the server restarted while an iteration's
	// shards and the update before it are in flight; the run ends with the
	// weights of the same run undisturbed.
	async := asyncSpec()
	async.Name = "restart-async"
	runAsync := func(id string, during func()) pipeline.Summary {
		r, err := cl.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: workflows.TaskQueue}, workflows.AlignmentName, async)
		require.NoError(t, err)
		if during != nil {
			during()
		}
		var s pipeline.Summary
		require.NoError(t, r.Get(ctx, &s), id)
		return s
	}
	want := runAsync("restart-async-undisturbed", nil)
	got := runAsync("restart-async", func() {
		require.Eventually(t, func() bool {
			for _, h := range pendingHeartbeats(ctx, cl, "restart-async") {
				if h.activity == pipeline.ActivityRolloutShard && h.progress.Step >= 2 {
					return true
				}
			}
			return false
		}, 3*time.Minute, 20*time.Millisecond)
		require.NoError(t, srv.Stop())
		time.Sleep(2 * time.Second)
		srv, err = devserver.Start(context.Background(), opts)
		require.NoError(t, err, "the server starts again")
		t.Cleanup(func() { _ = srv.Stop() })
	})
	assert.Equal(t, want.Policy.Digest, got.Policy.Digest, "the asynchronous run's final policy")
	assert.Equal(t, want.SFT.Digest, got.SFT.Digest)
}
