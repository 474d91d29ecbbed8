package temporalconn

import (
	"context"
	"fmt"
	"slices"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
)

// Histories reads workflow histories through a client.
type Histories struct{ Client client.Client }

// History returns the events of every run of a workflow, oldest run
// first: the latest run, then each run it continued from, followed back
// through ContinuedExecutionRunId.
func (h Histories) History(ctx context.Context, workflowID string) ([]*historypb.History, error) {
	var runs []*historypb.History
	runID := ""
	for {
		it := h.Client.GetWorkflowHistory(ctx, workflowID, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		hist := &historypb.History{}
		for it.HasNext() {
			ev, err := it.Next()
			if err != nil {
				return nil, fmt.Errorf("read history of %s (run %q): %w", workflowID, runID, err)
			}
			hist.Events = append(hist.Events, ev)
		}
		runs = append(runs, hist)
		if len(hist.Events) == 0 {
			break
		}
		runID = hist.Events[0].GetWorkflowExecutionStartedEventAttributes().GetContinuedExecutionRunId()
		if runID == "" {
			break
		}
	}
	slices.Reverse(runs)
	return runs, nil
}
