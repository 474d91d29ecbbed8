package temporalconn

import (
	"context"
	"errors"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
)

// Describer is the part of a Temporal client that describes a workflow
// execution: client.Client has it.
type Describer interface {
	DescribeWorkflowExecution(ctx context.Context, workflowID, runID string) (*workflowservice.DescribeWorkflowExecutionResponse, error)
}

// OpenRuns tells whether a workflow ID has an open run (retention.Runs),
// asking Temporal for the ID's latest run: describing is consistent at once,
// where a listing of open runs may lag behind a run that just started.
type OpenRuns struct {
	Client  Describer
	Context context.Context // nil: context.Background()
}

// Open reports whether workflowID's latest run is running. An ID Temporal
// does not know has no open run (its runs closed and their histories
// passed the namespace's retention); any other failure is an error, and
// the caller must not take the run for closed.
func (o OpenRuns) Open(workflowID string) (bool, error) {
	ctx := o.Context
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	desc, err := o.Client.DescribeWorkflowExecution(ctx, workflowID, "")
	var nf *serviceerror.NotFound
	switch {
	case errors.As(err, &nf):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("describe workflow %s: %w", workflowID, err)
	}
	return desc.GetWorkflowExecutionInfo().GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING, nil
}
