package report

import (
	"fmt"
	"path"
	"strings"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/converter"

	"github.com/alignflow/alignflow/pipeline"
)

// Activity is one activity of a run, as its workflow history records it.
// Temporal records only the last attempt's start (with the failure of the
// attempt before it), so the time earlier attempts took and the waits
// between them are together Started - Scheduled.
type Activity struct {
	Type      string
	Stage     string
	Scheduled time.Time
	Started   time.Time // of the last attempt; zero if it never started
	Closed    time.Time // zero while it runs
	Attempts  int
	Outcome   string // completed, failed, timed out, canceled, running
	// LastFailure is the failure of the attempt before the last one (or of
	// the last one, when the activity failed).
	LastFailure string
}

// Retried says whether the activity ran more than once.
func (a Activity) Retried() bool { return a.Attempts > 1 }

// Lost is the time before the last attempt started: earlier attempts and
// the retry waits, plus the time the task waited for a worker.
func (a Activity) Lost() time.Duration {
	if a.Started.IsZero() {
		return 0
	}
	return a.Started.Sub(a.Scheduled)
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
// activities, in the order they were scheduled.
func Timeline(runs []*historypb.History) []Activity {
	var out []Activity
	for _, h := range runs {
		byScheduled := map[int64]int{} // scheduled event ID -> index in out
		for _, ev := range h.GetEvents() {
			t := ev.GetEventTime().AsTime()
			switch {
			case ev.GetActivityTaskScheduledEventAttributes() != nil:
				a := ev.GetActivityTaskScheduledEventAttributes()
				typ := a.GetActivityType().GetName()
				if typ == "WriteRunReport" {
					continue // the report cannot time itself
				}
				byScheduled[ev.GetEventId()] = len(out)
				out = append(out, Activity{Type: typ, Stage: stageOf(typ, a.GetInput()), Scheduled: t, Outcome: "running"})
			case ev.GetActivityTaskStartedEventAttributes() != nil:
				a := ev.GetActivityTaskStartedEventAttributes()
				if i, ok := byScheduled[a.GetScheduledEventId()]; ok {
					out[i].Started, out[i].Attempts = t, int(a.GetAttempt())
					if f := a.GetLastFailure(); f != nil {
						out[i].LastFailure = f.GetMessage()
					}
				}
			case ev.GetActivityTaskCompletedEventAttributes() != nil:
				closeActivity(out, byScheduled, ev.GetActivityTaskCompletedEventAttributes().GetScheduledEventId(), t, "completed", "")
			case ev.GetActivityTaskFailedEventAttributes() != nil:
				a := ev.GetActivityTaskFailedEventAttributes()
				closeActivity(out, byScheduled, a.GetScheduledEventId(), t, "failed", a.GetFailure().GetMessage())
			case ev.GetActivityTaskTimedOutEventAttributes() != nil:
				a := ev.GetActivityTaskTimedOutEventAttributes()
				closeActivity(out, byScheduled, a.GetScheduledEventId(), t, "timed out", a.GetFailure().GetMessage())
			case ev.GetActivityTaskCanceledEventAttributes() != nil:
				closeActivity(out, byScheduled, ev.GetActivityTaskCanceledEventAttributes().GetScheduledEventId(), t, "canceled", "")
			}
		}
	}
	return out
}

func closeActivity(out []Activity, byScheduled map[int64]int, id int64, t time.Time, outcome, failure string) {
	if i, ok := byScheduled[id]; ok {
		out[i].Closed, out[i].Outcome = t, outcome
		if failure != "" {
			out[i].LastFailure = failure
		}
		if out[i].Attempts == 0 {
			out[i].Attempts = 1
		}
	}
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
	case "PrepareData":
		return pipeline.StagePrepareData
	case "TrainSFT":
		return pipeline.StageSFT
	case "TrainRewardModel":
		return strings.TrimSpace(pipeline.StageRewardModel + " " + in.Recipe)
	case "EvaluateRewardModel":
		// A comparison keeps each variant in runs/<id>/reward/<recipe>/.
		if dir := path.Dir(in.RewardModel.Path); strings.HasPrefix(dir, path.Join("runs", in.RunID, "reward")+"/") {
			return pipeline.StageRewardEval + " " + path.Base(dir)
		}
		return pipeline.StageRewardEval
	case "EvaluatePolicy":
		if in.Label != "" {
			return in.Label
		}
		return "eval"
	case "ReinforceIteration", "RolloutShard", "UpdatePolicy", "SaveCurve":
		return pipeline.StageReinforce
	case "WriteSummary", "WriteReport":
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
