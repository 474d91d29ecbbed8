// Package workflows orchestrates alignflow's runs. Workflow code here is
// deterministic: no I/O, clocks or randomness outside Temporal's APIs; the work
// happens in activities, which exchange artifact references and small metrics.
package workflows

import (
	"encoding/json"
	"errors"
	"fmt"
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
	Checkpoint      artifact.Ref `json:"checkpoint"`
	Iterations      int          `json:"iterations"`
	GoldScoreBefore *float64     `json:"gold_score_before"`
	GoldScoreAfter  *float64     `json:"gold_score_after"`
	RewardBefore    float64      `json:"reward_before"`
	RewardAfter     float64      `json:"reward_after"`
	KLToReference   float64      `json:"kl_to_reference"`
	EndedBefore     float64      `json:"ended_fraction_before"`
	EndedAfter      float64      `json:"ended_fraction_after"`
	LengthBefore    float64      `json:"mean_length_before"`
	LengthAfter     float64      `json:"mean_length_after"`
	EvalPrompts     int          `json:"eval_prompts"`
}

// SamplePair shows one held-out prompt answered before and after alignment.
type SamplePair struct {
	Prompt string                `json:"prompt"`
	Before activities.SampleText `json:"before"`
	After  activities.SampleText `json:"after"`
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
	progress, spec, err := begin(ctx, input)
	if err != nil {
		return nil, err
	}
	progress.Iterations = spec.Reinforce.Iterations
	runID := workflow.GetInfo(ctx).WorkflowExecution.ID
	var a *activities.Activities
	enter := func(stage string) { progress.Stage = stage }
	done := func(stage string) { progress.Completed = append(progress.Completed, stage) }

	short := options(ctx, 10*time.Minute, 0)
	long := options(ctx, 2*time.Hour, 2*time.Minute)
	iter := options(ctx, 30*time.Minute, 5*time.Minute)

	data, sft, err := prepareAndSFT(ctx, progress, runID, spec)
	if err != nil {
		return nil, err
	}

	enter(activities.StageRewardModel)
	var rm activities.TrainResult
	if err := workflow.ExecuteActivity(long, a.TrainRewardModel, activities.TrainInput{RunID: runID, Spec: spec, Data: data, Base: sft.Checkpoint}).Get(ctx, &rm); err != nil {
		return nil, stageErr(progress, err)
	}
	done(activities.StageRewardModel)

	enter(activities.StageRewardEval)
	var rmEval activities.RewardEval
	if err := workflow.ExecuteActivity(short, a.EvaluateRewardModel, activities.RewardEvalInput{RunID: runID, Spec: spec, Data: data, RewardModel: rm.Checkpoint}).Get(ctx, &rmEval); err != nil {
		return nil, stageErr(progress, err)
	}
	done(activities.StageRewardEval)
	progress.Metrics = map[string]float64{"reward_model.heldout_accuracy": rmEval.HeldoutAccuracy}

	evalIn := activities.PolicyEvalInput{RunID: runID, Spec: spec, Data: data, Policy: sft.Checkpoint, Reference: sft.Checkpoint, RewardModel: rm.Checkpoint, Label: activities.StageEvalBefore}
	enter(activities.StageEvalBefore)
	var before activities.PolicyEval
	if err := workflow.ExecuteActivity(iter, a.EvaluatePolicy, evalIn).Get(ctx, &before); err != nil {
		return nil, stageErr(progress, err)
	}
	done(activities.StageEvalBefore)

	enter(activities.StageReinforce)
	pol := sft.Checkpoint
	var opt artifact.Ref
	var curve []activities.IterationMetrics
	for i := 0; i < spec.Reinforce.Iterations; i++ {
		var res activities.IterationResult
		in := activities.IterationInput{RunID: runID, Spec: spec, Data: data, Iteration: i, Policy: pol, Optimizer: opt, Reference: sft.Checkpoint, RewardModel: rm.Checkpoint}
		if err := workflow.ExecuteActivity(iter, a.ReinforceIteration, in).Get(ctx, &res); err != nil {
			return nil, stageErr(progress, err)
		}
		pol, opt = res.Policy, res.Optimizer
		progress.Iteration = i + 1
		progress.Last = &res
		curve = append(curve, res.Metrics())
	}
	done(activities.StageReinforce)

	evalIn.Policy, evalIn.Label = pol, activities.StageEvalAfter
	enter(activities.StageEvalAfter)
	var after activities.PolicyEval
	if err := workflow.ExecuteActivity(iter, a.EvaluatePolicy, evalIn).Get(ctx, &after); err != nil {
		return nil, stageErr(progress, err)
	}
	done(activities.StageEvalAfter)

	s := &Summary{
		WorkflowID: runID, Name: spec.Name, Seed: spec.Seed, Backend: spec.Backend, Data: data,
		SFT: model(sft),
		RewardModel: RewardModelSummary{StageModel: model(rm), Recipe: spec.Reward.Recipe, ExPOAlpha: rm.ExPOAlpha,
			HeldoutAccuracy: rmEval.HeldoutAccuracy, HeldoutPairs: rmEval.HeldoutPairs, TrainAccuracy: rmEval.TrainAccuracy,
			ByStrength: rmEval.ByStrength, Bench: rmEval.Bench},
		Policy: PolicySummary{
			Checkpoint: pol, Iterations: spec.Reinforce.Iterations,
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
		return nil, stageErr(progress, err)
	}
	done(activities.StageSummary)
	enter(activities.StageDone)
	return s, nil
}

// begin registers the progress query and validates the spec input; a bad
// spec fails the run at once with a non-retryable InvalidSpec error naming
// the field.
func begin(ctx workflow.Context, input json.RawMessage) (*Progress, config.Spec, error) {
	progress := &Progress{Stage: activities.StageValidatingSpec}
	if err := workflow.SetQueryHandler(ctx, ProgressQuery, func() (*Progress, error) { return progress, nil }); err != nil {
		return nil, config.Spec{}, err
	}
	spec, err := config.Parse(input)
	if err == nil {
		err = spec.Validate()
	}
	if err != nil {
		progress.Stage = activities.StageFailed
		return progress, spec, temporal.NewNonRetryableApplicationError(fmt.Sprintf("invalid run spec: %v", err), activities.ErrInvalidSpec, err)
	}
	return progress, spec, nil
}

// prepareAndSFT runs the stages every workflow starts with: the data, then
// the SFT policy (whose backbone the reward models start from).
func prepareAndSFT(ctx workflow.Context, progress *Progress, runID string, spec config.Spec) (activities.Data, activities.TrainResult, error) {
	var a *activities.Activities
	var data activities.Data
	var sft activities.TrainResult
	progress.Stage = activities.StagePrepareData
	if err := workflow.ExecuteActivity(options(ctx, 10*time.Minute, 0), a.PrepareData, activities.PrepareDataInput{RunID: runID, Spec: spec}).Get(ctx, &data); err != nil {
		return data, sft, stageErr(progress, err)
	}
	progress.Completed = append(progress.Completed, activities.StagePrepareData)
	progress.Stage = activities.StageSFT
	if err := workflow.ExecuteActivity(options(ctx, 2*time.Hour, 2*time.Minute), a.TrainSFT, activities.TrainInput{RunID: runID, Spec: spec, Data: data}).Get(ctx, &sft); err != nil {
		return data, sft, stageErr(progress, err)
	}
	progress.Completed = append(progress.Completed, activities.StageSFT)
	return data, sft, nil
}

func model(r activities.TrainResult) StageModel {
	return StageModel{Checkpoint: r.Checkpoint, Digest: r.Digest, Steps: r.Steps, FirstLoss: r.FirstLoss, FinalLoss: r.FinalLoss, Seconds: r.TrainSeconds}
}

// stageErr fails the run with the stage's name in the message, keeping the
// activity's error type (InvalidData, Diverged, ...) so users and tools can
// tell what to fix.
func stageErr(p *Progress, err error) error {
	stage := p.Stage
	p.Stage = activities.StageFailed
	errType := "StageFailed"
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		errType = app.Type()
	}
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf("stage %s: %v", stage, err), errType, err)
}
