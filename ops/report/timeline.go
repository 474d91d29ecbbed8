package report

import (
	"fmt"
	"path"
	"slices"
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

// Busy is how long a REINFORCE run's rollout shards and its updates ran
// (from each last attempt's start to its end, overlapping activities of a
// kind counted once), and how long both ran at once: asynchronous rollouts
// (reinforce.max_staleness) overlap them, synchronous ones do not.
type Busy struct {
	Rollouts, Updates, Both time.Duration
}

// BusyOf measures acts' rollout shards and updates (Busy).
func BusyOf(acts []Activity) Busy {
	rollouts, updates := spans(acts, pipeline.ActivityRolloutShard), spans(acts, pipeline.ActivityUpdatePolicy)
	return Busy{Rollouts: total(rollouts), Updates: total(updates), Both: total(intersect(rollouts, updates))}
}

// span is a time interval [from, to).
type span struct{ from, to time.Time }

// spans are the union of the last attempts of acts of type typ, as
// disjoint intervals in order.
func spans(acts []Activity, typ string) []span {
	var in []span
	for _, a := range acts {
		if a.Type == typ && !a.Started.IsZero() && a.Closed.After(a.Started) {
			in = append(in, span{a.Started, a.Closed})
		}
	}
	slices.SortFunc(in, func(x, y span) int { return x.from.Compare(y.from) })
	var out []span
	for _, s := range in {
		if n := len(out); n > 0 && !s.from.After(out[n-1].to) {
			if s.to.After(out[n-1].to) {
				out[n-1].to = s.to
			}
			continue
		}
		out = append(out, s)
	}
	return out
}

// intersect is where two sets of disjoint ordered intervals overlap.
func intersect(a, b []span) []span {
	var out []span
	for i, j := 0, 0; i < len(a) && j < len(b); {
		from, to := a[i].from, a[i].to
		if b[j].from.After(from) {
			from = b[j].from
		}
		if b[j].to.Before(to) {
			to = b[j].to
		}
		if to.After(from) {
			out = append(out, span{from, to})
		}
		if a[i].to.Before(b[j].to) {
			i++
		} else {
			j++
		}
	}
	return out
}

func total(ss []span) time.Duration {
	var d time.Duration
	for _, s := range ss {
		d += s.to.Sub(s.from)
	}
	return d
}

// seconds formats a duration for tables: "12.3 s", "4 min 05 s".
func seconds(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return fmt.Sprintf("%d min %02d s", int(d.Minutes()), int(d.Seconds())%60)
}
