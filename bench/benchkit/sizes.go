// Package benchkit builds the fixtures and runs the stages that alignflow's
// performance benchmarks measure. The package benchmarks (policy, reward,
// reinforce) and the side-by-side harness (bench/harness, compared with the
// PyTorch reference in bench/pytorch) share it, so both time exactly the same
// work: the model sizes, batch sizes and optimizer settings of the default
// run spec (config.Default), on data from the bundled matched generator.
//
// Benchmarks of policy, reward and reinforce import this package from their
// external test packages (package policy_test and so on): benchkit imports
// those packages, so an internal test file cannot.
package benchkit

import (
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/tokenizer"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/policy"
	"github.com/alignflow/alignflow/reinforce"
	"github.com/alignflow/alignflow/reward"
)

// Sizes are the shapes and hyperparameters of every stage. JSON field names
// are what bench/pytorch/reference.py reads from spec.json.
type Sizes struct {
	Seed  uint64             `json:"seed"`
	Model transformer.Config `json:"model"`
	AdamW AdamWSettings      `json:"adamw"`
	// Data is the matched generator's configuration the token data comes from.
	Data config.Generate `json:"data"`

	SFT    TrainSizes  `json:"sft"`
	Reward RewardSizes `json:"reward"`
	// Generation samples with the REINFORCE sampling settings at these batch sizes.
	GenBatches []int        `json:"generation_batches"`
	Sample     SampleSizes  `json:"sample"`
	Reinforce  RLSizes      `json:"reinforce"`
	Tokens     TokenSymbols `json:"tokens"`
}

// AdamWSettings mirror optim.AdamW with explicit JSON names.
type AdamWSettings struct {
	Beta1       float64 `json:"beta1"`
	Beta2       float64 `json:"beta2"`
	Eps         float64 `json:"eps"`
	WeightDecay float64 `json:"weight_decay"` // decoupled, on tensors of rank >= 2 only
	ClipNorm    float64 `json:"clip_norm"`    // global L2 norm; 0 disables
}

// Optim returns the optimizer settings as optim.AdamW.
func (a AdamWSettings) Optim() optim.AdamW {
	return optim.AdamW{Beta1: a.Beta1, Beta2: a.Beta2, Eps: a.Eps, WeightDecay: a.WeightDecay, ClipNorm: a.ClipNorm}
}

// TrainSizes size a supervised training stage.
type TrainSizes struct {
	BatchSize    int     `json:"batch_size"`
	LearningRate float64 `json:"learning_rate"`
}

// RewardSizes size the reward model's Bradley-Terry training stage.
type RewardSizes struct {
	BatchSize    int     `json:"batch_size"`
	LearningRate float64 `json:"learning_rate"`
	// Loss is the BT variant of the default recipe's BT phase.
	Loss reward.Loss `json:"loss"`
}

// SampleSizes are the sampling settings of generation.
type SampleSizes struct {
	Temperature float64 `json:"temperature"`
	TopP        float64 `json:"top_p"`
	MaxTokens   int     `json:"max_tokens"`
}

// Options returns the settings as policy.SampleOptions.
func (s SampleSizes) Options() policy.SampleOptions {
	return policy.SampleOptions{Temperature: s.Temperature, TopP: s.TopP, MaxTokens: s.MaxTokens}
}

// RLSizes size one REINFORCE iteration.
type RLSizes struct {
	PromptsPerIteration int     `json:"prompts_per_iteration"`
	SamplesPerPrompt    int     `json:"samples_per_prompt"`
	BatchSize           int     `json:"batch_size"`
	LearningRate        float64 `json:"learning_rate"`
	KLBeta              float64 `json:"kl_beta"`
	KLEstimator         string  `json:"kl_estimator"`
	// PolicySFTSteps are SFT steps taken from the fresh policy to make the
	// REINFORCE fixture policy (and its reference): a freshly initialised
	// policy almost never samples EOS, so leave-one-out baselines would be
	// the samples' own rewards and every advantage zero.
	PolicySFTSteps int `json:"policy_sft_steps"`
}

// Settings returns the iteration's reinforce.Settings.
func (r RLSizes) Settings(s SampleSizes) reinforce.Settings {
	return reinforce.Settings{Objective: reinforce.Objective{KLBeta: r.KLBeta, KLEstimator: r.KLEstimator}.WithDefaults(),
		SamplesPerPrompt: r.SamplesPerPrompt, LearningRate: r.LearningRate, BatchSize: r.BatchSize, Sample: s.Options()}
}

// TokenSymbols are the special token ids.
type TokenSymbols struct {
	BOS int `json:"bos"`
	EOS int `json:"eos"`
	PAD int `json:"pad"`
}

// DefaultSizes reads the sizes of the default run spec.
func DefaultSizes() Sizes {
	spec := config.Default()
	m := spec.Model
	a := optim.DefaultAdamW
	r := spec.Reinforce
	loss := reward.LossBTScaled
	if rec, err := reward.LookupRecipe(spec.Reward.Recipe); err == nil && rec.BT != "" {
		loss = rec.BT
	}
	return Sizes{
		Seed:   uint64(spec.Seed),
		Model:  transformer.Config{Vocab: tokenizer.VocabSize, Dim: m.Dim, Heads: m.Heads, Layers: m.Layers, Hidden: m.Hidden, MaxLen: m.MaxLen},
		AdamW:  AdamWSettings{Beta1: a.Beta1, Beta2: a.Beta2, Eps: a.Eps, WeightDecay: a.WeightDecay, ClipNorm: a.ClipNorm},
		Data:   spec.Data.Generate,
		SFT:    TrainSizes{BatchSize: spec.SFT.BatchSize, LearningRate: spec.SFT.LearningRate},
		Reward: RewardSizes{BatchSize: spec.Reward.BatchSize, LearningRate: spec.Reward.LearningRate, Loss: loss},
		// Batch 1 is one interactive sample; 16 is a typical evaluation batch.
		GenBatches: []int{1, 16},
		Sample:     SampleSizes{Temperature: r.Temperature, TopP: r.TopP, MaxTokens: r.MaxTokens},
		Reinforce: RLSizes{PromptsPerIteration: r.PromptsPerIteration, SamplesPerPrompt: r.SamplesPerPrompt,
			BatchSize: r.BatchSize, LearningRate: r.LearningRate, KLBeta: r.KLBeta, KLEstimator: r.KLEstimator,
			PolicySFTSteps: 40},
		Tokens: TokenSymbols{BOS: tokenizer.BOS, EOS: tokenizer.EOS, PAD: tokenizer.PAD},
	}
}
