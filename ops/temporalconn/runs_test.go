package temporalconn

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
)

type describer map[string]any // workflow ID -> status or error

func (d describer) DescribeWorkflowExecution(_ context.Context, id, _ string) (*workflowservice.DescribeWorkflowExecutionResponse, error) {
	switch v := d[id].(type) {
	case error:
		return nil, v
	case enumspb.WorkflowExecutionStatus:
		return &workflowservice.DescribeWorkflowExecutionResponse{WorkflowExecutionInfo: &workflowpb.WorkflowExecutionInfo{Status: v}}, nil
	}
	return nil, serviceerror.NewNotFound("workflow not found")
}

// TestOpenRunsAsksTemporal: a running latest run is open, a closed or
// forgotten one is not, and a failure to ask is an error, never "closed".
func TestOpenRunsAsksTemporal(t *testing.T) {
	o := OpenRuns{Client: describer{"live": enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING, "done": enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED,
		"down": serviceerror.NewUnavailable("connection refused")}}
	for id, want := range map[string]bool{"live": true, "done": false, "forgotten": false} {
		open, err := o.Open(id)
		require.NoError(t, err, id)
		assert.Equal(t, want, open, id)
	}
	_, err := o.Open("down")
	var un *serviceerror.Unavailable
	require.True(t, errors.As(err, &un), "%v", err)
	assert.ErrorContains(t, err, "describe workflow down")
}
