package reinforce

import (
	"fmt"
	"math"
	"slices"
)

// The policy-gradient family as choices of one Objective: how a group's
// rewards become advantages, how the per-token losses of a batch are
// averaged, where the KL penalty goes, and how often a rollout batch is
// reused with PPO's clipped ratio. The zero Objective (after
// WithDefaults) is NeMo-Aligner's REINFORCE: leave-one-out advantages,
// KL in the reward, one on-policy pass, the mean over all tokens.

// Advantage estimators (reinforce.advantage).
const (
	// AdvRLOO subtracts the leave-one-out baseline (LeaveOneOutBaseline).
	AdvRLOO = "rloo"
	// AdvGRPO is (r - group mean) / (group std + GroupEpsilon), the std
	// with Bessel's correction (torch.std is unbiased), as veRL's
	// compute_grpo_outcome_advantage computes it; TRL's GRPOTrainer adds
	// 1e-4 to the std instead of 1e-6.
	AdvGRPO = "grpo"
	// AdvDrGRPO is r - group mean (Dr. GRPO, "Understanding R1-Zero-Like
	// Training", Liu et al. 2025): no division by the std.
	AdvDrGRPO = "dr-grpo"
	// AdvReinforcePP is r - group mean, then normalised over the
	// iteration's samples: (a - mean) / (std + GroupEpsilon), as
	// OpenRLHF's reinforce_baseline whitens advantages over the batch
	// (there over tokens; here each sample counts once, its advantage
	// being the same at every token).
	AdvReinforcePP = "reinforce++"
)

// AdvantageEstimators lists the accepted estimators, the default first.
var AdvantageEstimators = []string{AdvRLOO, AdvGRPO, AdvDrGRPO, AdvReinforcePP}

// GroupEpsilon keeps a std normalisation finite where all rewards agree.
const GroupEpsilon = 1e-6

// Loss aggregations (reinforce.loss_aggregation).
const (
	// AggTokenMean is the mean over every response token of the
	// optimizer step (DAPO's token-level loss; NeMo-Aligner's
	// masked_mean, today's default).
	AggTokenMean = "token-mean"
	// AggSeqMeanTokenMean is the mean over sequences of each sequence's
	// mean over its tokens (GRPO's).
	AggSeqMeanTokenMean = "seq-mean-token-mean"
	// AggSeqMeanTokenSumNorm is each sequence's sum over its tokens divided
	// by a constant, the maximum response length, then the mean over
	// sequences (Dr. GRPO's; TRL's loss_type="dr_grpo").
	AggSeqMeanTokenSumNorm = "seq-mean-token-sum-norm"
)

// LossAggregations lists the accepted aggregations, the default first.
var LossAggregations = []string{AggTokenMean, AggSeqMeanTokenMean, AggSeqMeanTokenSumNorm}

// KL placements (reinforce.kl_in).
const (
	KLInReward = "reward" // r - beta * KL before the advantages (NeMo-Aligner, RLOO)
	KLInLoss   = "loss"   // beta * KL per token added to the loss (GRPO, with k3)
	KLInNone   = "none"   // no KL term; the KL is still measured and reported
)

// KLPlacements lists the accepted placements, the default first.
var KLPlacements = []string{KLInReward, KLInLoss, KLInNone}

// Importance ratio levels of a clipped update (reinforce.ratio).
const (
	RatioToken    = "token"    // PPO's per-token ratio
	RatioSequence = "sequence" // GSPO's: exp of the mean per-token log-ratio of a sequence
)

// RatioLevels lists the accepted levels, the default first.
var RatioLevels = []string{RatioToken, RatioSequence}

// Objective is how an iteration turns rewards into an update.
type Objective struct {
	Advantage   string // AdvantageEstimators
	Aggregation string // LossAggregations
	KLIn        string // KLPlacements
	KLEstimator string // KLEstimators
	KLBeta      float64
	// Epochs is how many passes the update takes over the rollout batch.
	// With more than one the loss is PPO's clipped surrogate against the
	// log-probabilities the rollouts were sampled with; with one the pass
	// is on-policy and the ratio is 1 (TRL's convention for
	// num_iterations=1).
	Epochs int
	// Minibatches is how many optimizer steps one pass takes, each over
	// consecutive generation batches whose gradients are summed; 0 is one
	// step per generation batch.
	Minibatches int
	// ClipLow and ClipHigh bound the ratio to [1 - ClipLow, 1 + ClipHigh]
	// (DAPO's clip-higher sets ClipHigh above ClipLow).
	ClipLow, ClipHigh float64
	Ratio             string // RatioLevels
	// MaxTokens is AggSeqMeanTokenSumNorm's constant: the longest response.
	MaxTokens int
	// OffPolicy: the rollouts may have been sampled by an earlier policy
	// than the one updated (asynchronous rollouts, max_staleness above 0),
	// so the loss is the clipped surrogate against the log-probabilities
	// they were sampled with even in one pass: the importance ratio
	// corrects for the staleness (NeMo-RL's and AReaL's off-policy
	// correction).
	OffPolicy bool
}

// WithDefaults fills the fields left empty with today's REINFORCE.
func (o Objective) WithDefaults() Objective {
	if o.Advantage == "" {
		o.Advantage = AdvRLOO
	}
	if o.Aggregation == "" {
		o.Aggregation = AggTokenMean
	}
	if o.KLIn == "" {
		o.KLIn = KLInReward
	}
	if o.KLEstimator == "" {
		o.KLEstimator = KLAbs
	}
	if o.Epochs < 1 {
		o.Epochs = 1
	}
	if o.Ratio == "" {
		o.Ratio = RatioToken
	}
	return o
}

// Clipped reports whether the loss reads the rollouts' own
// log-probabilities: whether a batch is trained on more than once, or by
// another policy than the one that sampled it.
func (o Objective) Clipped() bool { return o.Epochs > 1 || o.OffPolicy }

// Shape returns the rewards the advantages are computed from: each
// reward less beta times its KL penalty where the KL is in the reward.
func (o Objective) Shape(rewards, kl []float64) []float64 {
	out := make([]float64, len(rewards))
	for i := range rewards {
		out[i] = rewards[i]
		if o.KLIn == KLInReward {
			out[i] -= o.KLBeta * kl[i]
		}
	}
	return out
}

// GroupAdvantages computes each sample's advantage from the shaped rewards
// of its group, the k consecutive samples of one prompt, with the
// estimator. Every estimator reads the ended samples' rewards only (a
// truncated sample gets an advantage but takes no part in its group's
// statistics), and gives 0 to every sample of a group with at most one
// ended sample, as NeMo-Aligner's leave-one-out baseline does. baseline is
// what is subtracted: the leave-one-out mean or the group's mean.
func GroupAdvantages(shaped []float64, ended []bool, k int, estimator string) (baseline, advantage []float64, err error) {
	if estimator == AdvRLOO {
		if baseline, err = LeaveOneOutBaseline(shaped, ended, k); err != nil {
			return nil, nil, err
		}
		advantage = make([]float64, len(shaped))
		for i := range shaped {
			advantage[i] = shaped[i] - baseline[i]
		}
		return baseline, advantage, nil
	}
	if !slices.Contains(AdvantageEstimators, estimator) {
		return nil, nil, fmt.Errorf("unknown advantage estimator %q (allowed: %v)", estimator, AdvantageEstimators)
	}
	if k < 2 {
		return nil, nil, fmt.Errorf("%s advantages need at least 2 samples per prompt, got %d", estimator, k)
	}
	if len(shaped)%k != 0 || len(ended) != len(shaped) {
		return nil, nil, fmt.Errorf("%s advantages: %d rewards and %d end flags do not form groups of %d", estimator, len(shaped), len(ended), k)
	}
	baseline, advantage = make([]float64, len(shaped)), make([]float64, len(shaped))
	counted := make([]bool, len(shaped)) // in a group of at least two ended samples
	for g := 0; g < len(shaped); g += k {
		var ends []float64
		for i := g; i < g+k; i++ {
			if ended[i] {
				ends = append(ends, shaped[i])
			}
		}
		if len(ends) <= 1 {
			copy(baseline[g:g+k], shaped[g:g+k])
			continue
		}
		mean, std := meanStd(ends)
		for i := g; i < g+k; i++ {
			baseline[i], counted[i] = mean, true
			advantage[i] = shaped[i] - mean
			if estimator == AdvGRPO {
				advantage[i] /= std + GroupEpsilon
			}
		}
	}
	if estimator == AdvReinforcePP {
		var all []float64
		for i, c := range counted {
			if c {
				all = append(all, advantage[i])
			}
		}
		if len(all) >= 2 {
			mean, std := meanStd(all)
			for i, c := range counted {
				if c {
					advantage[i] = (advantage[i] - mean) / (std + GroupEpsilon)
				}
			}
		}
	}
	return baseline, advantage, nil
}

// meanStd is the mean and the std with Bessel's correction (n - 1) of at
// least two values, summed in order.
func meanStd(xs []float64) (mean, std float64) {
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(ss / float64(len(xs)-1))
}
