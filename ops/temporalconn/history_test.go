package temporalconn_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	failurepb "go.temporal.io/api/failure/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/serviceerror"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/alignflow/alignflow/ops/temporalconn"
	"github.com/alignflow/alignflow/ops/temporalconn/historytest"
	"github.com/alignflow/alignflow/pipeline"
)

func recorded(t *testing.T, name string) *historypb.History {
	t.Helper()
	h, err := historytest.Load("../../workflows/testdata/" + name)
	require.NoError(t, err)
	return h
}

// TestParseRunOfRecordedHistories parses real runs; the counts are those
// of the ActivityTaskScheduled events in the files.
func TestParseRunOfRecordedHistories(t *testing.T) {
	tests := []struct {
		file   string
		counts map[string]int
		status enumspb.WorkflowExecutionStatus
		failed string // the activity that failed, if one did
	}{
		{"alignment-history-shards.json", map[string]int{pipeline.ActivityPrepareData: 1, pipeline.ActivityTrainSFT: 1, pipeline.ActivityTrainRewardModel: 1,
			pipeline.ActivityEvaluateRewardModel: 1, pipeline.ActivityEvaluatePolicy: 1, pipeline.ActivityRolloutShard: 6, pipeline.ActivityUpdatePolicy: 2,
			pipeline.ActivitySaveCurve: 1}, enumspb.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW, ""},
		{"alignment-history-v3.json", map[string]int{pipeline.ActivityPrepareData: 1, pipeline.ActivityTrainSFT: 1, pipeline.ActivityTrainRewardModel: 1,
			pipeline.ActivityEvaluateRewardModel: 1, pipeline.ActivityEvaluatePolicy: 1, pipeline.ActivityReinforceIteration: 6, pipeline.ActivitySaveCurve: 1},
			enumspb.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW, ""},
		{"alignment-history-continued.json", map[string]int{pipeline.ActivityRolloutShard: 4, pipeline.ActivityUpdatePolicy: 4, pipeline.ActivitySaveCurve: 1,
			pipeline.ActivityEvaluatePolicy: 1, pipeline.ActivityWriteSummary: 1, pipeline.ActivityWriteRunReport: 1}, enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED, ""},
		{"comparison-history.json", map[string]int{pipeline.ActivityPrepareData: 1, pipeline.ActivityTrainSFT: 1, pipeline.ActivityTrainRewardModel: 9,
			pipeline.ActivityEvaluateRewardModel: 9, pipeline.ActivityWriteReport: 1, pipeline.ActivityWriteRunReport: 1}, enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED, ""},
		{"alignment-history-xla.json", map[string]int{pipeline.ActivityPrepareData: 1, pipeline.ActivityTrainSFT: 1},
			enumspb.WORKFLOW_EXECUTION_STATUS_FAILED, pipeline.ActivityTrainSFT},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			h := recorded(t, tt.file)
			run := temporalconn.ParseRun(h)
			assert.Equal(t, tt.status, run.Status)
			assert.Equal(t, h.Events[0].GetEventTime().AsTime(), run.Start)
			assert.Equal(t, h.Events[len(h.Events)-1].GetEventTime().AsTime(), run.End, "the closing event is the last")
			byID := map[int64]*historypb.HistoryEvent{}
			for _, ev := range h.Events {
				byID[ev.GetEventId()] = ev
			}
			assert.NotNil(t, byID[run.LastWorkflowTaskCompleted].GetWorkflowTaskCompletedEventAttributes())

			counts := map[string]int{}
			for _, a := range run.Activities {
				counts[a.Type]++
				assert.Equal(t, 1, a.Attempts, "no recorded activity was retried")
				assert.NotNil(t, a.Input, a.Type)
				assert.NotNil(t, byID[a.ScheduledBy].GetWorkflowTaskCompletedEventAttributes(), "%s is scheduled by a workflow task", a.Type)
				assert.Less(t, a.ScheduledBy, a.ScheduledEventID)
				assert.Less(t, a.ScheduledEventID, a.ClosedEventID)
				assert.False(t, a.Started.Before(a.Scheduled), a.Type)
				assert.False(t, a.Closed.Before(a.Started), a.Type)
				if a.Type == tt.failed {
					assert.Equal(t, temporalconn.Failed, a.Outcome)
					assert.Nil(t, a.Result)
					assert.Contains(t, a.LastFailure, "is not linked into this build")
				} else {
					assert.Equal(t, temporalconn.Completed, a.Outcome, a.Type)
					assert.Empty(t, a.LastFailure)
				}
			}
			assert.Equal(t, tt.counts, counts)
			if tt.failed != "" {
				assert.Contains(t, run.Failure, "is not linked into this build")
			}
		})
	}
}

// TestParseRunAttemptsAndOutcomes parses what the recordings lack: a
// retried activity, one that timed out, one canceled, one never started.
func TestParseRunAttemptsAndOutcomes(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	at := func(s int) *timestamppb.Timestamp { return timestamppb.New(t0.Add(time.Duration(s) * time.Second)) }
	var events []*historypb.HistoryEvent
	add := func(s int, ev *historypb.HistoryEvent) int64 {
		ev.EventId, ev.EventTime = int64(len(events)+1), at(s)
		events = append(events, ev)
		return ev.EventId
	}
	schedule := func(s int, typ string) int64 {
		return add(s, &historypb.HistoryEvent{Attributes: &historypb.HistoryEvent_ActivityTaskScheduledEventAttributes{ActivityTaskScheduledEventAttributes: &historypb.ActivityTaskScheduledEventAttributes{
			ActivityType: &commonpb.ActivityType{Name: typ}, WorkflowTaskCompletedEventId: 3}}})
	}
	start := func(s int, sched int64, attempt int32, last string) {
		var f *failurepb.Failure
		if last != "" {
			f = &failurepb.Failure{Message: last}
		}
		add(s, &historypb.HistoryEvent{Attributes: &historypb.HistoryEvent_ActivityTaskStartedEventAttributes{ActivityTaskStartedEventAttributes: &historypb.ActivityTaskStartedEventAttributes{
			ScheduledEventId: sched, Attempt: attempt, LastFailure: f}}})
	}
	add(0, &historypb.HistoryEvent{Attributes: &historypb.HistoryEvent_WorkflowExecutionStartedEventAttributes{WorkflowExecutionStartedEventAttributes: &historypb.WorkflowExecutionStartedEventAttributes{
		ContinuedExecutionRunId: "before"}}})
	add(1, &historypb.HistoryEvent{Attributes: &historypb.HistoryEvent_WorkflowTaskStartedEventAttributes{WorkflowTaskStartedEventAttributes: &historypb.WorkflowTaskStartedEventAttributes{}}})
	add(1, &historypb.HistoryEvent{Attributes: &historypb.HistoryEvent_WorkflowTaskCompletedEventAttributes{WorkflowTaskCompletedEventAttributes: &historypb.WorkflowTaskCompletedEventAttributes{}}})
	sft := schedule(1, pipeline.ActivityTrainSFT)
	shard := schedule(1, pipeline.ActivityRolloutShard)
	update := schedule(1, pipeline.ActivityUpdatePolicy)
	schedule(1, pipeline.ActivitySaveCurve) // never started
	start(30, sft, 3, "activity Heartbeat timeout")
	add(50, &historypb.HistoryEvent{Attributes: &historypb.HistoryEvent_ActivityTaskCompletedEventAttributes{ActivityTaskCompletedEventAttributes: &historypb.ActivityTaskCompletedEventAttributes{
		ScheduledEventId: sft, Result: &commonpb.Payloads{}}}})
	start(2, shard, 2, "worker lost")
	add(60, &historypb.HistoryEvent{Attributes: &historypb.HistoryEvent_ActivityTaskTimedOutEventAttributes{ActivityTaskTimedOutEventAttributes: &historypb.ActivityTaskTimedOutEventAttributes{
		ScheduledEventId: shard, Failure: &failurepb.Failure{Message: "activity StartToClose timeout"}}}})
	start(3, update, 1, "")
	add(61, &historypb.HistoryEvent{Attributes: &historypb.HistoryEvent_ActivityTaskCanceledEventAttributes{ActivityTaskCanceledEventAttributes: &historypb.ActivityTaskCanceledEventAttributes{
		ScheduledEventId: update}}})
	add(62, &historypb.HistoryEvent{Attributes: &historypb.HistoryEvent_WorkflowExecutionTerminatedEventAttributes{WorkflowExecutionTerminatedEventAttributes: &historypb.WorkflowExecutionTerminatedEventAttributes{}}})

	run := temporalconn.ParseRun(&historypb.History{Events: events})
	assert.Equal(t, "before", run.ContinuedFrom)
	assert.Equal(t, enumspb.WORKFLOW_EXECUTION_STATUS_TERMINATED, run.Status)
	assert.Equal(t, 62*time.Second, run.End.Sub(run.Start))
	assert.Equal(t, int64(3), run.LastWorkflowTaskCompleted)
	type got struct {
		typ         string
		attempts    int
		outcome     temporalconn.Outcome
		lastFailure string
		lost        time.Duration
		closed      bool
	}
	var acts []got
	for _, a := range run.Activities {
		assert.Equal(t, int64(3), a.ScheduledBy)
		acts = append(acts, got{a.Type, a.Attempts, a.Outcome, a.LastFailure, a.Lost(), !a.Closed.IsZero()})
	}
	assert.Equal(t, []got{
		{pipeline.ActivityTrainSFT, 3, temporalconn.Completed, "activity Heartbeat timeout", 29 * time.Second, true},
		{pipeline.ActivityRolloutShard, 2, temporalconn.TimedOut, "activity StartToClose timeout", time.Second, true},
		{pipeline.ActivityUpdatePolicy, 1, temporalconn.Canceled, "", 2 * time.Second, true},
		{pipeline.ActivitySaveCurve, 1, temporalconn.Scheduled, "", 0, false},
	}, acts)
	assert.True(t, run.Activities[0].Retried())
	assert.False(t, run.Activities[2].Retried())
	assert.NotNil(t, run.Activities[0].Result)
}

// TestHistoryFollowsContinueAsNew reads a workflow's runs back from the
// latest and returns them oldest first.
func TestHistoryFollowsContinueAsNew(t *testing.T) {
	first, last := recorded(t, "alignment-history.json"), recorded(t, "alignment-history-continued.json")
	h := temporalconn.Histories{Client: historytest.Client{WorkflowID: "run", Runs: []*historypb.History{first, last}}}
	runs, err := h.History(context.Background(), "run")
	require.NoError(t, err)
	require.Len(t, runs, 2)
	for i, want := range []*historypb.History{first, last} { // the oldest first
		require.Len(t, runs[i].Events, len(want.Events))
		assert.Same(t, want.Events[0], runs[i].Events[0])
	}
	assert.Len(t, temporalconn.Activities(runs), len(temporalconn.ParseRun(first).Activities)+len(temporalconn.ParseRun(last).Activities))

	_, err = h.History(context.Background(), "another")
	var notFound *serviceerror.NotFound
	assert.True(t, errors.As(err, &notFound), "the server's error is kept for callers to tell: %v", err)
	assert.ErrorContains(t, err, "another")
}
