package reward

import (
	"fmt"
	"strconv"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/model/weights"
)

// RegressionLoss is SteerLM-style regression: the mean squared error between
// the head's outputs pred [B, NumAttributes] and the ratings target over the
// entries whose mask is 1. Missing ratings and padding rows have mask 0;
// helpfulness-only regression masks every column but Helpfulness.
func RegressionLoss(pred, target, mask *graph.Node) *graph.Node {
	sq := graph.Mul(graph.Square(graph.Sub(pred, target)), mask)
	n := graph.Max(graph.ReduceAllSum(mask), graph.ScalarOne(mask.Graph(), dtypes.Float32))
	return graph.Div(graph.ReduceAllSum(sq), n)
}

// RegressionTrainingLoss trains on RatingBatches (tokens, last index,
// ratings, mask) built by MakeRatingBatch.
func RegressionTrainingLoss(cfg transformer.Config) optim.Loss {
	return optim.Loss{Name: "regression", Inputs: RatingTensors, Fn: func(p map[string]*graph.Node, b []*graph.Node) (*graph.Node, []*graph.Node) {
		return RegressionLoss(Scores(p, cfg, b[0], b[1]), b[2], b[3]), nil
	}}
}

// Rated is one tokenised response with its ratings; Present marks the
// attributes that were rated.
type Rated struct {
	Sequence []int32
	Ratings  [NumAttributes]float32
	Present  [NumAttributes]bool
}

// RatingBatch is a padded batch for RegressionTrainingLoss.
type RatingBatch struct {
	Tokens [][]int32
	Last   []int32
	Target [][]float32
	Mask   [][]float32
}

// RatingTensors are a RatingBatch's tensors as RegressionTrainingLoss
// declares them: sequences, last indices, then ratings and mask of every
// attribute.
var RatingTensors = []optim.Input{
	{Name: "tokens", DType: dtypes.Int32, Axes: []string{"B", "T"}},
	{Name: "last", DType: dtypes.Int32, Axes: []string{"B"}},
	{Name: "target", DType: dtypes.Float32, Axes: []string{"B", strconv.Itoa(NumAttributes)}},
	{Name: "mask", DType: dtypes.Float32, Axes: []string{"B", strconv.Itoa(NumAttributes)}},
}

// Tensors returns the batch as RegressionTrainingLoss reads it (RatingTensors).
func (b *RatingBatch) Tensors() []*tensors.Tensor {
	return []*tensors.Tensor{tensors.FromValue(b.Tokens), tensors.FromValue(b.Last), tensors.FromValue(b.Target), tensors.FromValue(b.Mask)}
}

// MakeRatingBatch packs rated responses into exactly size rows. With
// helpfulnessOnly, only the helpfulness output is trained.
func MakeRatingBatch(rows []Rated, size int, cfg transformer.Config, helpfulnessOnly bool) (*RatingBatch, error) {
	if len(rows) > size {
		return nil, fmt.Errorf("rating batch: %d rows exceed batch size %d", len(rows), size)
	}
	seqs := make([][]int32, len(rows))
	for i, r := range rows {
		seqs[i] = r.Sequence
	}
	tokens, last, err := PackSequences(seqs, size, cfg)
	if err != nil {
		return nil, err
	}
	b := &RatingBatch{Tokens: tokens, Last: last}
	for i := 0; i < size; i++ {
		target := make([]float32, NumAttributes)
		mask := make([]float32, NumAttributes)
		if i < len(rows) {
			for a := 0; a < NumAttributes; a++ {
				if rows[i].Present[a] && (!helpfulnessOnly || a == Helpfulness) {
					target[a] = rows[i].Ratings[a]
					mask[a] = 1
				}
			}
		}
		b.Target = append(b.Target, target)
		b.Mask = append(b.Mask, mask)
	}
	return b, nil
}

// InitHeadBias sets each head output's bias to the mean of its attribute
// over rows, so regression starts from predicting the mean rating and spends
// its steps on what varies: with AdamW moving a bias about one learning rate
// per step, a zero bias would need thousands of steps just to reach the
// 0..4 scale. Attributes without ratings keep their bias. A head without a
// bias (a Hugging Face model's) is left as it is.
func InitHeadBias(params *weights.Set, rows []Rated) error {
	b := params.Get(HeadB)
	if b == nil && FromHF(params) {
		return nil
	}
	if b == nil || len(b.Data) != NumAttributes {
		return fmt.Errorf("reward model has no %s of %d outputs", HeadB, NumAttributes)
	}
	var sum [NumAttributes]float64
	var n [NumAttributes]int
	for _, r := range rows {
		for k := range NumAttributes {
			if r.Present[k] {
				sum[k] += float64(r.Ratings[k])
				n[k]++
			}
		}
	}
	for k := range NumAttributes {
		if n[k] > 0 {
			b.Data[k] = float32(sum[k] / float64(n[k]))
		}
	}
	return nil
}
