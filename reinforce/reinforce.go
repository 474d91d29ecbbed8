// Package reinforce is policy-gradient RL with a reward model: by default
// REINFORCE with a leave-one-out baseline and a KL penalty against the
// frozen initial policy, as NeMo-Aligner trains with the
// HelpSteer2-Preference reward model (no critic, no ratio clipping, one
// on-policy pass per rollout batch), and the group-relative family peers
// ship as choices of an Objective (objective.go): GRPO, Dr. GRPO,
// REINFORCE++, DAPO's token-mean loss and clip-higher, PPO-style clipped
// multi-epoch updates, the KL in the loss. An iteration is named steps
// (steps.go), and Summarize gives the means an iteration, an update after
// shards and a policy evaluation report alike.
package reinforce

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/policy"
	"github.com/alignflow/alignflow/reward"
)

// KL estimators of log pi(t) - log pi_ref(t) per token.
const (
	KLAbs = "abs" // |log-ratio|, NeMo-Aligner's default
	KLK1  = "k1"  // log-ratio
	KLK2  = "k2"  // 0.5 * log-ratio^2
	KLK3  = "k3"  // exp(-log-ratio) - 1 + log-ratio: non-negative, low variance
)

// KLEstimators lists the accepted estimator names.
var KLEstimators = []string{KLAbs, KLK1, KLK2, KLK3}

// TokenKL estimates the KL contribution of one token from its log-probability
// under the policy and under the reference.
func TokenKL(logp, logpRef float64, estimator string) (float64, error) {
	d := logp - logpRef
	switch estimator {
	case KLAbs:
		return math.Abs(d), nil
	case KLK1:
		return d, nil
	case KLK2:
		return 0.5 * d * d, nil
	case KLK3:
		return math.Exp(-d) - 1 + d, nil
	}
	return 0, fmt.Errorf("unknown kl_estimator %q (allowed: %v)", estimator, KLEstimators)
}

// SequenceKL averages TokenKL over the response tokens (mask 1) of a sequence.
func SequenceKL(logp, logpRef, mask []float32, estimator string) (float64, error) {
	sum, n := 0.0, 0.0
	for i, m := range mask {
		if m == 0 {
			continue
		}
		k, err := TokenKL(float64(logp[i]), float64(logpRef[i]), estimator)
		if err != nil {
			return 0, err
		}
		sum += k
		n++
	}
	if n == 0 {
		return 0, nil
	}
	return sum / n, nil
}

// LeaveOneOutBaseline returns, for each sample, the mean shaped reward of the
// other samples of its prompt that ended with EOS. Samples are grouped by
// prompt in consecutive runs of groupSize. Where a group has at most one ended
// sample the baseline equals the sample's own reward, so its advantage is 0.
// Truncated samples get a baseline (and stay in the loss) but never enter one.
func LeaveOneOutBaseline(rewards []float64, ended []bool, groupSize int) ([]float64, error) {
	if groupSize < 2 {
		return nil, fmt.Errorf("leave-one-out baseline needs at least 2 samples per prompt, got %d", groupSize)
	}
	if len(rewards)%groupSize != 0 || len(ended) != len(rewards) {
		return nil, fmt.Errorf("leave-one-out baseline: %d rewards and %d end flags do not form groups of %d", len(rewards), len(ended), groupSize)
	}
	base := make([]float64, len(rewards))
	for g := 0; g < len(rewards); g += groupSize {
		sum, n := 0.0, 0
		for i := g; i < g+groupSize; i++ {
			if ended[i] {
				sum += rewards[i]
				n++
			}
		}
		for i := g; i < g+groupSize; i++ {
			switch {
			case n <= 1:
				base[i] = rewards[i]
			case ended[i]:
				base[i] = (sum - rewards[i]) / float64(n-1)
			default:
				base[i] = sum / float64(n)
			}
		}
	}
	return base, nil
}

// Settings are the knobs of one REINFORCE iteration.
type Settings struct {
	Objective            // advantages, KL and the update's passes
	SamplesPerPrompt int // K, responses per prompt
	LearningRate     float64
	BatchSize        int // rows per generation, scoring and optimizer batch
	Sample           policy.SampleOptions
}

// Outcome is one sampled response with everything that decided its update.
type Outcome struct {
	Prompt    int // index into the iteration's prompts
	Response  []int32
	Ended     bool
	Reward    float64 // reward model score
	KL        float64 // mean per-token KL estimate to the reference
	Shaped    float64 // Reward - beta * KL where the KL is in the reward
	LogProb   float64 // the sum of the response's log-probabilities when sampled
	Baseline  float64
	Advantage float64
}

// Stats summarise an iteration: its rollouts' Summary, the mean shaped
// reward and the update.
type Stats struct {
	Summary
	Update     UpdateStats
	ShapedMean float64
}

// Iteration runs one REINFORCE iteration in place on pol and its optimizer state:
// sample K responses per prompt, score them, shape rewards with the KL penalty,
// compute leave-one-out advantages and take one on-policy pass of optimizer steps.
type Iteration struct {
	Policy    *policy.Engine
	Reward    *reward.Engine
	Trainer   *optim.Trainer
	Reference *weights.Set // the frozen initial policy
	RM        *weights.Set
	Settings  Settings
}

// NewTrainer returns the optimizer for PolicyLoss(obj) over a policy's parameters.
func NewTrainer(pe *policy.Engine, obj Objective) *optim.Trainer {
	return optim.NewTrainer(pe.Backend, pe.Names(), optim.DefaultAdamW, PolicyLoss(pe.Cfg, obj))
}

// Run performs the iteration on prompts (token contexts) with rng as the only
// source of randomness.
func (it *Iteration) Run(pol *weights.Set, st *optim.State, prompts [][]int32, rng *rand.Rand) ([]Outcome, Stats, error) {
	s := it.Settings
	r, err := Rollout(it.Policy, pol, prompts, s.SamplesPerPrompt, s.BatchSize, s.Sample, rng)
	if err != nil {
		return nil, Stats{}, err
	}
	rewards, lp, err := ScoreAndLogProbs(it.Policy, it.Reward, pol, it.Reference, it.RM, r, s.BatchSize)
	if err != nil {
		return nil, Stats{}, err
	}
	kl, err := lp.KL(s.KLEstimator)
	if err != nil {
		return nil, Stats{}, err
	}
	ended := r.Ended()
	shaped, base, adv, err := Advantages(rewards, kl, ended, s.Objective, s.SamplesPerPrompt)
	if err != nil {
		return nil, Stats{}, err
	}
	sampled, _ := lp.ResponseLogProbs()
	rollouts := make([]Outcome, len(r.Samples))
	stats := Stats{Summary: Summarize(r.Samples, rewards, kl, nil)}
	for i, sm := range r.Samples {
		rollouts[i] = Outcome{Prompt: i / s.SamplesPerPrompt, Response: sm.Tokens, Ended: ended[i], Reward: rewards[i], KL: kl[i],
			Shaped: shaped[i], Baseline: base[i], Advantage: adv[i], LogProb: Sum(sampled[i])}
		stats.ShapedMean += shaped[i]
	}
	stats.ShapedMean /= float64(len(rollouts))

	up, err := Update(it.Trainer, pol, st, s.LearningRate, lp, adv, s.Objective)
	if err != nil {
		return nil, Stats{}, err
	}
	stats.Update = up
	return rollouts, stats, nil
}
