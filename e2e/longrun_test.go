package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	sdkworker "go.temporal.io/sdk/worker"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/ops/devserver"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/worker"
	"github.com/alignflow/alignflow/workflows"
)

// TestLongRunHistoryStaysBounded runs the real Alignment workflow on the
// real server for 240 REINFORCE iterations, with instant stand-ins for the
// activities (the math is not under test here, the history is): the run
// continues as new every 40 iterations, and every workflow run's history
// and continuation input are the same size whatever the iteration count, so
// a 10,000-iteration run stays as far below Temporal's limits (51,200 events,
// 50 MB per history, 2 MB per payload) as this one.
func TestLongRunHistoryStaysBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run")
	}
	_, cl := startEmbedded(t, devserver.Options{})
	w := sdkworker.New(cl, "long-run", sdkworker.Options{})
	worker.Register(w, nil)
	// References into the run's folder, as a continued run checks them.
	ref := func(p string) artifact.Ref {
		p = "runs/long-run/" + p
		return artifact.Ref{Path: p, SHA256: fmt.Sprintf("%064x", len(p)), Bytes: 1}
	}
	stubs := map[string]any{
		pipeline.ActivityPrepareData: func(context.Context, pipeline.PrepareDataInput) (pipeline.Data, error) {
			return pipeline.Data{Ratings: ref("r"), Preferences: ref("p"), TrainPairs: 10, ValidationPairs: 4}, nil
		},
		pipeline.ActivityTrainSFT: func(context.Context, pipeline.TrainInput) (pipeline.TrainResult, error) {
			return pipeline.TrainResult{Checkpoint: ref("sft"), Digest: "sft"}, nil
		},
		pipeline.ActivityTrainRewardModel: func(context.Context, pipeline.TrainInput) (pipeline.TrainResult, error) {
			return pipeline.TrainResult{Checkpoint: ref("rm"), Digest: "rm"}, nil
		},
		pipeline.ActivityEvaluateRewardModel: func(context.Context, pipeline.RewardEvalInput) (pipeline.RewardEval, error) {
			return pipeline.RewardEval{HeldoutAccuracy: 0.8}, nil
		},
		pipeline.ActivityEvaluatePolicy: func(context.Context, pipeline.PolicyEvalInput) (pipeline.PolicyEval, error) {
			return pipeline.PolicyEval{Reward: 1}, nil
		},
		pipeline.ActivityRolloutShard: func(_ context.Context, in pipeline.ShardInput) (pipeline.ShardResult, error) {
			return pipeline.ShardResult{Shard: in.Shard, Rows: 64, Rollouts: ref(fmt.Sprintf("reinforce/iter-%05d/shard-0-of-1.json", in.Iteration))}, nil
		},
		pipeline.ActivityUpdatePolicy: func(_ context.Context, up pipeline.UpdateInput) (pipeline.IterationResult, error) {
			in := up.IterationInput
			p := fmt.Sprintf("reinforce/iter-%05d/policy.safetensors", in.Iteration)
			return pipeline.IterationResult{Iteration: in.Iteration, Policy: ref(p), Optimizer: ref(p + ".opt"), Rollouts: ref(p + ".json"),
				PolicyDigest: p, RewardMean: float64(in.Iteration) / 100}, nil
		},
		pipeline.ActivitySaveCurve: func(_ context.Context, in pipeline.CurveInput) (artifact.Ref, error) {
			return ref(fmt.Sprintf("curve-%d", in.Points[len(in.Points)-1].Iteration)), nil
		},
		pipeline.ActivityWriteSummary: func(context.Context, pipeline.SummaryInput) (string, error) { return "summary.json", nil },
		pipeline.ActivityWriteRunReport: func(context.Context, pipeline.RunReportInput) (pipeline.RunReport, error) {
			return pipeline.RunReport{HTML: "report.html"}, nil
		},
	}
	for name, fn := range stubs {
		w.RegisterActivityWithOptions(fn, activity.RegisterOptions{Name: name})
	}
	require.NoError(t, w.Start())
	t.Cleanup(w.Stop)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const iterations, every = 240, 40
	spec := json.RawMessage(fmt.Sprintf(`{"name": "long", "reinforce": {"iterations": %d, "continue_as_new_every": %d}}`, iterations, every))
	r, err := cl.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "long-run", TaskQueue: "long-run"}, workflows.AlignmentName, spec)
	require.NoError(t, err)
	var s pipeline.Summary
	require.NoError(t, r.Get(ctx, &s))
	assert.Equal(t, iterations, s.Policy.Iterations)
	assert.Equal(t, iterations/every, s.Runs)

	hists := runHistories(t, cl, "long-run")
	require.Len(t, hists, iterations/every)
	var events, inputBytes []int
	for _, h := range hists {
		events = append(events, len(h.GetEvents()))
		inputBytes = append(inputBytes, h.GetEvents()[0].GetWorkflowExecutionStartedEventAttributes().GetInput().Size())
	}
	t.Logf("events per workflow run %v, start input bytes %v", events, inputBytes)
	for i := 1; i < len(hists)-1; i++ {
		assert.Equal(t, events[1], events[i], "every continued run has the same history length")
		assert.InDelta(t, inputBytes[1], inputBytes[i], 64, "the continuation does not grow")
	}
	// About 13 events an iteration (a rollout shard, an update, their
	// workflow tasks, the search-attribute upsert).
	assert.Less(t, events[0], 640, "a run of %d iterations stays small", every)
	assert.Less(t, inputBytes[len(inputBytes)-1], 32<<10)
}
