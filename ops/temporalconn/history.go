package temporalconn

import (
	"context"
	"fmt"
	"slices"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
)

// HistoryClient is the part of a Temporal client that reads histories:
// client.Client has it, and a test serves recorded histories through it.
type HistoryClient interface {
	GetWorkflowHistory(ctx context.Context, workflowID, runID string, isLongPoll bool, filterType enumspb.HistoryEventFilterType) client.HistoryEventIterator
}

// Histories reads workflow histories through a client. It is the one
// place alignflow reads them: `alignflow runs show` and `resume`, the
// report's stage timeline (in the WriteRunReport activity and `alignflow
// report`) all go through it and through ParseRun.
type Histories struct{ Client HistoryClient }

// Run returns the events of one workflow run of workflowID; runID ""
// means its latest run.
func (h Histories) Run(ctx context.Context, workflowID, runID string) (*historypb.History, error) {
	it := h.Client.GetWorkflowHistory(ctx, workflowID, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	hist := &historypb.History{}
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			return nil, fmt.Errorf("read history of %s (run %q): %w", workflowID, runID, err)
		}
		hist.Events = append(hist.Events, ev)
	}
	return hist, nil
}

// History returns the events of every run of a workflow, oldest run
// first: the latest run, then each run it continued from, followed back
// through ContinuedExecutionRunId.
func (h Histories) History(ctx context.Context, workflowID string) ([]*historypb.History, error) {
	var runs []*historypb.History
	for runID := ""; ; {
		hist, err := h.Run(ctx, workflowID, runID)
		if err != nil {
			return nil, err
		}
		runs = append(runs, hist)
		if runID = continuedFrom(hist); runID == "" {
			break
		}
	}
	slices.Reverse(runs)
	return runs, nil
}

func continuedFrom(h *historypb.History) string {
	if len(h.GetEvents()) == 0 {
		return ""
	}
	return h.GetEvents()[0].GetWorkflowExecutionStartedEventAttributes().GetContinuedExecutionRunId()
}

// Outcome is how an activity stands.
type Outcome string

// Activity outcomes. An activity is scheduled until its first attempt
// starts, and running until it closes; failed and timed out are final
// (its retries, if any, are spent).
const (
	Scheduled Outcome = "scheduled"
	Running   Outcome = "running"
	Completed Outcome = "completed"
	Failed    Outcome = "failed"
	TimedOut  Outcome = "timed out"
	Canceled  Outcome = "canceled"
)

// Activity is one activity of a workflow run, as its history records it.
// Temporal records only the last attempt's start (with the failure of the
// attempt before it), so the time earlier attempts took and the waits
// between them are together Started - Scheduled.
type Activity struct {
	Type   string
	Input  *commonpb.Payloads
	Result *commonpb.Payloads // nil unless it completed
	// ScheduledEventID is its ActivityTaskScheduled event; ScheduledBy the
	// WorkflowTaskCompleted event whose commands scheduled it (resetting
	// the workflow to that event runs the activity again); ClosedEventID
	// the event that closed it, 0 while it is open.
	ScheduledEventID, ScheduledBy, ClosedEventID int64
	Scheduled                                    time.Time
	Started                                      time.Time // of the last attempt; zero if none started
	Closed                                       time.Time // zero while it is open
	// Attempts is the number of its last attempt: 1 until a retry starts.
	Attempts int
	Outcome  Outcome
	// LastFailure is the failure of the attempt before the last one, or of
	// the last one when the activity failed or timed out.
	LastFailure string
}

// Retried says whether the activity ran more than once.
func (a Activity) Retried() bool { return a.Attempts > 1 }

// Lost is the time before the last attempt started: earlier attempts and
// the retry waits, plus the time the task waited for a worker.
func (a Activity) Lost() time.Duration {
	if a.Started.IsZero() {
		return 0
	}
	return a.Started.Sub(a.Scheduled)
}

// Run is what one workflow run's history says: when it started and
// closed, how, and its activities in the order they were scheduled.
type Run struct {
	// ContinuedFrom is the run this one continued as new from ("" for a
	// workflow's first run).
	ContinuedFrom string
	Start         time.Time
	End           time.Time // zero while it runs
	// Status is the run's close (continued-as-new included), or RUNNING
	// when its history has no closing event yet.
	Status enumspb.WorkflowExecutionStatus
	// Failure is the message of a failed run's failure.
	Failure string
	// LastWorkflowTaskCompleted is the event ID of its last completed
	// workflow task, 0 if none completed.
	LastWorkflowTaskCompleted int64
	Activities                []Activity
}

// ParseRun reads one workflow run's history.
func ParseRun(h *historypb.History) Run {
	r := Run{Status: enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING}
	bySchedule := map[int64]int{} // scheduled event ID -> index in r.Activities
	closeActivity := func(ev *historypb.HistoryEvent, scheduled int64, o Outcome, failure string) {
		if i, ok := bySchedule[scheduled]; ok {
			a := &r.Activities[i]
			a.Outcome, a.Closed, a.ClosedEventID = o, ev.GetEventTime().AsTime(), ev.GetEventId()
			if failure != "" {
				a.LastFailure = failure
			}
		}
	}
	closeRun := func(ev *historypb.HistoryEvent, s enumspb.WorkflowExecutionStatus) {
		r.Status, r.End = s, ev.GetEventTime().AsTime()
	}
	for _, ev := range h.GetEvents() {
		switch {
		case ev.GetWorkflowExecutionStartedEventAttributes() != nil:
			r.ContinuedFrom = ev.GetWorkflowExecutionStartedEventAttributes().GetContinuedExecutionRunId()
			r.Start = ev.GetEventTime().AsTime()
		case ev.GetWorkflowTaskCompletedEventAttributes() != nil:
			r.LastWorkflowTaskCompleted = ev.GetEventId()
		case ev.GetActivityTaskScheduledEventAttributes() != nil:
			s := ev.GetActivityTaskScheduledEventAttributes()
			bySchedule[ev.GetEventId()] = len(r.Activities)
			r.Activities = append(r.Activities, Activity{Type: s.GetActivityType().GetName(), Input: s.GetInput(),
				ScheduledEventID: ev.GetEventId(), ScheduledBy: s.GetWorkflowTaskCompletedEventId(),
				Scheduled: ev.GetEventTime().AsTime(), Attempts: 1, Outcome: Scheduled})
		case ev.GetActivityTaskStartedEventAttributes() != nil:
			s := ev.GetActivityTaskStartedEventAttributes()
			if i, ok := bySchedule[s.GetScheduledEventId()]; ok {
				a := &r.Activities[i]
				a.Outcome, a.Started, a.Attempts = Running, ev.GetEventTime().AsTime(), max(int(s.GetAttempt()), 1)
				if f := s.GetLastFailure(); f != nil {
					a.LastFailure = f.GetMessage()
				}
			}
		case ev.GetActivityTaskCompletedEventAttributes() != nil:
			c := ev.GetActivityTaskCompletedEventAttributes()
			closeActivity(ev, c.GetScheduledEventId(), Completed, "")
			if i, ok := bySchedule[c.GetScheduledEventId()]; ok {
				r.Activities[i].Result = c.GetResult()
			}
		case ev.GetActivityTaskFailedEventAttributes() != nil:
			f := ev.GetActivityTaskFailedEventAttributes()
			closeActivity(ev, f.GetScheduledEventId(), Failed, f.GetFailure().GetMessage())
		case ev.GetActivityTaskTimedOutEventAttributes() != nil:
			f := ev.GetActivityTaskTimedOutEventAttributes()
			closeActivity(ev, f.GetScheduledEventId(), TimedOut, f.GetFailure().GetMessage())
		case ev.GetActivityTaskCanceledEventAttributes() != nil:
			closeActivity(ev, ev.GetActivityTaskCanceledEventAttributes().GetScheduledEventId(), Canceled, "")
		case ev.GetWorkflowExecutionCompletedEventAttributes() != nil:
			closeRun(ev, enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED)
		case ev.GetWorkflowExecutionFailedEventAttributes() != nil:
			closeRun(ev, enumspb.WORKFLOW_EXECUTION_STATUS_FAILED)
			r.Failure = ev.GetWorkflowExecutionFailedEventAttributes().GetFailure().GetMessage()
		case ev.GetWorkflowExecutionTerminatedEventAttributes() != nil:
			closeRun(ev, enumspb.WORKFLOW_EXECUTION_STATUS_TERMINATED)
		case ev.GetWorkflowExecutionCanceledEventAttributes() != nil:
			closeRun(ev, enumspb.WORKFLOW_EXECUTION_STATUS_CANCELED)
		case ev.GetWorkflowExecutionTimedOutEventAttributes() != nil:
			closeRun(ev, enumspb.WORKFLOW_EXECUTION_STATUS_TIMED_OUT)
		case ev.GetWorkflowExecutionContinuedAsNewEventAttributes() != nil:
			closeRun(ev, enumspb.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW)
		}
	}
	return r
}

// Activities returns the activities of a workflow's runs (oldest first,
// as History returns them), in the order they were scheduled.
func Activities(runs []*historypb.History) []Activity {
	var out []Activity
	for _, h := range runs {
		out = append(out, ParseRun(h).Activities...)
	}
	return out
}
