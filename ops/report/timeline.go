package report

import (
	"fmt"
	"path"
	"strings"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/converter"

	"github.com/alignflow/alignflow/ops/temporalconn"
	"github.com/alignflow/alignflow/pipeline"
)

// Activity is one activity of a run, as its workflow history records it
// (see temporalconn.Activity), with the stage of the run it served.
type Activity struct {
	temporalconn.Activity
	Stage string
}

// StageSpan is a stage's part of the timeline: from its first activity's
// scheduling to its last one's end.
type StageSpan struct {
	Stage      string
	Start, End time.Time
	Activities int
	Attempts   int
	Retried    int           // activities that ran more than once
	Lost       time.Duration // before the last attempts of retried activities
}

// Timeline reads a workflow's runs' histories (oldest first) into its
// activities, in the order they were scheduled, leaving out the report's
// own (it cannot time itself).
func Timeline(runs []*historypb.History) []Activity {
	var out []Activity
	for _, a := range temporalconn.Activities(runs) {
		if a.Type != pipeline.ActivityWriteRunReport {
			out = append(out, Activity{Activity: a, Stage: stageOf(a.Type, a.Input)})
		}
	}
	return out
}

// stageOf names the stage an activity belongs to, from its type and, where
// the type serves several stages, its input.
func stageOf(typ string, input *commonpb.Payloads) string {
	var in struct {
		RunID       string `json:"run_id"`
		Label       string `json:"label"`  // EvaluatePolicy
		Recipe      string `json:"recipe"` // TrainRewardModel in a comparison
		RewardModel struct {
			Path string `json:"path"`
		} `json:"reward_model"` // EvaluateRewardModel
	}
	if input != nil {
		_ = converter.GetDefaultDataConverter().FromPayloads(input, &in) // a stage name is all it is for
	}
	switch typ {
	case pipeline.ActivityPrepareData:
		return pipeline.StagePrepareData
	case pipeline.ActivityTrainSFT:
		return pipeline.StageSFT
	case pipeline.ActivityTrainRewardModel:
		return strings.TrimSpace(pipeline.StageRewardModel + " " + in.Recipe)
	case pipeline.ActivityEvaluateRewardModel:
		// A comparison keeps each variant in runs/<id>/reward/<recipe>/.
		rewards, err := pipeline.RunKey(in.RunID, "reward")
		if dir := path.Dir(in.RewardModel.Path); err == nil && strings.HasPrefix(dir, rewards+"/") {
			return pipeline.StageRewardEval + " " + path.Base(dir)
		}
		return pipeline.StageRewardEval
	case pipeline.ActivityEvaluatePolicy:
		if in.Label != "" {
			return in.Label
		}
		return "eval"
	case pipeline.ActivityReinforceIteration, pipeline.ActivityRolloutShard, pipeline.ActivityUpdatePolicy, pipeline.ActivitySaveCurve:
		return pipeline.StageReinforce
	case pipeline.ActivityWriteSummary, pipeline.ActivityWriteReport:
		return pipeline.StageSummary
	}
	return typ
}

// Stages groups a timeline's activities by stage, in order of first start.
func Stages(acts []Activity) []StageSpan {
	var out []StageSpan
	idx := map[string]int{}
	for _, a := range acts {
		i, ok := idx[a.Stage]
		if !ok {
			i = len(out)
			idx[a.Stage] = i
			out = append(out, StageSpan{Stage: a.Stage, Start: a.Scheduled})
		}
		s := &out[i]
		s.Activities++
		s.Attempts += max(a.Attempts, 1)
		end := a.Closed
		if end.IsZero() {
			end = a.Started
		}
		if end.IsZero() {
			end = a.Scheduled
		}
		if end.After(s.End) {
			s.End = end
		}
		if a.Retried() {
			s.Retried++
			s.Lost += a.Lost()
		}
	}
	return out
}

// seconds formats a duration for tables: "12.3 s", "4 min 05 s".
func seconds(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return fmt.Sprintf("%d min %02d s", int(d.Minutes()), int(d.Seconds())%60)
}
