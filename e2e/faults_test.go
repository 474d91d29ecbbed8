package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/internal/fixtures"
	"github.com/alignflow/alignflow/ops/devserver"
	"github.com/alignflow/alignflow/ops/metrics"
	"github.com/alignflow/alignflow/ops/temporalconn"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/workflows"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// alignflowBinary builds cmd/alignflow once for the fault tests, which run
// workers as separate processes so they can be killed.
func alignflowBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "alignflow-e2e-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "alignflow")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/alignflow").CombinedOutput()
		if err != nil {
			binErr = &buildError{out: string(out), err: err}
		}
	})
	require.NoError(t, binErr)
	return binPath
}

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return e.err.Error() + ": " + e.out }

// workerProcess is `alignflow worker` running in its own process.
type workerProcess struct {
	cmd *exec.Cmd
	out bytes.Buffer
}

func startWorkerProcess(t *testing.T, addr, dataDir string, args ...string) *workerProcess {
	t.Helper()
	w := &workerProcess{cmd: exec.Command(alignflowBinary(t), append([]string{"worker", "--address", addr, "--data-dir", dataDir,
		"--heartbeat-interval", testHeartbeatInterval.String()}, args...)...)}
	w.cmd.Stdout, w.cmd.Stderr = &w.out, &w.out
	require.NoError(t, w.cmd.Start())
	t.Cleanup(w.stop)
	return w
}

// stop ends the worker gracefully if it still runs.
func (w *workerProcess) stop() {
	if w.cmd.ProcessState == nil {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		_ = w.cmd.Wait()
	}
}

// kill ends the worker the hard way: no cleanup, no last heartbeat.
func (w *workerProcess) kill(t *testing.T) {
	require.NoError(t, w.cmd.Process.Signal(syscall.SIGKILL))
	_ = w.cmd.Wait()
}

// faultSpec is a run small enough to repeat several times, with checkpoints
// every 10 steps, a 5 s heartbeat timeout so a dead worker is noticed fast,
// and REINFORCE continuing as new halfway.
func faultSpec() config.Spec {
	s := config.Default()
	s.Name = "faults"
	s.HeartbeatTimeoutSeconds = 5
	s.ReuseStageOutputs = false // the same spec runs several times in one data dir
	s.Data.Generate.Prompts = 300
	s.Model = config.Model{Dim: 32, Heads: 4, Layers: 1, Hidden: 64, MaxLen: 56}
	s.SFT.Steps, s.SFT.CheckpointEvery = 300, 10
	s.Reward.Steps, s.Reward.RegressionSteps, s.Reward.CheckpointEvery = 100, 100, 10
	s.Reinforce.Iterations, s.Reinforce.PromptsPerIteration, s.Reinforce.BatchSize = 4, 8, 32
	s.Reinforce.ContinueAsNewEvery = 2 // a kill in either workflow run must resume exactly
	s.Eval.Prompts, s.Eval.SamplesPerPrompt = 8, 2
	s.Compare.BenchPairsPerSubset = 4
	return s
}

// asyncSpec is faultSpec with asynchronous rollouts (max_staleness 1) over
// two shards.
func asyncSpec() config.Spec {
	s := faultSpec()
	s.Name = "faults-async"
	s.Reinforce.MaxStaleness, s.Reinforce.RolloutShards, s.Reinforce.BatchSize = 1, 2, 16
	return s
}

// pendingHeartbeat returns the type and last heartbeat of the run's running
// activity, if any (the first listed, when several run).
func pendingHeartbeat(ctx context.Context, cl client.Client, id string) (string, *pipeline.Progress) {
	for _, h := range pendingHeartbeats(ctx, cl, id) {
		return h.activity, h.progress
	}
	return "", nil
}

// heartbeat is a running activity's type and last heartbeat.
type heartbeat struct {
	activity string
	progress *pipeline.Progress
}

// pendingHeartbeats are the run's running activities that heartbeat.
func pendingHeartbeats(ctx context.Context, cl client.Client, id string) []heartbeat {
	desc, err := cl.DescribeWorkflowExecution(ctx, id, "")
	if err != nil {
		return nil
	}
	var out []heartbeat
	for _, pa := range desc.GetPendingActivities() {
		if pa.GetState() != enums.PENDING_ACTIVITY_STATE_STARTED || pa.GetHeartbeatDetails() == nil {
			continue
		}
		var p pipeline.Progress
		if converter.GetDefaultDataConverter().FromPayloads(pa.GetHeartbeatDetails(), &p) == nil {
			out = append(out, heartbeat{pa.GetActivityType().GetName(), &p})
		}
	}
	return out
}

// TestWorkerKilledMidStageResumesExactly SIGKILLs the worker process during
// SFT, during reward-model training and during a REINFORCE update, then
// starts a new worker: each run must complete with the final SFT, reward
// model and policy digests of an uninterrupted run, and the training stages
// must have resumed from a checkpoint rather than started over.
//
// The same holds with LoRA adapters (lora.rank 4) on llama2.c's
// stories260K, where every stage trains an adapter and checkpoints hold
// only the adapter and its moments.
func TestWorkerKilledMidStageResumesExactly(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run takes minutes")
	}
	srv, cl := startEmbedded(t, devserver.Options{})
	lora := faultSpec()
	lora.Name, lora.LoRA, lora.Model.Path = "faults-lora", config.LoRA{Rank: 4, Dropout: 0.1}, fixtures.Path(t, "models", "stories260K")
	lora.SFT.Steps, lora.Reward.Steps, lora.Reward.RegressionSteps = 120, 60, 60 // a bigger model than the bundled one's
	// GRPO's family with clipped updates: two epochs over each rollout
	// batch against the log-probabilities its shards recorded, and the KL
	// in the loss, which reads the reference's recorded ones. Killed mid-
	// shard only (the other stages are the first run's).
	grpo := faultSpec()
	grpo.Name = "faults-grpo"
	r := &grpo.Reinforce
	r.Advantage, r.LossAggregation, r.KLIn, r.KLEstimator = "grpo", "seq-mean-token-mean", "loss", "k3"
	r.UpdateEpochs, r.Minibatches, r.ClipHigh, r.RolloutShards, r.BatchSize = 2, 1, 0.28, 2, 16
	// The reward: half the reward model's score plus the verifier's.
	half := 0.5
	grpo.Reward.Verifier, grpo.Reward.ModelWeight = "normalized", &half
	// RL from verifiable rewards with DAPO's dynamic sampling: no reward
	// model, groups the verifier scores all alike left out and further
	// rounds of prompts sampled, over two shards. Killed mid-shard.
	rlvr := faultSpec()
	rlvr.Name = "faults-rlvr"
	r = &rlvr.Reinforce
	r.Advantage, r.KLIn, r.RolloutShards, r.BatchSize = "grpo", "none", 2, 16
	r.SkipUniformGroups, r.MaxSamplingRounds = true, 3
	zero := 0.0
	rlvr.Reward.Verifier, rlvr.Reward.ModelWeight = "normalized", &zero
	// Asynchronous rollouts: each iteration samples from the policy two
	// updates back, its shards running during the update before it; the
	// update corrects with the clipped ratio. Killed mid-shard and
	// mid-update, with the continuation handing rollouts in flight on.
	async := asyncSpec()
	for _, v := range []struct {
		prefix string
		spec   config.Spec
		only   []string // the kills to try; nil tries sft, reward-model and reinforce
		check  func(t *testing.T, cl client.Client, dataDir, runID string, spec config.Spec)
	}{{"faults", faultSpec(), nil, nil}, {"faults-lora", lora, nil, nil}, {"faults-grpo", grpo, []string{"reinforce"}, checkGRPORollouts},
		{"faults-rlvr", rlvr, []string{"reinforce"}, checkDynamicSampling},
		{"faults-async", async, []string{"reinforce", "update"}, checkAsyncRollouts}} {
		t.Run(v.prefix, func(t *testing.T) {
			dataDir := killMidStage(t, srv, cl, v.prefix, v.spec, v.only)
			if v.check != nil {
				v.check(t, cl, dataDir, v.prefix+"-uninterrupted", v.spec)
			}
		})
	}
}

// readRollouts reads iteration it's (from 1) samples of run runID with
// `alignflow runs rollouts --json`, the real binary, into rows.
func readRollouts(t *testing.T, dataDir, runID string, it int, rows any) {
	t.Helper()
	out, err := exec.Command(alignflowBinary(t), "runs", "rollouts", runID, "--iteration", fmt.Sprint(it), "--json", "--data-dir", dataDir).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.NoError(t, json.Unmarshal(out, rows), "%s", out)
}

// checkAsyncRollouts reads the run's history and rollouts: iteration k's
// shards sampled from the policy update k - 2 made (the SFT policy for
// the first two), its update started from update k - 1's and reported
// the clipped ratio that corrects for it; every sample records its
// behaviour log-probability, and no iteration drew a prompt another drew.
func checkAsyncRollouts(t *testing.T, cl client.Client, dataDir, runID string, spec config.Spec) {
	r := spec.Reinforce
	sampled, updated := map[int][]string{}, map[int]string{}
	policies := map[int]string{-1: ""} // update k's policy path (-1: SFT's)
	var ratios int
	hists := runHistories(t, cl, runID)
	require.Len(t, hists, 2, "the run continued as new once, with rollouts in flight")
	recordHistory(t, "alignment-history-async.json", hists[0])
	recordHistory(t, "alignment-history-async-continued.json", hists[1])
	for _, a := range temporalconn.Activities(hists) {
		switch a.Type {
		case pipeline.ActivityTrainSFT:
			var res pipeline.TrainResult
			require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(a.Result, &res))
			policies[-1] = res.Checkpoint.Path
		case pipeline.ActivityRolloutShard:
			var in pipeline.ShardInput
			require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(a.Input, &in))
			sampled[in.Iteration] = append(sampled[in.Iteration], in.Policy.Path)
		case pipeline.ActivityUpdatePolicy:
			var in pipeline.UpdateInput
			var res pipeline.IterationResult
			require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(a.Input, &in))
			require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(a.Result, &res))
			updated[in.Iteration], policies[in.Iteration] = in.Policy.Path, res.Policy.Path
			if res.RatioMean != nil && res.ClipFraction != nil {
				ratios++
			}
		}
	}
	for k := range r.Iterations {
		want := policies[max(k-1-r.MaxStaleness, -1)]
		require.NotEmpty(t, want)
		assert.Equal(t, []string{want, want}, sampled[k], "iteration %d's two shards sampled from update %d's policy, once", k, k-1-r.MaxStaleness)
		assert.Equal(t, policies[k-1], updated[k], "update %d starts from update %d's policy", k, k-1)
	}
	assert.Equal(t, r.Iterations, ratios, "every update reports its importance ratio and clip fraction")
	seen := map[string]int{}
	for it := 1; it <= r.Iterations; it++ {
		var rows []struct {
			Prompt  string   `json:"prompt"`
			LogProb *float64 `json:"logprob"`
		}
		readRollouts(t, dataDir, runID, it, &rows)
		require.Len(t, rows, r.PromptsPerIteration*r.SamplesPerPrompt, "iteration %d", it)
		prompts := map[string]bool{}
		for _, row := range rows {
			require.NotNil(t, row.LogProb, "the behaviour policy's log-probability is recorded")
			prompts[row.Prompt] = true
		}
		for p := range prompts {
			seen[p]++
		}
	}
	assert.Len(t, seen, r.Iterations*r.PromptsPerIteration, "no prompt drawn twice")
}

// checkDynamicSampling reads every iteration's samples with `alignflow
// runs rollouts --json` and the run's summary: no reward model was trained
// or read (every reward is the verifier's); each iteration lists its
// rounds' samples once, and the groups it trained on are
// prompts_per_iteration of them, the dropped ones uniform and with
// advantage 0, the trained ones not uniform unless the rounds ran out;
// the summary's counts are the iterations' sums.
func checkDynamicSampling(t *testing.T, cl client.Client, dataDir, runID string, spec config.Spec) {
	if hists := runHistories(t, cl, runID); len(hists) > 0 {
		recordHistory(t, "alignment-history-rlvr.json", hists[0])
	}
	b, err := os.ReadFile(filepath.Join(dataDir, "runs", runID, pipeline.SummaryFile))
	require.NoError(t, err)
	var s pipeline.Summary
	require.NoError(t, json.Unmarshal(b, &s))
	assert.True(t, s.RewardModel.LeftOut, "no reward model trained")
	require.NotNil(t, s.Policy.Sampling)
	r := spec.Reinforce
	var total pipeline.Sampling
	for it := 1; it <= r.Iterations; it++ {
		var rows []struct {
			Round       int      `json:"round"`
			Dropped     bool     `json:"dropped"`
			PromptIndex int      `json:"prompt_index"`
			RewardModel float64  `json:"reward_model"`
			Verifier    *float64 `json:"verifier"`
			Reward      *float64 `json:"reward"`
			Advantage   float64  `json:"advantage"`
		}
		readRollouts(t, dataDir, runID, it, &rows)
		type group struct{ round, prompt int }
		scores := map[group][]float64{}
		dropped := map[group]bool{}
		rounds := 0
		for _, row := range rows {
			require.NotNil(t, row.Verifier)
			assert.Zero(t, row.RewardModel, "no reward model scores")
			if row.Dropped {
				assert.Zero(t, row.Advantage)
			} else {
				require.NotNil(t, row.Reward)
				assert.Equal(t, *row.Verifier, *row.Reward, "the verifier's reward alone")
			}
			g := group{row.Round, row.PromptIndex}
			scores[g], dropped[g] = append(scores[g], *row.Verifier), row.Dropped
			rounds = max(rounds, row.Round)
		}
		require.Len(t, rows, rounds*r.PromptsPerIteration*r.SamplesPerPrompt, "iteration %d: every sample of its %d rounds once", it, rounds)
		got := pipeline.Sampling{Rounds: rounds}
		trained := 0
		for g, v := range scores {
			uniform := slices.Min(v) == slices.Max(v)
			switch {
			case !dropped[g]:
				trained++
				if uniform {
					got.Filled++
				}
			case uniform:
				got.Dropped++
			default:
				got.Surplus++
			}
		}
		assert.Equal(t, r.PromptsPerIteration, trained, "iteration %d trained on prompts_per_iteration groups", it)
		if got.Filled > 0 {
			assert.Equal(t, r.MaxSamplingRounds, rounds, "uniform groups fill the batch only once the rounds ran out")
		}
		total.Add(got)
	}
	assert.Equal(t, total, *s.Policy.Sampling)
	t.Logf("dynamic sampling over %d iterations: %+v", r.Iterations, total)
}

// checkGRPORollouts reads an iteration's samples with `alignflow runs
// rollouts --json` and recomputes what they list: each reward from the
// reward model's and the verifier's scores (reward.model_weight 0.5,
// verifier_weight 1; the KL is in the loss, not the reward), and each
// advantage by GRPO's formula, (r - mean) / (std + 1e-6) over the ended
// samples of the prompt with Bessel's std (veRL's compute_grpo_outcome_advantage).
func checkGRPORollouts(t *testing.T, _ client.Client, dataDir, runID string, spec config.Spec) {
	var rows []struct {
		PromptIndex int      `json:"prompt_index"`
		SampleIndex int      `json:"sample_index"`
		Tokens      []int32  `json:"tokens"`
		Ended       bool     `json:"ended"`
		RewardModel float64  `json:"reward_model"`
		Verifier    *float64 `json:"verifier"`
		KLPenalty   float64  `json:"kl_penalty"`
		Reward      *float64 `json:"reward"`
		Advantage   float64  `json:"advantage"`
		LogProb     *float64 `json:"logprob"`
	}
	readRollouts(t, dataDir, runID, 2, &rows)
	k := spec.Reinforce.SamplesPerPrompt
	require.Len(t, rows, spec.Reinforce.PromptsPerIteration*k)
	groups := map[int][]int{}
	passed := 0.0
	for i, r := range rows {
		assert.Equal(t, i/k, r.PromptIndex)
		assert.Equal(t, i%k, r.SampleIndex)
		require.NotNil(t, r.Verifier)
		require.NotNil(t, r.Reward)
		require.NotNil(t, r.LogProb)
		assert.NotEmpty(t, r.Tokens)
		assert.Negative(t, *r.LogProb, "a sampled response's log-probability")
		assert.InDelta(t, 0.5*r.RewardModel+*r.Verifier, *r.Reward, 1e-12, "row %d: the weighted rewards, no KL", i)
		passed += *r.Verifier
		groups[r.PromptIndex] = append(groups[r.PromptIndex], i)
	}
	nonzero := 0
	for _, idx := range groups {
		var ended []float64
		for _, i := range idx {
			if rows[i].Ended {
				ended = append(ended, *rows[i].Reward)
			}
		}
		for _, i := range idx {
			want := 0.0
			if len(ended) > 1 {
				mean, ss := 0.0, 0.0
				for _, x := range ended {
					mean += x / float64(len(ended))
				}
				for _, x := range ended {
					ss += (x - mean) * (x - mean)
				}
				want = (*rows[i].Reward - mean) / (math.Sqrt(ss/float64(len(ended)-1)) + 1e-6)
			}
			assert.InDelta(t, want, rows[i].Advantage, 1e-9, "row %d: GRPO's advantage", i)
			if want != 0 {
				nonzero++
			}
		}
	}
	assert.Positive(t, nonzero, "some advantages are not 0")
	t.Logf("iteration 2: %d of %d samples passed the verifier", int(passed), len(rows))
}

// killMidStage runs spec uninterrupted and with each stage's worker killed
// (runs named prefix-...; only the case named only, if not ""), comparing
// the digests.
func killMidStage(t *testing.T, srv *devserver.Server, cl client.Client, prefix string, spec config.Spec, only []string) (dataDir string) {
	dataDir = t.TempDir()

	run := func(id string, kill func(activity string, p *pipeline.Progress) bool) pipeline.Summary {
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
		defer cancel()
		// One worker at a time: the killed one must be the one running the activity.
		metricsAddr := freeAddr(t)
		w := startWorkerProcess(t, srv.FrontendHostPort(), dataDir, "--metrics-addr", metricsAddr)
		defer func() { w.stop() }()
		r, err := cl.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: workflows.TaskQueue}, workflows.AlignmentName, spec)
		require.NoError(t, err)
		if kill == nil {
			// While it runs, the worker shows its steps and the SDK's series.
			var body string
			require.Eventually(t, func() bool {
				body = scrape(metricsAddr)
				return strings.Contains(body, `alignflow_train_loss{phase="",recipe="",stage="sft",workflow_id="`+id+`"}`) &&
					strings.Contains(body, "temporal_request_total{") && strings.Contains(body, "temporal_workflow_task_execution_latency_seconds_count")
			}, 2*time.Minute, 100*time.Millisecond, "/metrics during the run:\n%s", body)
		}
		if kill != nil {
			waitForKillMoment(t, ctx, cl, id, kill)
			w.kill(t)
			w = startWorkerProcess(t, srv.FrontendHostPort(), dataDir)
		}
		var s pipeline.Summary
		require.NoError(t, r.Get(ctx, &s), id)
		return s
	}

	want := run(prefix+"-uninterrupted", nil)
	require.NotEmpty(t, want.Policy.Digest)
	wantLog := trainingLosses(t, filepath.Join(dataDir, "runs", prefix+"-uninterrupted", metrics.File))
	cases := []struct {
		name, activity string
		kill           func(activity string, p *pipeline.Progress) bool
		then           func(t *testing.T, s pipeline.Summary)
	}{
		{"sft", pipeline.ActivityTrainSFT, func(act string, p *pipeline.Progress) bool {
			return act == pipeline.ActivityTrainSFT && p.Checkpoint != nil && p.Step <= p.Total/2
		}, func(t *testing.T, s pipeline.Summary) {
			assert.Positive(t, s.SFT.ResumedFrom, "SFT resumed from a checkpoint")
		}},
		{"reward-model", pipeline.ActivityTrainRewardModel, func(act string, p *pipeline.Progress) bool {
			return act == pipeline.ActivityTrainRewardModel && p.Checkpoint != nil && p.Step <= 40
		}, func(t *testing.T, s pipeline.Summary) {
			assert.Positive(t, s.RewardModel.ResumedFrom, "reward model resumed from a checkpoint")
		}},
		{"reinforce", pipeline.ActivityRolloutShard, func(act string, p *pipeline.Progress) bool {
			return act == pipeline.ActivityRolloutShard && p.Step >= 3 // in the continued workflow run
		}, nil},
		// Only where asked: an update, which on the bundled model takes a
		// moment, while (asynchronous rollouts) the next iteration's shards
		// run. It is pinned to the worker that made the update before it: its
		// retry waits there in vain, times out before it starts, and the
		// workflow hands the update to any train worker.
		{"update", pipeline.ActivityUpdatePolicy, func(act string, p *pipeline.Progress) bool {
			return act == pipeline.ActivityUpdatePolicy && p.Step >= 3
		}, nil},
	}
	pinned := map[string]bool{"update": true}
	for _, tc := range cases {
		if only == nil && tc.name == "update" || only != nil && !slices.Contains(only, tc.name) {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			id := prefix + "-kill-" + tc.name
			got := run(id, tc.kill)
			if !pinned[tc.name] {
				assert.GreaterOrEqual(t, maxAttempt(t, cl, id, tc.activity), int32(2), "the killed %s was retried on the new worker", tc.activity)
			}
			assert.Equal(t, want.SFT.Digest, got.SFT.Digest, "SFT weights")
			assert.Equal(t, want.RewardModel.Digest, got.RewardModel.Digest, "reward model weights")
			assert.Equal(t, want.Policy.Digest, got.Policy.Digest, "final policy weights")
			// The metrics log has every step once, with the same losses.
			assert.Equal(t, wantLog, trainingLosses(t, filepath.Join(dataDir, "runs", id, metrics.File)), "the training steps of the metrics log")
			// The run's report shows the retry in its timeline.
			md, err := os.ReadFile(filepath.Join(dataDir, "runs", id, "report", "report.md"))
			require.NoError(t, err)
			if pinned[tc.name] {
				assert.Regexp(t, `\| `+tc.activity+` \| \d \| timed out \| .* ScheduleToStart timeout \|`, string(md), "the pinned %s that never started again, in the report's timeline", tc.activity)
			} else {
				assert.Regexp(t, `\| `+tc.activity+` \| [2-9] \| completed \| `, string(md), "the retried %s in the report's timeline", tc.activity)
			}
			if tc.then != nil {
				tc.then(t, got)
			}
		})
	}
	return dataDir
}

// freeAddr is a local address no one listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// scrape reads a /metrics page ("" until it answers).
func scrape(addr string) string {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// trainingLosses are the training steps of a metrics log: each series'
// steps in the log's order, with their losses, and the REINFORCE
// iterations with their policy losses.
func trainingLosses(t *testing.T, file string) map[string][][2]float64 {
	out := map[string][][2]float64{}
	for _, p := range readMetrics(t, file) {
		switch p.Stage {
		case pipeline.StageSFT, pipeline.StageRewardModel:
			out[p.Series.String()] = append(out[p.Series.String()], [2]float64{float64(p.Step), p.Metrics["loss"]})
		case pipeline.StageReinforce: // every iteration once, with the same update
			out[p.Series.String()] = append(out[p.Series.String()], [2]float64{float64(p.Step), p.Metrics["policy_loss"]})
		}
	}
	return out
}

// waitForKillMoment polls the run's pending activity until kill approves of
// its latest heartbeat. On failure it names the heartbeats it saw.
func waitForKillMoment(t *testing.T, ctx context.Context, cl client.Client, id string, kill func(string, *pipeline.Progress) bool) {
	t.Helper()
	var seen []string
	deadline := time.Now().Add(4 * time.Minute)
	for time.Now().Before(deadline) {
		for _, h := range pendingHeartbeats(ctx, cl, id) { // with asynchronous rollouts a shard and an update run at once
			act, p := h.activity, h.progress
			if kill(act, p) {
				return
			}
			s := fmt.Sprintf("%s %s %d/%d checkpoint=%t", act, p.Stage, p.Step, p.Total, p.Checkpoint != nil)
			if len(seen) == 0 || seen[len(seen)-1] != s {
				seen = append(seen, s)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: the moment to kill the worker never came; heartbeats seen:\n%s", id, strings.Join(seen, "\n"))
}

// maxAttempt is the highest attempt of any activity of type name in the
// run's history.
func maxAttempt(t *testing.T, cl client.Client, id, name string) int32 {
	t.Helper()
	var most int32
	for _, hist := range runHistories(t, cl, id) {
		types := map[int64]string{}
		for _, ev := range hist.GetEvents() {
			if a := ev.GetActivityTaskScheduledEventAttributes(); a != nil {
				types[ev.GetEventId()] = a.GetActivityType().GetName()
			}
			if a := ev.GetActivityTaskStartedEventAttributes(); a != nil && types[a.GetScheduledEventId()] == name {
				most = max(most, a.GetAttempt())
			}
		}
	}
	return most
}
