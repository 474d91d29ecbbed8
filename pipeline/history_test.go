package pipeline_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/pipeline"
)

// current are the recorded histories of the current workflow code (see
// workflows.TestReplayRecordedHistory): their payloads are what today's
// types encode to, field for field. Older recordings hold fields since
// dropped and are only required to decode.
var current = []string{
	"alignment-history.json", "alignment-history-continued.json",
	"alignment-history-shards.json", "comparison-history.json", "alignment-history-xla-name.json",
}

// activityTypes are the input and result types of each activity, by the
// name histories schedule it under.
var activityTypes = map[string]struct{ in, out func() any }{
	"PrepareData":         {func() any { return &pipeline.PrepareDataInput{} }, func() any { return &pipeline.Data{} }},
	"TrainSFT":            {func() any { return &pipeline.TrainInput{} }, func() any { return &pipeline.TrainResult{} }},
	"TrainRewardModel":    {func() any { return &pipeline.TrainInput{} }, func() any { return &pipeline.TrainResult{} }},
	"EvaluateRewardModel": {func() any { return &pipeline.RewardEvalInput{} }, func() any { return &pipeline.RewardEval{} }},
	"EvaluatePolicy":      {func() any { return &pipeline.PolicyEvalInput{} }, func() any { return &pipeline.PolicyEval{} }},
	"ReinforceIteration":  {func() any { return &pipeline.IterationInput{} }, func() any { return &pipeline.IterationResult{} }},
	"RolloutShard":        {func() any { return &pipeline.ShardInput{} }, func() any { return &pipeline.ShardResult{} }},
	"UpdatePolicy":        {func() any { return &pipeline.UpdateInput{} }, func() any { return &pipeline.IterationResult{} }},
	"SaveCurve":           {func() any { return &pipeline.CurveInput{} }, func() any { return &artifact.Ref{} }},
	"WriteSummary":        {func() any { return &pipeline.SummaryInput{} }, func() any { return new(string) }},
	"WriteReport":         {func() any { return &pipeline.ReportInput{} }, func() any { return &pipeline.ReportPaths{} }},
	"WriteRunReport":      {func() any { return &pipeline.RunReportInput{} }, func() any { return &pipeline.RunReport{} }},
}

// workflowResults are the result types of the workflows.
var workflowResults = map[string]func() any{
	"Alignment":             func() any { return &pipeline.Summary{} },
	"RewardModelComparison": func() any { return &pipeline.ComparisonReport{} },
}

// payload is one recorded payload and the type it decodes into.
type payload struct {
	name  string // the activity or workflow type
	kind  string // "input" or "result"
	event int64
	p     *commonpb.Payload
	into  func() any
}

func (p payload) what() string { return fmt.Sprintf("%s %s, event %d", p.name, p.kind, p.event) }

// recordedPayloads are the activity inputs and results and the workflow
// result of a recorded history.
func recordedPayloads(t *testing.T, file string) []payload {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "workflows", "testdata", file))
	require.NoError(t, err)
	defer f.Close()
	h, err := client.HistoryFromJSON(f, client.HistoryJSONOptions{})
	require.NoError(t, err)
	var out []payload
	scheduled := map[int64]string{}
	var workflowType string
	for _, e := range h.Events {
		id := e.GetEventId()
		switch e.GetEventType() {
		case enums.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
			workflowType = e.GetWorkflowExecutionStartedEventAttributes().GetWorkflowType().GetName()
		case enums.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			a := e.GetActivityTaskScheduledEventAttributes()
			name := a.GetActivityType().GetName()
			types, ok := activityTypes[name]
			require.True(t, ok, "%s schedules activity %s, which this test does not know", file, name)
			scheduled[id] = name
			for _, p := range a.GetInput().GetPayloads() {
				out = append(out, payload{name, "input", id, p, types.in})
			}
		case enums.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
			a := e.GetActivityTaskCompletedEventAttributes()
			name := scheduled[a.GetScheduledEventId()]
			for _, p := range a.GetResult().GetPayloads() {
				out = append(out, payload{name, "result", id, p, activityTypes[name].out})
			}
		case enums.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
			for _, p := range e.GetWorkflowExecutionCompletedEventAttributes().GetResult().GetPayloads() {
				out = append(out, payload{workflowType, "result", id, p, workflowResults[workflowType]})
			}
		}
	}
	require.NotEmpty(t, out)
	return out
}

// TestRecordedPayloads decodes every activity input and result and every
// workflow result of the current recordings with the SDK's default data
// converter (as a worker does) and encodes it again: the JSON must come out
// as recorded, so no recorded field lacks a home in the types and none is
// renamed.
func TestRecordedPayloads(t *testing.T) {
	dc := converter.GetDefaultDataConverter()
	for _, file := range current {
		t.Run(file, func(t *testing.T) {
			for _, rec := range recordedPayloads(t, file) {
				v := rec.into()
				require.NoError(t, dc.FromPayload(rec.p, v), rec.what())
				again, err := json.Marshal(v)
				require.NoError(t, err, rec.what())
				assert.Equal(t, decodeAny(t, rec.p.Data), decodeAny(t, again), rec.what())
			}
		})
	}
}

// TestOlderRecordedPayloadsDecode checks that the payloads of runs recorded
// by earlier versions still decode into today's types: a worker replaying
// or resuming them must read their results.
func TestOlderRecordedPayloadsDecode(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "workflows", "testdata", "*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	dc := converter.GetDefaultDataConverter()
	for _, path := range files {
		file := filepath.Base(path)
		t.Run(file, func(t *testing.T) {
			for _, rec := range recordedPayloads(t, file) {
				assert.NoError(t, dc.FromPayload(rec.p, rec.into()), rec.what())
			}
		})
	}
}

// TestRecordedValues decodes known results of the first alignment
// recording and checks values read off the recorded JSON by hand.
func TestRecordedValues(t *testing.T) {
	dc := converter.GetDefaultDataConverter()
	results := map[string][]*commonpb.Payload{} // by activity, in event order
	for _, rec := range recordedPayloads(t, "alignment-history.json") {
		if rec.kind == "result" {
			results[rec.name] = append(results[rec.name], rec.p)
		}
	}

	t.Run("PrepareData", func(t *testing.T) {
		require.Len(t, results["PrepareData"], 1)
		var d pipeline.Data
		require.NoError(t, dc.FromPayload(results["PrepareData"][0], &d))
		assert.Equal(t, artifact.Ref{Path: "runs/e2e-alignment/data/ratings.jsonl.gz",
			SHA256: "9e6cd0f77a7558d84e86029907eb2ec75f0958805620f1f3b4e6ae154ca54458", Bytes: 32856}, d.Ratings)
		assert.Equal(t, "runs/e2e-alignment/data/preferences.jsonl.gz", d.Preferences.Path)
		assert.Equal(t, int64(83025), d.Preferences.Bytes)
		assert.True(t, d.Generated)
		assert.Equal(t, 4000, d.RatingRows)
		assert.Equal(t, 2000, d.PreferenceRows)
		assert.Equal(t, 1454, d.TrainPairs)
		assert.Equal(t, 367, d.ValidationPairs)
		assert.Equal(t, 179, d.TiesExcluded)
		assert.Equal(t, 51, d.TrainPrompts)
		assert.Equal(t, 13, d.ValidationPrompts)
		assert.Nil(t, d.Model, "the bundled byte-level model")
		assert.Nil(t, d.RewardBench)
		assert.Empty(t, d.ReusedFrom)
	})

	t.Run("TrainSFT", func(t *testing.T) {
		require.Len(t, results["TrainSFT"], 1)
		var r pipeline.TrainResult
		require.NoError(t, dc.FromPayload(results["TrainSFT"][0], &r))
		const digest = "71d08fdce987e449dd03f79eb7525193824b2b318e234d563d71017a6c278e2e"
		assert.Equal(t, artifact.Ref{Path: "runs/e2e-alignment/sft/policy.safetensors", SHA256: digest, Bytes: 463144}, r.Checkpoint)
		assert.Equal(t, digest, r.Digest, "the digest is the checkpoint's")
		assert.Equal(t, 400, r.Steps)
		assert.Equal(t, 5.581741809844971, r.FirstLoss)
		assert.Equal(t, 0.6983322501182556, r.FinalLoss)
		assert.Equal(t, 31.907168827, r.TrainSeconds)
		assert.Zero(t, r.ResumedFrom)
		m := pipeline.ModelOf(r)
		assert.Equal(t, r.TrainSeconds, m.Seconds)
		assert.Equal(t, digest, m.Digest)
	})

	t.Run("UpdatePolicy", func(t *testing.T) {
		updates := results["UpdatePolicy"]
		require.Len(t, updates, 6, "six iterations before continuing as new")
		var r pipeline.IterationResult
		require.NoError(t, dc.FromPayload(updates[1], &r))
		assert.Equal(t, 1, r.Iteration)
		assert.Equal(t, artifact.Ref{Path: "runs/e2e-alignment/reinforce/iter-00001/policy.safetensors",
			SHA256: "65e67a8d13997519892a83769f21621105d2cdcdd35d3090b9d0025d9a688246", Bytes: 463144}, r.Policy)
		assert.Equal(t, r.Policy.SHA256, r.PolicyDigest)
		assert.Equal(t, "runs/e2e-alignment/reinforce/iter-00001/optimizer.safetensors", r.Optimizer.Path)
		assert.Equal(t, int64(926112), r.Optimizer.Bytes)
		assert.Equal(t, "runs/e2e-alignment/reinforce/iter-00001/rollouts.json", r.Rollouts.Path)
		assert.Equal(t, 2.5310296453535557, r.RewardMean)
		assert.Equal(t, 0.016695357577292513, r.KLMean)
		require.NotNil(t, r.GoldMean)
		assert.Equal(t, 1.865234375, *r.GoldMean)
		assert.Equal(t, 1.0, r.EndedFraction)
		assert.Equal(t, 7.4375, r.MeanLength)
		assert.Equal(t, -1.2605326175689697, r.Loss)
		assert.Equal(t, 0.653578153, r.Seconds)
		assert.Equal(t, "alignflow-worker-vm-2377-a418320e", r.WorkerQueue)
		assert.Equal(t, pipeline.IterationMetrics{Iteration: 1, RewardMean: r.RewardMean, KLMean: r.KLMean, GoldMean: r.GoldMean,
			EndedFraction: 1, MeanLength: 7.4375, Loss: r.Loss, Seconds: r.Seconds}, r.Metrics())
	})
}

// TestRecordedRetryPolicy checks that the recorded activities were
// scheduled with NonRetryable as their non-retryable error types: the
// strings activities fail with must stay the ones histories name.
func TestRecordedRetryPolicy(t *testing.T) {
	for _, file := range current {
		t.Run(file, func(t *testing.T) {
			f, err := os.Open(filepath.Join("..", "workflows", "testdata", file))
			require.NoError(t, err)
			defer f.Close()
			h, err := client.HistoryFromJSON(f, client.HistoryJSONOptions{})
			require.NoError(t, err)
			n := 0
			for _, e := range h.Events {
				if a := e.GetActivityTaskScheduledEventAttributes(); a != nil {
					n++
					assert.Equal(t, pipeline.NonRetryable, a.GetRetryPolicy().GetNonRetryableErrorTypes(),
						"%s, event %d", a.GetActivityType().GetName(), e.GetEventId())
				}
			}
			assert.Positive(t, n)
		})
	}
}

// decodeAny decodes JSON generically, for comparing two encodings.
func decodeAny(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	require.NoError(t, json.Unmarshal(b, &v))
	return v
}
