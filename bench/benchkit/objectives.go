package benchkit

import (
	"math/rand/v2"

	"github.com/gomlx/gomlx/backends"

	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/policy"
	"github.com/alignflow/alignflow/reinforce"
	"github.com/alignflow/alignflow/reward"
)

// RLObjectivesCheck is the check file (checks/<name>.json) of the
// REINFORCE stage's objective variants: RLObjectiveVariants, each run for
// RLCheckIterations iterations from the fixture policy, for the reference
// to replay with its own estimators, aggregations and clipped losses.
const RLObjectivesCheck = "reinforce_objectives"

// RLObjectiveBatchSize is the variants' generation, scoring and optimizer
// batch: smaller than an iteration's rollouts, so an iteration has several
// batches (the last one padded) for minibatches to sum gradients over.
const RLObjectiveBatchSize = 24

// RLObjectiveVariant is one objective the check records.
type RLObjectiveVariant struct {
	Name      string
	Objective reinforce.Objective // KLBeta 0 and KLEstimator "" take the stage's
}

// RLObjectiveVariants together take every advantage estimator, every loss
// aggregation, every KL placement, clipped updates with the token and the
// sequence ratio and asymmetric clip bounds, and one optimizer step per
// batch, per several batches and per pass.
var RLObjectiveVariants = []RLObjectiveVariant{
	// GRPO with DAPO's token-mean and clip-higher, the KL (k3) in the loss,
	// two steps per pass over three batches (1 and 2 batches).
	{"grpo-token-mean-clip", reinforce.Objective{Advantage: reinforce.AdvGRPO, Aggregation: reinforce.AggTokenMean,
		KLIn: reinforce.KLInLoss, KLEstimator: reinforce.KLK3, KLBeta: 0.04, Epochs: 2, Minibatches: 2,
		ClipLow: 0.2, ClipHigh: 0.28, Ratio: reinforce.RatioToken}},
	// Dr. GRPO: no std, the constant normaliser, no KL; one step per batch.
	{"dr-grpo-sum-norm-clip", reinforce.Objective{Advantage: reinforce.AdvDrGRPO, Aggregation: reinforce.AggSeqMeanTokenSumNorm,
		KLIn: reinforce.KLInNone, Epochs: 2, ClipLow: 0.2, ClipHigh: 0.28, Ratio: reinforce.RatioToken}},
	// GSPO: the sequence-level ratio with GSPO's clip bounds (3e-4 and
	// 4e-4: a sequence ratio moves far less than a token's, and 0.2 would
	// never clip), GRPO's sequence mean; one step per pass (every batch's
	// gradients summed).
	{"gspo-seq-mean-sequence-ratio", reinforce.Objective{Advantage: reinforce.AdvGRPO, Aggregation: reinforce.AggSeqMeanTokenMean,
		KLIn: reinforce.KLInNone, Epochs: 2, Minibatches: 1, ClipLow: 3e-4, ClipHigh: 4e-4, Ratio: reinforce.RatioSequence}},
	// REINFORCE++: batch-whitened advantages, the KL (k2) in the reward,
	// on-policy, one step per batch.
	{"reinforce++-token-mean", reinforce.Objective{Advantage: reinforce.AdvReinforcePP, Aggregation: reinforce.AggTokenMean,
		KLIn: reinforce.KLInReward, KLEstimator: reinforce.KLK2}},
	// RLOO with the sequence mean and the KL (k3) in the loss, on-policy,
	// one step over every batch.
	{"rloo-seq-mean-kl-loss", reinforce.Objective{Advantage: reinforce.AdvRLOO, Aggregation: reinforce.AggSeqMeanTokenMean,
		KLIn: reinforce.KLInLoss, KLEstimator: reinforce.KLK3, KLBeta: 0.04, Minibatches: 1}},
}

// RLObjectiveSettings are a variant's settings under their config names
// (reinforce.* of the run spec), defaults filled in.
type RLObjectiveSettings struct {
	Advantage        string  `json:"advantage"`
	LossAggregation  string  `json:"loss_aggregation"`
	KLIn             string  `json:"kl_in"`
	KLEstimator      string  `json:"kl_estimator"`
	KLBeta           float64 `json:"kl_beta"`
	UpdateEpochs     int     `json:"update_epochs"`
	Minibatches      int     `json:"minibatches"`
	ClipLow          float64 `json:"clip_low"`
	ClipHigh         float64 `json:"clip_high"`
	Ratio            string  `json:"ratio"`
	MaxTokens        int     `json:"max_tokens"`
	SamplesPerPrompt int     `json:"samples_per_prompt"`
	BatchSize        int     `json:"batch_size"`
	LearningRate     float64 `json:"learning_rate"`
}

// RLObjectiveRollout is one rollout of a recorded variant iteration.
type RLObjectiveRollout struct {
	RLCheckRollout
	// LogProb is the response's log-probability when sampled (the sum of
	// its tokens', the clipped loss's old log-probabilities).
	LogProb float64 `json:"logprob"`
}

// RLObjectiveIteration is one recorded iteration of a variant: its
// settings (the variant's, so that an iteration reads alone), its
// rollouts and what its update reported (reinforce.UpdateStats).
type RLObjectiveIteration struct {
	Settings     RLObjectiveSettings  `json:"settings"`
	Prompts      [][]int32            `json:"prompts"`
	Rollouts     []RLObjectiveRollout `json:"rollouts"`
	Loss         float64              `json:"loss"`
	GradNorm     float64              `json:"grad_norm"`
	RatioMean    float64              `json:"ratio_mean"`
	ClipFraction float64              `json:"clip_fraction"`
	Steps        int                  `json:"steps"`
	StepLosses   []float64            `json:"step_losses"`
}

// RLObjectiveCheck is one variant's recorded iterations.
type RLObjectiveCheck struct {
	Variant    string                 `json:"variant"`
	Settings   RLObjectiveSettings    `json:"settings"`
	Iterations []RLObjectiveIteration `json:"iterations"`
}

// Settings returns the iteration settings of variant v at the sizes: the
// stage's samples, learning rate, sampling and KL (where v leaves it),
// RLObjectiveBatchSize rows per batch, MaxTokens the sampling's.
func (v RLObjectiveVariant) Settings(s Sizes) reinforce.Settings {
	set := s.Reinforce.Settings(s.Sample)
	obj := v.Objective
	if obj.KLBeta == 0 {
		obj.KLBeta = s.Reinforce.KLBeta
	}
	if obj.KLEstimator == "" {
		obj.KLEstimator = s.Reinforce.KLEstimator
	}
	if obj.MaxTokens == 0 {
		obj.MaxTokens = s.Sample.MaxTokens
	}
	set.Objective = obj.WithDefaults()
	set.BatchSize = RLObjectiveBatchSize
	return set
}

// objectiveSettings are set's objective under the config names.
func objectiveSettings(set reinforce.Settings) RLObjectiveSettings {
	o := set.Objective
	return RLObjectiveSettings{Advantage: o.Advantage, LossAggregation: o.Aggregation, KLIn: o.KLIn, KLEstimator: o.KLEstimator,
		KLBeta: o.KLBeta, UpdateEpochs: o.Epochs, Minibatches: o.Minibatches, ClipLow: o.ClipLow, ClipHigh: o.ClipHigh,
		Ratio: o.Ratio, MaxTokens: o.MaxTokens, SamplesPerPrompt: set.SamplesPerPrompt, BatchSize: set.BatchSize,
		LearningRate: set.LearningRate}
}

// RecordObjectives runs every variant for RLCheckIterations iterations on
// the check iterations' prompts, each from the fixture policy with a fresh
// optimizer state and the same sampling stream, and records them.
func RecordObjectives(be backends.Backend, f *Fixtures, pe *policy.Engine, re *reward.Engine) ([]RLObjectiveCheck, error) {
	s := f.Sizes
	var out []RLObjectiveCheck
	for _, v := range RLObjectiveVariants {
		set := v.Settings(s)
		tr := optim.NewTrainer(be, pe.Names(), s.AdamW.Optim(), reinforce.PolicyLoss(s.Model, set.Objective))
		it := &reinforce.Iteration{Policy: pe, Reward: re, Trainer: tr, Reference: f.RLPolicy, RM: f.Reward, Settings: set}
		p := f.RLPolicy.Clone()
		st := optim.NewState(p)
		rng := rand.New(rand.NewPCG(s.Seed, 0x0b1ec))
		c := RLObjectiveCheck{Variant: v.Name, Settings: objectiveSettings(set)}
		for i := 0; i < RLCheckIterations; i++ {
			prompts := f.RLPrompts[i]
			rollouts, stats, err := it.Run(p, st, prompts, rng)
			if err != nil {
				return nil, err
			}
			u := stats.Update
			ci := RLObjectiveIteration{Settings: c.Settings, Prompts: prompts, Loss: u.Loss, GradNorm: u.GradNorm,
				RatioMean: u.RatioMean, ClipFraction: u.ClipFraction, Steps: u.Steps, StepLosses: u.StepLosses}
			for _, r := range rollouts {
				ci.Rollouts = append(ci.Rollouts, RLObjectiveRollout{RLCheckRollout: RLCheckRollout{Prompt: r.Prompt,
					Response: r.Response, Ended: r.Ended, Reward: r.Reward, KL: r.KL, Shaped: r.Shaped, Baseline: r.Baseline,
					Advantage: r.Advantage}, LogProb: r.LogProb})
			}
			c.Iterations = append(c.Iterations, ci)
		}
		out = append(out, c)
	}
	return out, nil
}
