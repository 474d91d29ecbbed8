package workflows

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/alignflow/alignflow/activities"
	"github.com/alignflow/alignflow/artifact"
)

func newEnv(t *testing.T) *testsuite.TestWorkflowEnvironment {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(Alignment, workflow.RegisterOptions{Name: AlignmentName})
	env.RegisterWorkflowWithOptions(RewardModelComparison, workflow.RegisterOptions{Name: ComparisonName})
	env.RegisterActivity(&activities.Activities{})
	return env
}

func ref(p string) artifact.Ref { return artifact.Ref{Path: p, SHA256: p + "-sha"} }

// curveStore mocks SaveCurve, keeping the segments it was given.
type curveStore struct{ segments []activities.CurveInput }

func (c *curveStore) mock(env *testsuite.TestWorkflowEnvironment) {
	env.OnActivity((&activities.Activities{}).SaveCurve, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.CurveInput) (artifact.Ref, error) {
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
	data := activities.Data{Ratings: ref("r"), Preferences: ref("p"), Generated: true, TrainPairs: 10, ValidationPairs: 4}
	env.OnActivity(a.PrepareData, mock.Anything, mock.Anything).Return(data, nil).Once()
	env.OnActivity(a.TrainSFT, mock.Anything, mock.Anything).Return(activities.TrainResult{Checkpoint: ref("sft"), Digest: "d1", Steps: 5}, nil).Once()
	env.OnActivity(a.TrainRewardModel, mock.Anything, mock.MatchedBy(func(in activities.TrainInput) bool {
		return in.Base == ref("sft")
	})).Return(activities.TrainResult{Checkpoint: ref("rm"), Digest: "d2", Steps: 7}, nil).Once()
	env.OnActivity(a.EvaluateRewardModel, mock.Anything, mock.Anything).Return(activities.RewardEval{HeldoutAccuracy: 0.8, HeldoutPairs: 4}, nil).Once()
	env.OnActivity(a.EvaluatePolicy, mock.Anything, mock.MatchedBy(func(in activities.PolicyEvalInput) bool {
		return in.Label == activities.StageEvalBefore && in.Policy == ref("sft")
	})).Return(activities.PolicyEval{GoldScore: gold(2.5), Reward: 0.1, Samples: []activities.SampleText{{Prompt: "q", Response: "a"}}}, nil).Once()
	var seen []int
	env.OnActivity(a.ReinforceIteration, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.IterationInput) (activities.IterationResult, error) {
			want := ref("sft")
			if in.Iteration > 0 {
				want = ref("pol-" + string(rune('0'+in.Iteration-1)))
				if in.Optimizer != ref("opt-"+string(rune('0'+in.Iteration-1))) {
					return activities.IterationResult{}, errors.New("optimizer state not carried over")
				}
			}
			if in.Policy != want || in.Reference != ref("sft") || in.RewardModel != ref("rm") {
				return activities.IterationResult{}, errors.New("wrong inputs")
			}
			seen = append(seen, in.Iteration)
			n := string(rune('0' + in.Iteration))
			return activities.IterationResult{Iteration: in.Iteration, Policy: ref("pol-" + n), Optimizer: ref("opt-" + n), RewardMean: float64(in.Iteration)}, nil
		})
	env.OnActivity(a.EvaluatePolicy, mock.Anything, mock.MatchedBy(func(in activities.PolicyEvalInput) bool {
		return in.Label == activities.StageEvalAfter && in.Policy == ref("pol-2")
	})).Return(activities.PolicyEval{GoldScore: gold(3.5), Reward: 0.9, KLToReference: 0.2, Samples: []activities.SampleText{{Prompt: "q", Response: "b"}}}, nil).Once()
	env.OnActivity(a.WriteSummary, mock.Anything, mock.MatchedBy(func(in activities.SummaryInput) bool {
		return in.Curve != nil && *in.Curve == ref("curve-1")
	})).Return("/data/runs/x/summary.json", nil).Once()
	var curve curveStore
	curve.mock(env)

	env.ExecuteWorkflow(AlignmentName, json.RawMessage(`{"name": "t", "reinforce": {"iterations": 3}}`))
	require.True(t, env.IsWorkflowCompleted())
	require.NoError(t, env.GetWorkflowError())
	var s Summary
	require.NoError(t, env.GetWorkflowResult(&s))
	assert.Equal(t, []int{0, 1, 2}, seen)
	assert.Equal(t, 0.8, s.RewardModel.HeldoutAccuracy)
	assert.Equal(t, 2.5, *s.Policy.GoldScoreBefore)
	assert.Equal(t, 3.5, *s.Policy.GoldScoreAfter)
	assert.Equal(t, 0.9, s.Policy.RewardAfter)
	assert.Equal(t, 0.2, s.Policy.KLToReference)
	assert.Equal(t, ref("pol-2"), s.Policy.Checkpoint)
	assert.Empty(t, s.Curve, "the curve is an artifact")
	assert.Equal(t, []int{0, 1, 2}, curve.iterations())
	assert.Equal(t, ref("curve-1"), *s.CurveRef)
	assert.Equal(t, 0, s.Policy.FirstIteration.Iteration)
	assert.Equal(t, 2.0, s.Policy.LastIteration.RewardMean)
	assert.Equal(t, 1, s.Runs)
	assert.Equal(t, "/data/runs/x/summary.json", s.SummaryPath)
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
		assert.Equal(t, activities.ErrInvalidSpec, app.Type())
		assert.True(t, app.NonRetryable())
		assert.Contains(t, err.Error(), field)
	}
}

func TestStageFailureNamesTheStage(t *testing.T) {
	env := newEnv(t)
	a := &activities.Activities{}
	env.OnActivity(a.PrepareData, mock.Anything, mock.Anything).Return(activities.Data{}, nil)
	env.OnActivity(a.TrainSFT, mock.Anything, mock.Anything).Return(activities.TrainResult{},
		temporal.NewNonRetryableApplicationError("step 3: loss NaN", activities.ErrDiverged, nil))
	env.ExecuteWorkflow(AlignmentName, json.RawMessage(`{}`))
	err := env.GetWorkflowError()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "stage sft")
	var app *temporal.ApplicationError
	require.True(t, errors.As(err, &app))
	assert.Equal(t, activities.ErrDiverged, app.Type())
}

// signalEnv mocks every activity; each REINFORCE iteration takes a simulated
// minute, so signals can arrive between iterations.
func signalEnv(t *testing.T) (*testsuite.TestWorkflowEnvironment, *int) {
	env := newEnv(t)
	a := &activities.Activities{}
	env.OnActivity(a.PrepareData, mock.Anything, mock.Anything).Return(activities.Data{}, nil)
	env.OnActivity(a.TrainSFT, mock.Anything, mock.Anything).Return(activities.TrainResult{Checkpoint: ref("sft")}, nil)
	env.OnActivity(a.TrainRewardModel, mock.Anything, mock.Anything).Return(activities.TrainResult{Checkpoint: ref("rm")}, nil)
	env.OnActivity(a.EvaluateRewardModel, mock.Anything, mock.Anything).Return(activities.RewardEval{}, nil)
	env.OnActivity(a.EvaluatePolicy, mock.Anything, mock.Anything).Return(activities.PolicyEval{}, nil)
	iterations := 0
	env.OnActivity(a.ReinforceIteration, mock.Anything, mock.Anything).After(time.Minute).Return(
		func(_ context.Context, in activities.IterationInput) (activities.IterationResult, error) {
			iterations++
			return activities.IterationResult{Iteration: in.Iteration, Policy: ref("pol"), PolicyDigest: "d", RewardMean: 0.5}, nil
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
	var s Summary
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
	var s Summary
	require.NoError(t, env.GetWorkflowResult(&s))
	assert.Equal(t, 3, *iterations)
	assert.False(t, s.Policy.StoppedEarly)
}

// TestContinueAsNewCarriesOnlyReferences runs five REINFORCE iterations two
// per workflow run: each run continues as new with the spec and a small
// Continuation, the next picks up the policy, optimizer and curve where the
// last stopped, and the stages before REINFORCE run once.
func TestContinueAsNewCarriesOnlyReferences(t *testing.T) {
	input := json.RawMessage(`{"reinforce": {"iterations": 5, "continue_as_new_every": 2}}`)
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
		env.OnActivity(a.PrepareData, mock.Anything, mock.Anything).Return(func(ctx context.Context, in activities.PrepareDataInput) (activities.Data, error) {
			return activities.Data{TrainPairs: 3}, count("data")(ctx, in)
		})
		env.OnActivity(a.TrainSFT, mock.Anything, mock.Anything).Return(func(ctx context.Context, in activities.TrainInput) (activities.TrainResult, error) {
			return activities.TrainResult{Checkpoint: ref("sft"), Digest: "sft-d"}, count("sft")(ctx, in)
		})
		env.OnActivity(a.TrainRewardModel, mock.Anything, mock.Anything).Return(func(ctx context.Context, in activities.TrainInput) (activities.TrainResult, error) {
			return activities.TrainResult{Checkpoint: ref("rm")}, count("rm")(ctx, in)
		})
		env.OnActivity(a.EvaluateRewardModel, mock.Anything, mock.Anything).Return(activities.RewardEval{HeldoutAccuracy: 0.75}, nil)
		env.OnActivity(a.EvaluatePolicy, mock.Anything, mock.Anything).Return(func(ctx context.Context, in activities.PolicyEvalInput) (activities.PolicyEval, error) {
			return activities.PolicyEval{Reward: float64(len(in.Label))}, count(in.Label)(ctx, in)
		})
		env.OnActivity(a.ReinforceIteration, mock.Anything, mock.Anything).Return(
			func(_ context.Context, in activities.IterationInput) (activities.IterationResult, error) {
				if in.Iteration > 0 && (in.Policy != ref(fmt.Sprint("pol-", in.Iteration-1)) || in.Optimizer != ref(fmt.Sprint("opt-", in.Iteration-1))) {
					return activities.IterationResult{}, fmt.Errorf("iteration %d got policy %s, optimizer %s", in.Iteration, in.Policy.Path, in.Optimizer.Path)
				}
				seen = append(seen, in.Iteration)
				return activities.IterationResult{Iteration: in.Iteration, Policy: ref(fmt.Sprint("pol-", in.Iteration)),
					Optimizer: ref(fmt.Sprint("opt-", in.Iteration)), PolicyDigest: fmt.Sprint("d-", in.Iteration), RewardMean: float64(in.Iteration)}, nil
			})
		env.OnActivity(a.WriteSummary, mock.Anything, mock.Anything).Return("summary.json", nil)
		curve.mock(env)

		env.ExecuteWorkflow(AlignmentName, input, cont)
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
		var s Summary
		require.NoError(t, env.GetWorkflowResult(&s))
		assert.Equal(t, 3, runs)
		assert.Equal(t, 3, s.Runs)
		assert.Equal(t, []int{0, 1, 2, 3, 4}, seen)
		assert.Equal(t, map[string]int{"data": 1, "sft": 1, "rm": 1, activities.StageEvalBefore: 1, activities.StageEvalAfter: 1}, calls)
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
		assert.Equal(t, 0.75, s.RewardModel.HeldoutAccuracy)
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
	var s Summary
	require.NoError(t, env.GetWorkflowResult(&s))
	assert.Equal(t, 2, *iterations)
	assert.True(t, s.Policy.StoppedEarly)

	env, iterations = signalEnv(t)
	env.ExecuteWorkflow(AlignmentName, json.RawMessage(`{"reinforce": {"iterations": 5, "continue_as_new_every": 2}}`),
		&Continuation{Iteration: 2, Policy: ref("pol"), Paused: true, Stop: true, Runs: 1})
	require.NoError(t, env.GetWorkflowResult(&s))
	assert.Zero(t, *iterations, "a stop carried over ends the next run before any iteration")
	assert.Equal(t, 2, s.Policy.Iterations)
	assert.Equal(t, 2, s.Runs)
}
