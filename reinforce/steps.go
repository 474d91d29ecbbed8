package reinforce

import (
	"fmt"
	"math/rand/v2"
	"sync"

	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/policy"
	"github.com/alignflow/alignflow/reward"
)

// The steps of a REINFORCE iteration, each usable alone: the iteration,
// the policy evaluation and the benchmarks call the same functions.
//
//	rollouts := Rollout(...)          sample K responses per prompt
//	rewards  := Score(...)            the reward model's score of each
//	lp       := LogProbs(...)         token log-probabilities, policy and reference
//	                                  (ScoreAndLogProbs: both at once)
//	kl       := lp.KL(estimator)      the per-token KL penalty of each
//	adv      := Advantages(...)       shaped rewards, the estimator's advantages
//	Update(...)                       the objective's optimizer steps

// Rollouts are sampled responses, one per row: Contexts[i] is the prompt
// row i answers.
type Rollouts struct {
	Contexts [][]int32
	Samples  []policy.Sample
	// Turn completes the rows that ended a chat template's turn for the
	// reward model (Sequences); the zero Turn for the plain format.
	Turn policy.Turn
}

// Repeat lists each prompt k times, consecutively: the rows of k samples
// per prompt, row i answering prompt i/k.
func Repeat(prompts [][]int32, k int) [][]int32 {
	var out [][]int32
	for _, p := range prompts {
		for j := 0; j < k; j++ {
			out = append(out, p)
		}
	}
	return out
}

// Rollout samples k responses to each prompt, batchSize rows per
// generation batch, drawing from rng only.
func Rollout(pe *policy.Engine, pol *weights.Set, prompts [][]int32, k, batchSize int, opts policy.SampleOptions, rng *rand.Rand) (*Rollouts, error) {
	r := &Rollouts{Contexts: Repeat(prompts, k), Turn: opts.Turn}
	var err error
	if r.Samples, err = pe.Generate(pol, r.Contexts, batchSize, opts, rng); err != nil {
		return nil, fmt.Errorf("rollout: %w", err)
	}
	return r, nil
}

// RolloutEach samples one response per row of contexts, row i drawing from
// rngs[i] only: rows generated in other calls (another shard, on another
// worker) get the samples they would have had in one call, as long as
// every call starts at a multiple of batchSize rows.
func RolloutEach(pe *policy.Engine, pol *weights.Set, contexts [][]int32, batchSize int, opts policy.SampleOptions, rngs []*rand.Rand) (*Rollouts, error) {
	r := &Rollouts{Contexts: contexts, Turn: opts.Turn}
	var err error
	if r.Samples, err = pe.GenerateEach(pol, contexts, batchSize, opts, rngs); err != nil {
		return nil, fmt.Errorf("rollout: %w", err)
	}
	return r, nil
}

// Sequences are the rows' prompts followed by their responses, as the
// reward model scores them: a response that ended a chat template's turn
// with the rest of the turn (Turn).
func (r *Rollouts) Sequences() [][]int32 {
	out := make([][]int32, len(r.Samples))
	for i, s := range r.Samples {
		s.Tokens = r.Turn.Complete(s)
		out[i] = s.Sequence(r.Contexts[i])
	}
	return out
}

// Responses are the rows' sampled tokens.
func (r *Rollouts) Responses() [][]int32 {
	out := make([][]int32, len(r.Samples))
	for i, s := range r.Samples {
		out[i] = s.Tokens
	}
	return out
}

// Ended reports which rows ended with EOS.
func (r *Rollouts) Ended() []bool {
	out := make([]bool, len(r.Samples))
	for i, s := range r.Samples {
		out[i] = s.Ended
	}
	return out
}

// Score returns the reward model's score (helpfulness) of every rollout;
// 0 for every one when there is no reward model (rm nil:
// reward.model_weight 0, the verifier's rewards alone).
func Score(re *reward.Engine, rm *weights.Set, r *Rollouts, batchSize int) ([]float64, error) {
	if rm == nil { // no reward model: a verifier's rewards alone
		return make([]float64, len(r.Samples)), nil
	}
	out, err := re.Rewards(rm, r.Sequences(), batchSize)
	if err != nil {
		return nil, fmt.Errorf("score rollouts: %w", err)
	}
	return out, nil
}

// TokenLogProbs are the rollouts as teacher-forced batches and their
// token log-probabilities under the policy and the reference, by batch.
type TokenLogProbs struct {
	BatchSize         int
	Batches           []*policy.Batch
	Policy, Reference [][][]float32 // [batch][row][position]
}

// Batches are the rollouts as teacher-forced batches of batchSize rows,
// in order (the last padded), as the log-probabilities and the update
// read them.
func Batches(cfg transformer.Config, r *Rollouts, batchSize int) ([]*policy.Batch, error) {
	var out []*policy.Batch
	responses := r.Responses()
	for start := 0; start < len(responses); start += batchSize {
		end := min(start+batchSize, len(responses))
		b, err := policy.MakeBatch(cfg, batchSize, r.Contexts[start:end], responses[start:end])
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// LogProbs batches the rollouts batchSize rows at a time and takes their
// token log-probabilities under pol and ref.
func LogProbs(pe *policy.Engine, pol, ref *weights.Set, r *Rollouts, batchSize int) (*TokenLogProbs, error) {
	batches, err := Batches(pe.Cfg, r, batchSize)
	if err != nil {
		return nil, err
	}
	out := &TokenLogProbs{BatchSize: batchSize, Batches: batches}
	for _, b := range batches {
		lp, lq, err := pe.LogProbsOfBoth(pol, ref, b)
		if err != nil {
			return nil, err
		}
		out.Policy = append(out.Policy, lp)
		out.Reference = append(out.Reference, lq)
	}
	return out, nil
}

// each calls fn for every real row of the batches with its rollout index.
func (t *TokenLogProbs) each(fn func(i int, b *policy.Batch, row int, lp, lq []float32) error) error {
	for bi, b := range t.Batches {
		for row := 0; row < b.Rows; row++ {
			if err := fn(bi*t.BatchSize+row, b, row, t.Policy[bi][row], t.Reference[bi][row]); err != nil {
				return err
			}
		}
	}
	return nil
}

// KL is every rollout's KL penalty: the estimator's mean over its
// response tokens (SequenceKL).
func (t *TokenLogProbs) KL(estimator string) ([]float64, error) {
	var out []float64
	err := t.each(func(_ int, b *policy.Batch, row int, lp, lq []float32) error {
		kl, err := SequenceKL(lp, lq, b.Mask[row], estimator)
		out = append(out, kl)
		return err
	})
	return out, err
}

// LogRatios are every rollout's response tokens' log pi - log pi_ref
// (padding and prompt positions 0), by rollout and position.
func (t *TokenLogProbs) LogRatios() [][]float32 {
	var out [][]float32
	_ = t.each(func(_ int, b *policy.Batch, row int, lp, lq []float32) error {
		d := make([]float32, len(lp))
		for j, m := range b.Mask[row] {
			d[j] = m * (lp[j] - lq[j])
		}
		out = append(out, d)
		return nil
	})
	return out
}

// Advantages shapes the rewards as obj says (Objective.Shape: less the
// KL penalty where it is in the reward) and computes each rollout's
// advantage over its prompt's k rollouts with obj's estimator
// (GroupAdvantages).
func Advantages(rewards, kl []float64, ended []bool, obj Objective, k int) (shaped, baseline, advantage []float64, err error) {
	if len(rewards) != len(kl) || len(rewards) != len(ended) {
		return nil, nil, nil, fmt.Errorf("advantages: %d rewards, %d KL values and %d ended flags", len(rewards), len(kl), len(ended))
	}
	obj = obj.WithDefaults()
	shaped = obj.Shape(rewards, kl)
	if baseline, advantage, err = GroupAdvantages(shaped, ended, k, obj.Advantage); err != nil {
		return nil, nil, nil, err
	}
	return shaped, baseline, advantage, nil
}

// ResponseLogProbs are every rollout's token log-probabilities at its
// response tokens (mask 1), in order, under the policy and the reference:
// what a rollout records of its sampling for a later update (Recorded).
func (t *TokenLogProbs) ResponseLogProbs() (pol, ref [][]float32) {
	_ = t.each(func(_ int, b *policy.Batch, row int, lp, lq []float32) error {
		var p, q []float32
		for j, m := range b.Mask[row] {
			if m != 0 {
				p, q = append(p, lp[j]), append(q, lq[j])
			}
		}
		pol, ref = append(pol, p), append(ref, q)
		return nil
	})
	return pol, ref
}

// Sum is a response's log-probability: the sum of its tokens', in order.
func Sum(logprobs []float32) float64 {
	s := 0.0
	for _, x := range logprobs {
		s += float64(x)
	}
	return s
}

// Recorded lays out recorded response log-probabilities (ResponseLogProbs'
// values, one list per rollout) on batches of batchSize rows (Batches) as
// TokenLogProbs, 0 at every other position.
func Recorded(batches []*policy.Batch, batchSize int, pol, ref [][]float32) (*TokenLogProbs, error) {
	out := &TokenLogProbs{BatchSize: batchSize, Batches: batches}
	for bi, b := range batches {
		lp, lq := make([][]float32, len(b.Inputs)), make([][]float32, len(b.Inputs))
		for row := range b.Inputs {
			lp[row], lq[row] = make([]float32, len(b.Inputs[row])), make([]float32, len(b.Inputs[row]))
			if row >= b.Rows {
				continue
			}
			i := bi*batchSize + row
			if i >= len(pol) || i >= len(ref) {
				return nil, fmt.Errorf("recorded log-probabilities: %d and %d rollouts recorded, rollout %d asked for", len(pol), len(ref), i)
			}
			k := 0
			for j, m := range b.Mask[row] {
				if m == 0 {
					continue
				}
				if k >= len(pol[i]) || k >= len(ref[i]) {
					return nil, fmt.Errorf("recorded log-probabilities: rollout %d has %d and %d recorded, its response more tokens", i, len(pol[i]), len(ref[i]))
				}
				lp[row][j], lq[row][j] = pol[i][k], ref[i][k]
				k++
			}
			if k != len(pol[i]) || k != len(ref[i]) {
				return nil, fmt.Errorf("recorded log-probabilities: rollout %d has %d and %d recorded for %d response tokens", i, len(pol[i]), len(ref[i]), k)
			}
		}
		out.Policy, out.Reference = append(out.Policy, lp), append(out.Reference, lq)
	}
	return out, nil
}

// ScoreAndLogProbs is Score and LogProbs at once: they are independent
// graphs, and running them together keeps both cores busy through the
// many small ops one graph alone leaves a core waiting on. Each result is
// the same as when run alone.
func ScoreAndLogProbs(pe *policy.Engine, re *reward.Engine, pol, ref, rm *weights.Set, r *Rollouts, batchSize int) ([]float64, *TokenLogProbs, error) {
	var rewards []float64
	var rewardErr error
	var scored sync.WaitGroup
	scored.Go(func() { rewards, rewardErr = Score(re, rm, r, batchSize) })
	lp, err := LogProbs(pe, pol, ref, r, batchSize)
	scored.Wait()
	if err != nil {
		return nil, nil, err
	}
	if rewardErr != nil {
		return nil, nil, rewardErr
	}
	return rewards, lp, nil
}

// UpdateStats summarise an update: means over its optimizer steps.
type UpdateStats struct {
	Loss, GradNorm float64
	Steps          int
	// RatioMean and ClipFraction are a clipped update's mean importance
	// ratio and fraction of tokens clipped (1 and 0 on-policy).
	RatioMean, ClipFraction float64
	// StepLosses are the optimizer steps' losses, in order (Loss is
	// their mean).
	StepLosses []float64
}

// Update trains pol and st in place on the rollouts' batches (lp.Batches)
// with each rollout's advantage (indexed as the batches' rows): obj.Epochs
// passes over the batches in order, each of obj.Minibatches optimizer
// steps over consecutive batches (one per batch by default), the loss
// PolicyLoss(obj) reading the rollouts' log-probabilities in lp where it
// is clipped or holds the KL. One optimizer session runs the update and
// writes pol and st back when it ends, a failed step's too (the last good
// step's state).
func Update(tr *optim.Trainer, pol *weights.Set, st *optim.State, lr float64, lp *TokenLogProbs, advantage []float64, obj Objective) (out UpdateStats, err error) {
	obj = obj.WithDefaults()
	sess, err := tr.Start(pol, st)
	if err != nil {
		return out, fmt.Errorf("policy update: %w", err)
	}
	defer func() {
		if cerr := sess.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("policy update: %w", cerr)
		}
	}()
	batches := lp.Batches
	nb := len(batches)
	mb := obj.Minibatches
	if mb <= 0 || mb > nb {
		mb = nb
	}
	out.RatioMean = 1
	if obj.Clipped() {
		out.RatioMean = 0
	}
	steps := obj.Epochs * mb
	for range obj.Epochs {
		for m := range mb {
			first, last := m*nb/mb, (m+1)*nb/mb
			norm := obj.Norm(batches[first:last])
			parts := make([]optim.Batch, 0, last-first)
			for bi := first; bi < last; bi++ {
				parts = append(parts, lp.updateBatch(bi, advantage, norm, obj))
			}
			res, err := sess.Step(lr, parts[0], parts[1:]...)
			if err != nil {
				return out, fmt.Errorf("policy update: %w", err)
			}
			out.Loss += res.Loss / float64(steps)
			out.StepLosses = append(out.StepLosses, res.Loss)
			out.GradNorm += res.GradNorm / float64(steps)
			if obj.Clipped() {
				out.RatioMean += res.Metrics[0] / float64(steps)
				out.ClipFraction += res.Metrics[1] / float64(steps)
			}
			out.Steps++
		}
	}
	return out, nil
}

// updateBatch is batch bi with what obj's loss reads of its rows.
func (t *TokenLogProbs) updateBatch(bi int, advantage []float64, norm float32, obj Objective) UpdateBatch {
	b := t.Batches[bi]
	ub := UpdateBatch{Batch: b, Advantages: make([]float32, len(b.Inputs)), Norm: norm, Objective: obj}
	for j := 0; j < b.Rows; j++ {
		ub.Advantages[j] = float32(advantage[bi*t.BatchSize+j])
	}
	if obj.Clipped() {
		ub.Old = t.Policy[bi]
	}
	if obj.KLIn == KLInLoss {
		ub.Ref = t.Reference[bi]
	}
	return ub
}
