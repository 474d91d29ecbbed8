package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"

	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/data/rewardbench"
	"github.com/alignflow/alignflow/ops/report/reporttest"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/reward"
	"github.com/alignflow/alignflow/workflows"
)

// comparisonSpec is a small comparison: a tiny model and short phases, enough
// for every variant to learn something in about a minute.
func comparisonSpec() config.Spec {
	s := config.Default()
	s.Name = "e2e-compare"
	s.Data.Generate.Prompts = 600
	s.Model = config.Model{Dim: 32, Heads: 4, Layers: 1, Hidden: 96, MaxLen: 56}
	s.SFT.Steps = 150
	// Both phases short and at one rate, for this small model and data: more
	// regression steps fit the noise of its few ratings (helpfulness r 0.22
	// after 40 steps at 1e-3, 0.09 after 120, measured), and 40 BT steps at
	// the default 5e-4 are too few.
	s.Reward.Steps, s.Reward.LearningRate = 40, 1e-3
	s.Reward.RegressionSteps, s.Reward.RegressionLearningRate = 40, 1e-3
	s.Compare.BenchPairsPerSubset = 12
	return s
}

// TestRewardComparisonEndToEnd runs all nine reward-model variants on a real
// server and worker: the independent variants are scheduled together, the
// dependent ones start from the models they name, every variant is evaluated
// and the report lands in the run's folder.
func TestRewardComparisonEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run takes minutes")
	}
	cl, store := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	run, err := cl.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "e2e-compare", TaskQueue: workflows.TaskQueue}, workflows.ComparisonName, comparisonSpec())
	require.NoError(t, err)
	var report pipeline.ComparisonReport
	require.NoError(t, run.Get(ctx, &report))

	require.Len(t, report.Variants, len(reward.Recipes))
	byName := map[string]pipeline.VariantReport{}
	for i, v := range report.Variants {
		assert.Equal(t, reward.Recipes[i].Name, v.Recipe, "report rows in the paper's order")
		byName[v.Recipe] = v
		require.NotNil(t, v.Eval.Bench, v.Recipe)
		require.Len(t, v.Eval.Ratings, 5, v.Recipe)
		t.Logf("%-32s held-out %.3f  bench %s  helpfulness r %.3f  correctness r %.3f  steps %d (total %d)", v.Recipe, v.Eval.HeldoutAccuracy, overall(v),
			v.Eval.Ratings[0].Pearson, v.Eval.Ratings[1].Pearson, v.Model.Steps, v.TotalSteps)
		if v.Recipe != "regression" { // all five attributes share its few steps
			assert.Greater(t, v.Eval.HeldoutAccuracy, 0.6, "%s ranks held-out pairs better than chance", v.Recipe)
		}
	}
	assert.Equal(t, "regression-helpfulness", byName["bt-scaled-from-regression"].InitFrom)
	assert.Zero(t, byName["bt-scaled-from-regression-expo"].Model.Steps, "ExPO only extrapolates trained models")
	assert.Equal(t, 80, byName["bt-scaled-from-regression"].TotalSteps, "the regression phase it starts from counts")
	assert.Equal(t, 80, byName["bt-scaled-from-regression-expo"].TotalSteps)
	assert.Equal(t, 40, byName["bt-scaled"].TotalSteps)
	assert.Contains(t, reward.ExPOAlphas, byName["bt-scaled-from-regression-expo"].ExPOAlpha)
	assert.Greater(t, byName["regression-helpfulness"].Eval.Ratings[0].Pearson, 0.1, "helpfulness regression predicts rated helpfulness")

	md, err := os.ReadFile(report.MarkdownPath)
	require.NoError(t, err)
	for _, r := range reward.Recipes {
		assert.Contains(t, string(md), "| "+r.Name)
	}
	assert.Equal(t, filepath.Join(store.Root, "runs", "e2e-compare", "comparison.md"), report.MarkdownPath)
	var onDisk pipeline.ComparisonReport
	b, err := os.ReadFile(report.ReportPath)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &onDisk))
	assert.Len(t, onDisk.Variants, len(reward.Recipes))

	// The report page: every variant's held-out accuracy and bench
	// categories as grouped bars, each variant's training curves, the
	// timeline, and the paper-shaped tables.
	dir := filepath.Join(store.Root, "runs", "e2e-compare", "report")
	assert.Equal(t, filepath.Join(dir, "report.html"), report.HTMLPath)
	charts, err := reporttest.Check(dir, 300)
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"sft-loss.png", "reward-model-loss.png", "comparison-accuracy.png", "comparison-bench.png", "timeline.png"}, charts)
	page, err := os.ReadFile(report.HTMLPath)
	require.NoError(t, err)
	for _, r := range reward.Recipes {
		assert.Contains(t, string(page), "<td>"+r.Name, "the paper-shaped table has %s", r.Name)
	}

	// The five variants that start from the SFT backbone are scheduled in
	// one workflow task, before any of them has finished.
	hist := &historypb.History{}
	iter := cl.GetWorkflowHistory(ctx, run.GetID(), run.GetRunID(), false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	scheduledBeforeFirstDone, trainDone := 0, false
	trainIDs := map[int64]bool{}
	for iter.HasNext() {
		ev, err := iter.Next()
		require.NoError(t, err)
		hist.Events = append(hist.Events, ev)
		if a := ev.GetActivityTaskScheduledEventAttributes(); a != nil && a.GetActivityType().GetName() == pipeline.ActivityTrainRewardModel {
			trainIDs[ev.GetEventId()] = true
			if !trainDone {
				scheduledBeforeFirstDone++
			}
		}
		if a := ev.GetActivityTaskCompletedEventAttributes(); a != nil && trainIDs[a.GetScheduledEventId()] {
			trainDone = true
		}
	}
	assert.Equal(t, 5, scheduledBeforeFirstDone)
	assert.Len(t, trainIDs, len(reward.Recipes))
	recordHistory(t, "comparison-history.json", hist)
}

func overall(v pipeline.VariantReport) string {
	if v.Eval.Bench == nil {
		return "n/a"
	}
	return rewardbench.Percent(v.Eval.Bench.Overall)
}
