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

// Signals an alignment run answers. Pause and stop take effect between
// REINFORCE iterations; stop runs the final evaluation and completes.
const (
	PauseSignal  = "pause"
	ResumeSignal = "resume"
	StopSignal   = "stop"
)

// StagePaused is the stage a paused run shows.
const StagePaused = "paused"

// visibilityVersion is the workflow version from which runs keep search
// attributes and a memo; runs recorded before it replay without them.
const visibilityVersion = 1

// phaseBudgetsVersion is the workflow version from which the regression
// phase of a reward recipe has its own reward.regression_steps and
// reward.regression_learning_rate; runs started before it train that phase
// with reward.steps and reward.learning_rate, as they began.
const phaseBudgetsVersion = 1

// reportVersion is the workflow version from which a run ends by writing
// its report (charts, timeline, metrics.jsonl); runs recorded before it
// replay without it.
const reportVersion = 1

// writeReport writes the run's report (runs started before reportVersion
// write none) and returns where its page is. A report that cannot be
// written does not fail the finished run: the summary is already saved,
// the failure shows in the progress, and `alignflow report` can write it
// later.
func (t *tracker) writeReport(runID string) string {
	if workflow.GetVersion(t.ctx, "run-report", workflow.DefaultVersion, reportVersion) < reportVersion {
		return ""
	}
	var a *activities.Activities
	t.enter(pipeline.StageReport)
	var rep pipeline.RunReport
	if err := workflow.ExecuteActivity(t.work.bookkeeping, a.WriteRunReport, pipeline.RunReportInput{RunID: runID}).Get(t.ctx, &rep); err != nil {
		workflow.GetLogger(t.ctx).Warn("the run's report could not be written", "error", err)
		t.p.Completed = append(t.p.Completed, "report failed: "+err.Error())
		return ""
	}
	t.done(pipeline.StageReport)
	return rep.HTML
}

// tracker is a run's visible state: what the progress query answers and
// the search attributes show.
type tracker struct {
	ctx     workflow.Context
	p       *Progress
	visible bool
	work    work // activity options by kind of work
}

// begin registers the progress query, records the workflow version and
// validates the spec input; a bad spec fails the run at once with a
// non-retryable InvalidSpec error naming the field.
func begin(ctx workflow.Context, input json.RawMessage) (*tracker, config.Spec, error) {
	t := &tracker{ctx: ctx, p: &Progress{Stage: pipeline.StageValidatingSpec}}
	if err := workflow.SetQueryHandler(ctx, ProgressQuery, func() (*Progress, error) { return t.p, nil }); err != nil {
		return nil, config.Spec{}, err
	}
	t.visible = workflow.GetVersion(ctx, "visibility", workflow.DefaultVersion, visibilityVersion) >= visibilityVersion
	spec, err := config.Parse(input)
	if err == nil {
		err = spec.Validate()
	}
	if err != nil {
		t.enter(pipeline.StageFailed)
		return t, spec, temporal.NewNonRetryableApplicationError(fmt.Sprintf("invalid run spec: %v", err), pipeline.ErrInvalidSpec, err)
	}
	if workflow.GetVersion(ctx, "phase-budgets", workflow.DefaultVersion, phaseBudgetsVersion) < phaseBudgetsVersion {
		// Started before the regression phase had steps and a learning
		// rate of its own: it keeps training with the BT phase's.
		spec.Reward.RegressionSteps, spec.Reward.RegressionLearningRate = spec.Reward.Steps, spec.Reward.LearningRate
	}
	t.work = workFor(ctx, spec)
	if t.visible {
		memo := map[string]any{"name": spec.Name, "seed": spec.Seed, "backend": spec.Backend, "recipe": spec.Reward.Recipe}
		if err := workflow.UpsertMemo(ctx, memo); err != nil {
			return t, spec, err
		}
	}
	return t, spec, nil
}

func (t *tracker) enter(stage string) {
	t.p.Stage = stage
	t.upsert(StageAttribute.ValueSet(stage))
}

func (t *tracker) done(stage string) { t.p.Completed = append(t.p.Completed, stage) }

func (t *tracker) upsert(updates ...temporal.SearchAttributeUpdate) {
	if !t.visible {
		return
	}
	if err := workflow.UpsertTypedSearchAttributes(t.ctx, updates...); err != nil {
		workflow.GetLogger(t.ctx).Warn("upsert search attributes", "error", err)
	}
}

// fail ends the run with the stage's name in the message, keeping the
// activity's error type (InvalidData, Diverged, ...) so users and tools can
// tell what to fix.
func (t *tracker) fail(err error) error {
	stage := t.p.Stage
	t.enter(pipeline.StageFailed)
	errType := "StageFailed"
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		errType = app.Type()
	}
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf("stage %s: %v", stage, err), errType, err)
}

// listen starts handling the pause, resume and stop signals.
func (t *tracker) listen() {
	workflow.Go(t.ctx, func(ctx workflow.Context) {
		for {
			sel := workflow.NewSelector(ctx)
			for _, sig := range t.signals() {
				sel.AddReceive(workflow.GetSignalChannel(ctx, sig.name), func(c workflow.ReceiveChannel, _ bool) { c.Receive(ctx, nil); sig.apply() })
			}
			sel.Select(ctx)
		}
	})
}

// drain applies signals that arrived but were not handled yet, before the
// run continues as new: they would be lost with it.
func (t *tracker) drain() {
	for _, sig := range t.signals() {
		for workflow.GetSignalChannel(t.ctx, sig.name).ReceiveAsync(nil) {
			sig.apply()
		}
	}
}

// signals are the control signals in a fixed order: workflow code must not
// depend on map order.
func (t *tracker) signals() []struct {
	name  string
	apply func()
} {
	return []struct {
		name  string
		apply func()
	}{
		{PauseSignal, func() { t.p.Paused = true }},
		{ResumeSignal, func() { t.p.Paused = false }},
		{StopSignal, func() { t.p.StopRequested = true }},
	}
}

// gate waits while the run is paused (showing StagePaused) and reports
// whether a stop was asked for.
func (t *tracker) gate() (stop bool) {
	if t.p.Paused && !t.p.StopRequested {
		stage := t.p.Stage
		t.enter(StagePaused)
		_ = workflow.Await(t.ctx, func() bool { return !t.p.Paused || t.p.StopRequested })
		t.enter(stage)
	}
	return t.p.StopRequested
}

// prepareAndSFT runs the stages every workflow starts with: the data, then
// the SFT policy (whose backbone the reward models start from).
func (t *tracker) prepareAndSFT(runID string, spec config.Spec) (pipeline.Data, pipeline.TrainResult, error) {
	var a *activities.Activities
	var data pipeline.Data
	var sft pipeline.TrainResult
	t.enter(pipeline.StagePrepareData)
	if err := workflow.ExecuteActivity(t.work.bookkeeping, a.PrepareData, pipeline.PrepareDataInput{RunID: runID, Spec: spec}).Get(t.ctx, &data); err != nil {
		return data, sft, t.fail(err)
	}
	t.done(pipeline.StagePrepareData)
	t.enter(pipeline.StageSFT)
	if err := workflow.ExecuteActivity(t.work.training, a.TrainSFT, pipeline.TrainInput{RunID: runID, Spec: spec, Data: data}).Get(t.ctx, &sft); err != nil {
		return data, sft, t.fail(err)
	}
	t.done(pipeline.StageSFT)
	return data, sft, nil
}
