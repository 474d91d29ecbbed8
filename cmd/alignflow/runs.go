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
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/alignflow/alignflow/ops/temporalconn"
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
		Args:  runIDArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := dialCmd(cmd)
			if err != nil {
				return err
			}
			defer cl.Close()
			return runsShow(cmd.Context(), runsShowOptions{out: cmd.OutOrStdout(), client: cl, id: args[0]})
		},
	}
	runs.AddCommand(list, show, rolloutsCmd())
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

// stageRow is one row of `runs show`'s table: an activity of the run's
// history, or one that sums up the iterations collapseIterations hides.
type stageRow struct {
	activity  string
	attempts  int
	status    string
	scheduled time.Time
	started   time.Time // of the last attempt
	end       time.Time
	detail    string
}

// rowOf is an activity's row: a completed one's detail sums up its result,
// a failed one's is its failure.
func rowOf(a temporalconn.Activity) *stageRow {
	r := &stageRow{activity: a.Type, attempts: a.Attempts, status: string(a.Outcome), scheduled: a.Scheduled, started: a.Started, end: a.Closed}
	switch a.Outcome {
	case temporalconn.Completed:
		r.detail = resultDetail(a)
	case temporalconn.Failed:
		r.detail = a.LastFailure
	case temporalconn.TimedOut:
		r.status, r.detail = string(temporalconn.Failed), "timed out: "+a.LastFailure
	}
	return r
}

// keepIterations is the most REINFORCE iterations in a row `runs show`
// lists one by one.
const keepIterations = 4

// runsClient is what `runs show` asks the server; client.Client has it.
type runsClient interface {
	temporalconn.HistoryClient
	DescribeWorkflowExecution(ctx context.Context, workflowID, runID string) (*workflowservice.DescribeWorkflowExecutionResponse, error)
	QueryWorkflow(ctx context.Context, workflowID, runID, queryType string, args ...any) (converter.EncodedValue, error)
}

// runsShowOptions are `alignflow runs show`'s inputs and output.
type runsShowOptions struct {
	out    io.Writer
	client runsClient
	id     string // the workflow ID
}

func runsShow(ctx context.Context, o runsShowOptions) error {
	cl, out, id := o.client, o.out, o.id
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
	rows := collapseIterations(h.rows, keepIterations)
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

// readHistory reads every workflow run of id: the activities of them all,
// the first one's start and the latest one's end.
func readHistory(ctx context.Context, cl temporalconn.HistoryClient, id string) (runHistory, error) {
	var h runHistory
	runs, err := temporalconn.Histories{Client: cl}.History(ctx, id)
	if err != nil {
		return h, err
	}
	for i, hist := range runs {
		r := temporalconn.ParseRun(hist)
		if i == 0 {
			h.start = r.Start
		}
		if i == len(runs)-1 && r.Status != enums.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW {
			h.end = r.End
		}
		for _, a := range r.Activities {
			h.rows = append(h.rows, rowOf(a))
		}
	}
	return h, nil
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
// REINFORCE iterations by its first and last iteration around one row that
// sums up the rest. An iteration is a ReinforceIteration, or an UpdatePolicy
// with the RolloutShard rows before it; a curve segment (SaveCurve) goes
// with the iteration before it.
func collapseIterations(rows []*stageRow, keep int) []*stageRow {
	var out []*stageRow
	for i := 0; i < len(rows); {
		its := iterations(rows[i:])
		n := 0
		for _, it := range its {
			n += len(it)
		}
		if n == 0 {
			out = append(out, rows[i])
			i++
			continue
		}
		var unfinished []*stageRow // an iteration's shards without its update yet: shown after the last whole one
		if last := its[len(its)-1]; !slices.ContainsFunc(last, endsIteration) {
			its, unfinished = its[:len(its)-1], last
		}
		if len(its) <= max(keep, 2) {
			out = append(out, rows[i:i+n]...)
		} else {
			out = append(out, its[0]...)
			out = append(out, hiddenIterations(its[1:len(its)-1]))
			out = append(out, its[len(its)-1]...)
			out = append(out, unfinished...)
		}
		i += n
	}
	return out
}

// iterations splits the completed REINFORCE rows rows starts with into
// iterations; the last may be unfinished (its shards done, its update not).
func iterations(rows []*stageRow) [][]*stageRow {
	var its [][]*stageRow
	for _, r := range rows {
		if r.status != string(temporalconn.Completed) {
			break
		}
		switch r.activity {
		case pipeline.ActivitySaveCurve: // with the iteration before it
			if len(its) == 0 {
				its = append(its, nil)
			}
		case pipeline.ActivityRolloutShard, pipeline.ActivityUpdatePolicy, pipeline.ActivityReinforceIteration:
			if len(its) == 0 || slices.ContainsFunc(its[len(its)-1], endsIteration) {
				its = append(its, nil)
			}
		default:
			return its
		}
		its[len(its)-1] = append(its[len(its)-1], r)
	}
	return its
}

// endsIteration says whether a row is the last activity of an iteration.
func endsIteration(r *stageRow) bool {
	return r.activity == pipeline.ActivityUpdatePolicy || r.activity == pipeline.ActivityReinforceIteration
}

// hiddenIterations is the row that stands for iterations: what they ran,
// from the first one's scheduling to the last one's end, and the most
// attempts any of their activities took.
func hiddenIterations(its [][]*stageRow) *stageRow {
	rows := slices.Concat(its...)
	mid := &stageRow{activity: fmt.Sprintf("... %d more iterations", len(its)), status: string(temporalconn.Completed), attempts: 1,
		scheduled: rows[0].scheduled}
	var types []string
	for _, r := range rows {
		if !slices.Contains(types, r.activity) {
			types = append(types, r.activity)
		}
		if r.scheduled.Before(mid.scheduled) {
			mid.scheduled = r.scheduled
		}
		if r.end.After(mid.end) {
			mid.end = r.end
		}
		mid.attempts = max(mid.attempts, r.attempts)
	}
	mid.detail = fmt.Sprintf("%d activities (%s), each on its first attempt", len(rows), strings.Join(types, ", "))
	if mid.attempts > 1 {
		mid.detail = fmt.Sprintf("%d activities (%s); the most attempts any took is shown", len(rows), strings.Join(types, ", "))
	}
	return mid
}

// resultDetail summarises a completed activity's result in a few numbers.
func resultDetail(a temporalconn.Activity) string {
	dc := converter.GetDefaultDataConverter()
	switch a.Type {
	case pipeline.ActivityTrainSFT, pipeline.ActivityTrainRewardModel:
		var r pipeline.TrainResult
		if dc.FromPayloads(a.Result, &r) != nil {
			return ""
		}
		s := fmt.Sprintf("%d steps, loss %.3f -> %.3f", r.Steps, r.FirstLoss, r.FinalLoss)
		if r.ResumedFrom > 0 {
			s += fmt.Sprintf(", resumed at step %d", r.ResumedFrom)
		}
		return s + reusedNote(r.ReusedFrom)
	case pipeline.ActivityEvaluateRewardModel:
		var r pipeline.RewardEval
		if dc.FromPayloads(a.Result, &r) != nil {
			return ""
		}
		return fmt.Sprintf("held-out accuracy %.3f on %d pairs", r.HeldoutAccuracy, r.HeldoutPairs)
	case pipeline.ActivityReinforceIteration, pipeline.ActivityUpdatePolicy:
		var r pipeline.IterationResult
		if dc.FromPayloads(a.Result, &r) != nil {
			return ""
		}
		return fmt.Sprintf("iteration %d: reward %.3f, KL penalty %.4f", r.Iteration+1, r.RewardMean, r.KLMean) + reusedNote(r.ReusedFrom)
	case pipeline.ActivityRolloutShard:
		var in pipeline.ShardInput
		var r pipeline.ShardResult
		if dc.FromPayloads(a.Input, &in) != nil || dc.FromPayloads(a.Result, &r) != nil {
			return ""
		}
		return fmt.Sprintf("iteration %d shard %d of %d: %d rows", in.Iteration+1, in.Shard+1, in.Shards, r.Rows) + reusedNote(r.ReusedFrom)
	case pipeline.ActivityEvaluatePolicy:
		var r pipeline.PolicyEval
		if dc.FromPayloads(a.Result, &r) != nil {
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
