// Package workflows orchestrates alignflow's runs. Workflow code here is
// deterministic: no I/O, clocks or randomness outside Temporal's APIs; the work
// happens in activities, which exchange artifact references and small metrics.
package workflows

import (
	"encoding/json"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/alignflow/alignflow/activities"
	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/rewardbench"
)

// TaskQueue is the default task queue of alignflow workers.
const TaskQueue = "alignflow"

// AlignmentName is the registered workflow type.
const AlignmentName = "Alignment"

// ProgressQuery returns a Progress.
const ProgressQuery = "progress"

// Progress is the live state of a run, answered by the "progress" query.
type Progress struct {
	Stage      string                      `json:"stage"`
	Iteration  int                         `json:"iteration"`  // REINFORCE iterations finished
	Iterations int                         `json:"iterations"` // planned
	Completed  []string                    `json:"completed"`  // stages finished, in order
	Last       *activities.IterationResult `json:"last_iteration,omitempty"`
	Metrics    map[string]float64          `json:"metrics,omitempty"`
	// Paused and StopRequested reflect the pause, resume and stop signals.
	Paused        bool `json:"paused,omitempty"`
	StopRequested bool `json:"stop_requested,omitempty"`
	// Variants are the comparison's reward models and their states.
	Variants []VariantStatus `json:"variants,omitempty"`
}

// Summary is the result of an Alignment run; it is also written to
// <data-dir>/runs/<workflow-id>/summary.json.
type Summary struct {
	WorkflowID  string                        `json:"workflow_id"`
	Name        string                        `json:"name"`
	Seed        int64                         `json:"seed"`
	Backend     string                        `json:"backend"`
	Data        activities.Data               `json:"data"`
	SFT         StageModel                    `json:"sft"`
	RewardModel RewardModelSummary            `json:"reward_model"`
	Policy      PolicySummary                 `json:"policy"`
	Curve       []activities.IterationMetrics `json:"curve"`
	Samples     []SamplePair                  `json:"samples"`
	SummaryPath string                        `json:"summary_path"`
}

// StageModel describes a trained model.
type StageModel struct {
	Checkpoint artifact.Ref `json:"checkpoint"`
	Digest     string       `json:"checkpoint_sha256"`
	Steps      int          `json:"steps"`
	FirstLoss  float64      `json:"first_loss"`
	FinalLoss  float64      `json:"final_loss"`
	Seconds    float64      `json:"seconds"`
	// ResumedFrom is the step its last attempt resumed from after a failure.
	ResumedFrom int `json:"resumed_from_step,omitempty"`
}

// RewardModelSummary is the reward model and its held-out quality.
type RewardModelSummary struct {
	StageModel
	Recipe          string  `json:"recipe"`
	ExPOAlpha       float64 `json:"expo_alpha,omitempty"`
	HeldoutAccuracy float64 `json:"heldout_accuracy"`
	HeldoutPairs    int     `json:"heldout_pairs"`
	TrainAccuracy   float64 `json:"train_accuracy"`
	// ByStrength and Bench are the validation scores the comparison reports,
	// so runs with different recipes can be set side by side.
	ByStrength []activities.StrengthAccuracy `json:"by_strength,omitempty"`
	Bench      *rewardbench.Report           `json:"bench,omitempty"`
}

// PolicySummary compares the SFT policy with the aligned one on the same
// held-out prompts and sampling seed.
type PolicySummary struct {
	Checkpoint artifact.Ref `json:"checkpoint"`
	// Digest is the sha256 of the final policy's weights: a resumed run
	// that ends where an uninterrupted one does has the same.
	Digest          string   `json:"checkpoint_sha256"`
	Iterations      int      `json:"iterations"` // run; fewer than planned after a stop signal
	StoppedEarly    bool     `json:"stopped_early,omitempty"`
	GoldScoreBefore *float64 `json:"gold_score_before"`
	GoldScoreAfter  *float64 `json:"gold_score_after"`
	RewardBefore    float64  `json:"reward_before"`
	RewardAfter     float64  `json:"reward_after"`
	KLToReference   float64  `json:"kl_to_reference"`
	EndedBefore     float64  `json:"ended_fraction_before"`
	EndedAfter      float64  `json:"ended_fraction_after"`
	LengthBefore    float64  `json:"mean_length_before"`
	LengthAfter     float64  `json:"mean_length_after"`
	EvalPrompts     int      `json:"eval_prompts"`
}

// SamplePair shows one held-out prompt answered before and after alignment.
type SamplePair struct {
	Prompt string                `json:"prompt"`
	Before activities.SampleText `json:"before"`
	After  activities.SampleText `json:"after"`
}

// heartbeatTimeout is the spec's; a run recorded before the field existed
// decodes it as 0 and gets the former two minutes.
func heartbeatTimeout(spec config.Spec) time.Duration {
	if spec.HeartbeatTimeoutSeconds <= 0 {
		return 2 * time.Minute
	}
	return time.Duration(spec.HeartbeatTimeoutSeconds) * time.Second
}

func options(ctx workflow.Context, startToClose, heartbeat time.Duration) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: startToClose,
		HeartbeatTimeout:    heartbeat,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        30 * time.Second,
			MaximumAttempts:        5,
			NonRetryableErrorTypes: activities.NonRetryable,
		},
	})
}

// Alignment runs RLHF end to end: prepare matched data, SFT the initial
// policy, train and evaluate the reward model, evaluate the SFT policy, run
// REINFORCE iterations, evaluate the aligned policy and write the summary.
//
// Its input is the run spec as JSON. It is taken raw so that a spec given
// through the temporal CLI is parsed and validated here, and a bad one fails
// the run with a non-retryable error that names the field, instead of failing
// workflow tasks forever on decoding.
func Alignment(ctx workflow.Context, input json.RawMessage) (*Summary, error) {
	t, spec, err := begin(ctx, input)
	if err != nil {
		return nil, err
	}
	progress := t.p
	progress.Iterations = spec.Reinforce.Iterations
	t.listen()
	runID := workflow.GetInfo(ctx).WorkflowExecution.ID
	var a *activities.Activities
	enter, done := t.enter, t.done

	short := options(ctx, 10*time.Minute, 0)
	long := options(ctx, 2*time.Hour, heartbeatTimeout(spec))
	iter := options(ctx, 30*time.Minute, heartbeatTimeout(spec))

	data, sft, err := t.prepareAndSFT(runID, spec)
	if err != nil {
		return nil, err
	}

	enter(activities.StageRewardModel)
	var rm activities.TrainResult
	if err := workflow.ExecuteActivity(long, a.TrainRewardModel, activities.TrainInput{RunID: runID, Spec: spec, Data: data, Base: sft.Checkpoint}).Get(ctx, &rm); err != nil {
		return nil, t.fail(err)
	}
	done(activities.StageRewardModel)

	enter(activities.StageRewardEval)
	var rmEval activities.RewardEval
	if err := workflow.ExecuteActivity(short, a.EvaluateRewardModel, activities.RewardEvalInput{RunID: runID, Spec: spec, Data: data, RewardModel: rm.Checkpoint}).Get(ctx, &rmEval); err != nil {
		return nil, t.fail(err)
	}
	done(activities.StageRewardEval)
	progress.Metrics = map[string]float64{"reward_model.heldout_accuracy": rmEval.HeldoutAccuracy}

	evalIn := activities.PolicyEvalInput{RunID: runID, Spec: spec, Data: data, Policy: sft.Checkpoint, Reference: sft.Checkpoint, RewardModel: rm.Checkpoint, Label: activities.StageEvalBefore}
	enter(activities.StageEvalBefore)
	var before activities.PolicyEval
	if err := workflow.ExecuteActivity(iter, a.EvaluatePolicy, evalIn).Get(ctx, &before); err != nil {
		return nil, t.fail(err)
	}
	done(activities.StageEvalBefore)

	enter(activities.StageReinforce)
	pol, polDigest := sft.Checkpoint, sft.Digest
	var opt artifact.Ref
	var curve []activities.IterationMetrics
	for i := 0; i < spec.Reinforce.Iterations; i++ {
		if t.gate() {
			break
		}
		var res activities.IterationResult
		in := activities.IterationInput{RunID: runID, Spec: spec, Data: data, Iteration: i, Policy: pol, Optimizer: opt, Reference: sft.Checkpoint, RewardModel: rm.Checkpoint}
		if err := workflow.ExecuteActivity(iter, a.ReinforceIteration, in).Get(ctx, &res); err != nil {
			return nil, t.fail(err)
		}
		pol, opt, polDigest = res.Policy, res.Optimizer, res.PolicyDigest
		progress.Iteration = i + 1
		progress.Last = &res
		t.upsert(IterationAttribute.ValueSet(int64(i+1)), RewardMeanAttribute.ValueSet(res.RewardMean))
		curve = append(curve, res.Metrics())
	}
	done(activities.StageReinforce)

	evalIn.Policy, evalIn.Label = pol, activities.StageEvalAfter
	enter(activities.StageEvalAfter)
	var after activities.PolicyEval
	if err := workflow.ExecuteActivity(iter, a.EvaluatePolicy, evalIn).Get(ctx, &after); err != nil {
		return nil, t.fail(err)
	}
	done(activities.StageEvalAfter)

	s := &Summary{
		WorkflowID: runID, Name: spec.Name, Seed: spec.Seed, Backend: spec.Backend, Data: data,
		SFT: model(sft),
		RewardModel: RewardModelSummary{StageModel: model(rm), Recipe: spec.Reward.Recipe, ExPOAlpha: rm.ExPOAlpha,
			HeldoutAccuracy: rmEval.HeldoutAccuracy, HeldoutPairs: rmEval.HeldoutPairs, TrainAccuracy: rmEval.TrainAccuracy,
			ByStrength: rmEval.ByStrength, Bench: rmEval.Bench},
		Policy: PolicySummary{
			Checkpoint: pol, Digest: polDigest, Iterations: len(curve), StoppedEarly: len(curve) < spec.Reinforce.Iterations,
			GoldScoreBefore: before.GoldScore, GoldScoreAfter: after.GoldScore,
			RewardBefore: before.Reward, RewardAfter: after.Reward, KLToReference: after.KLToReference,
			EndedBefore: before.EndedFraction, EndedAfter: after.EndedFraction,
			LengthBefore: before.MeanLength, LengthAfter: after.MeanLength, EvalPrompts: after.Prompts,
		},
		Curve: curve,
	}
	for i := range min(len(before.Samples), len(after.Samples)) {
		s.Samples = append(s.Samples, SamplePair{Prompt: before.Samples[i].Prompt, Before: before.Samples[i], After: after.Samples[i]})
	}

	enter(activities.StageSummary)
	if err := workflow.ExecuteActivity(short, a.WriteSummary, activities.SummaryInput{RunID: runID, Summary: s}).Get(ctx, &s.SummaryPath); err != nil {
		return nil, t.fail(err)
	}
	done(activities.StageSummary)
	enter(activities.StageDone)
	return s, nil
}

func model(r activities.TrainResult) StageModel {
	return StageModel{Checkpoint: r.Checkpoint, Digest: r.Digest, Steps: r.Steps, FirstLoss: r.FirstLoss, FinalLoss: r.FinalLoss, Seconds: r.TrainSeconds, ResumedFrom: r.ResumedFrom}
}
