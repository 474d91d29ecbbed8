package activities

import (
	"context"
	"fmt"
	"math"
	"sort"

	"github.com/alignflow/alignflow/data/helpsteer"
	"github.com/alignflow/alignflow/data/matched"
	"github.com/alignflow/alignflow/data/rewardbench"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/reward"
)

// EvaluateRewardModel measures a reward model on held-out data: pairwise
// accuracy on the validation preference pairs (ties excluded) overall and
// per |strength|, accuracy on up to 256 training pairs, the fit of its five
// outputs to the validation ratings, and RewardBench-style category scores.
func (a *Activities) EvaluateRewardModel(ctx context.Context, in pipeline.RewardEvalInput) (pipeline.RewardEval, error) {
	defer keepAlive(ctx, pipeline.Progress{Stage: pipeline.StageRewardEval})()
	res, err := reuse(ctx, a, pipeline.StageRewardEval, in.Spec, in.RunID, in, func() (pipeline.RewardEval, error) { return a.evaluateRewardModel(ctx, in) })
	if err == nil {
		err = a.logRewardEval(in, res)
	}
	return res, classify(err)
}

func (a *Activities) evaluateRewardModel(ctx context.Context, in pipeline.RewardEvalInput) (pipeline.RewardEval, error) {
	spec := in.Spec
	eng, ds, err := a.setup(spec, in.Data)
	if err != nil {
		return pipeline.RewardEval{}, err
	}
	rm, err := a.Store.GetWeights(in.RewardModel)
	if err != nil {
		return pipeline.RewardEval{}, err
	}
	cfg := ds.m.cfg
	bs := spec.Reinforce.BatchSize
	held, _, _ := ds.pairs(helpsteer.SplitValidation, cfg.MaxLen)
	if len(held) == 0 {
		return pipeline.RewardEval{}, invalidData(fmt.Errorf("no non-tie validation pairs to evaluate on"))
	}
	var res pipeline.RewardEval
	for _, p := range ds.prefs {
		if p.Tie() && splitOf(p.Split) == helpsteer.SplitValidation {
			res.HeldoutTies++
		}
	}
	heartbeat(ctx, pipeline.Progress{Stage: pipeline.StageRewardEval, Step: 0, Total: 4})
	correct, err := pairCorrect(eng.reward, rm, held, bs)
	if err != nil {
		return res, err
	}
	res.HeldoutPairs = len(held)
	res.HeldoutAccuracy, res.ByStrength = accuracyByStrength(held, correct)

	heartbeat(ctx, pipeline.Progress{Stage: pipeline.StageRewardEval, Step: 1, Total: 4})
	train, _, _ := ds.pairs(helpsteer.SplitTrain, cfg.MaxLen)
	if len(train) > 256 {
		train = train[:256]
	}
	if res.TrainAccuracy, err = eng.reward.PairwiseAccuracy(rm, train, bs); err != nil {
		return res, err
	}

	heartbeat(ctx, pipeline.Progress{Stage: pipeline.StageRewardEval, Step: 2, Total: 4})
	if res.Ratings, err = ratingFit(eng.reward, rm, ds, cfg.MaxLen, bs); err != nil {
		return res, err
	}

	heartbeat(ctx, pipeline.Progress{Stage: pipeline.StageRewardEval, Step: 3, Total: 4})
	score := func(seqs [][]int32) ([]float64, error) { return eng.reward.Rewards(rm, seqs, bs) }
	if ds.task != nil && spec.Compare.BenchPairsPerSubset > 0 {
		pairs := ds.task.Bench(spec.Seed, spec.Compare.BenchPairsPerSubset)
		results, err := rewardbench.Run(pairs, cfg.MaxLen, ds.m.codec, score)
		if err != nil {
			return res, err
		}
		r := rewardbench.Score(results, matched.BenchCategories)
		res.Bench = &r
	}
	if in.Data.RewardBench != nil {
		path, err := a.Store.LocalFile(*in.Data.RewardBench)
		if err != nil {
			return res, err
		}
		pairs, err := helpsteer.ReadRewardBench(path)
		if err != nil {
			return res, invalidData(err)
		}
		results, err := rewardbench.Run(pairs, cfg.MaxLen, ds.m.codec, score)
		if err != nil {
			return res, err
		}
		r := rewardbench.Score(results, rewardbench.Official)
		res.RewardBench = &r
	}
	return res, nil
}

// pairCorrect reports, per pair, whether the chosen sequence gets the higher
// reward.
func pairCorrect(eng *reward.Engine, rm *weights.Set, pairs []reward.Pair, batchSize int) ([]bool, error) {
	seqs := make([][]int32, 0, 2*len(pairs))
	for _, p := range pairs {
		seqs = append(seqs, p.Chosen, p.Rejected)
	}
	r, err := eng.Rewards(rm, seqs, batchSize)
	if err != nil {
		return nil, err
	}
	out := make([]bool, len(pairs))
	for i := range pairs {
		out[i] = r[2*i] > r[2*i+1]
	}
	return out, nil
}

// accuracyByStrength returns the overall accuracy and its breakdown by the
// pairs' preference magnitude, in increasing order.
func accuracyByStrength(pairs []reward.Pair, correct []bool) (float64, []pipeline.StrengthAccuracy) {
	groups := map[int]*pipeline.StrengthAccuracy{}
	total := 0
	for i, p := range pairs {
		m := int(p.Magnitude)
		g, ok := groups[m]
		if !ok {
			g = &pipeline.StrengthAccuracy{Strength: m}
			groups[m] = g
		}
		g.Pairs++
		if correct[i] {
			g.Accuracy++
			total++
		}
	}
	var by []pipeline.StrengthAccuracy
	for _, g := range groups {
		g.Accuracy /= float64(g.Pairs)
		by = append(by, *g)
	}
	sort.Slice(by, func(i, j int) bool { return by[i].Strength < by[j].Strength })
	return float64(total) / float64(len(pairs)), by
}

// ratingFit compares each head output with its attribute on the validation
// ratings; nil when the data has no validation ratings.
func ratingFit(eng *reward.Engine, rm *weights.Set, ds *dataset, maxLen, batchSize int) ([]pipeline.AttributeFit, error) {
	rows := ds.rated(helpsteer.SplitValidation, maxLen)
	if len(rows) == 0 {
		return nil, nil
	}
	seqs := make([][]int32, len(rows))
	for i, r := range rows {
		seqs[i] = r.Sequence
	}
	got, err := eng.Score(rm, seqs, batchSize)
	if err != nil {
		return nil, err
	}
	fits := make([]pipeline.AttributeFit, len(helpsteer.AttributeNames))
	for k, name := range helpsteer.AttributeNames {
		x := make([]float64, len(got))
		y := make([]float64, len(got))
		for i := range got {
			x[i], y[i] = float64(got[i][k]), float64(rows[i].Ratings[k])
		}
		fits[k] = pipeline.AttributeFit{Attribute: name, Rows: len(x), RMSE: rmse(x, y), Pearson: pearson(x, y)}
	}
	return fits, nil
}

func rmse(x, y []float64) float64 {
	var s float64
	for i := range x {
		d := x[i] - y[i]
		s += d * d
	}
	return math.Sqrt(s / float64(len(x)))
}

// pearson is the correlation of x and y; 0 when either is constant.
func pearson(x, y []float64) float64 {
	n := float64(len(x))
	var mx, my float64
	for i := range x {
		mx += x[i]
		my += y[i]
	}
	mx, my = mx/n, my/n
	var sxy, sxx, syy float64
	for i := range x {
		dx, dy := x[i]-mx, y[i]-my
		sxy += dx * dy
		sxx += dx * dx
		syy += dy * dy
	}
	if sxx == 0 || syy == 0 {
		return 0
	}
	return sxy / math.Sqrt(sxx*syy)
}
