package main

import (
	"context"
	"fmt"
	"io"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/alignflow/alignflow/ops/temporalconn"
)

func resumeCmd() *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "resume WORKFLOW_ID",
		Short: "Resume a failed or terminated run from just before its first failed activity",
		Long: `resume resets the run to the workflow task that scheduled its first failed (or timed-out)
activity: every stage completed before it keeps its result and artifacts, and the failed
stage runs again (fix its cause first: the data, the spec's worker side, a corrupt file).
A run without a failed activity (terminated mid-stage) resumes from its last completed
workflow task. Unlike resetting to the last workflow task, this does not replay the failure.
It prints the equivalent temporal CLI command.`,
		Args: runIDArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connection(cmd)
			if err != nil {
				return err
			}
			cl, err := dial(cmd.Context(), c)
			if err != nil {
				return err
			}
			defer cl.Close()
			newRun, err := resumeRun(cmd.Context(), cl, cmd.OutOrStdout(), c.Namespace, args[0])
			if err != nil {
				return err
			}
			if follow {
				var s any
				return cl.GetWorkflow(cmd.Context(), args[0], newRun).Get(cmd.Context(), &s)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&follow, "wait", false, "wait for the resumed run to finish")
	return cmd
}

// resetPoint finds where to resume a run: the WorkflowTaskCompleted event
// that scheduled its first failed or timed-out activity, or else its last
// WorkflowTaskCompleted event.
func resetPoint(ctx context.Context, cl temporalconn.HistoryClient, id, runID string) (eventID int64, why string, err error) {
	h, err := temporalconn.Histories{Client: cl}.Run(ctx, id, runID)
	if err != nil {
		return 0, "", err
	}
	run := temporalconn.ParseRun(h)
	var first *temporalconn.Activity // the one whose failure came first
	for i, a := range run.Activities {
		if (a.Outcome == temporalconn.Failed || a.Outcome == temporalconn.TimedOut) && (first == nil || a.ClosedEventID < first.ClosedEventID) {
			first = &run.Activities[i]
		}
	}
	if first != nil {
		return first.ScheduledBy, fmt.Sprintf("before the first failed activity, %s (event %d)", first.Type, first.ScheduledEventID), nil
	}
	if run.LastWorkflowTaskCompleted == 0 {
		return 0, "", fmt.Errorf("run %s has no completed workflow task to resume from: start it again instead", id)
	}
	return run.LastWorkflowTaskCompleted, "from its last completed workflow task", nil
}

func resumeRun(ctx context.Context, cl client.Client, out io.Writer, namespace, id string) (string, error) {
	desc, err := cl.DescribeWorkflowExecution(ctx, id, "")
	if err != nil {
		return "", fmt.Errorf("run %s: %w", id, err)
	}
	info := desc.GetWorkflowExecutionInfo()
	switch info.GetStatus() {
	case enums.WORKFLOW_EXECUTION_STATUS_FAILED, enums.WORKFLOW_EXECUTION_STATUS_TERMINATED,
		enums.WORKFLOW_EXECUTION_STATUS_TIMED_OUT, enums.WORKFLOW_EXECUTION_STATUS_CANCELED:
	default:
		return "", fmt.Errorf("run %s is %s: only failed, terminated, timed-out or canceled runs are resumed", id, statusName(info.GetStatus()))
	}
	runID := info.GetExecution().GetRunId()
	eventID, why, err := resetPoint(ctx, cl, id, runID)
	if err != nil {
		return "", err
	}
	resp, err := cl.ResetWorkflowExecution(ctx, &workflowservice.ResetWorkflowExecutionRequest{
		Namespace:                 namespace,
		WorkflowExecution:         &commonpb.WorkflowExecution{WorkflowId: id, RunId: runID},
		Reason:                    "alignflow resume",
		WorkflowTaskFinishEventId: eventID,
		RequestId:                 uuid.NewString(),
	})
	if err != nil {
		return "", fmt.Errorf("reset %s to event %d: %w", id, eventID, err)
	}
	fmt.Fprintf(out, "Resumed %s %s: new run %s continues after event %d; completed stages keep their results.\n", id, why, resp.GetRunId(), eventID)
	fmt.Fprintf(out, "Equivalent: temporal workflow reset --workflow-id %s --run-id %s --event-id %d --reason \"alignflow resume\"\n", id, runID, eventID)
	return resp.GetRunId(), nil
}
