package activities

import (
	"context"
	"fmt"

	"github.com/alignflow/alignflow/data/helpsteer"
	"github.com/alignflow/alignflow/data/matched"
	"github.com/alignflow/alignflow/data/rewardbench"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/reward"
)

// trainAccuracyPairs is how many training pairs the training accuracy
// reads: enough to see over- or underfitting next to the held-out one.
const trainAccuracyPairs = 256

// EvaluateRewardModel measures a reward model on held-out data: pairwise
// accuracy on the validation preference pairs (ties excluded) overall and
// per |strength|, accuracy on up to 256 training pairs, the fit of its five
// outputs to the validation ratings, and RewardBench-style category scores.
func (a *Activities) EvaluateRewardModel(ctx context.Context, in pipeline.RewardEvalInput) (pipeline.RewardEval, error) {
	ctx, _, stop := a.live(ctx, pipeline.Progress{Stage: pipeline.StageRewardEval})
	defer stop()
	res, err := reuse(ctx, a, pipeline.StageRewardEval, in.Spec, in.RunID, in, func() (pipeline.RewardEval, error) { return a.evaluateRewardModel(ctx, in) })
	if err == nil {
		err = a.logRewardEval(in, res)
	}
	return res, classify(err)
}

func (a *Activities) evaluateRewardModel(ctx context.Context, in pipeline.RewardEvalInput) (pipeline.RewardEval, error) {
	spec := in.Spec
	j, err := a.setup(ctx, spec, in.Data)
	if err != nil {
		return pipeline.RewardEval{}, err
	}
	defer j.release()
	rm, err := a.Store.GetWeights(in.RewardModel)
	if err != nil {
		return pipeline.RewardEval{}, err
	}
	eng, ds, bs := j.eng.reward, j.ds, spec.Reinforce.BatchSize
	held, _, _ := ds.Pairs(helpsteer.SplitValidation)
	if len(held) == 0 {
		return pipeline.RewardEval{}, invalidData(fmt.Errorf("no non-tie validation pairs to evaluate on"))
	}
	res := pipeline.RewardEval{HeldoutPairs: len(held), HeldoutTies: ds.Ties(helpsteer.SplitValidation)}
	progress := func(step int) {
		show(ctx, pipeline.Progress{Stage: pipeline.StageRewardEval, Step: step, Total: 4})
	}
	progress(0)
	correct, err := eng.PairsCorrect(rm, held, bs)
	if err != nil {
		return res, err
	}
	res.HeldoutAccuracy, res.ByStrength = reward.AccuracyByStrength(held, correct)
	progress(1)
	train, _, _ := ds.Pairs(helpsteer.SplitTrain)
	if res.TrainAccuracy, err = eng.PairwiseAccuracy(rm, train[:min(len(train), trainAccuracyPairs)], bs); err != nil {
		return res, err
	}
	progress(2)
	if res.Ratings, err = eng.RatingFit(rm, ds.Rated(helpsteer.SplitValidation), bs); err != nil {
		return res, err
	}
	progress(3)
	score := func(seqs [][]int32) ([]float64, error) { return eng.Rewards(rm, seqs, bs) }
	bench := func(pairs []helpsteer.RewardBenchPair, categories []rewardbench.Category) (*rewardbench.Report, error) {
		results, err := rewardbench.Run(pairs, ds.MaxLen, ds.Codec, score)
		if err != nil {
			return nil, err
		}
		r := rewardbench.Score(results, categories)
		return &r, nil
	}
	if ds.Task != nil && spec.Compare.BenchPairsPerSubset > 0 {
		if res.Bench, err = bench(ds.Task.Bench(spec.Seed, spec.Compare.BenchPairsPerSubset), matched.BenchCategories); err != nil {
			return res, err
		}
	}
	if in.Data.RewardBench != nil {
		path, release, err := a.Store.LocalFile(*in.Data.RewardBench)
		if err != nil {
			return res, err
		}
		pairs, err := helpsteer.ReadRewardBench(path)
		release()
		if err != nil {
			return res, invalidData(err)
		}
		if res.RewardBench, err = bench(pairs, rewardbench.Official); err != nil {
			return res, err
		}
	}
	return res, nil
}
