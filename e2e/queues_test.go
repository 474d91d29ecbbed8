package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/ops/devserver"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/worker"
	"github.com/alignflow/alignflow/workflows"
)

// TestQueuesRouteEachKindOfWork: a run whose spec sends training to a
// "gpu" queue and data preparation and evaluation to a "cpu" queue
// completes with one worker polling the workflow's queue and "cpu" and
// another polling only "gpu" (sharing the artifact directory), and the
// history shows every activity scheduled on its kind's queue.
func TestQueuesRouteEachKindOfWork(t *testing.T) {
	srv, _ := startEmbedded(t, devserver.Options{})
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	clients := map[string]client.Client{}
	own := map[string]string{} // a worker's own queue: worker name
	for name, queues := range map[string][]string{"cpu-worker": {workflows.TaskQueue, "cpu"}, "gpu-worker": {"gpu"}} {
		cl, err := client.Dial(client.Options{HostPort: srv.FrontendHostPort(), Namespace: "default", Identity: name})
		require.NoError(t, err)
		t.Cleanup(cl.Close)
		clients[name] = cl
		p := worker.NewPool(cl, store, worker.Options{HeartbeatInterval: testHeartbeatInterval}, queues)
		own[p.Own] = name
		require.NoError(t, p.Start())
		t.Cleanup(p.Stop)
	}
	spec := faultSpec()
	spec.Name = "queues"
	spec.SFT.Steps, spec.Reward.Steps, spec.Reward.RegressionSteps, spec.Reinforce.Iterations = 20, 10, 10, 2
	spec.Queues.Train, spec.Queues.Rollout, spec.Queues.Eval = "gpu", "gpu", "cpu"

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cl := clients["cpu-worker"]
	run, err := cl.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "e2e-queues", TaskQueue: workflows.TaskQueue}, workflows.AlignmentName, spec)
	require.NoError(t, err)
	var s pipeline.Summary
	require.NoError(t, run.Get(ctx, &s))

	want := map[string]string{pipeline.ActivityTrainSFT: "gpu", pipeline.ActivityTrainRewardModel: "gpu", pipeline.ActivityRolloutShard: "gpu", pipeline.ActivityUpdatePolicy: "gpu",
		pipeline.ActivityPrepareData: "cpu", pipeline.ActivityEvaluateRewardModel: "cpu", pipeline.ActivityEvaluatePolicy: "cpu", pipeline.ActivitySaveCurve: "cpu", pipeline.ActivityWriteSummary: "cpu",
		pipeline.ActivityWriteRunReport: "cpu"}
	ranBy := map[int64]string{}
	seen := map[string]bool{}
	for _, h := range runHistories(t, cl, "e2e-queues") {
		for _, ev := range h.GetEvents() {
			if a := ev.GetActivityTaskStartedEventAttributes(); a != nil {
				ranBy[a.GetScheduledEventId()] = a.GetIdentity()
			}
		}
		for _, ev := range h.GetEvents() {
			a := ev.GetActivityTaskScheduledEventAttributes()
			if a == nil {
				continue
			}
			name := a.GetActivityType().GetName()
			q, ok := want[name]
			require.True(t, ok, "activity %s has an expected queue", name)
			got := a.GetTaskQueue().GetName()
			if w, pinned := own[got]; pinned && name == pipeline.ActivityUpdatePolicy {
				got = strings.TrimSuffix(w, "-worker") // pinned to the worker of the update before
			}
			assert.Equal(t, q, got, name)
			assert.Equal(t, q+"-worker", ranBy[ev.GetEventId()], "%s ran on the worker polling its queue", name)
			seen[name] = true
		}
	}
	for name := range want {
		assert.True(t, seen[name], "%s ran", name)
	}
}
