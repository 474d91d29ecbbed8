package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/alignflow/alignflow/activities"
	"github.com/alignflow/alignflow/workflows"
)

func runsCmd() *cobra.Command {
	runs := &cobra.Command{Use: "runs", Short: "List alignflow runs and show one's stages"}
	var query string
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List runs with their stage, iteration and mean reward (newest first)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := dialCmd(cmd)
			if err != nil {
				return err
			}
			defer cl.Close()
			return listRuns(cmd.Context(), cl, cmd.OutOrStdout(), query, limit)
		},
	}
	list.Flags().StringVar(&query, "query", "", `visibility query, e.g. 'AlignmentStage="reinforce"'`)
	list.Flags().IntVar(&limit, "limit", 20, "most runs to show")
	show := &cobra.Command{
		Use:   "show WORKFLOW_ID",
		Short: "Show a run: status, memo, live progress and a table of its stages with attempts, durations and metrics",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := dialCmd(cmd)
			if err != nil {
				return err
			}
			defer cl.Close()
			return showRun(cmd.Context(), cl, cmd.OutOrStdout(), args[0])
		},
	}
	runs.AddCommand(list, show)
	return runs
}

func dialCmd(cmd *cobra.Command) (client.Client, error) {
	c, err := connection(cmd)
	if err != nil {
		return nil, err
	}
	return dial(cmd.Context(), c)
}

// payloadString renders a memo or search-attribute payload.
func payloadString(p *commonpb.Payload) string {
	if p == nil {
		return "-"
	}
	var v any
	if err := converter.GetDefaultDataConverter().FromPayload(p, &v); err != nil {
		return "?"
	}
	if f, ok := v.(float64); ok {
		return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.4f", f), "0"), ".")
	}
	return fmt.Sprint(v)
}

func listRuns(ctx context.Context, cl client.Client, out io.Writer, query string, limit int) error {
	var req workflowservice.ListWorkflowExecutionsRequest
	req.Query = query
	req.PageSize = int32(limit)
	resp, err := cl.ListWorkflow(ctx, &req)
	if err != nil {
		return fmt.Errorf("list runs: %w", err)
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKFLOW ID\tTYPE\tSTATUS\tSTAGE\tITERATION\tREWARD MEAN\tSTARTED")
	for i, e := range resp.GetExecutions() {
		if i >= limit {
			break
		}
		sa := e.GetSearchAttributes().GetIndexedFields()
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.GetExecution().GetWorkflowId(), e.GetType().GetName(), statusName(e.GetStatus()),
			payloadString(sa[workflows.StageAttribute.GetName()]), payloadString(sa[workflows.IterationAttribute.GetName()]),
			payloadString(sa[workflows.RewardMeanAttribute.GetName()]), e.GetStartTime().AsTime().Local().Format(time.DateTime))
	}
	return tw.Flush()
}

func statusName(s enums.WorkflowExecutionStatus) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "WORKFLOW_EXECUTION_STATUS_"))
}

// stageRow is one activity of a run's history.
type stageRow struct {
	activity  string
	attempts  int32
	status    string
	scheduled time.Time
	end       time.Time
	detail    string
}

func showRun(ctx context.Context, cl client.Client, out io.Writer, id string) error {
	desc, err := cl.DescribeWorkflowExecution(ctx, id, "")
	if err != nil {
		return fmt.Errorf("run %s: %w", id, err)
	}
	info := desc.GetWorkflowExecutionInfo()
	fmt.Fprintf(out, "Run %s (%s): %s, started %s\n", id, info.GetType().GetName(), statusName(info.GetStatus()), info.GetStartTime().AsTime().Local().Format(time.DateTime))
	var memo []string
	for _, k := range sortedKeys(info.GetMemo().GetFields()) {
		memo = append(memo, k+"="+payloadString(info.GetMemo().GetFields()[k]))
	}
	if len(memo) > 0 {
		fmt.Fprintf(out, "  memo: %s\n", strings.Join(memo, " "))
	}
	if info.GetStatus() == enums.WORKFLOW_EXECUTION_STATUS_RUNNING {
		if v, err := cl.QueryWorkflow(ctx, id, "", workflows.ProgressQuery); err == nil {
			var p workflows.Progress
			if v.Get(&p) == nil {
				fmt.Fprintf(out, "  stage %s, iteration %d/%d", p.Stage, p.Iteration, p.Iterations)
				if p.Paused {
					fmt.Fprint(out, " (paused)")
				}
				if p.StopRequested {
					fmt.Fprint(out, " (stop requested)")
				}
				fmt.Fprintln(out)
			}
		}
		for _, pa := range desc.GetPendingActivities() {
			line := fmt.Sprintf("  running %s, attempt %d", pa.GetActivityType().GetName(), pa.GetAttempt())
			var hb activities.Progress
			if d := pa.GetHeartbeatDetails(); d != nil && converter.GetDefaultDataConverter().FromPayloads(d, &hb) == nil && hb.Total > 0 {
				line += fmt.Sprintf(", %s %d/%d", hb.Stage, hb.Step, hb.Total)
			}
			if f := pa.GetLastFailure(); f != nil {
				line += ", last failure: " + f.GetMessage()
			}
			fmt.Fprintln(out, line)
		}
	}
	rows, err := historyRows(ctx, cl, id)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\n#\tACTIVITY\tSTATUS\tATTEMPTS\tSECONDS\tDETAIL")
	for i, r := range rows {
		secs := "-"
		if !r.end.IsZero() {
			secs = fmt.Sprintf("%.1f", r.end.Sub(r.scheduled).Seconds())
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", i+1, r.activity, r.status, r.attempts, secs, r.detail)
	}
	return tw.Flush()
}

// historyRows reads the run's activities from its history, in order.
func historyRows(ctx context.Context, cl client.Client, id string) ([]*stageRow, error) {
	iter := cl.GetWorkflowHistory(ctx, id, "", false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	byID := map[int64]*stageRow{}
	var rows []*stageRow
	for iter.HasNext() {
		ev, err := iter.Next()
		if err != nil {
			return nil, fmt.Errorf("history of %s: %w", id, err)
		}
		t := ev.GetEventTime().AsTime()
		switch {
		case ev.GetActivityTaskScheduledEventAttributes() != nil:
			r := &stageRow{activity: ev.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName(), status: "scheduled", scheduled: t, attempts: 1}
			byID[ev.GetEventId()] = r
			rows = append(rows, r)
		case ev.GetActivityTaskStartedEventAttributes() != nil:
			a := ev.GetActivityTaskStartedEventAttributes()
			if r := byID[a.GetScheduledEventId()]; r != nil {
				r.status, r.attempts = "running", a.GetAttempt()
			}
		case ev.GetActivityTaskCompletedEventAttributes() != nil:
			a := ev.GetActivityTaskCompletedEventAttributes()
			if r := byID[a.GetScheduledEventId()]; r != nil {
				r.status, r.end, r.detail = "completed", t, resultDetail(r.activity, a.GetResult())
			}
		default:
			if r, failure := failedActivity(ev, byID); r != nil {
				r.status, r.end, r.detail = "failed", t, failure
			}
		}
	}
	return rows, nil
}

func failedActivity(ev *historypb.HistoryEvent, byID map[int64]*stageRow) (*stageRow, string) {
	if a := ev.GetActivityTaskFailedEventAttributes(); a != nil {
		return byID[a.GetScheduledEventId()], a.GetFailure().GetMessage()
	}
	if a := ev.GetActivityTaskTimedOutEventAttributes(); a != nil {
		return byID[a.GetScheduledEventId()], "timed out: " + a.GetFailure().GetMessage()
	}
	return nil, ""
}

// resultDetail summarises an activity's result in a few numbers.
func resultDetail(activity string, result *commonpb.Payloads) string {
	dc := converter.GetDefaultDataConverter()
	switch activity {
	case "TrainSFT", "TrainRewardModel":
		var r activities.TrainResult
		if dc.FromPayloads(result, &r) != nil {
			return ""
		}
		s := fmt.Sprintf("%d steps, loss %.3f -> %.3f", r.Steps, r.FirstLoss, r.FinalLoss)
		if r.ResumedFrom > 0 {
			s += fmt.Sprintf(", resumed at step %d", r.ResumedFrom)
		}
		return s
	case "EvaluateRewardModel":
		var r activities.RewardEval
		if dc.FromPayloads(result, &r) != nil {
			return ""
		}
		return fmt.Sprintf("held-out accuracy %.3f on %d pairs", r.HeldoutAccuracy, r.HeldoutPairs)
	case "ReinforceIteration":
		var r activities.IterationResult
		if dc.FromPayloads(result, &r) != nil {
			return ""
		}
		return fmt.Sprintf("iteration %d: reward %.3f, KL %.4f", r.Iteration+1, r.RewardMean, r.KLMean)
	case "EvaluatePolicy":
		var r activities.PolicyEval
		if dc.FromPayloads(result, &r) != nil {
			return ""
		}
		s := fmt.Sprintf("reward %.3f", r.Reward)
		if r.GoldScore != nil {
			s += fmt.Sprintf(", gold %.3f", *r.GoldScore)
		}
		return s
	}
	return ""
}
