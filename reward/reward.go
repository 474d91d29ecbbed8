// Package reward is the reward model: the policy's transformer backbone with a
// linear head on the last token. The head has one output per HelpSteer attribute
// so that regression and Bradley-Terry training share one model; the
// helpfulness output is the scalar reward. It holds the losses (Bradley-Terry
// and its margin and scaled variants, masked regression), the paper's
// recipes and the order they train in (Recipe, Plan), ExPO's extrapolation,
// and the measures of a trained model (pairwise accuracy by strength, the
// fit of each output to the ratings).
package reward

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/progress"
	"github.com/alignflow/alignflow/model/tokenizer"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/policy"
)

// Head parameter names.
const (
	HeadW = "reward_head.w" // [D, NumAttributes]
	HeadB = "reward_head.b" // [NumAttributes]
)

// NumAttributes is the number of head outputs, in HelpSteer order: helpfulness,
// correctness, coherence, complexity, verbosity.
const NumAttributes = 5

// Helpfulness is the head output used as the scalar reward.
const Helpfulness = 0

// InitFromBackbone starts a reward model from a trained backbone (the SFT
// policy: its language-model head and any other non-backbone tensors are
// dropped) with a fresh, small head. A backbone loaded from a Hugging Face
// model gets a head without a bias, as LlamaForSequenceClassification's
// score layer has none: the trained model then exports exactly.
func InitFromBackbone(base *weights.Set, seed uint64) (*weights.Set, error) {
	cfg, err := transformer.ConfigOf(base)
	if err != nil {
		return nil, fmt.Errorf("reward model backbone: %w", err)
	}
	s := weights.NewSet()
	for _, n := range base.Names() {
		if n == transformer.Embed || n == transformer.FinalNorm || strings.HasPrefix(n, "layer") {
			t := base.Get(n)
			s.Put(n, &weights.Tensor{Shape: append([]int(nil), t.Shape...), Data: append([]float32(nil), t.Data...)})
		}
	}
	r := rand.New(rand.NewPCG(seed, 0x4e3d))
	w := weights.NewTensor(cfg.Dim, NumAttributes)
	for i := range w.Data {
		w.Data[i] = float32(r.NormFloat64() * 0.01)
	}
	s.Put(HeadW, w)
	if !FromHF(base) {
		s.Put(HeadB, weights.NewTensor(NumAttributes))
	}
	transformer.SetConfig(s, cfg)
	for k, v := range base.Metadata {
		if strings.HasPrefix(k, "hf_") {
			s.Metadata[k] = v
		}
	}
	s.Metadata["kind"] = "reward"
	return s, nil
}

// FromHF reports whether a model's weights came from a Hugging Face
// directory (hfmodel records the architecture in their metadata).
func FromHF(s *weights.Set) bool { return s.Metadata["hf_architecture"] != "" }

// Scores returns the head's outputs [B, NumAttributes] for sequences tokens
// [B,T] whose last real token sits at index last [B].
func Scores(p transformer.Params, cfg transformer.Config, tokens, last *graph.Node) *graph.Node {
	h := transformer.Hidden(p, cfg, tokens) // [B,T,D]
	t := tokens.Shape().Dimensions[1]
	pick := graph.OneHot(last, t, dtypes.Float32) // [B,T]
	hLast := backend.Dot(pick, []int{1}, []int{0}, h, []int{1}, []int{0})
	out := backend.Linear(hLast, p[HeadW])
	if b, ok := p[HeadB]; ok {
		out = graph.Add(out, graph.InsertAxes(b, 0))
	}
	return out
}

// Scalar selects the helpfulness output [B] from scores [B, NumAttributes]
// with a product rather than a slice, so gradients flow on the pure-Go backend.
func Scalar(scores *graph.Node) *graph.Node {
	sel := make([]float32, NumAttributes)
	sel[Helpfulness] = 1
	return graph.ReduceSum(graph.Mul(scores, graph.InsertAxes(graph.Const(scores.Graph(), sel), 0)), -1)
}

// PairLoss is the Bradley-Terry family over a batch of pairs:
//
//	sum_i valid_i * weight_i * -log sigmoid(r_chosen_i - r_rejected_i - margin_i) / sum_i valid_i
//
// Regular BT has weight 1 and margin 0; BT with margin sets margin to the
// preference magnitude m; Scaled BT sets weight to m. Rows with valid 0 pad
// the batch.
func PairLoss(chosen, rejected, margin, weight, valid *graph.Node) *graph.Node {
	diff := graph.Sub(graph.Sub(chosen, rejected), margin)
	nll := graph.Softplus(graph.Neg(diff)) // -log sigmoid(diff)
	n := graph.Max(graph.ReduceAllSum(valid), graph.ScalarOne(valid.Graph(), dtypes.Float32))
	return graph.Div(graph.ReduceAllSum(graph.Mul(graph.Mul(nll, weight), valid)), n)
}

// BTLoss trains on PairBatches (chosen tokens, chosen last index, rejected
// tokens, rejected last index, margin, weight, valid) and reports pairwise
// accuracy.
func BTLoss(cfg transformer.Config) optim.Loss {
	return optim.Loss{Name: "bradley-terry", Inputs: PairTensors, Fn: func(p map[string]*graph.Node, b []*graph.Node) (*graph.Node, []*graph.Node) {
		rc := Scalar(Scores(p, cfg, b[0], b[1]))
		rr := Scalar(Scores(p, cfg, b[2], b[3]))
		margin, weight, valid := b[4], b[5], b[6]
		loss := PairLoss(rc, rr, margin, weight, valid)
		correct := graph.ConvertDType(graph.GreaterThan(rc, rr), dtypes.Float32)
		n := graph.Max(graph.ReduceAllSum(valid), graph.ScalarOne(valid.Graph(), dtypes.Float32))
		acc := graph.Div(graph.ReduceAllSum(graph.Mul(correct, valid)), n)
		return loss, []*graph.Node{acc}
	}}
}

// PackSequences pads seqs to [size, L] and returns them with their last
// indices; L is the bucket length of the longest (a multiple of 8, at most
// cfg.MaxLen), as policy.MakeBatch does, padded with policy.PadID.
func PackSequences(seqs [][]int32, size int, cfg transformer.Config) (tokens [][]int32, last []int32, err error) {
	maxLen, pad := cfg.MaxLen, policy.PadID(cfg)
	if len(seqs) > size {
		return nil, nil, fmt.Errorf("pack: %d sequences exceed batch size %d", len(seqs), size)
	}
	longest := 1
	for _, s := range seqs {
		longest = max(longest, len(s))
	}
	width := policy.BucketLen(longest, maxLen)
	for i := 0; i < size; i++ {
		row := make([]int32, width)
		for j := range row {
			row[j] = pad
		}
		l := 0
		if i < len(seqs) {
			if len(seqs[i]) == 0 || len(seqs[i]) > maxLen {
				return nil, nil, fmt.Errorf("pack: sequence of %d tokens does not fit max_len %d", len(seqs[i]), maxLen)
			}
			copy(row, seqs[i])
			l = len(seqs[i]) - 1
		}
		tokens = append(tokens, row)
		last = append(last, int32(l))
	}
	return tokens, last, nil
}

// PairBatch is a padded batch of preference pairs ready for BTLoss.
type PairBatch struct {
	Chosen, Rejected         [][]int32
	ChosenLast, RejectedLast []int32
	Margin, Weight, Valid    []float32
}

// PairTensors are a PairBatch's tensors as BTLoss declares them: each
// side's sequences and last indices (the two sides' lengths may differ),
// then margin, weight and valid.
var PairTensors = []optim.Input{
	{Name: "chosen", DType: dtypes.Int32, Axes: []string{"B", "Tc"}},
	{Name: "chosen_last", DType: dtypes.Int32, Axes: []string{"B"}},
	{Name: "rejected", DType: dtypes.Int32, Axes: []string{"B", "Tr"}},
	{Name: "rejected_last", DType: dtypes.Int32, Axes: []string{"B"}},
	{Name: "margin", DType: dtypes.Float32, Axes: []string{"B"}},
	{Name: "weight", DType: dtypes.Float32, Axes: []string{"B"}},
	{Name: "valid", DType: dtypes.Float32, Axes: []string{"B"}},
}

// Tensors returns the batch as BTLoss reads it (PairTensors).
func (b *PairBatch) Tensors() []*tensors.Tensor {
	return []*tensors.Tensor{
		tensors.FromValue(b.Chosen), tensors.FromValue(b.ChosenLast),
		tensors.FromValue(b.Rejected), tensors.FromValue(b.RejectedLast),
		tensors.FromValue(b.Margin), tensors.FromValue(b.Weight), tensors.FromValue(b.Valid),
	}
}

// Pair is one preference between two responses to a prompt, tokenised.
type Pair struct {
	Chosen, Rejected []int32 // full sequences (prompt + response)
	Magnitude        float64 // |preference strength|, 1..3
}

// PairOf is the pair the reward model trains and is evaluated on for a
// preference: each response after the prompt, fitted to maxLen by
// tokenizer.Fit keeping the prompt's first keep tokens (its BOS) (the
// prompt loses its start first, as RewardBench scoring does). ok is false
// when a response does not fit whole: cut, it would lose its EOS, and a
// prompt that filled the window would leave two identical sequences, so
// such a pair is left out. cut reports that the prompt lost its start.
func PairOf(prompt, chosen, rejected []int32, magnitude float64, maxLen, keep int) (p Pair, cut, ok bool) {
	c, wholeC, cutC := tokenizer.Fit(prompt, chosen, maxLen, keep)
	r, wholeR, cutR := tokenizer.Fit(prompt, rejected, maxLen, keep)
	return Pair{Chosen: c, Rejected: r, Magnitude: magnitude}, cutC || cutR, wholeC && wholeR
}

// Loss names the Bradley-Terry variant: how a pair's magnitude enters the loss.
type Loss string

// Bradley-Terry variants of the paper.
const (
	LossBT       Loss = "bt"
	LossBTMargin Loss = "bt-margin"
	LossBTScaled Loss = "bt-scaled"
)

// MakePairBatch packs pairs into a batch of exactly size rows.
func MakePairBatch(pairs []Pair, size int, cfg transformer.Config, loss Loss) (*PairBatch, error) {
	var ch, rj [][]int32
	b := &PairBatch{}
	for i := 0; i < size; i++ {
		if i < len(pairs) {
			ch = append(ch, pairs[i].Chosen)
			rj = append(rj, pairs[i].Rejected)
			m := float32(pairs[i].Magnitude)
			margin, weight := float32(0), float32(1)
			switch loss {
			case LossBTMargin:
				margin = m
			case LossBTScaled:
				weight = m
			}
			b.Margin = append(b.Margin, margin)
			b.Weight = append(b.Weight, weight)
			b.Valid = append(b.Valid, 1)
		} else {
			b.Margin = append(b.Margin, 0)
			b.Weight = append(b.Weight, 0)
			b.Valid = append(b.Valid, 0)
		}
	}
	var err error
	if b.Chosen, b.ChosenLast, err = PackSequences(ch, size, cfg); err != nil {
		return nil, err
	}
	if b.Rejected, b.RejectedLast, err = PackSequences(rj, size, cfg); err != nil {
		return nil, err
	}
	return b, nil
}

// Engine scores sequences with a reward model on one backend; safe for
// concurrent use.
type Engine struct {
	Backend backends.Backend
	Cfg     transformer.Config
	names   []string
	g       *graphs
	// meter is told of every batch scored (WithProgress); nil for none.
	meter progress.Meter
}

// graphs are an engine's compiled graph, shared by its WithProgress views.
type graphs struct {
	once  sync.Once
	score *graph.Exec
}

// NewEngine prepares an engine for reward models shaped like params.
func NewEngine(b backends.Backend, cfg transformer.Config, params *weights.Set) *Engine {
	return &Engine{Backend: b, Cfg: cfg, names: params.Names(), g: &graphs{}}
}

// WithProgress is the engine with its compiled graph, reporting every
// batch it scores to m and stopping with m's error: one computation's view
// of an engine that others share.
func (e *Engine) WithProgress(m progress.Meter) *Engine {
	v := *e
	v.meter = m
	return &v
}

// Names is the parameter order of the engine's graphs.
func (e *Engine) Names() []string { return e.names }

// Score returns all head outputs for each sequence, batchSize at a time.
func (e *Engine) Score(params *weights.Set, seqs [][]int32, batchSize int) ([][NumAttributes]float32, error) {
	g := e.g
	g.once.Do(func() {
		np := len(e.names)
		g.score = graph.MustNewExec(e.Backend, func(in []*graph.Node) *graph.Node {
			return Scores(transformer.ParamsOf(e.names, in[:np]), e.Cfg, in[np], in[np+1])
		}).SetMaxCache(-1)
	})
	args, err := params.Args(e.names)
	if err != nil {
		return nil, fmt.Errorf("score: reward model parameters: %w", err)
	}
	var out [][NumAttributes]float32
	for start := 0; start < len(seqs); start += batchSize {
		end := min(start+batchSize, len(seqs))
		tok, last, err := PackSequences(seqs[start:end], batchSize, e.Cfg)
		if err != nil {
			return nil, err
		}
		res, err := g.score.Exec1(append(args, tensors.FromValue(tok), tensors.FromValue(last))...)
		if err != nil {
			return nil, fmt.Errorf("score: %w", err)
		}
		flat := tensors.MustCopyFlatData[float32](res)
		res.FinalizeAll()
		if err := progress.Advance(e.meter, 1); err != nil {
			return nil, err
		}
		for i := 0; i < end-start; i++ {
			var row [NumAttributes]float32
			copy(row[:], flat[i*NumAttributes:(i+1)*NumAttributes])
			out = append(out, row)
		}
	}
	return out, nil
}

// Rewards returns the scalar (helpfulness) reward of each sequence.
func (e *Engine) Rewards(params *weights.Set, seqs [][]int32, batchSize int) ([]float64, error) {
	scores, err := e.Score(params, seqs, batchSize)
	if err != nil {
		return nil, err
	}
	r := make([]float64, len(scores))
	for i, s := range scores {
		r[i] = float64(s[Helpfulness])
	}
	return r, nil
}

// PairwiseAccuracy is the fraction of pairs whose chosen sequence gets the higher reward.
func (e *Engine) PairwiseAccuracy(params *weights.Set, pairs []Pair, batchSize int) (float64, error) {
	if len(pairs) == 0 {
		return 0, fmt.Errorf("pairwise accuracy: no pairs")
	}
	ok, err := e.PairsCorrect(params, pairs, batchSize)
	if err != nil {
		return 0, err
	}
	correct := 0
	for _, c := range ok {
		if c {
			correct++
		}
	}
	return float64(correct) / float64(len(pairs)), nil
}
