// Package e2e runs alignflow end to end on a real Temporal server
// (alignflow's embedded server, as `alignflow dev` runs it) with a real worker.
package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/ops/devserver"
	"github.com/alignflow/alignflow/ops/metrics"
	"github.com/alignflow/alignflow/ops/report"
	"github.com/alignflow/alignflow/ops/report/reporttest"
	"github.com/alignflow/alignflow/ops/temporalconn"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/worker"
	"github.com/alignflow/alignflow/workflows"
)

var updateHistory = flag.Bool("update-history", false, "rewrite the recorded histories in workflows/testdata from this run")

// recordHistory writes hist as workflows/testdata/file, which the replay
// test replays, when the tests run with -update-history.
func recordHistory(t *testing.T, file string, hist *historypb.History) {
	t.Helper()
	if !*updateHistory {
		return
	}
	out, err := protojson.MarshalOptions{Indent: "  "}.Marshal(hist)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join("..", "workflows", "testdata", file), out, 0o644))
}

// e2eSpec is the smallest run that still shows every effect the test asserts.
func e2eSpec() config.Spec {
	s := config.Default()
	s.Name = "e2e"
	s.Seed = 1
	s.SFT.Steps = 400
	s.Reinforce.Iterations = 16
	s.Reinforce.ContinueAsNewEvery = 6 // three workflow runs
	return s
}

// runHistories returns the histories of every workflow run of id, oldest
// first, following continue-as-new back from the latest run.
func runHistories(t *testing.T, cl client.Client, id string) []*historypb.History {
	t.Helper()
	hists, err := temporalconn.Histories{Client: cl}.History(context.Background(), id)
	require.NoError(t, err)
	return hists
}

// startEmbedded starts alignflow's embedded server (in memory unless opts
// names a file), with the search attributes the workflows keep current, and
// a client of it.
func startEmbedded(t *testing.T, opts devserver.Options) (*devserver.Server, client.Client) {
	t.Helper()
	opts.SearchAttributes = workflows.SearchAttributes
	srv, err := devserver.Start(context.Background(), opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Stop() })
	cl, err := client.Dial(client.Options{HostPort: srv.FrontendHostPort(), Namespace: "default"})
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return srv, cl
}

// startInProcessWorker runs a worker of cl in the test process, storing
// artifacts in a fresh folder; runs may name any file (the tests' temporary
// ones), as on the loopback address of a developer's machine.
func startInProcessWorker(t *testing.T, cl client.Client) *artifact.Store {
	t.Helper()
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	w := worker.New(cl, store, worker.Options{TaskQueue: workflows.TaskQueue, HeartbeatInterval: testHeartbeatInterval, DataRoots: config.AnyFile()})
	require.NoError(t, w.Start())
	t.Cleanup(w.Stop)
	return store
}

// testHeartbeatInterval is the test workers' heartbeat interval: progress
// and checkpoints reach the server within it, so a test that waits for a
// stage's step or checkpoint sees it while the stage still runs, however
// fast the machine trains.
const testHeartbeatInterval = 100 * time.Millisecond

// startServer starts the embedded server and an in-process worker.
func startServer(t *testing.T) (client.Client, *artifact.Store) {
	t.Helper()
	_, cl := startEmbedded(t, devserver.Options{})
	return cl, startInProcessWorker(t, cl)
}

// TestAlignmentEndToEnd runs a whole alignment on a real server and worker:
// the reward model must rank held-out pairs clearly above chance, REINFORCE
// must raise the policy's gold score on the same held-out prompts, and every
// stage must appear in the workflow history.
func TestAlignmentEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run takes minutes")
	}
	srv, cl := startEmbedded(t, devserver.Options{})
	store := startInProcessWorker(t, cl)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	spec := e2eSpec()
	run, err := cl.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "e2e-alignment", TaskQueue: workflows.TaskQueue}, workflows.AlignmentName, spec)
	require.NoError(t, err)
	var s pipeline.Summary
	require.NoError(t, run.Get(ctx, &s))

	t.Logf("reward model held-out accuracy %.3f on %d pairs", s.RewardModel.HeldoutAccuracy, s.RewardModel.HeldoutPairs)
	t.Logf("gold %.3f -> %.3f, reward %.3f -> %.3f, KL per response %.4f, KL penalty (%s) %.4f", *s.Policy.GoldScoreBefore, *s.Policy.GoldScoreAfter,
		s.Policy.RewardBefore, s.Policy.RewardAfter, s.Policy.KLSequenceAfter, s.Policy.KLEstimator, s.Policy.KLPenaltyAfter)
	assert.Greater(t, s.RewardModel.HeldoutAccuracy, 0.65, "held-out pairwise accuracy clearly above chance")
	require.NotNil(t, s.Policy.GoldScoreBefore)
	require.NotNil(t, s.Policy.GoldScoreAfter)
	assert.Greater(t, *s.Policy.GoldScoreAfter, *s.Policy.GoldScoreBefore, "REINFORCE raises the gold score on held-out prompts")
	assert.Greater(t, s.Policy.RewardAfter, s.Policy.RewardBefore)
	assert.Greater(t, s.Policy.KLSequenceAfter, 0.0)
	assert.Greater(t, s.Policy.KLPenaltyAfter, 0.0)
	assert.Zero(t, s.Policy.KLSequenceBefore, "the SFT policy is the reference")
	assert.Zero(t, s.Policy.KLPenaltyBefore, "the SFT policy is the reference")
	assert.Equal(t, 3, s.Runs, "the run continued as new twice")
	assert.Equal(t, spec.Reinforce.Iterations, s.Policy.Iterations)

	// The summary on disk is the workflow's result, with the whole curve.
	b, err := os.ReadFile(filepath.Join(store.Root, "runs", "e2e-alignment", "summary.json"))
	require.NoError(t, err)
	var onDisk map[string]any
	require.NoError(t, json.Unmarshal(b, &onDisk))
	for _, key := range []string{"reward_model", "policy"} {
		assert.Contains(t, onDisk, key)
	}
	pol := onDisk["policy"].(map[string]any)
	for _, key := range []string{"gold_score_before", "gold_score_after", "reward_before", "reward_after", "kl_sequence_after", "kl_penalty_after", "kl_estimator"} {
		assert.Contains(t, pol, key)
	}
	assert.Contains(t, onDisk["reward_model"].(map[string]any), "heldout_accuracy")
	var withCurve struct {
		Curve []pipeline.IterationMetrics `json:"curve"`
	}
	require.NoError(t, json.Unmarshal(b, &withCurve))
	require.Len(t, withCurve.Curve, spec.Reinforce.Iterations, "the curve segments of all workflow runs")
	for i, p := range withCurve.Curve {
		assert.Equal(t, i, p.Iteration)
	}
	assert.Equal(t, *s.Policy.LastIteration, withCurve.Curve[len(withCurve.Curve)-1])

	// The run is found by its search attributes and carries its memo.
	final, err := store.GetWeights(s.Policy.Checkpoint)
	require.NoError(t, err)
	assert.Equal(t, final.Digest(), s.Policy.Digest, "the summary names the final policy's digest")
	require.Eventually(t, func() bool {
		resp, err := cl.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query: fmt.Sprintf(`AlignmentStage="done" AND AlignmentIteration=%d`, spec.Reinforce.Iterations)})
		return err == nil && len(resp.GetExecutions()) == 1 && resp.GetExecutions()[0].GetExecution().GetWorkflowId() == "e2e-alignment"
	}, 20*time.Second, 200*time.Millisecond, "listed by AlignmentStage and AlignmentIteration")
	desc, err := cl.DescribeWorkflowExecution(ctx, run.GetID(), "")
	require.NoError(t, err)
	var name string
	require.NoError(t, converter.GetDefaultDataConverter().FromPayload(desc.GetWorkflowExecutionInfo().GetMemo().GetFields()["name"], &name))
	assert.Equal(t, spec.Name, name, "the memo of the latest workflow run")

	// Every stage is in the history of one of the workflow runs; each run's
	// history stays small however many iterations the alignment has.
	seen := map[string]int{}
	hists := runHistories(t, cl, run.GetID())
	require.Len(t, hists, 3)
	for i, hist := range hists {
		events := hist.GetEvents()
		assert.Less(t, len(events), 60+spec.Reinforce.ContinueAsNewEvery*16, "run %d: %d events", i+1, len(events))
		for _, ev := range events {
			if a := ev.GetActivityTaskScheduledEventAttributes(); a != nil {
				seen[a.GetActivityType().GetName()]++
			}
		}
		last := events[len(events)-1]
		if i < len(hists)-1 {
			assert.NotNil(t, last.GetWorkflowExecutionContinuedAsNewEventAttributes(), "run %d continued as new", i+1)
		}
	}
	for _, name := range []string{pipeline.ActivityPrepareData, pipeline.ActivityTrainSFT, pipeline.ActivityTrainRewardModel, pipeline.ActivityEvaluateRewardModel, pipeline.ActivityEvaluatePolicy, pipeline.ActivityRolloutShard, pipeline.ActivityUpdatePolicy, pipeline.ActivitySaveCurve, pipeline.ActivityWriteSummary, pipeline.ActivityWriteRunReport} {
		assert.Positive(t, seen[name], "activity %s in history", name)
	}
	assert.Equal(t, 1, seen[pipeline.ActivityTrainSFT], "stages before REINFORCE run once")
	assert.Equal(t, 2, seen[pipeline.ActivityEvaluatePolicy], "policy evaluated before and after")
	assert.Equal(t, spec.Reinforce.Iterations, seen[pipeline.ActivityUpdatePolicy], "one update an iteration")
	assert.Equal(t, spec.Reinforce.Iterations*spec.Reinforce.Shards(), seen[pipeline.ActivityRolloutShard])
	assert.Equal(t, 3, seen[pipeline.ActivitySaveCurve], "one curve segment per workflow run")
	recordHistory(t, "alignment-history.json", hists[0])
	recordHistory(t, "alignment-history-continued.json", hists[len(hists)-1])

	// The run wrote its metrics log, every step once, and its report.
	pts := readMetrics(t, filepath.Join(store.Root, "runs", "e2e-alignment", metrics.File))
	steps := stepsBySeries(pts)
	assert.Equal(t, countTo(spec.SFT.Steps), steps["sft"], "every SFT step once, in order")
	assert.Equal(t, countTo(spec.Reinforce.Iterations), steps["reinforce "+spec.Reward.Recipe], "every iteration once, across the three workflow runs")
	assert.Equal(t, []int{0}, steps[pipeline.StageEvalAfter+" "+spec.Reward.Recipe])
	reportDir := filepath.Join(store.Root, "runs", "e2e-alignment", "report")
	assert.Equal(t, filepath.Join(reportDir, report.HTML), s.ReportPath)
	wantCharts := []string{"sft-loss.png", "reward-model-loss.png", "reinforce-reward.png", "reinforce-kl.png", "reinforce-length.png",
		"reinforce-eos.png", "reward-accuracy.png", "timeline.png"}
	charts, err := reporttest.Check(reportDir, 300)
	require.NoError(t, err)
	assert.ElementsMatch(t, wantCharts, charts)

	// `alignflow report` writes it again from the store and the server.
	out := t.TempDir()
	cmd := exec.Command(alignflowBinary(t), "report", "e2e-alignment", "--address", srv.FrontendHostPort(), "--data-dir", store.Root, "--out", out)
	msg, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", msg)
	assert.Contains(t, string(msg), filepath.Join(out, report.HTML))
	charts, err = reporttest.Check(out, 300)
	require.NoError(t, err)
	assert.ElementsMatch(t, wantCharts, charts)
	md, err := os.ReadFile(filepath.Join(out, report.Markdown))
	require.NoError(t, err)
	for _, stage := range []string{"prepare-data", "sft", "reward-model", "reward-eval", "eval-before", "reinforce", "eval-after", "summary"} {
		assert.Contains(t, string(md), "| "+stage+" | ", "the timeline's stage table has %s", stage)
	}
	assert.Len(t, readMetrics(t, filepath.Join(out, metrics.File)), len(pts), "the same metrics log")
}

// readMetrics reads a metrics.jsonl.
func readMetrics(t *testing.T, file string) []metrics.Point {
	t.Helper()
	f, err := os.Open(file)
	require.NoError(t, err)
	defer f.Close()
	pts, err := metrics.ReadJSONL(f, file)
	require.NoError(t, err)
	return pts
}

// stepsBySeries lists each series' steps in the order the log has them.
func stepsBySeries(pts []metrics.Point) map[string][]int {
	out := map[string][]int{}
	for _, p := range pts {
		out[p.Series.String()] = append(out[p.Series.String()], p.Step)
	}
	return out
}

func countTo(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i + 1
	}
	return out
}

// TestInvalidSpecThroughTheServer sends a spec the way the temporal CLI does
// (raw JSON) and expects a fast, non-retryable failure naming the field.
func TestInvalidSpecThroughTheServer(t *testing.T) {
	cl, _ := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run, err := cl.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "bad-spec", TaskQueue: workflows.TaskQueue},
		workflows.AlignmentName, json.RawMessage(`{"reinforce": {"samples_per_prompt": 1}, "backend": "cuda"}`))
	require.NoError(t, err)
	err = run.Get(ctx, nil)
	require.Error(t, err)
	var app *temporal.ApplicationError
	require.True(t, errors.As(err, &app))
	assert.Equal(t, pipeline.ErrInvalidSpec, app.Type())
	assert.Contains(t, err.Error(), "reinforce.samples_per_prompt")
	assert.Contains(t, err.Error(), "backend")
	assert.Contains(t, err.Error(), "allowed: go")
}
