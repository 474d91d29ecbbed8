package activities

import (
	"fmt"
	"path"
	"strings"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/ops/metrics"
	"github.com/alignflow/alignflow/pipeline"
)

// The points activities add to a run's metrics log (metrics.Log): a
// training phase's steps, saved with each checkpoint and at the phase's
// end (runPhase); one point per REINFORCE iteration, saved by the update;
// one per evaluation. Each is logged from the activity's result, so a run
// that reuses a stage still logs it.

// logPoint saves one point of a series of the run's log at once.
func (a *Activities) logPoint(runID string, s metrics.Series, step int, values map[string]float64) error {
	l := metrics.NewLog(a.Store, a.Metrics, runID, s)
	l.Add(step, values)
	return l.Flush()
}

// logIteration logs a REINFORCE iteration (step: the iteration, 1-based).
// seconds is the iteration's time with its rollouts.
func (a *Activities) logIteration(in pipeline.IterationInput, res pipeline.IterationResult, seconds float64) error {
	r := in.Spec.Reinforce
	v := map[string]float64{"reward_mean": res.RewardMean, "kl": res.KLMean, "eos_fraction": res.EndedFraction,
		"policy_loss": res.Loss, "seconds": seconds}
	for name, x := range map[string]*float64{"gold_mean": res.GoldMean, "verifier_mean": res.VerifierMean, "ratio_mean": res.RatioMean, "clip_fraction": res.ClipFraction} {
		if x != nil {
			v[name] = *x
		}
	}
	if sm := res.Sampling; sm != nil {
		v["sampling_rounds"], v["dropped_groups"], v["filled_groups"] = float64(sm.Rounds), float64(sm.Dropped), float64(sm.Filled)
	}
	if res.MeanLength > 0 {
		v["mean_length"] = res.MeanLength
		if seconds > 0 {
			v["tokens_per_second"] = res.MeanLength * float64(r.PromptsPerIteration*r.SamplesPerPrompt) / seconds
		}
	}
	return a.logPoint(in.RunID, metrics.Series{Stage: pipeline.StageReinforce, Recipe: in.Spec.Reward.Recipe}, res.Iteration+1, v)
}

// logPolicyEval logs an evaluation of a policy (eval-before or eval-after).
func (a *Activities) logPolicyEval(in pipeline.PolicyEvalInput, res pipeline.PolicyEval) error {
	v := map[string]float64{"reward": res.Reward, "kl_sequence": res.KLSequence, "kl_penalty": res.KLPenalty,
		"eos_fraction": res.EndedFraction, "mean_length": res.MeanLength, "prompts": float64(res.Prompts)}
	if res.GoldScore != nil {
		v["gold_score"] = *res.GoldScore
	}
	if res.Verifier != nil {
		v["verifier"] = *res.Verifier
	}
	return a.logPoint(in.RunID, metrics.Series{Stage: in.Label, Recipe: in.Spec.Reward.Recipe}, 0, v)
}

// logRewardEval logs a reward model's held-out accuracy, overall and by
// |strength| (accuracy_strength_N).
func (a *Activities) logRewardEval(in pipeline.RewardEvalInput, res pipeline.RewardEval) error {
	v := map[string]float64{"heldout_accuracy": res.HeldoutAccuracy, "train_accuracy": res.TrainAccuracy, "heldout_pairs": float64(res.HeldoutPairs)}
	for _, s := range res.ByStrength {
		v[fmt.Sprintf("accuracy_strength_%d", s.Strength)] = s.Accuracy
	}
	return a.logPoint(in.RunID, metrics.Series{Stage: pipeline.StageRewardEval, Recipe: recipeOf(in.RunID, in.RewardModel, in.Spec.Reward.Recipe)}, 0, v)
}

// recipeOf is the recipe of a reward model the run trained: a comparison
// keeps each variant in runs/<id>/reward/<recipe>/; else the spec's.
func recipeOf(runID string, model artifact.Ref, recipe string) string {
	dir := path.Dir(model.Path)
	if rewards, err := runPath(runID, "reward"); err == nil && strings.HasPrefix(dir, rewards+"/") {
		return path.Base(dir)
	}
	return recipe
}
