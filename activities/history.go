package activities

import (
	"context"

	historypb "go.temporal.io/api/history/v1"
)

// HistoryReader reads the events of a workflow's runs, oldest run first
// (every run it continued as), for the report's stage timeline. The worker
// reads through its Temporal client.
type HistoryReader interface {
	History(ctx context.Context, workflowID string) ([]*historypb.History, error)
}
