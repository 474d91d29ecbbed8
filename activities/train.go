package activities

import (
	"context"
	"fmt"
	"time"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/data/helpsteer"
	"github.com/alignflow/alignflow/model/lora"
	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/ops/metrics"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/policy"
	"github.com/alignflow/alignflow/reinforce"
	"github.com/alignflow/alignflow/reward"
)

// TrainSFT fine-tunes a fresh policy on the training split's rated responses.
func (a *Activities) TrainSFT(ctx context.Context, in pipeline.TrainInput) (pipeline.TrainResult, error) {
	ctx, _, stop := a.live(ctx, pipeline.Progress{Stage: pipeline.StageSFT, Total: in.Spec.SFT.Steps})
	defer stop()
	res, err := reuse(ctx, a, pipeline.StageSFT, in.Spec, in.RunID, in, func() (pipeline.TrainResult, error) { return a.trainSFT(ctx, in) })
	return res, classify(err)
}

func (a *Activities) trainSFT(ctx context.Context, in pipeline.TrainInput) (pipeline.TrainResult, error) {
	start := time.Now()
	spec := in.Spec
	j, err := a.setup(ctx, spec, in.Data)
	if err != nil {
		return pipeline.TrainResult{}, err
	}
	defer j.release()
	prompts, responses, err := j.ds.SFT()
	if err != nil {
		return pipeline.TrainResult{}, err
	}
	resume, err := a.resumePoint(ctx)
	if err != nil {
		return pipeline.TrainResult{}, err
	}
	lc, err := adapterOf(spec, j.m.cfg)
	if err != nil {
		return pipeline.TrainResult{}, err
	}
	// The bundled model starts fresh, and trains every weight: random
	// weights hold nothing for an adapter to adapt. A Hugging Face model
	// starts from its weights, which an adapter only reads.
	if j.m.base == nil {
		lc = nil
	}
	base, tr := j.m.base, j.eng.sft
	if base == nil {
		base = policy.Init(j.m.cfg, uint64(spec.Seed))
	}
	params := base
	switch {
	case lc != nil:
		if params, err = a.sftAdapter(spec, in.Data, j.m.cfg, *lc); err != nil {
			return pipeline.TrainResult{}, err
		}
		tr = a.adapterTrainer(j.eng, spec.Seed, adapterSFT, reinforce.Objective{}, *lc, params, base)
	case j.m.base != nil:
		params = base.Clone()
	}
	lengths := make([]int, len(prompts))
	for i := range prompts {
		lengths[i] = len(prompts[i]) + len(responses[i])
	}
	bs := spec.SFT.BatchSize
	ph := newPhase("sft", pipeline.StageSFT, "sft", spec.Seed, "sft", lengths, bs, params)
	ph.steps, ph.every, ph.lr, ph.series = spec.SFT.Steps, spec.SFT.CheckpointEvery, spec.SFT.LearningRate, metrics.Series{Stage: pipeline.StageSFT}
	res, err := a.runPhase(ctx, in.RunID, ph, resume, tr, func(rows []int) (optim.Batch, error) {
		batch, err := policy.MakeBatch(j.m.cfg, bs, pick(prompts, rows), pick(responses, rows))
		if err != nil {
			return nil, invalidData(err)
		}
		return batch, nil
	})
	if err != nil {
		return res, err
	}
	if lc != nil {
		if res.Adapter, err = a.putWeights(in.RunID, "sft/adapter.safetensors", params); err != nil {
			return res, err
		}
		if params, err = lora.Merge(base, params); err != nil {
			return res, err
		}
	}
	return a.saveModel(in.RunID, "sft/policy.safetensors", params, res, start)
}

// pick returns the rows of s, in order.
func pick[T any](s []T, rows []int) []T {
	out := make([]T, len(rows))
	for k, i := range rows {
		out[k] = s[i]
	}
	return out
}

// putWeights stores a stage's weights (a model, an adapter) at rel in the
// run's folder.
func (a *Activities) putWeights(runID, rel string, set *weights.Set) (*artifact.Ref, error) {
	key, err := runPath(runID, rel)
	if err != nil {
		return nil, err
	}
	ref, err := a.Store.PutWeights(key, set)
	if err != nil {
		return nil, err
	}
	return &ref, nil
}

func (a *Activities) saveModel(runID, rel string, params *weights.Set, res pipeline.TrainResult, start time.Time) (pipeline.TrainResult, error) {
	ref, err := a.putWeights(runID, rel, params)
	if err != nil {
		return res, err
	}
	res.Checkpoint = *ref
	res.Digest = params.Digest()
	res.TrainSeconds = time.Since(start).Seconds()
	return res, nil
}

// TrainRewardModel trains a reward model by its recipe: the regression
// phase, the Bradley-Terry phase and ExPO's extrapolation, each where the
// recipe has it (reward.Recipe), starting from reward.path or the SFT
// policy's backbone.
func (a *Activities) TrainRewardModel(ctx context.Context, in pipeline.TrainInput) (pipeline.TrainResult, error) {
	ctx, _, stop := a.live(ctx, pipeline.Progress{Stage: pipeline.StageRewardModel})
	defer stop()
	res, err := reuse(ctx, a, pipeline.StageRewardModel, in.Spec, in.RunID, in, func() (pipeline.TrainResult, error) { return a.trainRewardModel(ctx, in) })
	return res, classify(err)
}

func (a *Activities) trainRewardModel(ctx context.Context, in pipeline.TrainInput) (pipeline.TrainResult, error) {
	start := time.Now()
	t, err := a.newRewardTraining(ctx, in)
	if err != nil {
		return pipeline.TrainResult{}, err
	}
	defer t.j.release()
	if t.recipe.Regression {
		if err := t.regression(); err != nil {
			return t.res, err
		}
	}
	if t.recipe.BT != "" {
		if err := t.bradleyTerry(); err != nil {
			return t.res, err
		}
	}
	if t.recipe.ExPO {
		if err := t.extrapolate(); err != nil {
			return t.res, err
		}
	}
	if t.frozen != nil { // an adapter and head over the SFT backbone
		if t.res.Adapter, err = a.putWeights(in.RunID, t.dir+"/adapter.safetensors", t.params); err != nil {
			return t.res, err
		}
		if t.params, err = lora.Merge(t.frozen, t.params); err != nil {
			return t.res, err
		}
	}
	t.params.Metadata["recipe"] = t.recipe.Name
	return a.saveModel(in.RunID, t.dir+"/model.safetensors", t.params, t.res, start)
}

// extrapolate is ExPO's step: alpha chosen on the validation pairs. With
// adapters it extrapolates the merged models, which no adapter of the
// same rank holds, so the result is a whole model and has no adapter.
func (t *rewardTraining) extrapolate() error {
	held, _, _ := t.j.ds.Pairs(helpsteer.SplitValidation)
	weak, strong := t.weak, t.params
	if t.frozen != nil {
		var err error
		if weak, err = lora.Merge(t.frozen, weak); err != nil {
			return err
		}
		if strong, err = lora.Merge(t.frozen, strong); err != nil {
			return err
		}
		t.frozen = nil
	}
	var err error
	t.params, t.res.ExPOAlpha, err = t.j.eng.reward.ChooseExPO(weak, strong, held, t.in.Spec.Reinforce.BatchSize)
	return err
}

// trainer is the phase's optimizer: the engines' for a whole model, an
// adapter trainer over t.frozen with lora.
func (t *rewardTraining) trainer(kind string, whole *optim.Trainer) *optim.Trainer {
	if t.frozen == nil {
		return whole
	}
	return t.a.adapterTrainer(t.j.eng, t.in.Spec.Seed, kind, reinforce.Objective{}, *t.lc, t.params, t.frozen)
}

// rewardTraining is one reward model's training as it goes through its
// recipe's phases: the weights so far, the regression model ExPO
// extrapolates from, and the steps and losses of the phases done.
type rewardTraining struct {
	a          *Activities
	ctx        context.Context
	in         pipeline.TrainInput
	j          *job
	recipe     reward.Recipe
	stage, dir string
	resume     *trainCheckpoint
	params     *weights.Set
	weak       *weights.Set  // the regression model (ExPO recipes)
	weakRef    *artifact.Ref // its stored copy, for a resumed BT phase
	res        pipeline.TrainResult
	// lc and frozen are the adapter's shape and the backbone it trains
	// over, with lora; params then holds the adapter and the head.
	lc     *lora.Config
	frozen *weights.Set
}

// newRewardTraining loads what a reward model starts from: the recipe
// (in.Recipe in a comparison, where each variant has a folder of its own,
// else the spec's), the checkpoint of an earlier attempt, and the weights:
// reward.path's when the run has one, else a fresh head on the SFT backbone.
// Unless it fails, the caller releases t.j.
func (a *Activities) newRewardTraining(ctx context.Context, in pipeline.TrainInput) (_ *rewardTraining, err error) {
	t := &rewardTraining{a: a, ctx: ctx, in: in, stage: pipeline.StageRewardModel, dir: "reward"}
	name := in.Spec.Reward.Recipe
	if in.Recipe != "" {
		name, t.stage, t.dir = in.Recipe, pipeline.StageRewardModel+" "+in.Recipe, "reward/"+in.Recipe
	}
	if t.recipe, err = reward.LookupRecipe(name); err != nil {
		return nil, invalidSpec(err)
	}
	if t.j, err = a.setup(ctx, in.Spec, in.Data); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			t.j.release()
		}
	}()
	if t.resume, err = a.resumePoint(ctx); err != nil {
		return nil, err
	}
	if m := in.Data.Model; m != nil && m.Reward != nil {
		t.params, err = a.Store.GetWeights(*m.Reward)
	} else {
		var base *weights.Set
		if base, err = a.Store.GetWeights(in.Base); err != nil {
			return nil, err
		}
		t.params, err = reward.InitFromBackbone(base, uint64(in.Spec.Seed))
	}
	if err != nil {
		return nil, err
	}
	if t.lc, err = adapterOf(in.Spec, t.j.m.cfg); err != nil || t.lc == nil {
		return t, err
	}
	if in.From != nil || in.Strong != nil {
		return nil, invalidSpec(fmt.Errorf("spec field lora: the reward-model comparison trains every weight; run it without lora"))
	}
	ad, err := freshAdapter(t.j.m.cfg, *t.lc, in.Spec.Seed, "reward")
	if err != nil {
		return nil, err
	}
	// The head is trained in full beside the adapter (PEFT's modules_to_save).
	t.params, t.frozen = lora.Trainable(t.params, ad, []string{reward.HeadW, reward.HeadB})
	return t, nil
}

// add counts a finished phase in the stage's result.
func (t *rewardTraining) add(r pipeline.TrainResult) {
	if t.res.Steps == 0 {
		t.res.FirstLoss = r.FirstLoss
	}
	if r.ResumedFrom > 0 {
		t.res.ResumedFrom = t.res.Steps + r.ResumedFrom
	}
	t.res.Steps += r.Steps
	t.res.FinalLoss = r.FinalLoss
}

// regression is the regression phase: taken from in.From (a comparison's
// helpfulness-regression model), left done by a checkpoint of the BT phase
// (which carries its result and the regression model), or trained here.
func (t *rewardTraining) regression() error {
	var err error
	switch {
	case t.in.From != nil:
		if t.params, err = t.a.Store.GetWeights(*t.in.From); err != nil {
			return err
		}
	case t.resume != nil && t.recipe.BT != "" && t.resume.Phase == string(t.recipe.BT):
		t.res, t.weakRef = t.resume.Earlier, t.resume.Weak
		if t.weakRef != nil {
			t.weak, err = t.a.Store.GetWeights(*t.weakRef)
		}
		return err
	default:
		if err := t.fitRegression(); err != nil {
			return err
		}
		if t.recipe.ExPO && t.in.Strong == nil { // kept for a resumed BT phase
			t.weak = t.params.Clone()
			key, err := runPath(t.in.RunID, t.dir, "regression.safetensors")
			if err != nil {
				return err
			}
			ref, err := t.a.Store.PutWeights(key, t.weak)
			if err != nil {
				return err
			}
			t.weakRef = &ref
			return nil
		}
	}
	t.weak = t.params.Clone()
	return nil
}

// fitRegression trains params in place to predict the training split's
// ratings (all five attributes, or helpfulness only).
func (t *rewardTraining) fitRegression() error {
	spec, rows := t.in.Spec, t.j.ds.Rated(helpsteer.SplitTrain)
	if len(rows) == 0 {
		return invalidData(fmt.Errorf("no training ratings fit model.max_len %d", t.j.ds.MaxLen))
	}
	if err := reward.InitHeadBias(t.params, rows); err != nil {
		return err
	}
	lengths := make([]int, len(rows))
	for i, r := range rows {
		lengths[i] = len(r.Sequence)
	}
	bs, name := spec.Reward.BatchSize, t.recipe.RegressionPhase()
	ph := newPhase(name, t.stage+": "+name, t.dir, spec.Seed, "reward-regression", lengths, bs, t.params)
	ph.steps, ph.every, ph.lr = spec.Reward.RegressionSteps, spec.Reward.CheckpointEvery, spec.Reward.RegressionLearningRate
	ph.series = metrics.Series{Stage: pipeline.StageRewardModel, Recipe: t.recipe.Name, Phase: name}
	r, err := t.a.runPhase(t.ctx, t.in.RunID, ph, t.resume, t.trainer(adapterRegression, t.j.eng.regTrainer), func(batch []int) (optim.Batch, error) {
		b, err := reward.MakeRatingBatch(pick(rows, batch), bs, t.j.m.cfg, t.recipe.HelpfulnessOnly)
		if err != nil {
			return nil, invalidData(err)
		}
		return b, nil
	})
	t.add(r)
	return err
}

// bradleyTerry is the Bradley-Terry phase on the training split's non-tie
// pairs, unless in.Strong already holds it (ExPO in a comparison, where
// only the extrapolation is left to do).
func (t *rewardTraining) bradleyTerry() error {
	spec := t.in.Spec
	if t.recipe.ExPO && t.in.Strong != nil {
		var err error
		t.params, err = t.a.Store.GetWeights(*t.in.Strong)
		return err
	}
	pairs, _, _ := t.j.ds.Pairs(helpsteer.SplitTrain)
	if len(pairs) == 0 {
		return invalidData(fmt.Errorf("no non-tie training pairs"))
	}
	lengths, tokens := make([]int, len(pairs)), make([]int, len(pairs))
	for i, p := range pairs {
		lengths[i], tokens[i] = max(len(p.Chosen), len(p.Rejected)), len(p.Chosen)+len(p.Rejected)
	}
	bs, loss := spec.Reward.BatchSize, t.recipe.BT
	ph := newPhase(string(loss), t.stage+": "+string(loss), t.dir, spec.Seed, "reward-model", lengths, bs, t.params)
	ph.steps, ph.every, ph.lr, ph.tokens, ph.earlier, ph.weak = spec.Reward.Steps, spec.Reward.CheckpointEvery, spec.Reward.LearningRate, tokens, t.res, t.weakRef
	ph.series = metrics.Series{Stage: pipeline.StageRewardModel, Recipe: t.recipe.Name, Phase: string(loss)}
	r, err := t.a.runPhase(t.ctx, t.in.RunID, ph, t.resume, t.trainer(adapterBT, t.j.eng.rmTrainer), func(batch []int) (optim.Batch, error) {
		b, err := reward.MakePairBatch(pick(pairs, batch), bs, t.j.m.cfg, loss)
		if err != nil {
			return nil, invalidData(err)
		}
		return b, nil
	})
	t.add(r)
	return err
}
