// Package historytest serves recorded workflow histories (the JSON of
// `temporal workflow show --output json`, as workflows/testdata holds
// them) the way a Temporal client does, so that what reads histories is
// tested on real events without a server.
package historytest

import (
	"context"
	"fmt"
	"os"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
)

// Load reads a recorded history.
func Load(path string) (*historypb.History, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h, err := client.HistoryFromJSON(f, client.HistoryJSONOptions{})
	if err != nil {
		return nil, fmt.Errorf("history %s: %w", path, err)
	}
	return h, nil
}

// Client serves the runs of one workflow, oldest first, through
// GetWorkflowHistory: run ID "" is the latest, and the ID a run says it
// continued from is the run before it in Runs, whatever the recordings'
// own run IDs (two recorded runs of a workflow need not be consecutive).
// Another workflow ID, or a run ID no run continued from, is not found.
type Client struct {
	WorkflowID string
	Runs       []*historypb.History
}

// GetWorkflowHistory iterates over the events of one run.
func (c Client) GetWorkflowHistory(_ context.Context, workflowID, runID string, _ bool, _ enumspb.HistoryEventFilterType) client.HistoryEventIterator {
	if workflowID == c.WorkflowID && len(c.Runs) > 0 {
		if runID == "" {
			return &events{events: c.Runs[len(c.Runs)-1].GetEvents()}
		}
		for i := 1; i < len(c.Runs); i++ {
			if runID == c.Runs[i].GetEvents()[0].GetWorkflowExecutionStartedEventAttributes().GetContinuedExecutionRunId() {
				return &events{events: c.Runs[i-1].GetEvents()}
			}
		}
	}
	return &events{err: serviceerror.NewNotFound(fmt.Sprintf("workflow %s run %q not found", workflowID, runID))}
}

// events is a HistoryEventIterator over recorded events, or one that
// fails at once with err.
type events struct {
	events []*historypb.HistoryEvent
	err    error
}

func (e *events) HasNext() bool { return e.err != nil || len(e.events) > 0 }

func (e *events) Next() (*historypb.HistoryEvent, error) {
	if err := e.err; err != nil {
		e.err = nil
		return nil, err
	}
	ev := e.events[0]
	e.events = e.events[1:]
	return ev, nil
}
