package rewardbench

import (
	"fmt"

	"github.com/alignflow/alignflow/data/helpsteer"
)

// Scorer returns a reward per token sequence, such as reward.Engine.Rewards
// bound to a model.
type Scorer func(seqs [][]int32) ([]float64, error)

// Encoder turns a pair's texts into the reward model's ids, fitted to a
// window (lm.Codec.Sequence).
type Encoder interface {
	Sequence(prompt, response string, maxLen int) (seq []int32, whole, cut bool, err error)
}

// Run scores every pair's chosen and rejected response with score and
// reports, per pair, whether chosen got the higher reward.
//
// Sequences longer than maxLen keep the response and as much of the end of
// the prompt as fits (after BOS): cutting the end instead would often leave
// chosen and rejected identical and every long pair a tie.
func Run(pairs []helpsteer.RewardBenchPair, maxLen int, enc Encoder, score Scorer) ([]Result, error) {
	seqs := make([][]int32, 0, 2*len(pairs))
	for i, p := range pairs {
		chosen, err := Sequence(enc, p.Prompt, p.Chosen, maxLen)
		if err != nil {
			return nil, fmt.Errorf("pair %d (id %d): %w", i, p.ID, err)
		}
		rejected, err := Sequence(enc, p.Prompt, p.Rejected, maxLen)
		if err != nil {
			return nil, fmt.Errorf("pair %d (id %d): %w", i, p.ID, err)
		}
		seqs = append(seqs, chosen, rejected)
	}
	rewards, err := score(seqs)
	if err != nil {
		return nil, fmt.Errorf("score %d pairs: %w", len(pairs), err)
	}
	if len(rewards) != len(seqs) {
		return nil, fmt.Errorf("score %d pairs: got %d rewards for %d sequences", len(pairs), len(rewards), len(seqs))
	}
	out := make([]Result, len(pairs))
	for i, p := range pairs {
		out[i] = Result{Subset: p.Subset, Correct: IsCorrect(rewards[2*i], rewards[2*i+1])}
	}
	return out, nil
}

// Sequence is the token sequence the reward model reads for a response to
// prompt, at most maxLen tokens, as the encoder fits it (tokenizer.Fit):
// the BOS, the prompt (its start dropped if need be), the response and the
// end of its turn (its end dropped if the response alone is too long). A
// benchmark scores every pair, so a pair whose response is cut is scored
// cut, not left out.
func Sequence(enc Encoder, prompt, response string, maxLen int) ([]int32, error) {
	seq, _, _, err := enc.Sequence(prompt, response, maxLen)
	return seq, err
}
