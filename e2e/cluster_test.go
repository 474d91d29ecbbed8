package e2e

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/internal/pgtest"
	"github.com/alignflow/alignflow/internal/s3test"
	"github.com/alignflow/alignflow/ops/devserver"
	"github.com/alignflow/alignflow/ops/report"
	"github.com/alignflow/alignflow/ops/temporalconn"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/worker"
	"github.com/alignflow/alignflow/workflows"
)

// clusterSpec is small enough for several runs per test.
func clusterSpec() config.Spec {
	s := faultSpec()
	s.Name = "cluster"
	s.SFT.Steps, s.Reward.Steps, s.Reward.RegressionSteps = 120, 40, 40
	s.Reinforce.Iterations = 4
	s.Reinforce.BatchSize = 8 // 8 prompts x 4 samples: 4 rollout batches to shard
	return s
}

// startStoreWorker runs `alignflow worker` as a process on the object
// store, with its own cache and extra flags, giving it env.
func startStoreWorker(t *testing.T, addr, storeURL string, env []string, args ...string) *workerProcess {
	t.Helper()
	w := &workerProcess{cmd: exec.Command(alignflowBinary(t), append([]string{"worker", "--address", addr,
		"--store", storeURL, "--cache-dir", t.TempDir(), "--data-dir", t.TempDir(),
		"--heartbeat-interval", testHeartbeatInterval.String()}, args...)...)}
	w.cmd.Env = append(os.Environ(), env...)
	w.cmd.Stdout, w.cmd.Stderr = &w.out, &w.out
	require.NoError(t, w.cmd.Start())
	t.Cleanup(w.stop)
	return w
}

// runningWorkerPID is the process id of the worker running the run's
// pending activity (from the SDK's default identity, pid@host).
func runningWorkerPID(ctx context.Context, t *testing.T, cl client.Client, id string) int {
	t.Helper()
	pid := workerRunning(ctx, cl, id, "")
	require.NotZero(t, pid, "run %s has a running activity", id)
	return pid
}

// workerRunning is the process id of a worker running one of the run's
// activities of type activity ("" for any), 0 if none runs now.
func workerRunning(ctx context.Context, cl client.Client, id, activity string) int {
	desc, err := cl.DescribeWorkflowExecution(ctx, id, "")
	if err != nil {
		return 0
	}
	for _, pa := range desc.GetPendingActivities() {
		if activity != "" && pa.GetActivityType().GetName() != activity {
			continue
		}
		if who := pa.GetLastWorkerIdentity(); who != "" && pa.GetState() == enums.PENDING_ACTIVITY_STATE_STARTED {
			pid, _ := strconv.Atoi(strings.SplitN(who, "@", 2)[0])
			return pid
		}
	}
	return 0
}

// pinnedWorkerPID is the process id of the worker that started a pinned
// update (one scheduled on a worker's own queue), 0 while there is none.
func pinnedWorkerPID(ctx context.Context, cl client.Client, id string) int {
	pinned := map[int64]bool{}
	it := cl.GetWorkflowHistory(ctx, id, "", false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			return 0
		}
		if a := ev.GetActivityTaskScheduledEventAttributes(); a != nil && strings.HasPrefix(a.GetTaskQueue().GetName(), "alignflow-worker-") {
			pinned[ev.GetEventId()] = true
		}
		if a := ev.GetActivityTaskStartedEventAttributes(); a != nil && pinned[a.GetScheduledEventId()] {
			pid, _ := strconv.Atoi(strings.SplitN(a.GetIdentity(), "@", 2)[0])
			return pid
		}
	}
	return 0
}

// TestClusterObjectStore runs alignments on three worker processes that
// share nothing but a real S3-compatible object store (versitygw) and a
// Temporal server persisted in a real PostgreSQL, with rollout_shards 3.
// Each run must end with the SFT, reward-model and policy digests of one
// in-process worker with one shard on a local store: undisturbed, with a
// worker SIGKILLed in the middle of a stage, with the object store
// restarted in the middle of the run, and on two workers running one
// activity at a time with two shards. A worker given wrong store
// credentials does not start, and says why without showing the secret.
func TestClusterObjectStore(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster runs take minutes")
	}
	s3 := s3test.Start(t, "alignflow")
	pg := pgtest.Start(t)
	srv, cl := startEmbedded(t, devserver.Options{Postgres: &devserver.Postgres{Addr: pg.Addr, User: pgtest.User}})
	addr := srv.FrontendHostPort()
	outer := t // workers started in a subtest must outlive it
	run := func(t *testing.T, id string, shards int, during func(ctx context.Context), edit ...func(*config.Spec)) pipeline.Summary {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
		defer cancel()
		spec := clusterSpec()
		spec.Reinforce.RolloutShards = shards
		for _, e := range edit {
			e(&spec)
		}
		r, err := cl.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: workflows.TaskQueue}, workflows.AlignmentName, spec)
		require.NoError(t, err)
		if during != nil {
			during(ctx)
		}
		var s pipeline.Summary
		require.NoError(t, r.Get(ctx, &s), id)
		return s
	}

	// The reference: one worker in this process, on a local store.
	local, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	lw := worker.New(cl, local, worker.Options{HeartbeatInterval: testHeartbeatInterval})
	require.NoError(t, lw.Start())
	want := run(t, "cluster-local", 1, nil)
	lw.Stop()
	require.NotEmpty(t, want.Policy.Digest)

	url := s3.URL("alignflow")
	t.Run("wrong credentials", func(t *testing.T) {
		env := append(s3.Env(), "AWS_SECRET_ACCESS_KEY=wrong-secret-123")
		w := startStoreWorker(t, addr, url, env)
		err := w.cmd.Wait()
		require.Error(t, err, "the worker exits")
		out := w.out.String()
		assert.Contains(t, out, "s3://alignflow")
		assert.Contains(t, out, "access denied")
		assert.NotContains(t, out, "wrong-secret-123")
	})

	workers := make([]*workerProcess, 3)
	for i := range workers {
		workers[i] = startStoreWorker(t, addr, url, s3.Env())
	}
	check := func(t *testing.T, got pipeline.Summary) {
		assert.Equal(t, want.SFT.Digest, got.SFT.Digest, "SFT weights")
		assert.Equal(t, want.RewardModel.Digest, got.RewardModel.Digest, "reward model weights")
		assert.Equal(t, want.Policy.Digest, got.Policy.Digest, "final policy weights")
		assert.True(t, strings.HasPrefix(got.SummaryPath, "s3://alignflow/runs/"), got.SummaryPath)
		assert.True(t, strings.HasPrefix(got.ReportPath, "s3://alignflow/runs/") && strings.HasSuffix(got.ReportPath, "/report/report.html"),
			"the report is in the bucket: %s", got.ReportPath)
	}
	t.Run("three workers", func(t *testing.T) {
		check(t, run(t, "cluster-s3", 3, nil))
		// The first update goes to any train worker, each later one to the
		// worker that made the one before (its own queue), across
		// continue-as-new too.
		var updates []string
		for _, h := range runHistories(t, cl, "cluster-s3") {
			for _, ev := range h.GetEvents() {
				if a := ev.GetActivityTaskScheduledEventAttributes(); a != nil && a.GetActivityType().GetName() == pipeline.ActivityUpdatePolicy {
					updates = append(updates, a.GetTaskQueue().GetName())
				}
			}
		}
		require.Len(t, updates, 4)
		assert.Equal(t, workflows.TaskQueue, updates[0])
		for _, q := range updates[1:] {
			assert.True(t, strings.HasPrefix(q, "alignflow-worker-"), "pinned: %s", q)
		}
		if *updateHistory {
			hists := runHistories(t, cl, "cluster-s3")
			require.Len(t, hists, 2)
			recordHistory(t, "alignment-history-shards.json", hists[0])
		}
	})
	t.Run("asynchronous rollouts", func(t *testing.T) {
		// The same run with max_staleness 1 on the three workers: each
		// iteration's shards run while the update before it does, and every
		// update corrects with the clipped ratio. Timed here, next to the
		// synchronous run above, for the README (not asserted: a test does
		// not time things).
		const id = "cluster-s3-async"
		got := run(t, id, 3, nil, func(s *config.Spec) { s.Reinforce.MaxStaleness = 1 })
		require.NotEmpty(t, got.Policy.Digest)
		ratios := 0
		for _, a := range temporalconn.Activities(runHistories(t, cl, id)) {
			var res pipeline.IterationResult
			if a.Type == pipeline.ActivityUpdatePolicy && a.Result != nil && converter.GetDefaultDataConverter().FromPayloads(a.Result, &res) == nil && res.RatioMean != nil {
				ratios++
			}
		}
		assert.Equal(t, clusterSpec().Reinforce.Iterations, ratios, "every update reports its importance ratio")
		for _, run := range []string{"cluster-s3", id} {
			acts := report.Timeline(runHistories(t, cl, run))
			for _, st := range report.Stages(acts) {
				if st.Stage == pipeline.StageReinforce {
					b := report.BusyOf(acts)
					t.Logf("%s: REINFORCE %.1f s for %d iterations; rollouts %.1f s, updates %.1f s, both at once %.1f s",
						run, st.End.Sub(st.Start).Seconds(), clusterSpec().Reinforce.Iterations, b.Rollouts.Seconds(), b.Updates.Seconds(), b.Both.Seconds())
				}
			}
		}
	})
	t.Run("a worker killed mid-stage", func(t *testing.T) {
		id := "cluster-s3-kill"
		got := run(t, id, 3, func(ctx context.Context) {
			waitForKillMoment(t, ctx, cl, id, func(act string, p *pipeline.Progress) bool {
				return act == pipeline.ActivityTrainSFT && p.Checkpoint != nil && p.Step <= p.Total/2
			})
			// Kill the worker running SFT: the SDK's identity is pid@host.
			pid := runningWorkerPID(ctx, t, cl, id)
			killed := false
			for _, w := range workers {
				if w.cmd.Process.Pid == pid && w.cmd.ProcessState == nil {
					w.kill(t)
					killed = true
				}
			}
			require.True(t, killed, "the worker with pid %d runs SFT", pid)
		})
		check(t, got)
		assert.GreaterOrEqual(t, maxAttempt(t, cl, id, pipeline.ActivityTrainSFT), int32(2), "another worker retried SFT")
		assert.Positive(t, got.SFT.ResumedFrom, "from the killed worker's checkpoint in the object store")
	})
	t.Run("a worker killed mid-shard", func(t *testing.T) {
		id := "cluster-s3-kill-shard"
		got := run(t, id, 3, func(ctx context.Context) {
			pid := 0
			for pid == 0 && ctx.Err() == nil {
				pid = workerRunning(ctx, cl, id, pipeline.ActivityRolloutShard)
				time.Sleep(10 * time.Millisecond)
			}
			for _, w := range workers {
				if w.cmd.Process.Pid == pid && w.cmd.ProcessState == nil {
					w.kill(t)
				}
			}
		})
		check(t, got)
		assert.GreaterOrEqual(t, maxAttempt(t, cl, id, pipeline.ActivityRolloutShard), int32(2), "the killed worker's shard ran again elsewhere")
		workers = append(workers, startStoreWorker(outer, addr, url, s3.Env())) // back to three
	})
	t.Run("the object store restarted mid-run", func(t *testing.T) {
		id := "cluster-s3-restart"
		got := run(t, id, 3, func(ctx context.Context) {
			waitForKillMoment(t, ctx, cl, id, func(act string, p *pipeline.Progress) bool {
				return act == pipeline.ActivityTrainRewardModel && p.Step > 0
			})
			s3.Stop()
			time.Sleep(3 * time.Second)
			require.NoError(t, s3.Restart())
		})
		check(t, got)
	})
	t.Run("the pinned worker killed", func(t *testing.T) {
		// Kill the worker the updates are pinned to as soon as it takes one:
		// the next pinned update finds nobody on its queue, times out before
		// it starts, and goes to the shared queue.
		id := "cluster-s3-kill-pinned"
		got := run(t, id, 3, func(ctx context.Context) {
			pid := 0
			for pid == 0 && ctx.Err() == nil {
				pid = pinnedWorkerPID(ctx, cl, id)
				time.Sleep(20 * time.Millisecond)
			}
			for _, w := range workers {
				if w.cmd.Process.Pid == pid && w.cmd.ProcessState == nil {
					w.kill(t)
				}
			}
		})
		check(t, got)
		timedOut := 0
		for _, h := range runHistories(t, cl, id) {
			for _, ev := range h.GetEvents() {
				if a := ev.GetActivityTaskTimedOutEventAttributes(); a != nil &&
					a.GetFailure().GetTimeoutFailureInfo().GetTimeoutType() == enums.TIMEOUT_TYPE_SCHEDULE_TO_START {
					timedOut++
				}
			}
		}
		assert.Positive(t, timedOut, "an update waited in vain on the dead worker's queue")
	})
	t.Run("two workers one activity at a time, two shards", func(t *testing.T) {
		for _, w := range workers {
			w.stop()
		}
		for i := 0; i < 2; i++ {
			startStoreWorker(t, addr, url, s3.Env(), "--max-concurrent-activities", "1")
		}
		id := "cluster-s3-two"
		check(t, run(t, id, 2, nil))
		hosts := map[string]bool{}
		for _, h := range runHistories(t, cl, id) {
			for _, ev := range h.GetEvents() {
				if a := ev.GetActivityTaskStartedEventAttributes(); a != nil {
					hosts[a.GetIdentity()] = true
				}
			}
		}
		assert.Len(t, hosts, 2, "both workers ran activities")
	})
}
