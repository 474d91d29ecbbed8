package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/ops/metrics"
	"github.com/alignflow/alignflow/ops/report/reporttest"
	"github.com/alignflow/alignflow/pipeline"
)

// TestReportWithoutTheServer: with the store alone, `alignflow report`
// writes every chart the run's records and log allow, and says on stderr
// why the timeline is missing.
func TestReportWithoutTheServer(t *testing.T) {
	dir := t.TempDir()
	store, err := artifact.Open(filepath.Join(dir, "data"))
	require.NoError(t, err)
	s := pipeline.Summary{WorkflowID: "r", Name: "cli", RewardModel: pipeline.RewardModelSummary{Recipe: "bt", HeldoutAccuracy: 0.7,
		ByStrength: []pipeline.StrengthAccuracy{{Strength: 1, Pairs: 3, Accuracy: 0.5}, {Strength: 3, Pairs: 5, Accuracy: 0.9}}}}
	b, err := json.Marshal(s)
	require.NoError(t, err)
	_, err = store.PutRecord("runs/r/"+pipeline.SummaryFile, b)
	require.NoError(t, err)
	log := metrics.NewLog(store, nil, "r", metrics.Series{Stage: pipeline.StageSFT})
	for step := 1; step <= 5; step++ {
		log.Add(step, map[string]float64{"loss": 3 / float64(step)})
	}
	require.NoError(t, log.Flush())

	var out, errOut bytes.Buffer
	o := reportOptions{out: &out, errOut: &errOut, store: store, runID: "r", dir: filepath.Join(dir, "rep"),
		histErr: errors.New("connect to Temporal at 127.0.0.1:1: connection refused")}
	require.NoError(t, reportRun(context.Background(), o))
	assert.Contains(t, out.String(), filepath.Join(dir, "rep", "report.html"))
	assert.Contains(t, errOut.String(), "no stage timeline: connect to Temporal at 127.0.0.1:1")
	charts, err := reporttest.Check(o.dir, 200)
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"sft-loss.png", "reward-accuracy.png"}, charts)
	md, err := os.ReadFile(filepath.Join(o.dir, "report.md"))
	require.NoError(t, err)
	assert.Contains(t, string(md), "No timeline: the workflow history could not be read.")
	f, err := os.Open(filepath.Join(o.dir, metrics.File))
	require.NoError(t, err)
	defer f.Close()
	pts, err := metrics.ReadJSONL(f, metrics.File)
	require.NoError(t, err)
	assert.Len(t, pts, 5)

	o.runID = "nope"
	err = reportRun(context.Background(), o)
	require.ErrorContains(t, err, "run nope: no summary, comparison or metrics in "+filepath.Join(dir, "data", "runs", "nope"))
}
