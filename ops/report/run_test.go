package report

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
	failurepb "go.temporal.io/api/failure/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/converter"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/alignflow/alignflow/ops/metrics"
	"github.com/alignflow/alignflow/ops/report/reporttest"
	"github.com/alignflow/alignflow/ops/temporalconn/historytest"
	"github.com/alignflow/alignflow/pipeline"
)

var t0 = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

// events builds a history: each activity scheduled at from, its last
// attempt started at start, completed at end (seconds after t0).
type act struct {
	typ              string
	input            any
	from, start, end float64
	attempts         int32
	failure          string
}

func history(t *testing.T, acts ...act) *historypb.History {
	h := &historypb.History{}
	id := int64(1)
	at := func(s float64) *timestamppb.Timestamp {
		return timestamppb.New(t0.Add(time.Duration(s * float64(time.Second))))
	}
	for _, a := range acts {
		in, err := converter.GetDefaultDataConverter().ToPayloads(a.input)
		require.NoError(t, err)
		sched := id
		h.Events = append(h.Events, &historypb.HistoryEvent{EventId: id, EventTime: at(a.from),
			Attributes: &historypb.HistoryEvent_ActivityTaskScheduledEventAttributes{ActivityTaskScheduledEventAttributes: &historypb.ActivityTaskScheduledEventAttributes{
				ActivityType: &commonpb.ActivityType{Name: a.typ}, Input: in}}})
		var last *failurepb.Failure
		if a.failure != "" {
			last = &failurepb.Failure{Message: a.failure}
		}
		h.Events = append(h.Events, &historypb.HistoryEvent{EventId: id + 1, EventTime: at(a.start),
			Attributes: &historypb.HistoryEvent_ActivityTaskStartedEventAttributes{ActivityTaskStartedEventAttributes: &historypb.ActivityTaskStartedEventAttributes{
				ScheduledEventId: sched, Attempt: a.attempts, LastFailure: last}}})
		h.Events = append(h.Events, &historypb.HistoryEvent{EventId: id + 2, EventTime: at(a.end),
			Attributes: &historypb.HistoryEvent_ActivityTaskCompletedEventAttributes{ActivityTaskCompletedEventAttributes: &historypb.ActivityTaskCompletedEventAttributes{
				ScheduledEventId: sched}}})
		id += 3
	}
	return h
}

func TestTimelineGroupsActivitiesByStageWithRetries(t *testing.T) {
	h := history(t,
		act{typ: pipeline.ActivityPrepareData, input: pipeline.PrepareDataInput{RunID: "r"}, from: 0, start: 0.1, end: 2, attempts: 1},
		act{typ: pipeline.ActivityTrainSFT, input: pipeline.TrainInput{RunID: "r"}, from: 2, start: 30, end: 50, attempts: 3, failure: "activity Heartbeat timeout"},
		act{typ: pipeline.ActivityEvaluatePolicy, input: pipeline.PolicyEvalInput{RunID: "r", Label: pipeline.StageEvalBefore}, from: 50, start: 50, end: 55, attempts: 1},
		act{typ: pipeline.ActivityRolloutShard, input: pipeline.ShardInput{}, from: 55, start: 55, end: 60, attempts: 1},
		act{typ: pipeline.ActivityUpdatePolicy, input: pipeline.UpdateInput{}, from: 60, start: 60, end: 62, attempts: 1},
		act{typ: pipeline.ActivityWriteRunReport, input: pipeline.RunReportInput{RunID: "r"}, from: 62, start: 62, end: 63, attempts: 1},
	)
	acts := Timeline([]*historypb.History{h})
	require.Len(t, acts, 5, "the report's own activity is left out")
	assert.Equal(t, 3, acts[1].Attempts)
	assert.Equal(t, 28*time.Second, acts[1].Lost(), "earlier attempts and waits: scheduled to the last start")
	assert.Equal(t, "activity Heartbeat timeout", acts[1].LastFailure)
	stages := Stages(acts)
	var names []string
	for _, s := range stages {
		names = append(names, s.Stage)
	}
	assert.Equal(t, []string{"prepare-data", "sft", "eval-before", "reinforce"}, names)
	assert.Equal(t, 48*time.Second, stages[1].End.Sub(stages[1].Start))
	assert.Equal(t, 1, stages[1].Retried)
	assert.Equal(t, 2, stages[3].Activities, "a shard and an update")
	assert.Equal(t, 7*time.Second, stages[3].End.Sub(stages[3].Start))
}

func gold(v float64) *float64 { return &v }

func finishedRun(t *testing.T) Run {
	var pts []metrics.Point
	add := func(s metrics.Series, step int, m map[string]float64) {
		pts = append(pts, metrics.Point{Series: s, Step: step, Time: t0.Add(time.Duration(len(pts)) * time.Second), Metrics: m})
	}
	for i := 1; i <= 40; i++ {
		add(metrics.Series{Stage: pipeline.StageSFT}, i, map[string]float64{"loss": 5 / float64(i)})
	}
	for _, ph := range []string{"regression-helpfulness", "bt-scaled"} {
		for i := 1; i <= 20; i++ {
			add(metrics.Series{Stage: pipeline.StageRewardModel, Recipe: "bt-scaled-from-regression", Phase: ph}, i, map[string]float64{"loss": 1 / float64(i)})
		}
	}
	for i := 1; i <= 10; i++ {
		add(metrics.Series{Stage: pipeline.StageReinforce}, i, map[string]float64{"reward_mean": float64(i) / 10, "gold_mean": float64(i) / 5,
			"kl": 0.01 * float64(i), "mean_length": 20 + float64(i), "eos_fraction": 0.5 + 0.04*float64(i)})
	}
	s := &pipeline.Summary{WorkflowID: "r", Name: "unit", Seed: 7, Backend: "go",
		RewardModel: pipeline.RewardModelSummary{Recipe: "bt-scaled-from-regression", HeldoutAccuracy: 0.8, HeldoutPairs: 100,
			ByStrength: []pipeline.StrengthAccuracy{{Strength: 1, Pairs: 40, Accuracy: 0.6}, {Strength: 2, Pairs: 30, Accuracy: 0.85}, {Strength: 3, Pairs: 30, Accuracy: 0.97}}},
		Policy:  pipeline.PolicySummary{Iterations: 10, GoldScoreBefore: gold(1), GoldScoreAfter: gold(2.5), KLEstimator: "k3"},
		Samples: []pipeline.SamplePair{{Prompt: "Name a | pipe\nand *stars*", Before: pipeline.SampleText{Response: "<b>no</b>", Gold: 1}, After: pipeline.SampleText{Response: "yes", Gold: 3}}},
	}
	h := history(t,
		act{typ: pipeline.ActivityTrainSFT, input: pipeline.TrainInput{RunID: "r"}, from: 0, start: 10, end: 40, attempts: 2, failure: "worker lost"},
		act{typ: pipeline.ActivityUpdatePolicy, input: pipeline.UpdateInput{}, from: 40, start: 40, end: 62, attempts: 1})
	return Run{WorkflowID: "r", Summary: s, Points: pts, Histories: []*historypb.History{h}}
}

func TestRenderWritesEveryChartWithContent(t *testing.T) {
	files, err := Render(finishedRun(t))
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, WriteDir(dir, files))
	charts, err := reporttest.Check(dir, 500)
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"sft-loss.png", "reward-model-loss.png", "reinforce-reward.png", "reinforce-kl.png", "reinforce-length.png",
		"reinforce-eos.png", "reward-accuracy.png", "timeline.png"}, charts)
	for _, c := range charts {
		_, err := os.Stat(filepath.Join(dir, strings.TrimSuffix(c, ".png")+".svg"))
		assert.NoError(t, err, "SVG beside %s", c)
	}
	md, err := os.ReadFile(filepath.Join(dir, Markdown))
	require.NoError(t, err)
	assert.Contains(t, string(md), "| sft | 0.0 s | 40.0 s | 1 | 2 | 1 | 10.0 s |", "the stage table")
	assert.Contains(t, string(md), "worker lost")
	page, err := os.ReadFile(filepath.Join(dir, HTML))
	require.NoError(t, err)
	assert.Contains(t, string(page), "<td>Name a | pipe ↵ and *stars*</td>", "a sample's text is escaped, not formatted")
	assert.Contains(t, string(page), "&lt;b&gt;no&lt;/b&gt;")
	assert.NotContains(t, string(page), "<b>no</b>")
}

func TestBlankChartHasNoColoredPixels(t *testing.T) {
	c, err := lineChart("blank", "nothing", "x", "y", nil)
	require.NoError(t, err)
	png, err := c.encode("png")
	require.NoError(t, err)
	n, err := reporttest.Colored(png)
	require.NoError(t, err)
	assert.Less(t, n, 50, "axes and labels only")
	full, err := lineChart("line", "a line", "x", "y", []line{{xs: []float64{0, 1, 2}, ys: []float64{0, 1, 0}}})
	require.NoError(t, err)
	png, err = full.encode("png")
	require.NoError(t, err)
	n, err = reporttest.Colored(png)
	require.NoError(t, err)
	assert.Greater(t, n, 500, "the line is drawn")
}

func TestUnfinishedRunShowsWhatWasLogged(t *testing.T) {
	r := finishedRun(t)
	r.Summary, r.Histories, r.HistoryNote = nil, nil, "the workflow history could not be read"
	files, err := Render(r)
	require.NoError(t, err)
	md := string(files[0].Data)
	assert.Contains(t, md, "in progress")
	assert.Contains(t, md, "No timeline: the workflow history could not be read.")
	assert.Contains(t, md, "reinforce-reward.png")
	assert.NotContains(t, md, "reward-accuracy.png", "no evaluation yet")

	// A run that failed says so, from its history.
	failed := history(t, act{typ: pipeline.ActivityTrainSFT, input: pipeline.TrainInput{RunID: "r"}, from: 0, start: 0, end: 5, attempts: 1})
	failed.Events = append(failed.Events, &historypb.HistoryEvent{EventId: 99, Attributes: &historypb.HistoryEvent_WorkflowExecutionFailedEventAttributes{
		WorkflowExecutionFailedEventAttributes: &historypb.WorkflowExecutionFailedEventAttributes{Failure: &failurepb.Failure{Message: "sft: loss NaN"}}}})
	r.Histories = []*historypb.History{failed}
	files, err = Render(r)
	require.NoError(t, err)
	assert.Contains(t, string(files[0].Data), "Workflow `r`, failed: sft: loss NaN (the charts show what it logged).")
}

// TestTimelineOfRecordedRuns reads the stages of real runs through the
// history reader; the expected stages and counts follow stageOf's rules
// over the files' ActivityTaskScheduled events.
func TestTimelineOfRecordedRuns(t *testing.T) {
	type stage struct {
		name       string
		activities int
	}
	tests := []struct {
		files []string
		want  []stage
	}{
		{[]string{"alignment-history-shards.json"}, []stage{{"prepare-data", 1}, {"sft", 1}, {"reward-model", 1}, {"reward-eval", 1},
			{"eval-before", 1}, {"reinforce", 9}}},
		{[]string{"alignment-history.json", "alignment-history-continued.json"}, []stage{{"prepare-data", 1}, {"sft", 1}, {"reward-model", 1},
			{"reward-eval", 1}, {"eval-before", 1}, {"reinforce", 22}, {"eval-after", 1}, {"summary", 1}}},
		{[]string{"comparison-history.json"}, []stage{{"prepare-data", 1}, {"sft", 1},
			{"reward-model bt", 1}, {"reward-model bt-margin", 1}, {"reward-model bt-scaled", 1}, {"reward-model regression", 1},
			{"reward-model regression-helpfulness", 1}, {"reward-eval regression-helpfulness", 1}, {"reward-eval regression", 1},
			{"reward-eval bt-margin", 1}, {"reward-eval bt-scaled", 1}, {"reward-eval bt", 1}, {"reward-model bt-from-regression", 1},
			{"reward-model bt-margin-from-regression", 1}, {"reward-model bt-scaled-from-regression", 1}, {"reward-eval bt-from-regression", 1},
			{"reward-eval bt-scaled-from-regression", 1}, {"reward-eval bt-margin-from-regression", 1},
			{"reward-model bt-scaled-from-regression-expo", 1}, {"reward-eval bt-scaled-from-regression-expo", 1}, {"summary", 1}}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.files, "+"), func(t *testing.T) {
			var runs []*historypb.History
			for _, f := range tt.files {
				h, err := historytest.Load("../../workflows/testdata/" + f)
				require.NoError(t, err)
				runs = append(runs, h)
			}
			var got []stage
			for _, s := range Stages(Timeline(runs)) {
				got = append(got, stage{s.Stage, s.Activities})
				assert.Equal(t, s.Activities, s.Attempts, "%s: no recorded activity was retried", s.Stage)
				assert.Zero(t, s.Retried)
				assert.Zero(t, s.Lost)
			}
			assert.Equal(t, tt.want, got)
		})
	}
	h, err := historytest.Load("../../workflows/testdata/alignment-history-shards.json")
	require.NoError(t, err)
	stages := Stages(Timeline([]*historypb.History{h}))
	reinforce := stages[len(stages)-1]
	// From the first shard's scheduling (03:04:09.293185514) to the curve
	// segment's completion (03:04:09.955752342).
	assert.Equal(t, 662566828*time.Nanosecond, reinforce.End.Sub(reinforce.Start))
}

// TestBusyMeasuresTheOverlap: shards of 0-10 s and 8-12 s (busy 12 s, the
// overlap counted once) and updates of 10-15 s and 20-22 s run at once
// from 10 to 12 s; synchronous iterations, one after the other, overlap 0.
func TestBusyMeasuresTheOverlap(t *testing.T) {
	acts := func(spans ...[3]float64) []Activity {
		var out []Activity
		for _, s := range spans {
			typ := pipeline.ActivityRolloutShard
			if s[0] == 1 {
				typ = pipeline.ActivityUpdatePolicy
			}
			a := Activity{}
			a.Type, a.Started, a.Closed = typ, t0.Add(time.Duration(s[1]*float64(time.Second))), t0.Add(time.Duration(s[2]*float64(time.Second)))
			out = append(out, a)
		}
		return out
	}
	assert.Equal(t, Busy{Rollouts: 12 * time.Second, Updates: 7 * time.Second, Both: 2 * time.Second},
		BusyOf(acts([3]float64{0, 0, 10}, [3]float64{0, 8, 12}, [3]float64{1, 10, 15}, [3]float64{1, 20, 22})))
	assert.Equal(t, Busy{Rollouts: 8 * time.Second, Updates: 4 * time.Second},
		BusyOf(acts([3]float64{0, 0, 5}, [3]float64{1, 5, 7}, [3]float64{0, 7, 10}, [3]float64{1, 10, 12})))
}
