package workflows

import (
	"encoding/json"
	"errors"
	"fmt"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/alignflow/alignflow/activities"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/pipeline"
)

// Search attributes the workflows keep current, so that runs can be listed
// by stage, iteration and reward, e.g.
// `temporal workflow list --query 'AlignmentStage="reinforce"'`.
var (
	StageAttribute      = temporal.NewSearchAttributeKeyKeyword("AlignmentStage")
	IterationAttribute  = temporal.NewSearchAttributeKeyInt64("AlignmentIteration")
	RewardMeanAttribute = temporal.NewSearchAttributeKeyFloat64("RewardMean")
)

// SearchAttributes are the attributes a namespace must have registered
// before workers run these workflows (alignflow's dev server and workers
// register them).
var SearchAttributes = map[string]enums.IndexedValueType{
	StageAttribute.GetName():      enums.INDEXED_VALUE_TYPE_KEYWORD,
	IterationAttribute.GetName():  enums.INDEXED_VALUE_TYPE_INT,
	RewardMeanAttribute.GetName(): enums.INDEXED_VALUE_TYPE_DOUBLE,
}

// run is one workflow run of either workflow: what it was asked, the choices
// it made between versions, how it schedules each kind of work and its
// visible state (what the progress query answers and the search attributes
// show).
type run struct {
	ctx  workflow.Context
	id   string // the workflow ID, which names the run's artifacts
	spec config.Spec
	v    versions
	work work // activity options by kind of work
	p    *Progress
	// inFlight are the samplings of asynchronous rollouts started and not
	// yet updated with, in iteration order (futures of Sampled); they are
	// of the iterations before sampledUpTo.
	inFlight    []workflow.Future
	sampledUpTo int
}

// begin registers the progress query, records the workflow versions taken
// when a run starts and validates the workflow ID and the spec input (cont
// is the alignment's continuation, nil when it starts); a bad ID or spec
// fails the run at once with a non-retryable InvalidSpec error naming the
// ID or the field.
func begin(ctx workflow.Context, input json.RawMessage, cont *Continuation) (*run, error) {
	r := &run{ctx: ctx, id: workflow.GetInfo(ctx).WorkflowExecution.ID, p: &Progress{Stage: pipeline.StageValidatingSpec}}
	if err := workflow.SetQueryHandler(ctx, ProgressQuery, func() (*Progress, error) { return r.p, nil }); err != nil {
		return nil, err
	}
	r.v.visible = since(ctx, "visibility", visibilityVersion)
	r.v.chooseChecked(ctx, cont)
	if r.v.Checked {
		if err := pipeline.CheckRunID(r.id); err != nil {
			r.enter(pipeline.StageFailed)
			return r, temporal.NewNonRetryableApplicationError(fmt.Sprintf("invalid workflow ID: %v", err), pipeline.ErrInvalidSpec, err)
		}
	}
	spec, err := config.Parse(input)
	switch {
	case err != nil:
	case r.v.Checked:
		err = spec.Validate()
	default:
		err = spec.ValidateRecorded() // as the run validated when it started
	}
	if err != nil {
		r.enter(pipeline.StageFailed)
		return r, temporal.NewNonRetryableApplicationError(fmt.Sprintf("invalid run spec: %v", err), pipeline.ErrInvalidSpec, err)
	}
	if r.v.phaseBudgets = since(ctx, "phase-budgets", phaseBudgetsVersion); !r.v.phaseBudgets {
		// Started before the regression phase had steps and a learning
		// rate of its own: it keeps training with the BT phase's.
		spec.Reward.RegressionSteps, spec.Reward.RegressionLearningRate = spec.Reward.Steps, spec.Reward.LearningRate
	}
	r.v.sized = since(ctx, "sized-timeouts", sizedTimeoutsVersion)
	r.spec = spec
	r.size(nil)
	if r.v.visible {
		memo := map[string]any{"name": spec.Name, "seed": spec.Seed, "backend": spec.Backend, "recipe": spec.Reward.Recipe}
		if err := workflow.UpsertMemo(ctx, memo); err != nil {
			return r, err
		}
	}
	return r, nil
}

// size sets the run's activity options for its prepared data d (nil
// before the data stage): the timeouts of a Hugging Face model's stages
// depend on its size, which the data stage learns.
func (r *run) size(d *pipeline.Data) { r.work = workFor(r.ctx, r.spec, r.v.sized, d) }

// stage runs one stage of the run: it enters the stage, executes activity
// with in under kind's options (one of r.work's), decodes its result into
// result and marks the stage done; a failure fails the run (see fail).
func (r *run) stage(name string, kind workflow.Context, activity, in, result any) error {
	r.enter(name)
	if err := workflow.ExecuteActivity(kind, activity, in).Get(r.ctx, result); err != nil {
		return r.fail(err)
	}
	r.done(name)
	return nil
}

// prepareAndSFT runs the stages every workflow starts with: the data, then
// the SFT policy (whose backbone the reward models start from).
func (r *run) prepareAndSFT() (data pipeline.Data, sft pipeline.TrainResult, err error) {
	var a *activities.Activities
	in := pipeline.PrepareDataInput{RunID: r.id, Spec: r.spec, FirstRunID: workflow.GetInfo(r.ctx).FirstRunID}
	if err = r.stage(pipeline.StagePrepareData, r.work.bookkeeping, a.PrepareData, in, &data); err != nil {
		return data, sft, err
	}
	r.size(&data)
	err = r.stage(pipeline.StageSFT, r.work.training, a.TrainSFT, pipeline.TrainInput{RunID: r.id, Spec: r.spec, Data: data}, &sft)
	return data, sft, err
}

// writeReport writes the run's report (runs started before reportVersion
// write none) and returns where its page is. A report that cannot be
// written does not fail the finished run: the summary is already saved,
// the failure shows in the progress, and `alignflow report` can write it
// later.
func (r *run) writeReport() string {
	if !r.v.report(r.ctx) {
		return ""
	}
	var a *activities.Activities
	r.enter(pipeline.StageReport)
	var rep pipeline.RunReport
	if err := workflow.ExecuteActivity(r.work.bookkeeping, a.WriteRunReport, pipeline.RunReportInput{RunID: r.id}).Get(r.ctx, &rep); err != nil {
		workflow.GetLogger(r.ctx).Warn("the run's report could not be written", "error", err)
		r.p.Completed = append(r.p.Completed, "report failed: "+err.Error())
		return ""
	}
	r.done(pipeline.StageReport)
	return rep.HTML
}

func (r *run) enter(stage string) {
	r.p.Stage = stage
	r.upsert(StageAttribute.ValueSet(stage))
}

func (r *run) done(stage string) { r.p.Completed = append(r.p.Completed, stage) }

func (r *run) upsert(updates ...temporal.SearchAttributeUpdate) {
	if !r.v.visible {
		return
	}
	if err := workflow.UpsertTypedSearchAttributes(r.ctx, updates...); err != nil {
		workflow.GetLogger(r.ctx).Warn("upsert search attributes", "error", err)
	}
}

// fail ends the run with the stage's name in the message, keeping the
// activity's error type (InvalidData, Diverged, ...) so users and tools can
// tell what to fix.
func (r *run) fail(err error) error {
	stage := r.p.Stage
	r.enter(pipeline.StageFailed)
	errType := "StageFailed"
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		errType = app.Type()
	}
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf("stage %s: %v", stage, err), errType, err)
}
