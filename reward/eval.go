package reward

import (
	"fmt"
	"math"
	"sort"

	"github.com/alignflow/alignflow/data/helpsteer"
	"github.com/alignflow/alignflow/model/weights"
)

// The measures of a reward model on held-out data, as the evaluation stage
// and the comparison report show them.

// StrengthAccuracy is the held-out accuracy on pairs of one |strength|.
type StrengthAccuracy struct {
	Strength int     `json:"strength"`
	Pairs    int     `json:"pairs"`
	Accuracy float64 `json:"accuracy"`
}

// AttributeFit is how well one head output predicts one rated attribute on
// the validation ratings. RMSE is meaningful only for outputs trained by
// regression; the correlation is meaningful for any reward.
type AttributeFit struct {
	Attribute string  `json:"attribute"`
	Rows      int     `json:"rows"`
	RMSE      float64 `json:"rmse"`
	Pearson   float64 `json:"pearson"`
}

// PairsCorrect reports, per pair, whether the chosen sequence gets the
// higher reward.
func (e *Engine) PairsCorrect(params *weights.Set, pairs []Pair, batchSize int) ([]bool, error) {
	seqs := make([][]int32, 0, 2*len(pairs))
	for _, p := range pairs {
		seqs = append(seqs, p.Chosen, p.Rejected)
	}
	r, err := e.Rewards(params, seqs, batchSize)
	if err != nil {
		return nil, err
	}
	out := make([]bool, len(pairs))
	for i := range pairs {
		out[i] = r[2*i] > r[2*i+1]
	}
	return out, nil
}

// AccuracyByStrength returns the overall accuracy of correct (PairsCorrect)
// and its breakdown by the pairs' preference magnitude, in increasing order.
func AccuracyByStrength(pairs []Pair, correct []bool) (float64, []StrengthAccuracy) {
	groups := map[int]*StrengthAccuracy{}
	total := 0
	for i, p := range pairs {
		m := int(p.Magnitude)
		g, ok := groups[m]
		if !ok {
			g = &StrengthAccuracy{Strength: m}
			groups[m] = g
		}
		g.Pairs++
		if correct[i] {
			g.Accuracy++
			total++
		}
	}
	var by []StrengthAccuracy
	for _, g := range groups {
		g.Accuracy /= float64(g.Pairs)
		by = append(by, *g)
	}
	sort.Slice(by, func(i, j int) bool { return by[i].Strength < by[j].Strength })
	return float64(total) / float64(len(pairs)), by
}

// RatingFit compares each head output with its attribute on rated rows;
// nil when there are none.
func (e *Engine) RatingFit(params *weights.Set, rows []Rated, batchSize int) ([]AttributeFit, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	seqs := make([][]int32, len(rows))
	for i, r := range rows {
		seqs[i] = r.Sequence
	}
	got, err := e.Score(params, seqs, batchSize)
	if err != nil {
		return nil, err
	}
	fits := make([]AttributeFit, len(helpsteer.AttributeNames))
	for k, name := range helpsteer.AttributeNames {
		x := make([]float64, len(got))
		y := make([]float64, len(got))
		for i := range got {
			x[i], y[i] = float64(got[i][k]), float64(rows[i].Ratings[k])
		}
		fits[k] = AttributeFit{Attribute: name, Rows: len(x), RMSE: rmse(x, y), Pearson: pearson(x, y)}
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

// ChooseExPO extrapolates from the weak model (the regression one) past
// the strong one (BT from it), weak + alpha (strong - weak), and keeps the
// alpha of ExPOAlphas with the best accuracy on held (validation) pairs;
// ties go to the smaller alpha.
func (e *Engine) ChooseExPO(weak, strong *weights.Set, held []Pair, batchSize int) (*weights.Set, float64, error) {
	if len(held) == 0 {
		return nil, 0, fmt.Errorf("ExPO needs validation pairs to choose alpha")
	}
	var best *weights.Set
	bestAlpha, bestAcc := 0.0, -1.0
	for _, alpha := range ExPOAlphas {
		cand, err := weights.Extrapolate(weak, strong, alpha)
		if err != nil {
			return nil, 0, err
		}
		acc, err := e.PairwiseAccuracy(cand, held, batchSize)
		if err != nil {
			return nil, 0, err
		}
		if acc > bestAcc {
			best, bestAlpha, bestAcc = cand, alpha, acc
		}
	}
	return best, bestAlpha, nil
}
