package workflows

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/alignflow/alignflow/activities"
	"github.com/alignflow/alignflow/pipeline"
)

func TestComparisonPlanBringsDependencies(t *testing.T) {
	var names []string
	var requested []bool
	for _, v := range comparisonPlan([]string{"bt-scaled-from-regression-expo", "bt"}) {
		names = append(names, v.Recipe+"<"+v.InitFrom)
		requested = append(requested, v.Requested)
	}
	assert.Equal(t, []string{"bt<", "regression-helpfulness<", "bt-scaled-from-regression<regression-helpfulness", "bt-scaled-from-regression-expo<regression-helpfulness"}, names)
	assert.Equal(t, []bool{true, false, false, true}, requested)
}

// TestComparisonOrchestration runs all nine variants against mocked
// activities: each trains from the right starting model, dependents wait
// for theirs, every model is evaluated and the report is written.
func TestComparisonOrchestration(t *testing.T) {
	env := newEnv(t)
	a := &activities.Activities{}
	data := pipeline.Data{Ratings: ref("r"), Preferences: ref("p"), Generated: true, TrainPairs: 10, ValidationPairs: 4}
	env.OnActivity(a.PrepareData, mock.Anything, mock.Anything).Return(data, nil).Once()
	env.OnActivity(a.TrainSFT, mock.Anything, mock.Anything).Return(pipeline.TrainResult{Checkpoint: ref("sft"), Steps: 5}, nil).Once()
	var mu sync.Mutex
	trained := map[string]pipeline.TrainInput{}
	env.OnActivity(a.TrainRewardModel, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in pipeline.TrainInput) (pipeline.TrainResult, error) {
			mu.Lock()
			defer mu.Unlock()
			if in.Base != ref("sft") {
				return pipeline.TrainResult{}, fmt.Errorf("%s: base %v", in.Recipe, in.Base)
			}
			trained[in.Recipe] = in
			steps := map[string]int{"regression": 21, "regression-helpfulness": 21, "bt-scaled-from-regression-expo": 0}
			n, ok := steps[in.Recipe]
			if !ok {
				n = 7
			}
			return pipeline.TrainResult{Checkpoint: ref("rm-" + in.Recipe), Steps: n}, nil
		})
	env.OnActivity(a.EvaluateRewardModel, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in pipeline.RewardEvalInput) (pipeline.RewardEval, error) {
			acc := float64(len(path.Base(in.RewardModel.Path))) / 100
			return pipeline.RewardEval{HeldoutAccuracy: acc, HeldoutPairs: 4,
				ByStrength: []pipeline.StrengthAccuracy{{Strength: 1, Pairs: 2, Accuracy: acc}, {Strength: 3, Pairs: 2, Accuracy: 1}}}, nil
		})
	var written pipeline.ReportInput
	env.OnActivity(a.WriteReport, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in pipeline.ReportInput) (pipeline.ReportPaths, error) {
			written = in
			return pipeline.ReportPaths{JSON: "/d/comparison.json", Markdown: "/d/comparison.md"}, nil
		}).Once()

	env.OnActivity(a.WriteRunReport, mock.Anything, pipeline.RunReportInput{RunID: "default-test-workflow-id"}).Return(pipeline.RunReport{HTML: "/d/report/report.html"}, nil).Once()

	env.ExecuteWorkflow(ComparisonName, json.RawMessage(`{"name": "cmp"}`))
	require.True(t, env.IsWorkflowCompleted())
	require.NoError(t, env.GetWorkflowError())
	var report pipeline.ComparisonReport
	require.NoError(t, env.GetWorkflowResult(&report))

	require.Len(t, trained, 9)
	for _, name := range []string{"bt", "bt-margin", "bt-scaled", "regression", "regression-helpfulness"} {
		assert.Nil(t, trained[name].From, name)
	}
	for _, name := range []string{"bt-from-regression", "bt-margin-from-regression", "bt-scaled-from-regression"} {
		require.NotNil(t, trained[name].From, name)
		assert.Equal(t, ref("rm-regression-helpfulness"), *trained[name].From, name)
		assert.Nil(t, trained[name].Strong, name)
	}
	expo := trained["bt-scaled-from-regression-expo"]
	require.NotNil(t, expo.From)
	require.NotNil(t, expo.Strong)
	assert.Equal(t, ref("rm-bt-scaled-from-regression"), *expo.Strong)

	require.Len(t, report.Variants, 9)
	for _, v := range report.Variants {
		assert.True(t, v.Requested)
		assert.Equal(t, ref("rm-"+v.Recipe), v.Model.Checkpoint)
		assert.InDelta(t, float64(len("rm-"+v.Recipe))/100, v.Eval.HeldoutAccuracy, 1e-12)
	}
	assert.Equal(t, "/d/comparison.md", report.MarkdownPath)
	assert.Equal(t, "/d/report/report.html", report.HTMLPath, "the run wrote its report with charts")
	require.NotNil(t, written.Report)
	assert.Equal(t, report.Variants, written.Report.Variants, "the activity gets the report itself, typed")

	// Total steps count the models a variant starts from: the regression
	// phase (21 steps) for *-from-regression, and for ExPO (no steps of its
	// own) the scaled-BT model with its regression.
	total := map[string]int{}
	for _, v := range report.Variants {
		total[v.Recipe] = v.TotalSteps
	}
	assert.Equal(t, map[string]int{"bt": 7, "bt-margin": 7, "bt-scaled": 7, "regression": 21, "regression-helpfulness": 21,
		"bt-from-regression": 28, "bt-margin-from-regression": 28, "bt-scaled-from-regression": 28, "bt-scaled-from-regression-expo": 28}, total)
}

// TestAFailedVariantFailsTheComparison: a variant whose training fails
// fails the run in the reward-models stage, naming the variant and keeping
// the activity's error type; the variants that start from it never train.
func TestAFailedVariantFailsTheComparison(t *testing.T) {
	env := newEnv(t)
	a := &activities.Activities{}
	env.OnActivity(a.PrepareData, mock.Anything, mock.Anything).Return(pipeline.Data{}, nil)
	env.OnActivity(a.TrainSFT, mock.Anything, mock.Anything).Return(pipeline.TrainResult{Checkpoint: ref("sft")}, nil)
	var mu sync.Mutex
	var trained []string
	env.OnActivity(a.TrainRewardModel, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in pipeline.TrainInput) (pipeline.TrainResult, error) {
			mu.Lock()
			defer mu.Unlock()
			trained = append(trained, in.Recipe)
			if in.Recipe == "regression-helpfulness" {
				return pipeline.TrainResult{}, temporal.NewNonRetryableApplicationError("loss NaN", pipeline.ErrDiverged, nil)
			}
			return pipeline.TrainResult{Checkpoint: ref("rm-" + in.Recipe)}, nil
		})
	env.OnActivity(a.EvaluateRewardModel, mock.Anything, mock.Anything).Return(pipeline.RewardEval{}, nil)

	env.ExecuteWorkflow(ComparisonName, json.RawMessage(`{"compare": {"variants": ["bt", "bt-from-regression"]}}`))
	err := env.GetWorkflowError()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "stage reward-models")
	assert.Contains(t, err.Error(), "train regression-helpfulness")
	var app *temporal.ApplicationError
	require.True(t, errors.As(err, &app))
	assert.Equal(t, pipeline.ErrDiverged, app.Type())
	assert.ElementsMatch(t, []string{"bt", "regression-helpfulness"}, trained, "bt-from-regression waits for the model that failed")
}
