package main

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/converter"

	"github.com/alignflow/alignflow/ops/temporalconn/historytest"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/workflows"
)

const (
	shard   = pipeline.ActivityRolloutShard
	update  = pipeline.ActivityUpdatePolicy
	curve   = pipeline.ActivitySaveCurve
	reinfIt = pipeline.ActivityReinforceIteration
)

func TestCollapseIterations(t *testing.T) {
	row := func(activity, status string, attempts int) *stageRow {
		return &stageRow{activity: activity, status: status, attempts: attempts}
	}
	done := func(activities ...string) []*stageRow {
		var rows []*stageRow
		for _, a := range activities {
			rows = append(rows, row(a, "completed", 1))
		}
		return rows
	}
	repeat := func(n int, activities ...string) []string {
		var out []string
		for range n {
			out = append(out, activities...)
		}
		return out
	}
	names := func(rows []*stageRow) []string {
		var out []string
		for _, r := range rows {
			out = append(out, r.activity)
		}
		return out
	}
	cat := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}

	single := done(cat([]string{pipeline.ActivityTrainSFT}, repeat(7, reinfIt), []string{curve})...)
	single[3].attempts = 3
	single = append(single, row(reinfIt, "failed", 2))

	// Five sharded iterations, a curve segment after the third, and the
	// sixth iteration's first shard still running.
	sharded := done(cat([]string{pipeline.ActivityTrainSFT}, repeat(3, shard, shard, shard, update), []string{curve},
		repeat(2, shard, shard, shard, update))...)
	sharded = append(sharded, row(shard, "running", 1))

	tests := []struct {
		name string
		rows []*stageRow
		want []string
	}{
		{"short stretches stay", []*stageRow{row(pipeline.ActivityTrainSFT, "completed", 1), row(reinfIt, "completed", 1), row(reinfIt, "running", 1)},
			[]string{pipeline.ActivityTrainSFT, reinfIt, reinfIt}},
		{"a long stretch keeps its ends and the failure after it", single,
			[]string{pipeline.ActivityTrainSFT, reinfIt, "... 5 more iterations", reinfIt, curve, reinfIt}},
		{"a shard group and its update are one iteration", sharded,
			cat([]string{pipeline.ActivityTrainSFT, shard, shard, shard, update, "... 3 more iterations", shard, shard, shard, update, shard})},
		{"keep counts iterations, not activities", done(repeat(4, shard, shard, shard, update)...), repeat(4, shard, shard, shard, update)},
		{"an update that failed ends the stretch", append(done(repeat(5, shard, update)...), row(shard, "completed", 1), row(update, "failed", 5)),
			cat([]string{shard, update, "... 3 more iterations", shard, update, shard, update})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, names(collapseIterations(tt.rows, 4)))
		})
	}

	got := collapseIterations(single, 4)
	assert.Equal(t, 3, got[2].attempts, "the most attempts in the hidden rows is shown")
	assert.Equal(t, "5 activities (ReinforceIteration); the most attempts any took is shown", got[2].detail)
	assert.Equal(t, "failed", got[5].status)
	got = collapseIterations(sharded, 4)
	assert.Equal(t, "13 activities (RolloutShard, UpdatePolicy, SaveCurve), each on its first attempt", got[5].detail)
}

func TestTemporalShare(t *testing.T) {
	at := func(s float64) time.Time { return time.Unix(1000, 0).Add(time.Duration(s * float64(time.Second))) }
	h := runHistory{start: at(0), end: at(100), rows: []*stageRow{
		{scheduled: at(0.5), started: at(1), end: at(41)},          // 40 s in the activity
		{scheduled: at(41.5), started: at(42), end: at(99)},        // 57 s
		{scheduled: at(99.2), started: time.Time{}, end: at(99.5)}, // never started: not counted
	}}
	wall, outside, ok := h.temporalShare()
	require.True(t, ok)
	assert.Equal(t, 100*time.Second, wall)
	assert.Equal(t, 3*time.Second, outside)

	// Overlapping activities (the comparison's variants run side by side)
	// count once: activities cover 1..60 and 70..95 (84 s), so 16 s are outside.
	h = runHistory{start: at(0), end: at(100), rows: []*stageRow{
		{started: at(1), end: at(50)}, {started: at(10), end: at(60)}, {started: at(20), end: at(30)},
		{started: at(70), end: at(90)}, {started: at(80), end: at(95)},
	}}
	_, outside, ok = h.temporalShare()
	require.True(t, ok)
	assert.Equal(t, 16*time.Second, outside, "never negative, however many activities overlap")

	_, _, ok = runHistory{start: at(0)}.temporalShare()
	assert.False(t, ok, "a running workflow has no share yet")
}

// recordedRuns is a server that knows one finished workflow, from
// recorded histories.
type recordedRuns struct{ historytest.Client }

func (r recordedRuns) DescribeWorkflowExecution(_ context.Context, id, _ string) (*workflowservice.DescribeWorkflowExecutionResponse, error) {
	return &workflowservice.DescribeWorkflowExecutionResponse{WorkflowExecutionInfo: &workflowpb.WorkflowExecutionInfo{
		Execution: &commonpb.WorkflowExecution{WorkflowId: id}, Type: &commonpb.WorkflowType{Name: workflows.AlignmentName},
		Status: enums.WORKFLOW_EXECUTION_STATUS_COMPLETED, StartTime: r.Runs[0].GetEvents()[0].GetEventTime()}}, nil
}

func (recordedRuns) QueryWorkflow(context.Context, string, string, string, ...any) (converter.EncodedValue, error) {
	return nil, errors.New("a finished run answers no queries")
}

func loadRecorded(t *testing.T, files ...string) []*historypb.History {
	t.Helper()
	var runs []*historypb.History
	for _, f := range files {
		h, err := historytest.Load("../../workflows/testdata/" + f)
		require.NoError(t, err)
		runs = append(runs, h)
	}
	return runs
}

// TestRunsShowOfRecordedRuns renders `runs show` of real runs. The details
// are the files' results (and a shard's input) as resultDetail formats
// them; the rows keep their scheduling order, not the shards' completion
// order (shard 2, 3, 1).
func TestRunsShowOfRecordedRuns(t *testing.T) {
	type row struct{ activity, status, attempts, detail string }
	const evalBefore = "reward 1.597, gold 1.473, KL to reference 0.000 per response, KL penalty 0.0000 per token"
	before := []row{
		{pipeline.ActivityPrepareData, "completed", "1", ""},
		{pipeline.ActivityTrainSFT, "completed", "1", "400 steps, loss 5.582 -> 0.698"},
		{pipeline.ActivityTrainRewardModel, "completed", "1", "400 steps, loss 2.433 -> 0.308"},
		{pipeline.ActivityEvaluateRewardModel, "completed", "1", "held-out accuracy 0.689 on 367 pairs"},
	}
	tests := []struct {
		name  string
		files []string
		want  []row
		// activities is the number of activities in the histories when the
		// latest run finished (0 when it continued as new).
		activities int
	}{
		{"three shards an iteration", []string{"alignment-history-shards.json"}, []row{
			{pipeline.ActivityPrepareData, "completed", "1", ""},
			{pipeline.ActivityTrainSFT, "completed", "1", "120 steps, loss 5.565 -> 2.148"},
			{pipeline.ActivityTrainRewardModel, "completed", "1", "80 steps, loss 2.136 -> 1.934"},
			{pipeline.ActivityEvaluateRewardModel, "completed", "1", "held-out accuracy 0.655 on 58 pairs"},
			{pipeline.ActivityEvaluatePolicy, "completed", "1", "reward 2.588, gold 0.496, KL to reference 0.000 per response, KL penalty 0.0000 per token"},
			{shard, "completed", "1", "iteration 1 shard 1 of 3: 8 rows"},
			{shard, "completed", "1", "iteration 1 shard 2 of 3: 8 rows"},
			{shard, "completed", "1", "iteration 1 shard 3 of 3: 16 rows"},
			{update, "completed", "1", "iteration 1: reward 2.642, KL penalty 0.0000"},
			{shard, "completed", "1", "iteration 2 shard 1 of 3: 8 rows"},
			{shard, "completed", "1", "iteration 2 shard 2 of 3: 8 rows"},
			{shard, "completed", "1", "iteration 2 shard 3 of 3: 16 rows"},
			{update, "completed", "1", "iteration 2: reward 2.599, KL penalty 0.0478"},
			{curve, "completed", "1", ""},
		}, 0},
		{"continued as new, iterations collapsed", []string{"alignment-history.json", "alignment-history-continued.json"}, append(before,
			row{pipeline.ActivityEvaluatePolicy, "completed", "1", evalBefore},
			row{shard, "completed", "1", "iteration 1 shard 1 of 1: 64 rows"},
			row{update, "completed", "1", "iteration 1: reward 2.297, KL penalty 0.0000"},
			// Iterations 2 to 6, the first run's curve segment, and 13 to 15
			// of its last run (the recordings skip the runs between).
			row{"... 8 more iterations", "completed", "1", "17 activities (RolloutShard, UpdatePolicy, SaveCurve), each on its first attempt"},
			row{shard, "completed", "1", "iteration 16 shard 1 of 1: 64 rows"},
			row{update, "completed", "1", "iteration 16: reward 2.992, KL penalty 0.1409"},
			row{curve, "completed", "1", ""},
			row{pipeline.ActivityEvaluatePolicy, "completed", "1", "reward 1.910, gold 1.738, KL to reference 0.315 per response, KL penalty 0.1570 per token"},
			row{pipeline.ActivityWriteSummary, "completed", "1", ""},
			row{pipeline.ActivityWriteRunReport, "completed", "1", ""},
		), 30},
		{"one activity an iteration, before shards", []string{"alignment-history-v3.json"}, append(before,
			row{pipeline.ActivityEvaluatePolicy, "completed", "1", "reward 1.459, gold 1.487, KL to reference 0.000 per response, KL penalty 0.0000 per token"},
			row{reinfIt, "completed", "1", "iteration 1: reward 2.042, KL penalty 0.0000"},
			row{"... 4 more iterations", "completed", "1", "4 activities (ReinforceIteration), each on its first attempt"},
			row{reinfIt, "completed", "1", "iteration 6: reward 2.521, KL penalty 0.0728"},
			row{curve, "completed", "1", ""},
		), 0},
	}
	cell := regexp.MustCompile(`\s{2,}`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			cl := recordedRuns{historytest.Client{WorkflowID: "run-1", Runs: loadRecorded(t, tt.files...)}}
			require.NoError(t, runsShow(context.Background(), runsShowOptions{out: &out, client: cl, id: "run-1"}))
			head, table, ok := strings.Cut(out.String(), "\n\n")
			require.True(t, ok, out.String())
			assert.True(t, strings.HasPrefix(head, "Run run-1 ("+workflows.AlignmentName+"): completed, started "), head)
			if tt.activities > 0 {
				assert.Regexp(t, `\nTemporal overhead: \S+ of \S+ wall time outside activities \(\d+\.\d\d%; `+strconv.Itoa(tt.activities)+` activities\)$`, head)
			} else {
				assert.NotContains(t, head, "Temporal overhead")
			}
			lines := strings.Split(strings.TrimSpace(table), "\n")
			require.Equal(t, []string{"#", "ACTIVITY", "STATUS", "ATTEMPTS", "SECONDS", "DETAIL"}, cell.Split(lines[0], -1))
			var got []row
			for i, l := range lines[1:] {
				f := cell.Split(strings.TrimSpace(l), 6)
				require.GreaterOrEqual(t, len(f), 5, l)
				assert.Equal(t, strconv.Itoa(i+1), f[0])
				assert.Regexp(t, `^\d+\.\d$`, f[4], "%s took seconds", f[1])
				r := row{f[1], f[2], f[3], ""}
				if len(f) == 6 {
					r.detail = f[5]
				}
				got = append(got, r)
			}
			assert.Equal(t, tt.want, got)
		})
	}
}
