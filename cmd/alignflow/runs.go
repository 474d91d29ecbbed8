package main

import (
	"context"
	"fmt"
	"io"
	"slices"
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

	"github.com/alignflow/alignflow/pipeline"
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
	started   time.Time // of the last attempt
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
			var hb pipeline.Progress
			if d := pa.GetHeartbeatDetails(); d != nil && converter.GetDefaultDataConverter().FromPayloads(d, &hb) == nil && hb.Total > 0 {
				line += fmt.Sprintf(", %s %d/%d", hb.Stage, hb.Step, hb.Total)
			}
			if f := pa.GetLastFailure(); f != nil {
				line += ", last failure: " + f.GetMessage()
			}
			fmt.Fprintln(out, line)
		}
	}
	h, err := readHistory(ctx, cl, id)
	if err != nil {
		return err
	}
	if info.GetStatus() != enums.WORKFLOW_EXECUTION_STATUS_RUNNING {
		h.printTemporalShare(out)
	}
	rows := collapseIterations(h.rows, 4)
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

// runHistory is what alignflow shows of a run's history: its activities and
// when it started and (if it did) ended, over all its workflow runs.
type runHistory struct {
	rows       []*stageRow
	start, end time.Time
}

// readHistory reads every workflow run of id, following continue-as-new
// back from the latest.
func readHistory(ctx context.Context, cl client.Client, id string) (runHistory, error) {
	var h runHistory
	for runID := ""; ; {
		part, previous, err := runHistoryRows(ctx, cl, id, runID)
		if err != nil {
			return h, err
		}
		h.rows = append(part.rows, h.rows...)
		h.start = part.start
		if h.end.IsZero() {
			h.end = part.end
		}
		if previous == "" {
			return h, nil
		}
		runID = previous
	}
}

// runHistoryRows reads one workflow run's activities and the run it
// continued from ("" for the first).
func runHistoryRows(ctx context.Context, cl client.Client, id, runID string) (h runHistory, previous string, err error) {
	iter := cl.GetWorkflowHistory(ctx, id, runID, false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	byID := map[int64]*stageRow{}
	for iter.HasNext() {
		ev, err := iter.Next()
		if err != nil {
			return h, "", fmt.Errorf("history of %s: %w", id, err)
		}
		t := ev.GetEventTime().AsTime()
		switch {
		case ev.GetWorkflowExecutionStartedEventAttributes() != nil:
			previous = ev.GetWorkflowExecutionStartedEventAttributes().GetContinuedExecutionRunId()
			h.start = t
		case ev.GetWorkflowExecutionCompletedEventAttributes() != nil, ev.GetWorkflowExecutionFailedEventAttributes() != nil,
			ev.GetWorkflowExecutionTerminatedEventAttributes() != nil, ev.GetWorkflowExecutionCanceledEventAttributes() != nil,
			ev.GetWorkflowExecutionTimedOutEventAttributes() != nil:
			h.end = t
		case ev.GetActivityTaskScheduledEventAttributes() != nil:
			r := &stageRow{activity: ev.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName(), status: "scheduled", scheduled: t, attempts: 1}
			byID[ev.GetEventId()] = r
			h.rows = append(h.rows, r)
		case ev.GetActivityTaskStartedEventAttributes() != nil:
			a := ev.GetActivityTaskStartedEventAttributes()
			if r := byID[a.GetScheduledEventId()]; r != nil {
				r.status, r.attempts, r.started = "running", a.GetAttempt(), t
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
	return h, previous, nil
}

// temporalShare splits a finished run's wall time into the time some
// activity ran (the union of their last attempts, from start to
// completion: the comparison's variants overlap) and the rest: scheduling,
// workflow tasks, history writes and retries.
func (h runHistory) temporalShare() (wall, outside time.Duration, ok bool) {
	if h.start.IsZero() || h.end.IsZero() {
		return 0, 0, false
	}
	type span struct{ from, to time.Time }
	var spans []span
	for _, r := range h.rows {
		if !r.started.IsZero() && !r.end.IsZero() {
			spans = append(spans, span{r.started, r.end})
		}
	}
	slices.SortFunc(spans, func(a, b span) int { return a.from.Compare(b.from) })
	wall, outside = h.end.Sub(h.start), h.end.Sub(h.start)
	var covered time.Time // the end of the union so far
	for _, sp := range spans {
		from := sp.from
		if from.Before(covered) {
			from = covered
		}
		if sp.to.After(from) {
			outside -= sp.to.Sub(from)
			covered = sp.to
		}
	}
	return wall, outside, true
}

// printTemporalShare prints how much of a finished run's wall time was not
// spent in activities.
func (h runHistory) printTemporalShare(out io.Writer) {
	if wall, outside, ok := h.temporalShare(); ok && wall > 0 {
		fmt.Fprintf(out, "Temporal overhead: %s of %s wall time outside activities (%.2f%%; %d activities)\n",
			outside.Round(time.Millisecond), wall.Round(time.Millisecond), 100*outside.Seconds()/wall.Seconds(), len(h.rows))
	}
}

// collapseIterations replaces each stretch of more than keep completed
// REINFORCE iterations (and the curve segments saved between them) by its
// first and last iteration around one row that sums up the rest.
func collapseIterations(rows []*stageRow, keep int) []*stageRow {
	routine := func(r *stageRow) bool {
		return r.status == "completed" && (r.activity == "ReinforceIteration" || r.activity == "SaveCurve")
	}
	var out []*stageRow
	for i := 0; i < len(rows); {
		j := i
		for j < len(rows) && routine(rows[j]) {
			j++
		}
		if j-i <= keep {
			out = append(out, rows[i:max(j, i+1)]...)
			i = max(j, i+1)
			continue
		}
		mid := &stageRow{activity: fmt.Sprintf("... %d more", j-i-2), status: "completed", attempts: 1,
			scheduled: rows[i+1].scheduled, end: rows[j-2].end, detail: "ReinforceIteration and SaveCurve, each on its first attempt"}
		for _, r := range rows[i+1 : j-1] {
			if r.attempts > 1 {
				mid.attempts = max(mid.attempts, r.attempts)
				mid.detail = "ReinforceIteration and SaveCurve; the most attempts any took is shown"
			}
		}
		out = append(out, rows[i], mid, rows[j-1])
		i = j
	}
	return out
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
		var r pipeline.TrainResult
		if dc.FromPayloads(result, &r) != nil {
			return ""
		}
		s := fmt.Sprintf("%d steps, loss %.3f -> %.3f", r.Steps, r.FirstLoss, r.FinalLoss)
		if r.ResumedFrom > 0 {
			s += fmt.Sprintf(", resumed at step %d", r.ResumedFrom)
		}
		return s + reusedNote(r.ReusedFrom)
	case "EvaluateRewardModel":
		var r pipeline.RewardEval
		if dc.FromPayloads(result, &r) != nil {
			return ""
		}
		return fmt.Sprintf("held-out accuracy %.3f on %d pairs", r.HeldoutAccuracy, r.HeldoutPairs)
	case "ReinforceIteration":
		var r pipeline.IterationResult
		if dc.FromPayloads(result, &r) != nil {
			return ""
		}
		return fmt.Sprintf("iteration %d: reward %.3f, KL penalty %.4f", r.Iteration+1, r.RewardMean, r.KLMean) + reusedNote(r.ReusedFrom)
	case "EvaluatePolicy":
		var r pipeline.PolicyEval
		if dc.FromPayloads(result, &r) != nil {
			return ""
		}
		s := fmt.Sprintf("reward %.3f", r.Reward)
		if r.GoldScore != nil {
			s += fmt.Sprintf(", gold %.3f", *r.GoldScore)
		}
		return s + fmt.Sprintf(", KL to reference %.3f per response, KL penalty %.4f per token", r.KLSequence, r.KLPenalty)
	}
	return ""
}

func reusedNote(from string) string {
	if from == "" {
		return ""
	}
	return " (reused from run " + from + ")"
}
