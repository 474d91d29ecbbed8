package workflows

import (
	"encoding/json"
	"fmt"
	"slices"

	"go.temporal.io/sdk/workflow"

	"github.com/alignflow/alignflow/activities"
	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/reward"
)

// ComparisonName is the registered type of the reward-model comparison.
const ComparisonName = "RewardModelComparison"

// StageRewardModels is the comparison's stage while its variants train.
const StageRewardModels = "reward-models"

// VariantStatus is one variant's state in the comparison's progress.
type VariantStatus struct {
	Recipe string `json:"recipe"`
	State  string `json:"state"` // waiting, training, evaluating, done
}

// variantDeps returns the variants a recipe starts from (reward.Recipe.StartsFrom).
func variantDeps(name string) (from, strong string) {
	r, _ := reward.LookupRecipe(name)
	return r.StartsFrom()
}

// comparisonPlan orders the variants to train: the requested ones plus what
// they start from, each after its dependencies (reward.Plan).
func comparisonPlan(requested []string) []pipeline.VariantReport {
	var plan []pipeline.VariantReport
	for _, r := range reward.Plan(requested) {
		from, _ := r.StartsFrom()
		plan = append(plan, pipeline.VariantReport{Recipe: r.Name, InitFrom: from, Requested: slices.Contains(requested, r.Name)})
	}
	return plan
}

// countTotalSteps sets each variant's TotalSteps: its own steps plus those
// of the model it starts from (for ExPO, the scaled-BT model, which already
// counts the regression it started from). The plan lists dependencies first.
func countTotalSteps(plan []pipeline.VariantReport) {
	total := map[string]int{}
	for i := range plan {
		v := &plan[i]
		from, strong := variantDeps(v.Recipe)
		if strong != "" {
			from = strong
		}
		v.TotalSteps = v.Model.Steps + total[from]
		total[v.Recipe] = v.TotalSteps
	}
}

// RewardModelComparison trains reward-model variants side by side on the same
// matched data and SFT backbone, as the paper's comparison does, and writes a
// report. Variants run as parallel activities (as many at once as workers
// allow); dependent ones wait for the model they start from.
//
// Its input is the run spec as JSON (compare.variants selects the variants),
// validated here like Alignment's.
func RewardModelComparison(ctx workflow.Context, input json.RawMessage) (*pipeline.ComparisonReport, error) {
	r, err := begin(ctx, input, nil)
	if err != nil {
		return nil, err
	}
	var a *activities.Activities
	data, sft, err := r.prepareAndSFT()
	if err != nil {
		return nil, err
	}

	r.enter(StageRewardModels)
	plan := comparisonPlan(r.spec.Compare.Variants)
	base := pipeline.TrainInput{RunID: r.id, Spec: r.spec, Data: data, Base: sft.Checkpoint}
	if err := r.trainVariants(base, plan); err != nil {
		return nil, r.fail(err)
	}

	countTotalSteps(plan)
	report := &pipeline.ComparisonReport{WorkflowID: r.id, Name: r.spec.Name, Seed: r.spec.Seed, Backend: r.spec.Backend,
		Data: data, SFT: pipeline.ModelOf(sft), Variants: plan}
	var paths pipeline.ReportPaths
	if err := r.stage(pipeline.StageSummary, r.work.bookkeeping, a.WriteReport, pipeline.ReportInput{RunID: r.id, Report: report}, &paths); err != nil {
		return nil, err
	}
	report.ReportPath, report.MarkdownPath = paths.JSON, paths.Markdown
	report.HTMLPath = r.writeReport()
	r.enter(pipeline.StageDone)
	return report, nil
}

// variants are a comparison's reward models while they train: each one's
// future is its VariantReport, trained and evaluated.
type variants struct {
	r       *run
	base    pipeline.TrainInput // what every variant trains from: the spec, data and SFT backbone
	futures map[string]workflow.Future
}

// trainVariants trains and evaluates the plan's variants, filling them in:
// each in a coroutine of its own, as soon as the models it starts from are
// trained. It returns the first failure in plan order.
func (r *run) trainVariants(base pipeline.TrainInput, plan []pipeline.VariantReport) error {
	vs := variants{r: r, base: base, futures: map[string]workflow.Future{}}
	r.p.Metrics = map[string]float64{}
	for i := range plan {
		v := &plan[i]
		r.p.Variants = append(r.p.Variants, VariantStatus{Recipe: v.Recipe, State: "waiting"})
		status := len(r.p.Variants) - 1 // an index: the slice grows while variants run
		future, settable := workflow.NewFuture(r.ctx)
		vs.futures[v.Recipe] = future
		workflow.Go(r.ctx, func(ctx workflow.Context) {
			if err := vs.train(ctx, v, status); err != nil {
				settable.SetError(err)
				return
			}
			settable.Set(*v, nil)
		})
	}
	for _, v := range plan {
		if err := vs.futures[v.Recipe].Get(r.ctx, nil); err != nil {
			return err
		}
	}
	return nil
}

// train trains variant v from the models it starts from, once they are
// trained, and evaluates it, showing its state in the progress's Variants
// at status.
func (vs variants) train(ctx workflow.Context, v *pipeline.VariantReport, status int) error {
	var a *activities.Activities
	p := vs.r.p
	in := vs.base
	in.Recipe = v.Recipe
	from, strong := variantDeps(v.Recipe)
	var err error
	if in.From, err = vs.model(ctx, from); err == nil {
		in.Strong, err = vs.model(ctx, strong)
	}
	if err != nil {
		return err
	}
	p.Variants[status].State = "training"
	var tr pipeline.TrainResult
	if err := workflow.ExecuteActivity(vs.r.work.training, a.TrainRewardModel, in).Get(ctx, &tr); err != nil {
		return fmt.Errorf("train %s: %w", v.Recipe, err)
	}
	v.Model, v.ExPOAlpha = pipeline.ModelOf(tr), tr.ExPOAlpha
	p.Variants[status].State = "evaluating"
	evalIn := pipeline.RewardEvalInput{RunID: in.RunID, Spec: in.Spec, Data: in.Data, RewardModel: tr.Checkpoint}
	if err := workflow.ExecuteActivity(vs.r.work.evaluation, a.EvaluateRewardModel, evalIn).Get(ctx, &v.Eval); err != nil {
		return fmt.Errorf("evaluate %s: %w", v.Recipe, err)
	}
	p.Variants[status].State = "done"
	p.Metrics[v.Recipe+".heldout_accuracy"] = v.Eval.HeldoutAccuracy
	p.Completed = append(p.Completed, fmt.Sprintf("reward model %s (held-out accuracy %.3f)", v.Recipe, v.Eval.HeldoutAccuracy))
	return nil
}

// model waits for variant name's model and returns its checkpoint (nil for
// name "": none).
func (vs variants) model(ctx workflow.Context, name string) (*artifact.Ref, error) {
	if name == "" {
		return nil, nil
	}
	var d pipeline.VariantReport
	if err := vs.futures[name].Get(ctx, &d); err != nil {
		return nil, err
	}
	return &d.Model.Checkpoint, nil
}
