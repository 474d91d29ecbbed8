package activities

import (
	"context"
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/data/helpsteer"
	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/trainloop"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/ops/metrics"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/policy"
	"github.com/alignflow/alignflow/reward"
)

const heartbeatEvery = 10

// TrainSFT fine-tunes a fresh policy on the training split's rated responses.
func (a *Activities) TrainSFT(ctx context.Context, in pipeline.TrainInput) (pipeline.TrainResult, error) {
	res, err := reuse(ctx, a, pipeline.StageSFT, in.Spec, in.RunID, in, func() (pipeline.TrainResult, error) { return a.trainSFT(ctx, in) })
	return res, classify(err)
}

func (a *Activities) trainSFT(ctx context.Context, in pipeline.TrainInput) (pipeline.TrainResult, error) {
	start := time.Now()
	spec := in.Spec
	eng, ds, err := a.setup(spec, in.Data)
	if err != nil {
		return pipeline.TrainResult{}, err
	}
	resume, err := a.resumePoint(ctx)
	if err != nil {
		return pipeline.TrainResult{}, err
	}
	cfg := ds.m.cfg
	var prompts, responses [][]int32
	for _, r := range ds.ratings {
		if splitOf(r.Split) != helpsteer.SplitTrain || !ds.fits(r.Prompt, cfg.MaxLen) {
			continue
		}
		p, _ := ds.promptIDs(r.Prompt)
		resp := ds.m.codec.Response(r.Response)
		if len(p)+len(resp) > cfg.MaxLen {
			continue // cut, it would not teach the response's end
		}
		prompts = append(prompts, p)
		responses = append(responses, resp)
	}
	if len(prompts) == 0 {
		return pipeline.TrainResult{}, invalidData(fmt.Errorf("no training ratings fit model.max_len %d", cfg.MaxLen))
	}
	// The bundled model starts fresh; a Hugging Face model from its weights.
	params := policy.Init(cfg, uint64(spec.Seed))
	if ds.m.base != nil {
		params = ds.m.base.Clone()
	}
	st := optim.NewState(params)
	lengths := make([]int, len(prompts))
	for i := range prompts {
		lengths[i] = len(prompts[i]) + len(responses[i])
	}
	bs := spec.SFT.BatchSize
	batches := newBatcher(stageSource(spec.Seed, "sft", 0), lengths, bs)
	ph := &phase{name: "sft", stage: pipeline.StageSFT, dir: "sft", steps: spec.SFT.Steps, every: spec.SFT.CheckpointEvery, lr: spec.SFT.LearningRate,
		params: params, st: st, batches: batches, series: metrics.Series{Stage: pipeline.StageSFT}}
	res, err := a.runPhase(ctx, in.RunID, ph, resume, func(lr float64) (trainloop.Result, error) {
		var bp, br [][]int32
		tokens := 0
		for _, i := range batches.next() {
			bp, br = append(bp, prompts[i]), append(br, responses[i])
			tokens += lengths[i]
		}
		batch, err := policy.MakeBatch(cfg, bs, bp, br)
		if err != nil {
			return trainloop.Result{}, invalidData(err)
		}
		r, err := eng.sft.Step(params, st, lr, batch)
		return trainloop.Result{Loss: r.Loss, GradNorm: r.GradNorm, Tokens: tokens}, err
	})
	if err != nil {
		return res, err
	}
	return a.saveModel(in.RunID, "sft/policy.safetensors", params, res, start)
}

func (a *Activities) saveModel(runID, rel string, params *weights.Set, res pipeline.TrainResult, start time.Time) (pipeline.TrainResult, error) {
	ref, err := a.Store.PutWeights(runPath(runID, rel), params)
	if err != nil {
		return res, err
	}
	res.Checkpoint = ref
	res.Digest = params.Digest()
	res.TrainSeconds = time.Since(start).Seconds()
	return res, nil
}

// TrainRewardModel trains a reward model, initialised from the SFT policy's
// backbone, on the training split's preference pairs.
func (a *Activities) TrainRewardModel(ctx context.Context, in pipeline.TrainInput) (pipeline.TrainResult, error) {
	res, err := reuse(ctx, a, pipeline.StageRewardModel, in.Spec, in.RunID, in, func() (pipeline.TrainResult, error) { return a.trainRewardModel(ctx, in) })
	return res, classify(err)
}

func (a *Activities) trainRewardModel(ctx context.Context, in pipeline.TrainInput) (pipeline.TrainResult, error) {
	start := time.Now()
	spec := in.Spec
	eng, ds, err := a.setup(spec, in.Data)
	if err != nil {
		return pipeline.TrainResult{}, err
	}
	base, err := a.Store.GetWeights(in.Base)
	if err != nil {
		return pipeline.TrainResult{}, err
	}
	resume, err := a.resumePoint(ctx)
	if err != nil {
		return pipeline.TrainResult{}, err
	}
	name, dir, stage := spec.Reward.Recipe, "reward", pipeline.StageRewardModel
	if in.Recipe != "" {
		name, dir, stage = in.Recipe, "reward/"+in.Recipe, pipeline.StageRewardModel+" "+in.Recipe
	}
	recipe, err := reward.LookupRecipe(name)
	if err != nil {
		return pipeline.TrainResult{}, temporal.NewNonRetryableApplicationError(err.Error(), pipeline.ErrInvalidSpec, err)
	}
	res := pipeline.TrainResult{}
	add := func(r pipeline.TrainResult) {
		if res.Steps == 0 {
			res.FirstLoss = r.FirstLoss
		}
		if r.ResumedFrom > 0 {
			res.ResumedFrom = res.Steps + r.ResumedFrom
		}
		res.Steps += r.Steps
		res.FinalLoss = r.FinalLoss
	}
	// A checkpoint of the BT phase means the regression phase is done.
	resumeBT := resume != nil && recipe.BT != "" && resume.Phase == string(recipe.BT)
	// The regression phase: trained here, or taken from an earlier stage.
	var params, weak *weights.Set
	var weakRef *artifact.Ref
	switch {
	case recipe.Regression && in.From != nil:
		if params, err = a.Store.GetWeights(*in.From); err != nil {
			return res, err
		}
		weak = params.Clone()
	default:
		if params, err = a.rewardStart(in.Data, base, spec); err != nil {
			return res, err
		}
		switch {
		case recipe.Regression && resumeBT:
			res, weakRef = resume.Earlier, resume.Weak
			if weakRef != nil {
				if weak, err = a.Store.GetWeights(*weakRef); err != nil {
					return res, err
				}
			}
		case recipe.Regression:
			r, err := a.fitRegression(ctx, in.RunID, stage, name, dir, eng, ds, params, spec, recipe.HelpfulnessOnly, resume)
			if err != nil {
				return res, err
			}
			add(r)
			weak = params.Clone()
			if recipe.ExPO && in.Strong == nil { // kept for a resumed BT phase
				ref, err := a.Store.PutWeights(runPath(in.RunID, dir, "regression.safetensors"), weak)
				if err != nil {
					return res, err
				}
				weakRef = &ref
			}
		}
	}
	// The Bradley-Terry phase: trained here, or taken from an earlier stage
	// when only the ExPO extrapolation is left to do.
	switch {
	case recipe.ExPO && in.Strong != nil:
		if params, err = a.Store.GetWeights(*in.Strong); err != nil {
			return res, err
		}
	case recipe.BT != "":
		r, err := a.fitBT(ctx, in.RunID, stage, name, dir, eng, ds, params, spec, recipe.BT, resume, res, weakRef)
		if err != nil {
			return res, err
		}
		add(r)
	}
	if recipe.ExPO {
		best, alpha, err := a.chooseExPO(eng, ds, weak, params, spec)
		if err != nil {
			return res, err
		}
		params, res.ExPOAlpha = best, alpha
	}
	params.Metadata["recipe"] = recipe.Name
	return a.saveModel(in.RunID, dir+"/model.safetensors", params, res, start)
}

// rewardStart is a reward model before training: reward.path's when the
// run has one, else a fresh head on the SFT backbone.
func (a *Activities) rewardStart(d pipeline.Data, base *weights.Set, spec config.Spec) (*weights.Set, error) {
	if d.Model != nil && d.Model.Reward != nil {
		return a.Store.GetWeights(*d.Model.Reward)
	}
	return reward.InitFromBackbone(base, uint64(spec.Seed))
}

// fitBT trains params in place with a Bradley-Terry loss on the training
// split's non-tie preference pairs.
func (a *Activities) fitBT(ctx context.Context, runID, stage, recipe, dir string, eng *engineSet, ds *dataset, params *weights.Set, spec config.Spec, loss reward.Loss,
	resume *trainCheckpoint, earlier pipeline.TrainResult, weak *artifact.Ref) (pipeline.TrainResult, error) {
	cfg := ds.m.cfg
	pairs, _, _ := ds.pairs(helpsteer.SplitTrain, cfg.MaxLen)
	if len(pairs) == 0 {
		return pipeline.TrainResult{}, invalidData(fmt.Errorf("no non-tie training pairs"))
	}
	st := optim.NewState(params)
	lengths := make([]int, len(pairs))
	for i, p := range pairs {
		lengths[i] = max(len(p.Chosen), len(p.Rejected))
	}
	bs := spec.Reward.BatchSize
	batches := newBatcher(stageSource(spec.Seed, "reward-model", 0), lengths, bs)
	ph := &phase{name: string(loss), stage: stage + ": " + string(loss), dir: dir, steps: spec.Reward.Steps, every: spec.Reward.CheckpointEvery,
		lr: spec.Reward.LearningRate, params: params, st: st, batches: batches, earlier: earlier, weak: weak,
		series: metrics.Series{Stage: pipeline.StageRewardModel, Recipe: recipe, Phase: string(loss)}}
	return a.runPhase(ctx, runID, ph, resume, func(lr float64) (trainloop.Result, error) {
		var batchPairs []reward.Pair
		tokens := 0
		for _, i := range batches.next() {
			batchPairs = append(batchPairs, pairs[i])
			tokens += len(pairs[i].Chosen) + len(pairs[i].Rejected)
		}
		batch, err := reward.MakePairBatch(batchPairs, bs, cfg, loss)
		if err != nil {
			return trainloop.Result{}, invalidData(err)
		}
		r, err := eng.rmTrainer.Step(params, st, lr, batch)
		return trainloop.Result{Loss: r.Loss, GradNorm: r.GradNorm, Tokens: tokens}, err
	})
}

// fitRegression trains params in place to predict the training split's
// ratings (all five attributes, or helpfulness only).
func (a *Activities) fitRegression(ctx context.Context, runID, stage, recipe, dir string, eng *engineSet, ds *dataset, params *weights.Set, spec config.Spec, helpfulnessOnly bool,
	resume *trainCheckpoint) (pipeline.TrainResult, error) {
	cfg := ds.m.cfg
	rows := ds.rated(helpsteer.SplitTrain, cfg.MaxLen)
	if len(rows) == 0 {
		return pipeline.TrainResult{}, invalidData(fmt.Errorf("no training ratings fit model.max_len %d", cfg.MaxLen))
	}
	if err := reward.InitHeadBias(params, rows); err != nil {
		return pipeline.TrainResult{}, err
	}
	st := optim.NewState(params)
	lengths := make([]int, len(rows))
	for i, r := range rows {
		lengths[i] = len(r.Sequence)
	}
	bs := spec.Reward.BatchSize
	batches := newBatcher(stageSource(spec.Seed, "reward-regression", 0), lengths, bs)
	name := "regression"
	if helpfulnessOnly {
		name = "regression-helpfulness"
	}
	ph := &phase{name: name, stage: stage + ": " + name, dir: dir, steps: spec.Reward.RegressionSteps, every: spec.Reward.CheckpointEvery,
		lr: spec.Reward.RegressionLearningRate, params: params, st: st, batches: batches,
		series: metrics.Series{Stage: pipeline.StageRewardModel, Recipe: recipe, Phase: name}}
	return a.runPhase(ctx, runID, ph, resume, func(lr float64) (trainloop.Result, error) {
		var batchRows []reward.Rated
		tokens := 0
		for _, i := range batches.next() {
			batchRows = append(batchRows, rows[i])
			tokens += lengths[i]
		}
		batch, err := reward.MakeRatingBatch(batchRows, bs, cfg, helpfulnessOnly)
		if err != nil {
			return trainloop.Result{}, invalidData(err)
		}
		r, err := eng.regTrainer.Step(params, st, lr, batch)
		return trainloop.Result{Loss: r.Loss, GradNorm: r.GradNorm, Tokens: tokens}, err
	})
}

// chooseExPO extrapolates from the regression model past the BT model and
// keeps the alpha of reward.ExPOAlphas with the best validation accuracy
// (ties go to the smaller alpha).
func (a *Activities) chooseExPO(eng *engineSet, ds *dataset, weak, strong *weights.Set, spec config.Spec) (*weights.Set, float64, error) {
	held, _, _ := ds.pairs(helpsteer.SplitValidation, ds.m.cfg.MaxLen)
	if len(held) == 0 {
		return nil, 0, invalidData(fmt.Errorf("ExPO needs validation pairs to choose alpha"))
	}
	var best *weights.Set
	bestAlpha, bestAcc := 0.0, -1.0
	for _, alpha := range reward.ExPOAlphas {
		cand, err := weights.Extrapolate(weak, strong, alpha)
		if err != nil {
			return nil, 0, err
		}
		acc, err := eng.reward.PairwiseAccuracy(cand, held, spec.Reinforce.BatchSize)
		if err != nil {
			return nil, 0, err
		}
		if acc > bestAcc {
			best, bestAlpha, bestAcc = cand, alpha, acc
		}
	}
	return best, bestAlpha, nil
}
