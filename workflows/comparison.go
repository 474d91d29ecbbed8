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

// variantDeps returns the variants recipe starts from: the *-from-regression
// recipes reuse the helpfulness-regression model; ExPO also needs the
// scaled-BT model trained from it.
func variantDeps(name string) (from, strong string) {
	r, _ := reward.LookupRecipe(name)
	if !r.Regression || !r.HelpfulnessOnly || r.BT == "" {
		return "", ""
	}
	from = "regression-helpfulness"
	if r.ExPO {
		strong = "bt-scaled-from-regression"
	}
	return from, strong
}

// comparisonPlan orders the variants to train: the requested ones plus what
// they start from, each after its dependencies, in reward.Recipes order.
func comparisonPlan(requested []string) []pipeline.VariantReport {
	need := map[string]bool{}
	var add func(string)
	add = func(v string) {
		if v == "" || need[v] {
			return
		}
		need[v] = true
		from, strong := variantDeps(v)
		add(from)
		add(strong)
	}
	for _, v := range requested {
		add(v)
	}
	var plan []pipeline.VariantReport
	for _, r := range reward.Recipes {
		if need[r.Name] {
			from, _ := variantDeps(r.Name)
			plan = append(plan, pipeline.VariantReport{Recipe: r.Name, InitFrom: from, Requested: slices.Contains(requested, r.Name)})
		}
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
	t, spec, err := begin(ctx, input)
	if err != nil {
		return nil, err
	}
	progress := t.p
	runID := workflow.GetInfo(ctx).WorkflowExecution.ID
	var a *activities.Activities
	data, sft, err := t.prepareAndSFT(runID, spec)
	if err != nil {
		return nil, err
	}

	t.enter(StageRewardModels)
	plan := comparisonPlan(spec.Compare.Variants)
	progress.Metrics = map[string]float64{}
	futures := map[string]workflow.Future{}
	for i := range plan {
		v := &plan[i]
		progress.Variants = append(progress.Variants, VariantStatus{Recipe: v.Recipe, State: "waiting"})
		idx := len(progress.Variants) - 1 // an index: the slice grows while variants run
		setState := func(state string) { progress.Variants[idx].State = state }
		future, settable := workflow.NewFuture(ctx)
		futures[v.Recipe] = future
		from, strong := variantDeps(v.Recipe)
		workflow.Go(ctx, func(ctx workflow.Context) {
			in := pipeline.TrainInput{RunID: runID, Spec: spec, Data: data, Base: sft.Checkpoint, Recipe: v.Recipe}
			dep := func(name string) (*artifact.Ref, error) {
				if name == "" {
					return nil, nil
				}
				var d pipeline.VariantReport
				if err := futures[name].Get(ctx, &d); err != nil {
					return nil, err
				}
				return &d.Model.Checkpoint, nil
			}
			var err error
			if in.From, err = dep(from); err == nil {
				in.Strong, err = dep(strong)
			}
			if err != nil {
				settable.SetError(err)
				return
			}
			setState("training")
			var tr pipeline.TrainResult
			if err := workflow.ExecuteActivity(t.work.training, a.TrainRewardModel, in).Get(ctx, &tr); err != nil {
				settable.SetError(fmt.Errorf("train %s: %w", v.Recipe, err))
				return
			}
			v.Model, v.ExPOAlpha = pipeline.ModelOf(tr), tr.ExPOAlpha
			setState("evaluating")
			evalIn := pipeline.RewardEvalInput{RunID: runID, Spec: spec, Data: data, RewardModel: tr.Checkpoint}
			if err := workflow.ExecuteActivity(t.work.evaluation, a.EvaluateRewardModel, evalIn).Get(ctx, &v.Eval); err != nil {
				settable.SetError(fmt.Errorf("evaluate %s: %w", v.Recipe, err))
				return
			}
			setState("done")
			progress.Metrics[v.Recipe+".heldout_accuracy"] = v.Eval.HeldoutAccuracy
			progress.Completed = append(progress.Completed, fmt.Sprintf("reward model %s (held-out accuracy %.3f)", v.Recipe, v.Eval.HeldoutAccuracy))
			settable.Set(*v, nil)
		})
	}
	for _, v := range plan {
		if err := futures[v.Recipe].Get(ctx, nil); err != nil {
			return nil, t.fail(err)
		}
	}
	t.enter(pipeline.StageSummary)
	countTotalSteps(plan)
	report := &pipeline.ComparisonReport{WorkflowID: runID, Name: spec.Name, Seed: spec.Seed, Backend: spec.Backend, Data: data, SFT: pipeline.ModelOf(sft), Variants: plan}
	var paths pipeline.ReportPaths
	if err := workflow.ExecuteActivity(t.work.bookkeeping, a.WriteReport, pipeline.ReportInput{RunID: runID, Report: report}).Get(ctx, &paths); err != nil {
		return nil, t.fail(err)
	}
	report.ReportPath, report.MarkdownPath = paths.JSON, paths.Markdown
	progress.Completed = append(progress.Completed, pipeline.StageSummary)
	report.HTMLPath = t.writeReport(runID)
	t.enter(pipeline.StageDone)
	return report, nil
}
