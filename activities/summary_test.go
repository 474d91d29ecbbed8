package activities

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/pipeline"
)

// TestWriteSummaryKeepsTypesAndOrder writes a summary whose seed is above
// 2^53 (a float64 would round it to ...992) with a curve in two segments:
// summary.json holds the exact seed, the fields in the order of the type,
// and the whole curve.
func TestWriteSummaryKeepsTypesAndOrder(t *testing.T) {
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	a := New(store)
	ctx := context.Background()
	first, err := a.SaveCurve(ctx, pipeline.CurveInput{RunID: "r", Points: []pipeline.IterationMetrics{{Iteration: 0, RewardMean: 1}}})
	require.NoError(t, err)
	last, err := a.SaveCurve(ctx, pipeline.CurveInput{RunID: "r", Previous: &first, Points: []pipeline.IterationMetrics{{Iteration: 1, RewardMean: 2}}})
	require.NoError(t, err)

	const seed = int64(9007199254740993)
	s := &pipeline.Summary{WorkflowID: "r", Name: "big-seed", Seed: seed, Backend: "go", CurveRef: &last,
		Policy: pipeline.PolicySummary{KLEstimator: "abs", KLSequenceAfter: 0.5}}
	path, err := a.WriteSummary(ctx, pipeline.SummaryInput{RunID: "r", Summary: s, Curve: &last})
	require.NoError(t, err)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	text := string(b)
	assert.Contains(t, text, `"seed": 9007199254740993,`)
	order := []string{`"workflow_id"`, `"name"`, `"seed"`, `"backend"`, `"data"`, `"sft"`, `"reward_model"`, `"policy"`, `"curve"`, `"curve_ref"`, `"samples"`}
	at := -1
	for _, key := range order {
		i := strings.Index(text, key)
		require.Greater(t, i, at, "%s comes after the fields before it", key)
		at = i
	}
	var back pipeline.Summary
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, seed, back.Seed)
	assert.Equal(t, []pipeline.IterationMetrics{{Iteration: 0, RewardMean: 1}, {Iteration: 1, RewardMean: 2}}, back.Curve)
	assert.Equal(t, 0.5, back.Policy.KLSequenceAfter)
	assert.Nil(t, s.Curve, "the caller's summary is left as it was")
}

// TestWriteReportRendersTheComparison gets the report typed and writes both
// the JSON and the Markdown tables rendered from it.
func TestWriteReportRendersTheComparison(t *testing.T) {
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	rep := &pipeline.ComparisonReport{WorkflowID: "c", Name: "cmp", Seed: 9007199254740993, Variants: []pipeline.VariantReport{
		{Recipe: "regression-helpfulness", Requested: true, TotalSteps: 300, Model: pipeline.StageModel{Steps: 300},
			Eval: pipeline.RewardEval{HeldoutAccuracy: 0.75, HeldoutPairs: 4}},
		{Recipe: "bt-scaled-from-regression", InitFrom: "regression-helpfulness", Requested: true, TotalSteps: 400, Model: pipeline.StageModel{Steps: 100},
			Eval: pipeline.RewardEval{HeldoutAccuracy: 0.875, HeldoutPairs: 4}},
	}}
	paths, err := New(store).WriteReport(context.Background(), pipeline.ReportInput{RunID: "c", Report: rep})
	require.NoError(t, err)
	js, err := os.ReadFile(paths.JSON)
	require.NoError(t, err)
	assert.Contains(t, string(js), `"seed": 9007199254740993,`)
	md, err := os.ReadFile(paths.Markdown)
	require.NoError(t, err)
	assert.Contains(t, string(md), "| own steps | total steps |")
	assert.Contains(t, string(md), "| bt-scaled-from-regression | 87.5 |")
	assert.Contains(t, string(md), "| regression-helpfulness | 100 | 400 |")
}
