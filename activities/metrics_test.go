package activities

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/testsuite"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/ops/metrics"
	"github.com/alignflow/alignflow/pipeline"
)

// TestMetricsLogSurvivesACrashAndResume: an attempt that saved the
// segments up to step 8 and died at step 10 is retried from the checkpoint
// at step 4 (its heartbeat with checkpoint 8 was lost): the log holds every
// step once, with the uninterrupted run's losses.
func TestMetricsLogSurvivesACrashAndResume(t *testing.T) {
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	a := New(store)
	a.Metrics = metrics.NewRecorder()
	store.CountBytes(a.Metrics.StoreBytes) // as the worker wires it
	spec := tinySpec()
	var suite testsuite.WorkflowTestSuite
	run := func(runID string, resume *artifact.Ref) {
		env := suite.NewTestActivityEnvironment()
		env.RegisterActivity(a)
		var data pipeline.Data
		v, err := env.ExecuteActivity(a.PrepareData, pipeline.PrepareDataInput{RunID: runID, Spec: spec})
		require.NoError(t, err)
		require.NoError(t, v.Get(&data))
		if resume != nil {
			env.SetHeartbeatDetails(pipeline.Progress{Checkpoint: resume})
		}
		_, err = env.ExecuteActivity(a.TrainSFT, pipeline.TrainInput{RunID: runID, Spec: spec, Data: data})
		require.NoError(t, err)
	}
	run("whole", nil)
	want, err := metrics.Collect(store, "whole")
	require.NoError(t, err)
	require.Len(t, want, spec.SFT.Steps)

	run("crashed", nil)
	require.NoError(t, store.Delete("runs/crashed/metrics/sft/00000009-00000012.jsonl"), "the attempt died before saving steps 9-12")
	run("crashed", checkpointRef(t, store, "runs/crashed/sft/checkpoints/sft-000004.json"))
	got, err := metrics.Collect(store, "crashed")
	require.NoError(t, err)
	require.Len(t, got, spec.SFT.Steps, "no step repeated, none missing")
	for i, p := range got {
		assert.Equal(t, metrics.Series{Stage: pipeline.StageSFT}, p.Series)
		assert.Equal(t, i+1, p.Step, "in step order")
		assert.Equal(t, want[i].Metrics["loss"], p.Metrics["loss"], "step %d's loss is the uninterrupted run's", p.Step)
		assert.Positive(t, p.Metrics["tokens_per_second"])
	}
	_, where, err := metrics.Assemble(store, "crashed")
	require.NoError(t, err)
	assert.Equal(t, store.Abs(artifact.Ref{Path: "runs/crashed/metrics.jsonl"}), where)

	// The same steps showed on Prometheus as they went.
	srv, err := a.Metrics.Serve("127.0.0.1:0")
	require.NoError(t, err)
	defer srv.Close()
	resp, err := http.Get("http://" + srv.Addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	line := fmt.Sprintf(`alignflow_train_loss{phase="",recipe="",stage="sft",workflow_id="crashed"} %g`, got[len(got)-1].Metrics["loss"])
	assert.Contains(t, string(body), line)
	assert.Contains(t, string(body), fmt.Sprintf(`alignflow_step{phase="",recipe="",stage="sft",workflow_id="crashed"} %d`, spec.SFT.Steps))
	for _, name := range []string{"alignflow_store_written_bytes_total", "alignflow_store_read_bytes_total"} {
		m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindStringSubmatch(string(body))
		require.NotNil(t, m, name)
		n, err := strconv.ParseFloat(m[1], 64)
		require.NoError(t, err)
		assert.Greater(t, n, 1e5, "%s counts checkpoints and data", name)
	}
}
