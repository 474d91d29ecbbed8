package workflows

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/alignflow/alignflow/activities"
	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/reinforce"
)

func newEnv(t *testing.T) *testsuite.TestWorkflowEnvironment {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(Alignment, workflow.RegisterOptions{Name: AlignmentName})
	env.RegisterWorkflowWithOptions(RewardModelComparison, workflow.RegisterOptions{Name: ComparisonName})
	env.RegisterActivity(&activities.Activities{})
	return env
}

// ref is a well-formed reference to artifact p of the test run (the test
// environment's workflow ID), as a continuation's checks require.
func ref(p string) artifact.Ref {
	sum := sha256.Sum256([]byte(p))
	return artifact.Ref{Path: "runs/" + testWorkflowID + "/" + p, SHA256: hex.EncodeToString(sum[:])}
}

// testWorkflowID is the workflow ID the test environment gives a run.
const testWorkflowID = "default-test-workflow-id"

// executeContinued runs the alignment as the run an alignment continued
// as new into with cont (nil: the first run).
func executeContinued(env *testsuite.TestWorkflowEnvironment, input json.RawMessage, cont *Continuation) {
	if cont != nil {
		env.SetContinuedExecutionRunID("the-continued-run")
	}
	env.ExecuteWorkflow(AlignmentName, input, cont)
}

// curveStore mocks SaveCurve, keeping the segments it was given.
type curveStore struct{ segments []pipeline.CurveInput }

func (c *curveStore) mock(env *testsuite.TestWorkflowEnvironment) {
	env.OnActivity((&activities.Activities{}).SaveCurve, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in pipeline.CurveInput) (artifact.Ref, error) {
			c.segments = append(c.segments, in)
			return ref(fmt.Sprintf("curve-%d", len(c.segments))), nil
		})
}

// iterations lists the curve's iterations, segment by segment.
func (c *curveStore) iterations() []int {
	var out []int
	for _, seg := range c.segments {
		for _, p := range seg.Points {
			out = append(out, p.Iteration)
		}
	}
	return out
}

func gold(v float64) *float64 { return &v }

// TestAlignmentOrchestration runs the workflow against mocked activities and
// checks the order of stages, that each iteration continues from the previous
// one's policy and optimizer, and the summary's fields.
func TestAlignmentOrchestration(t *testing.T) {
	env := newEnv(t)
	a := &activities.Activities{}
	data := pipeline.Data{Ratings: ref("r"), Preferences: ref("p"), Generated: true, TrainPairs: 10, ValidationPairs: 4}
	env.OnActivity(a.PrepareData, mock.Anything, mock.Anything).Return(data, nil).Once()
	env.OnActivity(a.TrainSFT, mock.Anything, mock.Anything).Return(pipeline.TrainResult{Checkpoint: ref("sft"), Digest: "d1", Steps: 5}, nil).Once()
	env.OnActivity(a.TrainRewardModel, mock.Anything, mock.MatchedBy(func(in pipeline.TrainInput) bool {
		return in.Base == ref("sft")
	})).Return(pipeline.TrainResult{Checkpoint: ref("rm"), Digest: "d2", Steps: 7}, nil).Once()
	env.OnActivity(a.EvaluateRewardModel, mock.Anything, mock.Anything).Return(pipeline.RewardEval{HeldoutAccuracy: 0.8, HeldoutPairs: 4}, nil).Once()
	env.OnActivity(a.EvaluatePolicy, mock.Anything, mock.MatchedBy(func(in pipeline.PolicyEvalInput) bool {
		return in.Label == pipeline.StageEvalBefore && in.Policy == ref("sft")
	})).Return(pipeline.PolicyEval{GoldScore: gold(2.5), Reward: 0.1, Samples: []pipeline.SampleText{{Prompt: "q", Response: "a"}}}, nil).Once()
	var seen []int
	mockIterations(env, a, 0,
		func(in pipeline.IterationInput) (pipeline.IterationResult, error) {
			want := ref("sft")
			if in.Iteration > 0 {
				want = ref("pol-" + string(rune('0'+in.Iteration-1)))
				if in.Optimizer != ref("opt-"+string(rune('0'+in.Iteration-1))) {
					return pipeline.IterationResult{}, errors.New("optimizer state not carried over")
				}
			}
			if in.Policy != want || in.Reference != ref("sft") || in.RewardModel != ref("rm") {
				return pipeline.IterationResult{}, errors.New("wrong inputs")
			}
			seen = append(seen, in.Iteration)
			n := string(rune('0' + in.Iteration))
			return pipeline.IterationResult{Iteration: in.Iteration, Policy: ref("pol-" + n), Optimizer: ref("opt-" + n), RewardMean: float64(in.Iteration)}, nil
		})
	env.OnActivity(a.EvaluatePolicy, mock.Anything, mock.MatchedBy(func(in pipeline.PolicyEvalInput) bool {
		return in.Label == pipeline.StageEvalAfter && in.Policy == ref("pol-2")
	})).Return(pipeline.PolicyEval{GoldScore: gold(3.5), Reward: 0.9, KLSequence: 0.2, KLPenalty: 0.05, Samples: []pipeline.SampleText{{Prompt: "q", Response: "b"}}}, nil).Once()
	env.OnActivity(a.WriteSummary, mock.Anything, mock.MatchedBy(func(in pipeline.SummaryInput) bool {
		return in.Curve != nil && *in.Curve == ref("curve-1")
	})).Return("/data/runs/x/summary.json", nil).Once()
	env.OnActivity(a.WriteRunReport, mock.Anything, pipeline.RunReportInput{RunID: "default-test-workflow-id"}).Return(pipeline.RunReport{HTML: "/data/runs/x/report/report.html"}, nil).Once()
	var curve curveStore
	curve.mock(env)

	env.ExecuteWorkflow(AlignmentName, json.RawMessage(`{"name": "t", "reinforce": {"iterations": 3}}`))
	require.True(t, env.IsWorkflowCompleted())
	require.NoError(t, env.GetWorkflowError())
	var s pipeline.Summary
	require.NoError(t, env.GetWorkflowResult(&s))
	assert.Equal(t, []int{0, 1, 2}, seen)
	assert.Equal(t, 0.8, s.RewardModel.HeldoutAccuracy)
	assert.Equal(t, 2.5, *s.Policy.GoldScoreBefore)
	assert.Equal(t, 3.5, *s.Policy.GoldScoreAfter)
	assert.Equal(t, 0.9, s.Policy.RewardAfter)
	assert.Equal(t, 0.2, s.Policy.KLSequenceAfter)
	assert.Equal(t, 0.05, s.Policy.KLPenaltyAfter)
	assert.Equal(t, "abs", s.Policy.KLEstimator)
	assert.Equal(t, ref("pol-2"), s.Policy.Checkpoint)
	assert.Empty(t, s.Curve, "the curve is an artifact")
	assert.Equal(t, []int{0, 1, 2}, curve.iterations())
	assert.Equal(t, ref("curve-1"), *s.CurveRef)
	assert.Equal(t, 0, s.Policy.FirstIteration.Iteration)
	assert.Equal(t, 2.0, s.Policy.LastIteration.RewardMean)
	assert.Equal(t, 1, s.Runs)
	assert.Equal(t, "/data/runs/x/summary.json", s.SummaryPath)
	assert.Equal(t, "/data/runs/x/report/report.html", s.ReportPath)
	require.Len(t, s.Samples, 1)
	assert.Equal(t, "a", s.Samples[0].Before.Response)
	assert.Equal(t, "b", s.Samples[0].After.Response)
}

func TestInvalidSpecFailsWithoutRetry(t *testing.T) {
	cases := map[string]string{
		`{"backend": "tpu"}`:                        "backend",
		`{"reinforce": {"samples_per_prompt": 1}}`:  "reinforce.samples_per_prompt",
		`{"unknown_field": true}`:                   "unknown_field",
		`{"reward": {"learning_rate": -0.1}}`:       "reward.learning_rate",
		`{"reinforce": {"kl_estimator": "banana"}}`: "allowed: abs, k1, k2, k3",
	}
	for input, field := range cases {
		env := newEnv(t)
		env.ExecuteWorkflow(AlignmentName, json.RawMessage(input))
		require.True(t, env.IsWorkflowCompleted())
		err := env.GetWorkflowError()
		require.Error(t, err)
		var app *temporal.ApplicationError
		require.True(t, errors.As(err, &app), input)
		assert.Equal(t, pipeline.ErrInvalidSpec, app.Type())
		assert.True(t, app.NonRetryable())
		assert.Contains(t, err.Error(), field)
	}
}

func TestStageFailureNamesTheStage(t *testing.T) {
	env := newEnv(t)
	a := &activities.Activities{}
	env.OnActivity(a.PrepareData, mock.Anything, mock.Anything).Return(pipeline.Data{}, nil)
	env.OnActivity(a.TrainSFT, mock.Anything, mock.Anything).Return(pipeline.TrainResult{},
		temporal.NewNonRetryableApplicationError("step 3: loss NaN", pipeline.ErrDiverged, nil))
	env.ExecuteWorkflow(AlignmentName, json.RawMessage(`{}`))
	err := env.GetWorkflowError()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "stage sft")
	var app *temporal.ApplicationError
	require.True(t, errors.As(err, &app))
	assert.Equal(t, pipeline.ErrDiverged, app.Type())
}

// mockStagesBeforeReinforce mocks the data, training and evaluation
// activities of a's type with empty results.
func mockStagesBeforeReinforce(env *testsuite.TestWorkflowEnvironment, a *activities.Activities) {
	env.OnActivity(a.PrepareData, mock.Anything, mock.Anything).Return(pipeline.Data{}, nil)
	env.OnActivity(a.TrainSFT, mock.Anything, mock.Anything).Return(pipeline.TrainResult{Checkpoint: ref("sft")}, nil)
	env.OnActivity(a.TrainRewardModel, mock.Anything, mock.Anything).Return(pipeline.TrainResult{Checkpoint: ref("rm")}, nil)
	env.OnActivity(a.EvaluateRewardModel, mock.Anything, mock.Anything).Return(pipeline.RewardEval{}, nil)
	env.OnActivity(a.EvaluatePolicy, mock.Anything, mock.Anything).Return(pipeline.PolicyEval{}, nil)
	env.OnActivity(a.WriteRunReport, mock.Anything, mock.Anything).Return(pipeline.RunReport{HTML: "/data/runs/x/report/report.html"}, nil)
}

// signalEnv mocks every activity; each REINFORCE iteration takes a simulated
// minute, so signals can arrive between iterations.
func signalEnv(t *testing.T) (*testsuite.TestWorkflowEnvironment, *int) {
	env := newEnv(t)
	a := &activities.Activities{}
	mockStagesBeforeReinforce(env, a)
	iterations := 0
	mockIterations(env, a, time.Minute,
		func(in pipeline.IterationInput) (pipeline.IterationResult, error) {
			iterations++
			return pipeline.IterationResult{Iteration: in.Iteration, Policy: ref("pol"), PolicyDigest: "d", RewardMean: 0.5}, nil
		})
	env.OnActivity(a.WriteSummary, mock.Anything, mock.Anything).Return("summary.json", nil)
	(&curveStore{}).mock(env)
	return env, &iterations
}

func TestStopSignalEndsAfterTheCurrentIteration(t *testing.T) {
	env, iterations := signalEnv(t)
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(StopSignal, nil) }, 90*time.Second)
	env.ExecuteWorkflow(AlignmentName, json.RawMessage(`{"reinforce": {"iterations": 5}}`))
	require.NoError(t, env.GetWorkflowError())
	var s pipeline.Summary
	require.NoError(t, env.GetWorkflowResult(&s))
	assert.Equal(t, 2, *iterations, "the iteration running at the stop finishes, no new one starts")
	assert.Equal(t, 2, s.Policy.Iterations)
	assert.True(t, s.Policy.StoppedEarly)
	assert.Equal(t, "d", s.Policy.Digest)
}

func TestPauseHoldsTheRunUntilResumed(t *testing.T) {
	env, iterations := signalEnv(t)
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(PauseSignal, nil) }, 30*time.Second)
	env.RegisterDelayedCallback(func() {
		v, err := env.QueryWorkflow(ProgressQuery)
		require.NoError(t, err)
		var p Progress
		require.NoError(t, v.Get(&p))
		assert.Equal(t, StagePaused, p.Stage)
		assert.True(t, p.Paused)
		assert.Equal(t, 1, p.Iteration, "the running iteration finished, the next waits")
		assert.Equal(t, 1, *iterations)
		env.SignalWorkflow(ResumeSignal, nil)
	}, time.Hour)
	env.ExecuteWorkflow(AlignmentName, json.RawMessage(`{"reinforce": {"iterations": 3}}`))
	require.NoError(t, env.GetWorkflowError())
	var s pipeline.Summary
	require.NoError(t, env.GetWorkflowResult(&s))
	assert.Equal(t, 3, *iterations)
	assert.False(t, s.Policy.StoppedEarly)
}

// TestContinueAsNewCarriesOnlyReferences runs five REINFORCE iterations two
// per workflow run: each run continues as new with the spec and a small
// Continuation, the next picks up the policy, optimizer and curve where the
// last stopped, and the stages before REINFORCE run once.
func TestContinueAsNewCarriesOnlyReferences(t *testing.T) {
	for _, tc := range []struct {
		name    string
		input   json.RawMessage
		leftOut bool
	}{
		{"with a reward model", json.RawMessage(`{"reinforce": {"iterations": 5, "continue_as_new_every": 2}}`), false},
		// RL from verifiable rewards: no reward model is trained, evaluated
		// or handed on, and the continued runs accept the continuation.
		{"without a reward model", json.RawMessage(`{"reinforce": {"iterations": 5, "continue_as_new_every": 2},
			"reward": {"verifier": "exact", "model_weight": 0}}`), true},
	} {
		t.Run(tc.name, func(t *testing.T) { testContinueAsNew(t, tc.input, tc.leftOut) })
	}
}

func testContinueAsNew(t *testing.T, input json.RawMessage, leftOut bool) {
	a := &activities.Activities{}
	var cont *Continuation
	var curve curveStore
	var seen []int
	calls := map[string]int{}
	count := func(name string) func(context.Context, any) error {
		return func(context.Context, any) error { calls[name]++; return nil }
	}
	runs := 0
	for {
		runs++
		require.LessOrEqual(t, runs, 5, "too many workflow runs")
		env := newEnv(t)
		env.OnActivity(a.PrepareData, mock.Anything, mock.Anything).Return(func(ctx context.Context, in pipeline.PrepareDataInput) (pipeline.Data, error) {
			return pipeline.Data{TrainPairs: 3}, count("data")(ctx, in)
		})
		env.OnActivity(a.TrainSFT, mock.Anything, mock.Anything).Return(func(ctx context.Context, in pipeline.TrainInput) (pipeline.TrainResult, error) {
			return pipeline.TrainResult{Checkpoint: ref("sft"), Digest: "sft-d"}, count("sft")(ctx, in)
		})
		env.OnActivity(a.TrainRewardModel, mock.Anything, mock.Anything).Return(func(ctx context.Context, in pipeline.TrainInput) (pipeline.TrainResult, error) {
			return pipeline.TrainResult{Checkpoint: ref("rm")}, count("rm")(ctx, in)
		})
		env.OnActivity(a.EvaluateRewardModel, mock.Anything, mock.Anything).Return(func(ctx context.Context, in pipeline.RewardEvalInput) (pipeline.RewardEval, error) {
			return pipeline.RewardEval{HeldoutAccuracy: 0.75}, count("rm-eval")(ctx, in)
		})
		env.OnActivity(a.EvaluatePolicy, mock.Anything, mock.Anything).Return(func(ctx context.Context, in pipeline.PolicyEvalInput) (pipeline.PolicyEval, error) {
			return pipeline.PolicyEval{Reward: float64(len(in.Label))}, count(in.Label)(ctx, in)
		})
		mockIterations(env, a, 0,
			func(in pipeline.IterationInput) (pipeline.IterationResult, error) {
				if in.Iteration > 0 && (in.Policy != ref(fmt.Sprint("pol-", in.Iteration-1)) || in.Optimizer != ref(fmt.Sprint("opt-", in.Iteration-1))) {
					return pipeline.IterationResult{}, fmt.Errorf("iteration %d got policy %s, optimizer %s", in.Iteration, in.Policy.Path, in.Optimizer.Path)
				}
				wantRM := ref("rm")
				if leftOut {
					wantRM = artifact.Ref{}
				}
				if in.RewardModel != wantRM {
					return pipeline.IterationResult{}, fmt.Errorf("iteration %d got reward model %+v", in.Iteration, in.RewardModel)
				}
				seen = append(seen, in.Iteration)
				return pipeline.IterationResult{Iteration: in.Iteration, Policy: ref(fmt.Sprint("pol-", in.Iteration)),
					Optimizer: ref(fmt.Sprint("opt-", in.Iteration)), PolicyDigest: fmt.Sprint("d-", in.Iteration), RewardMean: float64(in.Iteration)}, nil
			})
		env.OnActivity(a.WriteSummary, mock.Anything, mock.Anything).Return("summary.json", nil)
		curve.mock(env)

		executeContinued(env, input, cont)
		require.True(t, env.IsWorkflowCompleted())
		var can *workflow.ContinueAsNewError
		if err := env.GetWorkflowError(); errors.As(err, &can) {
			var next *Continuation
			var spec json.RawMessage
			require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(can.Input, &spec, &next))
			assert.JSONEq(t, string(input), string(spec), "the next run gets the same spec")
			require.NotNil(t, next)
			assert.Less(t, can.Input.Size(), 8<<10, "a continuation carries references, not data")
			assert.Equal(t, runs, next.Runs)
			cont = next
			continue
		}
		require.NoError(t, env.GetWorkflowError())
		var s pipeline.Summary
		require.NoError(t, env.GetWorkflowResult(&s))
		assert.Equal(t, 3, runs)
		assert.Equal(t, 3, s.Runs)
		assert.Equal(t, []int{0, 1, 2, 3, 4}, seen)
		want := map[string]int{"data": 1, "sft": 1, "rm": 1, "rm-eval": 1, pipeline.StageEvalBefore: 1, pipeline.StageEvalAfter: 1}
		if leftOut {
			delete(want, "rm")
			delete(want, "rm-eval")
		}
		assert.Equal(t, want, calls)
		require.Len(t, curve.segments, 3)
		assert.Equal(t, []int{0, 1, 2, 3, 4}, curve.iterations())
		assert.Nil(t, curve.segments[0].Previous)
		assert.Equal(t, ref("curve-1"), *curve.segments[1].Previous, "segments are chained")
		assert.Equal(t, ref("curve-3"), *s.CurveRef)
		assert.Equal(t, ref("pol-4"), s.Policy.Checkpoint)
		assert.Equal(t, "d-4", s.Policy.Digest)
		assert.Equal(t, 5, s.Policy.Iterations)
		assert.Equal(t, 0, s.Policy.FirstIteration.Iteration)
		assert.Equal(t, 4, s.Policy.LastIteration.Iteration)
		if leftOut {
			assert.Equal(t, pipeline.RewardModelSummary{LeftOut: true}, s.RewardModel)
		} else {
			assert.Equal(t, 0.75, s.RewardModel.HeldoutAccuracy)
		}
		return
	}
}

// TestSignalsSurviveContinueAsNew pauses a run and then stops it, each
// signal arriving in a different workflow run.
func TestSignalsSurviveContinueAsNew(t *testing.T) {
	env, iterations := signalEnv(t)
	// Iterations take a simulated minute; the run continues as new after two.
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(StopSignal, nil) }, 90*time.Second)
	env.ExecuteWorkflow(AlignmentName, json.RawMessage(`{"reinforce": {"iterations": 5, "continue_as_new_every": 2}}`), (*Continuation)(nil))
	var can *workflow.ContinueAsNewError
	require.False(t, errors.As(env.GetWorkflowError(), &can), "a stop during the second iteration ends the run instead of continuing")
	var s pipeline.Summary
	require.NoError(t, env.GetWorkflowResult(&s))
	assert.Equal(t, 2, *iterations)
	assert.True(t, s.Policy.StoppedEarly)

	env, iterations = signalEnv(t)
	executeContinued(env, json.RawMessage(`{"reinforce": {"iterations": 5, "continue_as_new_every": 2}}`),
		&Continuation{Iteration: 2, Policy: ref("pol"), PolicyDigest: "d", Last: &pipeline.IterationResult{Iteration: 1, Policy: ref("pol"), PolicyDigest: "d"},
			Paused: true, Stop: true, Runs: 1})
	require.NoError(t, env.GetWorkflowResult(&s))
	assert.Zero(t, *iterations, "a stop carried over ends the next run before any iteration")
	assert.Equal(t, 2, s.Policy.Iterations)
	assert.Equal(t, 2, s.Runs)
}

// TestSummaryKeepsALargeSeedExactly runs an alignment whose seed is above
// 2^53 through the workflow and the real WriteSummary activity (the other
// activities mocked): summary.json shows exactly that seed, as it would be
// lost in a float64.
func TestSummaryKeepsALargeSeedExactly(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(Alignment, workflow.RegisterOptions{Name: AlignmentName})
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	a := activities.New(store)
	env.RegisterActivity(a)
	mockStagesBeforeReinforce(env, a)
	mockIterations(env, a, 0, func(pipeline.IterationInput) (pipeline.IterationResult, error) {
		return pipeline.IterationResult{Policy: ref("pol")}, nil
	})

	env.ExecuteWorkflow(AlignmentName, json.RawMessage(`{"name": "big", "seed": 9007199254740993, "reinforce": {"iterations": 1}}`))
	require.NoError(t, env.GetWorkflowError())
	var sum pipeline.Summary
	require.NoError(t, env.GetWorkflowResult(&sum))
	assert.Equal(t, int64(9007199254740993), sum.Seed)
	b, err := os.ReadFile(sum.SummaryPath)
	require.NoError(t, err)
	assert.Contains(t, string(b), `"seed": 9007199254740993,`)
}

// TestRegressionBudgetOfRunsStartedBeforeIt: a run that started before the
// regression phase had its own steps and learning rate (workflow version
// "phase-budgets" absent from its history) keeps training that phase with
// reward.steps and reward.learning_rate; a new run gets its own.
func TestRegressionBudgetOfRunsStartedBeforeIt(t *testing.T) {
	for _, old := range []bool{false, true} {
		env := newEnv(t)
		if old {
			env.OnGetVersion("phase-budgets", workflow.DefaultVersion, phaseBudgetsVersion).Return(workflow.DefaultVersion)
		}
		a := &activities.Activities{}
		env.OnActivity(a.PrepareData, mock.Anything, mock.Anything).Return(pipeline.Data{}, nil)
		env.OnActivity(a.TrainSFT, mock.Anything, mock.Anything).Return(pipeline.TrainResult{Checkpoint: ref("sft")}, nil)
		var got pipeline.TrainInput
		env.OnActivity(a.TrainRewardModel, mock.Anything, mock.Anything).Return(func(_ context.Context, in pipeline.TrainInput) (pipeline.TrainResult, error) {
			got = in
			return pipeline.TrainResult{}, errors.New("enough")
		})
		env.ExecuteWorkflow(AlignmentName, json.RawMessage(`{"reward": {"steps": 50, "learning_rate": 0.01}}`))
		require.Error(t, env.GetWorkflowError())
		if old {
			assert.Equal(t, 50, got.Spec.Reward.RegressionSteps)
			assert.Equal(t, 0.01, got.Spec.Reward.RegressionLearningRate)
		} else {
			assert.Equal(t, 300, got.Spec.Reward.RegressionSteps)
			assert.Equal(t, 0.001, got.Spec.Reward.RegressionLearningRate)
		}
	}
}

// mockIterations mocks a REINFORCE iteration's shards and update: each
// shard returns its index, and the update answers with fn, after a
// simulated delay.
func mockIterations(env *testsuite.TestWorkflowEnvironment, a *activities.Activities, after time.Duration, fn func(pipeline.IterationInput) (pipeline.IterationResult, error)) {
	env.OnActivity(a.RolloutShard, mock.Anything, mock.Anything).Return(func(_ context.Context, in pipeline.ShardInput) (pipeline.ShardResult, error) {
		return pipeline.ShardResult{Shard: in.Shard}, nil
	})
	env.OnActivity(a.UpdatePolicy, mock.Anything, mock.Anything).After(after).Return(func(_ context.Context, in pipeline.UpdateInput) (pipeline.IterationResult, error) {
		for i, sh := range in.Shards {
			if sh.Shard != i {
				return pipeline.IterationResult{}, fmt.Errorf("shard %d in place %d", sh.Shard, i)
			}
		}
		return fn(in.IterationInput)
	})
}

// TestIterationsRunAsShards: with reinforce.rollout_shards 3 each
// iteration schedules three RolloutShard activities of the same input on
// queues.rollout, then one UpdatePolicy with their results in order on
// queues.train.
func TestIterationsRunAsShards(t *testing.T) {
	env := newEnv(t)
	a := &activities.Activities{}
	mockStagesBeforeReinforce(env, a)
	var mu sync.Mutex
	shards := map[int][]int{}
	env.OnActivity(a.RolloutShard, mock.Anything, mock.Anything).Return(func(_ context.Context, in pipeline.ShardInput) (pipeline.ShardResult, error) {
		mu.Lock()
		defer mu.Unlock()
		if in.Shards != 3 {
			return pipeline.ShardResult{}, fmt.Errorf("shards %d", in.Shards)
		}
		shards[in.Iteration] = append(shards[in.Iteration], in.Shard)
		return pipeline.ShardResult{Shard: in.Shard, First: 8 * in.Shard, Rows: 8}, nil
	})
	var updates int
	env.OnActivity(a.UpdatePolicy, mock.Anything, mock.Anything).Return(func(_ context.Context, in pipeline.UpdateInput) (pipeline.IterationResult, error) {
		for i, sh := range in.Shards {
			if sh.Shard != i || sh.First != 8*i {
				return pipeline.IterationResult{}, fmt.Errorf("shard %d in place %d", sh.Shard, i)
			}
		}
		updates++
		return pipeline.IterationResult{Iteration: in.Iteration, Policy: ref(fmt.Sprint("pol-", in.Iteration))}, nil
	})
	queues := map[string]string{}
	env.SetOnActivityStartedListener(func(info *activity.Info, _ context.Context, _ converter.EncodedValues) {
		mu.Lock()
		defer mu.Unlock()
		queues[info.ActivityType.Name] = info.TaskQueue
	})
	env.OnActivity(a.WriteSummary, mock.Anything, mock.Anything).Return("summary.json", nil)
	(&curveStore{}).mock(env)
	env.ExecuteWorkflow(AlignmentName, json.RawMessage(`{"queues": {"rollout": "gpu-rollout", "train": "gpu"},
		"reinforce": {"iterations": 2, "rollout_shards": 3, "prompts_per_iteration": 6, "samples_per_prompt": 4, "batch_size": 8}}`))
	require.NoError(t, env.GetWorkflowError())
	assert.Equal(t, 2, updates)
	for it := 0; it < 2; it++ {
		assert.ElementsMatch(t, []int{0, 1, 2}, shards[it], "iteration %d", it)
	}
	assert.Equal(t, "gpu-rollout", queues[pipeline.ActivityRolloutShard])
	assert.Equal(t, "gpu", queues[pipeline.ActivityUpdatePolicy])
}

// TestUpdatesArePinnedToTheLastWorker: each update after the first is
// offered on the previous update's worker queue; when nobody takes it
// there (the worker died: a schedule-to-start timeout) it goes to
// queues.train, and the run goes on.
func TestUpdatesArePinnedToTheLastWorker(t *testing.T) {
	env := newEnv(t)
	a := &activities.Activities{}
	mockStagesBeforeReinforce(env, a)
	env.OnActivity(a.RolloutShard, mock.Anything, mock.Anything).Return(pipeline.ShardResult{}, nil)
	var mu sync.Mutex
	var queues []string
	env.OnActivity(a.UpdatePolicy, mock.Anything, mock.Anything).Return(func(ctx context.Context, in pipeline.UpdateInput) (pipeline.IterationResult, error) {
		q := activity.GetInfo(ctx).TaskQueue
		mu.Lock()
		queues = append(queues, q)
		mu.Unlock()
		if q == "worker-dead" {
			return pipeline.IterationResult{}, temporal.NewTimeoutError(enums.TIMEOUT_TYPE_SCHEDULE_TO_START, nil)
		}
		own := "worker-a"
		if in.Iteration == 1 {
			own = "worker-dead" // the worker of iteration 1's update dies after it
		}
		return pipeline.IterationResult{Iteration: in.Iteration, Policy: ref(fmt.Sprint("pol-", in.Iteration)), WorkerQueue: own}, nil
	})
	env.OnActivity(a.WriteSummary, mock.Anything, mock.Anything).Return("summary.json", nil)
	(&curveStore{}).mock(env)
	env.ExecuteWorkflow(AlignmentName, json.RawMessage(`{"queues": {"train": "train"}, "reinforce": {"iterations": 4}}`))
	require.NoError(t, env.GetWorkflowError())
	assert.Equal(t, []string{"train", "worker-a", "worker-dead", "train", "worker-a"}, queues,
		"iteration 0 on train; 1 pinned; 2 pinned to a dead worker, then on train; 3 pinned")
}

// TestAFailedReportDoesNotFailTheRun: the summary is saved before the
// report; a report that cannot be written leaves the run completed,
// without a report path, and says so in the progress.
func TestAFailedReportDoesNotFailTheRun(t *testing.T) {
	env := newEnv(t)
	a := &activities.Activities{}
	env.OnActivity(a.WriteRunReport, mock.Anything, mock.Anything).Return(pipeline.RunReport{},
		temporal.NewNonRetryableApplicationError("chart", pipeline.ErrInvalidData, nil))
	mockStagesBeforeReinforce(env, a)
	mockIterations(env, a, 0, func(pipeline.IterationInput) (pipeline.IterationResult, error) {
		return pipeline.IterationResult{Policy: ref("pol")}, nil
	})
	env.OnActivity(a.WriteSummary, mock.Anything, mock.Anything).Return("summary.json", nil)
	(&curveStore{}).mock(env)
	env.ExecuteWorkflow(AlignmentName, json.RawMessage(`{"reinforce": {"iterations": 1}}`))
	require.True(t, env.IsWorkflowCompleted())
	require.NoError(t, env.GetWorkflowError())
	var s pipeline.Summary
	require.NoError(t, env.GetWorkflowResult(&s))
	assert.Empty(t, s.ReportPath)
	assert.Equal(t, "summary.json", s.SummaryPath)
	v, err := env.QueryWorkflow(ProgressQuery)
	require.NoError(t, err)
	var p Progress
	require.NoError(t, v.Get(&p))
	assert.Contains(t, p.Completed[len(p.Completed)-1], "report failed: ")
}

// TestContinuationKeepsItsJSON: the choices between versions a
// Continuation carries are its top-level "sharded" and "pinned", as in the
// continuations recorded runs handed on; the choices each workflow run
// makes anew do not travel.
func TestContinuationKeepsItsJSON(t *testing.T) {
	var c Continuation
	require.NoError(t, json.Unmarshal([]byte(`{"iteration": 4, "runs": 2, "sharded": true, "pinned": true}`), &c))
	assert.Equal(t, versions{Sharded: true, Pinned: true}, c.versions)
	c.versions = versions{Sharded: true, visible: true, segmented: true, phaseBudgets: true}
	b, err := json.Marshal(c)
	require.NoError(t, err)
	var fields map[string]any
	require.NoError(t, json.Unmarshal(b, &fields))
	assert.Equal(t, true, fields["sharded"])
	assert.NotContains(t, fields, "pinned", "omitted when false")
	for _, k := range []string{"versions", "visible", "segmented", "phaseBudgets"} {
		assert.NotContains(t, fields, k)
	}
}

// TestTheLastCurveSegment: a run ends with its part of the curve saved as
// a segment, unless it has none to add to a segment already saved (a
// continued run stopped before its first iteration); a run with no
// iterations at all saves an empty first one, for the summary to refer to.
func TestTheLastCurveSegment(t *testing.T) {
	for name, c := range map[string]struct {
		cont     *Continuation
		segments int
		ref      artifact.Ref
	}{
		"a continued run with nothing to add":      {&Continuation{Iteration: 2, Stop: true, Curve: refTo("curve-0")}, 0, ref("curve-0")},
		"a continued run without a segment yet":    {&Continuation{Iteration: 2, Stop: true}, 1, ref("curve-1")},
		"a continued run that runs its iterations": {&Continuation{Iteration: 2, Curve: refTo("curve-0")}, 1, ref("curve-1")},
	} {
		t.Run(name, func(t *testing.T) {
			env := newEnv(t)
			a := &activities.Activities{}
			mockStagesBeforeReinforce(env, a)
			mockIterations(env, a, 0, func(in pipeline.IterationInput) (pipeline.IterationResult, error) {
				return pipeline.IterationResult{Iteration: in.Iteration}, nil
			})
			env.OnActivity(a.WriteSummary, mock.Anything, mock.Anything).Return("summary.json", nil)
			var curve curveStore
			curve.mock(env)
			c.cont.Sharded = true
			executeContinued(env, json.RawMessage(`{"reinforce": {"iterations": 3}}`), c.cont)
			require.NoError(t, env.GetWorkflowError())
			var s pipeline.Summary
			require.NoError(t, env.GetWorkflowResult(&s))
			require.Len(t, curve.segments, c.segments)
			if c.segments > 0 {
				assert.Equal(t, c.cont.Curve, curve.segments[0].Previous)
			}
			assert.Equal(t, c.ref, *s.CurveRef)
		})
	}
}

// TestDynamicSamplingDrawsRoundsUntilTheBatchIsFull: with
// reinforce.skip_uniform_groups an iteration samples another round of
// shards while the rounds' shards report fewer than prompts_per_iteration
// groups that are not uniform, up to max_sampling_rounds; the update gets
// every round's shards in order, the next iteration's prompts start after
// the extra rounds', and the summary sums the updates' counts.
func TestDynamicSamplingDrawsRoundsUntilTheBatchIsFull(t *testing.T) {
	env := newEnv(t)
	a := &activities.Activities{}
	mockStagesBeforeReinforce(env, a)
	// Iteration 0: round 0 has one group that is not uniform (of 4), rounds
	// 1 and 2 two each: enough after round 2. Iteration 1: none uniform in
	// round 0. Iteration 2: all uniform in every round, up to the bound 4.
	uniform := func(iteration, round int) []int {
		switch iteration {
		case 0:
			return [][]int{{0, 1, 2}, {1, 3}, {0, 2}}[round]
		case 1:
			return nil
		}
		return []int{0, 1, 2, 3}
	}
	var mu sync.Mutex
	var shards []string
	env.OnActivity(a.RolloutShard, mock.Anything, mock.Anything).Return(func(_ context.Context, in pipeline.ShardInput) (pipeline.ShardResult, error) {
		mu.Lock()
		defer mu.Unlock()
		shards = append(shards, fmt.Sprintf("%d/%d/%d", in.Iteration, in.Round, in.Shard))
		var mine []int // shard 0 holds groups 0 and 1, shard 1 groups 2 and 3
		for _, g := range uniform(in.Iteration, in.Round) {
			if g/2 == in.Shard {
				mine = append(mine, g)
			}
		}
		return pipeline.ShardResult{Shard: in.Shard, Round: in.Round, First: 4 * in.Shard, Rows: 4, Groups: &reinforce.ShardGroups{Uniform: mine}}, nil
	})
	var extra []int
	env.OnActivity(a.UpdatePolicy, mock.Anything, mock.Anything).Return(func(_ context.Context, in pipeline.UpdateInput) (pipeline.IterationResult, error) {
		extra = append(extra, in.ExtraRounds)
		var rounds []int
		for _, sh := range in.Shards {
			rounds = append(rounds, sh.Round)
		}
		res := pipeline.IterationResult{Iteration: in.Iteration, Policy: ref(fmt.Sprint("pol-", in.Iteration))}
		want := [][]int{{0, 0, 1, 1, 2, 2}, {0, 0}, {0, 0, 1, 1, 2, 2, 3, 3}}[in.Iteration]
		if !assert.Equal(t, want, rounds, "iteration %d", in.Iteration) {
			return res, errors.New("wrong rounds")
		}
		res.Sampling = &pipeline.Sampling{Rounds: len(want) / 2, Dropped: 1}
		return res, nil
	})
	env.OnActivity(a.WriteSummary, mock.Anything, mock.Anything).Return("summary.json", nil)
	(&curveStore{}).mock(env)
	env.ExecuteWorkflow(AlignmentName, json.RawMessage(`{"reinforce": {"iterations": 3, "rollout_shards": 2, "prompts_per_iteration": 4,
		"samples_per_prompt": 2, "batch_size": 4, "skip_uniform_groups": true, "max_sampling_rounds": 4}}`))
	require.NoError(t, env.GetWorkflowError())
	assert.Len(t, shards, 2*(3+1+4))
	assert.Contains(t, shards, "2/3/1")
	assert.Equal(t, []int{0, 2, 2}, extra, "each iteration's prompts start after the extra rounds before it")
	var s pipeline.Summary
	require.NoError(t, env.GetWorkflowResult(&s))
	assert.Equal(t, &pipeline.Sampling{Rounds: 8, Dropped: 3}, s.Policy.Sampling)
}

// TestAsyncRolloutsSampleFromTheStalePolicy: with reinforce.max_staleness 1
// iteration k samples from the policy update k - 2 made (the SFT policy
// for iterations 0 and 1) and updates the policy of update k - 1; the
// shards of iteration k + 1 start while update k runs; continuing as new
// every 2 iterations hands the rollouts in flight on, so every iteration
// is sampled once, in every workflow run alike.
func TestAsyncRolloutsSampleFromTheStalePolicy(t *testing.T) {
	input := json.RawMessage(`{"reinforce": {"iterations": 5, "continue_as_new_every": 2, "max_staleness": 1, "rollout_shards": 2,
		"prompts_per_iteration": 4, "samples_per_prompt": 2, "batch_size": 4}}`)
	a := &activities.Activities{}
	var cont *Continuation
	var mu sync.Mutex
	sampledFrom := map[int][]string{} // iteration: the policy each shard sampled
	updated := map[int]string{}       // iteration: the policy its update started from
	shardStart, updateEnd := map[int]time.Time{}, map[int]time.Time{}
	for runs := 1; ; runs++ {
		require.LessOrEqual(t, runs, 4, "too many workflow runs")
		env := newEnv(t)
		mockStagesBeforeReinforce(env, a)
		env.OnActivity(a.RolloutShard, mock.Anything, mock.Anything).After(10 * time.Second).Return(func(ctx context.Context, in pipeline.ShardInput) (pipeline.ShardResult, error) {
			mu.Lock()
			defer mu.Unlock()
			sampledFrom[in.Iteration] = append(sampledFrom[in.Iteration], in.Policy.Path)
			if _, seen := shardStart[in.Iteration]; !seen {
				shardStart[in.Iteration] = env.Now()
			}
			return pipeline.ShardResult{Shard: in.Shard, First: 4 * in.Shard, Rows: 4,
				Rollouts: ref(fmt.Sprintf("it-%d-shard-%d", in.Iteration, in.Shard))}, nil
		})
		env.OnActivity(a.UpdatePolicy, mock.Anything, mock.Anything).After(time.Minute).Return(func(_ context.Context, in pipeline.UpdateInput) (pipeline.IterationResult, error) {
			mu.Lock()
			defer mu.Unlock()
			for i, sh := range in.Shards {
				if sh.Rollouts != ref(fmt.Sprintf("it-%d-shard-%d", in.Iteration, i)) {
					return pipeline.IterationResult{}, fmt.Errorf("update %d got shard %s", in.Iteration, sh.Rollouts.Path)
				}
			}
			updated[in.Iteration] = in.Policy.Path
			updateEnd[in.Iteration] = env.Now().Add(time.Minute)
			n := fmt.Sprint(in.Iteration)
			return pipeline.IterationResult{Iteration: in.Iteration, Policy: ref("pol-" + n), Optimizer: ref("opt-" + n), PolicyDigest: "d-" + n}, nil
		})
		env.OnActivity(a.WriteSummary, mock.Anything, mock.Anything).Return("summary.json", nil)
		(&curveStore{}).mock(env)
		executeContinued(env, input, cont)
		require.True(t, env.IsWorkflowCompleted())
		var can *workflow.ContinueAsNewError
		if err := env.GetWorkflowError(); errors.As(err, &can) {
			var spec json.RawMessage
			require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(can.Input, &spec, &cont))
			require.Len(t, cont.InFlight, 1, "the next iteration's rollouts are handed on")
			assert.Equal(t, cont.Iteration, cont.InFlight[0].Iteration)
			continue
		}
		require.NoError(t, env.GetWorkflowError())
		var s pipeline.Summary
		require.NoError(t, env.GetWorkflowResult(&s))
		assert.Equal(t, "d-4", s.Policy.Digest)
		assert.Equal(t, 3, runs)
		break
	}
	sft, pol := ref("sft").Path, func(k int) string { return ref(fmt.Sprint("pol-", k)).Path }
	for k := range 5 {
		want := sft
		if k >= 2 {
			want = pol(k - 2)
		}
		assert.Equal(t, []string{want, want}, sampledFrom[k], "iteration %d samples once, from the policy of update %d", k, k-2)
		from := sft
		if k >= 1 {
			from = pol(k - 1)
		}
		assert.Equal(t, from, updated[k], "update %d", k)
		if k < 4 && k%2 == 0 { // within a workflow run: the next iteration's shards start during this update
			assert.True(t, shardStart[k+1].Before(updateEnd[k]), "iteration %d's shards started at %v, update %d ended at %v", k+1, shardStart[k+1], k, updateEnd[k])
		}
	}
}
