package reinforce

import (
	"slices"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/policy"
)

// UpdateBatch is a teacher-forced batch of rollouts with what the
// objective's loss reads of each row: its advantage, the log-probabilities
// it was sampled with (Old, for a clipped loss) and the reference's (Ref,
// for the KL in the loss), both [row][position] as the batch lays tokens
// out, and Norm, the denominator of the optimizer step's aggregation
// (Objective.Norm over all the step's batches), so that batches whose
// gradients are summed give the loss of their union.
type UpdateBatch struct {
	*policy.Batch
	Advantages []float32 // one per row; 0 for the rows padding the batch
	Old, Ref   [][]float32
	Norm       float32
	Objective  Objective // which of them the loss reads
}

// OnPolicyBatch is b with its advantages as the only optimizer step's
// batch of an objective that reads no recorded log-probabilities.
func (o Objective) OnPolicyBatch(b *policy.Batch, advantages []float32) UpdateBatch {
	return UpdateBatch{Batch: b, Advantages: advantages, Norm: o.Norm([]*policy.Batch{b}), Objective: o}
}

// Tensors returns the batch as PolicyLoss(cfg, objective) reads it
// (Objective.Inputs).
func (b UpdateBatch) Tensors() []*tensors.Tensor {
	out := append(b.Batch.Tensors(), tensors.FromValue(b.Advantages))
	if b.Objective.Clipped() {
		out = append(out, tensors.FromValue(b.Old))
	}
	if b.Objective.KLIn == KLInLoss {
		out = append(out, tensors.FromValue(b.Ref))
	}
	return append(out, tensors.FromValue(b.Norm))
}

// Inputs are the batch tensors PolicyLoss reads: the policy.Batch's, the
// advantages [B], the old log-probabilities [B,T] where clipped, the
// reference's [B,T] where the KL is in the loss, and the step's
// denominator (a scalar).
func (o Objective) Inputs() []optim.Input {
	in := append(slices.Clip(policy.BatchTensors), optim.Input{Name: "advantages", DType: dtypes.Float32, Axes: []string{"B"}})
	if o.Clipped() {
		in = append(in, optim.Input{Name: "old_logprobs", DType: dtypes.Float32, Axes: []string{"B", "T"}})
	}
	if o.KLIn == KLInLoss {
		in = append(in, optim.Input{Name: "ref_logprobs", DType: dtypes.Float32, Axes: []string{"B", "T"}})
	}
	return append(in, optim.Input{Name: "norm", DType: dtypes.Float32, Axes: []string{}})
}

// Norm is the aggregation's denominator for an optimizer step over
// batches: the response tokens (token-mean), the sequences
// (seq-mean-token-mean) or the sequences times MaxTokens
// (seq-mean-token-sum-norm); at least 1.
func (o Objective) Norm(batches []*policy.Batch) float32 {
	var tokens, rows float32
	for _, b := range batches {
		rows += float32(b.Rows)
		for _, m := range b.Mask {
			for _, x := range m {
				tokens += x
			}
		}
	}
	n := tokens
	switch o.Aggregation {
	case AggSeqMeanTokenMean:
		n = rows
	case AggSeqMeanTokenSumNorm:
		n = rows * float32(o.MaxTokens)
	}
	return max(n, 1)
}

// PolicyLoss is the objective's loss over an UpdateBatch. Per response
// token t of row i, with advantage A_i and log-probability lp under the
// policy being trained:
//
//	on-policy (one epoch):   l = -lp * A_i
//	clipped (more epochs):   l = -min(ratio * A_i, clip(ratio, 1-ClipLow, 1+ClipHigh) * A_i)
//	                         ratio = exp(lp - old) per token, or per
//	                         sequence exp(mean over its tokens of lp - old)
//	KL in the loss:          l += KLBeta * estimator(lp - ref)
//
// aggregated as Objective.Aggregation says over Norm. Its metrics, where
// clipped, are the mean ratio over the batch's tokens and the fraction
// of tokens whose clipped term was the one taken (veRL's pg_clipfrac).
func PolicyLoss(cfg transformer.Config, obj Objective) optim.Loss {
	obj = obj.WithDefaults()
	return optim.Loss{Name: "reinforce policy", Inputs: obj.Inputs(), Fn: func(p map[string]*graph.Node, b []*graph.Node) (*graph.Node, []*graph.Node) {
		inputs, targets, mask, adv := b[0], b[1], b[2], graph.InsertAxes(b[3], -1)
		next := 4
		read := func() *graph.Node { next++; return b[next-1] }
		var old, ref *graph.Node
		if obj.Clipped() {
			old = read()
		}
		if obj.KLIn == KLInLoss {
			ref = read()
		}
		norm := read()
		lp := policy.TokenLogProbs(p, cfg, inputs, targets)
		// aggregate sums the masked per-token values (weighted per row for
		// the sequence means) over the step's denominator.
		aggregate := func(x *graph.Node) *graph.Node {
			x = graph.Mul(x, mask)
			if obj.Aggregation == AggSeqMeanTokenMean {
				x = graph.Div(x, graph.InsertAxes(graph.MaxScalar(graph.ReduceSum(mask, -1), 1.0), -1))
			}
			return graph.Div(graph.ReduceAllSum(x), norm)
		}
		var loss *graph.Node
		var metrics []*graph.Node
		if !obj.Clipped() {
			loss = graph.Neg(aggregate(graph.Mul(lp, adv)))
		} else {
			logRatio := graph.Sub(lp, old)
			if obj.Ratio == RatioSequence {
				n := graph.MaxScalar(graph.ReduceSum(mask, -1), 1.0)
				logRatio = graph.InsertAxes(graph.Div(graph.ReduceSum(graph.Mul(logRatio, mask), -1), n), -1)
			}
			ratio := graph.Exp(logRatio)
			unclipped := graph.Neg(graph.Mul(ratio, adv))
			clipped := graph.Neg(graph.Mul(graph.ClipScalar(ratio, 1-obj.ClipLow, 1+obj.ClipHigh), adv))
			loss = aggregate(graph.Max(unclipped, clipped))
			tokens := graph.MaxScalar(graph.ReduceAllSum(mask), 1.0)
			ratioMean := graph.Div(graph.ReduceAllSum(graph.Mul(graph.Add(graph.ZerosLike(lp), ratio), mask)), tokens)
			took := graph.ConvertDType(graph.GreaterThan(clipped, unclipped), dtypes.Float32)
			clipFrac := graph.Div(graph.ReduceAllSum(graph.Mul(graph.Add(graph.ZerosLike(lp), took), mask)), tokens)
			metrics = []*graph.Node{ratioMean, clipFrac}
		}
		if ref != nil {
			loss = graph.Add(loss, graph.MulScalar(aggregate(tokenKL(graph.Sub(lp, ref), obj.KLEstimator)), obj.KLBeta))
		}
		return loss, metrics
	}}
}

// tokenKL is TokenKL in the graph, of the log-ratio d = lp - lp_ref.
func tokenKL(d *graph.Node, estimator string) *graph.Node {
	switch estimator {
	case KLK1:
		return d
	case KLK2:
		return graph.MulScalar(graph.Square(d), 0.5)
	case KLK3:
		return graph.Add(graph.AddScalar(graph.Exp(graph.Neg(d)), -1.0), d)
	}
	return graph.Abs(d)
}
