package activities

import (
	"fmt"
	"strings"

	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/model/lora"
	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/rng"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/policy"
	"github.com/alignflow/alignflow/reinforce"
	"github.com/alignflow/alignflow/reward"
)

// LoRA runs (spec.lora): SFT, the reward model and REINFORCE train
// adapters over frozen bases. Each stage's adapter is stored beside what
// the stage hands on:
//   - SFT trains an adapter over model.path's weights (the bundled
//     model, which starts from random weights, trains every weight) and
//     stores it and the merged policy, which is the run's reference and
//     the base of everything after it;
//   - the reward model trains an adapter and its head over the SFT
//     policy's backbone and stores them and the merged reward model;
//   - REINFORCE trains an adapter over the reference, and stores only it
//     (with its optimizer state) every iteration: the policy is the
//     reference with the adapter on, and the KL reference the same base
//     with it off. Rollouts and evaluations read the reference's tensors
//     once for both (lora.With), the adapter added in the graphs.
// Training checkpoints hold the adapter (and head) and their moments only.

// Trainer kinds of adapters, one compiled trainer each per model and adapter.
const (
	adapterSFT        = "sft"
	adapterBT         = "bt"
	adapterRegression = "regression"
	adapterRL         = "reinforce"
)

// adapterOf is the run's adapter shape for its model, nil when lora is off.
// A target the model lacks is an invalid spec naming the model's modules.
func adapterOf(spec config.Spec, cfg transformer.Config) (*lora.Config, error) {
	if !spec.LoRA.On() {
		return nil, nil
	}
	targets, err := lora.Resolve(cfg, spec.LoRA.Targets)
	if err != nil {
		return nil, invalidSpec(fmt.Errorf("spec field lora.%w", err))
	}
	c := lora.Config{Rank: spec.LoRA.Rank, Alpha: spec.LoRA.AlphaOrDefault(), Targets: targets, Dropout: spec.LoRA.Dropout}
	if err := c.Validate(); err != nil {
		return nil, invalidSpec(fmt.Errorf("spec field lora: %w", err))
	}
	return &c, nil
}

// freshAdapter is the adapter a stage starts from, seeded by the run's seed
// and the stage: the same on every worker and attempt.
func freshAdapter(cfg transformer.Config, c lora.Config, seed int64, stage string) (*weights.Set, error) {
	ad, err := lora.Init(cfg, c, rng.Source(seed, "lora-"+stage, 0).Uint64())
	if err != nil {
		return nil, invalidSpec(fmt.Errorf("spec field lora: %w", err))
	}
	return ad, nil
}

// sftAdapter is the adapter SFT starts from: lora.path's, as the data
// stage stored it, or a fresh one.
func (a *Activities) sftAdapter(spec config.Spec, d pipeline.Data, cfg transformer.Config, c lora.Config) (*weights.Set, error) {
	if d.Model != nil && d.Model.LoRA != nil {
		return a.Store.GetWeights(*d.Model.LoRA)
	}
	return freshAdapter(cfg, c, spec.Seed, "sft")
}

// adapterTrainer is the worker's trainer of kind for adapters with the
// names of trained over frozen, compiled on first use in the shared set
// (one per kind, scale, dropout and names) and reporting to eng's meter.
// Its dropout draws from the run's seed and the kind (optim.Trainer.WithSeed).
func (a *Activities) adapterTrainer(eng *engineSet, seed int64, kind string, obj reinforce.Objective, c lora.Config, trained, frozen *weights.Set) *optim.Trainer {
	shared := eng
	if eng.shared != nil {
		shared = eng.shared
	}
	cfg := shared.policy.Cfg
	cfg.LoRAScale, cfg.LoRADropout = c.Scale(), c.Dropout
	key := fmt.Sprintf("%s/%v/%v/%s/%s/%+v", kind, cfg.LoRAScale, cfg.LoRADropout, strings.Join(trained.Names(), ","), strings.Join(frozen.Names(), ","), obj)
	a.mu.Lock()
	defer a.mu.Unlock()
	tr := shared.adapters[key]
	if tr == nil {
		var loss optim.Loss
		switch kind {
		case adapterSFT:
			loss = policy.SFTLoss(cfg)
		case adapterBT:
			loss = reward.BTLoss(cfg)
		case adapterRegression:
			loss = reward.RegressionTrainingLoss(cfg)
		case adapterRL:
			loss = reinforce.PolicyLoss(cfg, obj)
		default:
			panic("activities: unknown adapter trainer " + kind)
		}
		if cfg.LoRADropout > 0 {
			loss.RNG = transformer.DropoutRNG
		}
		tr = optim.NewTrainer(shared.policy.Backend, trained.Names(), optim.DefaultAdamW, loss, frozen.Names()...)
		if shared.adapters == nil {
			shared.adapters = map[string]*optim.Trainer{}
		}
		shared.adapters[key] = tr
	}
	return tr.WithProgress(eng.meter).WithFrozen(frozen).WithSeed(int64(rng.Source(seed, "lora-dropout-"+kind, 0).Uint64()))
}

// adapted is the policy an artifact stands for: a LoRA run's adapter on
// the reference it was trained over (lora.With: the reference's tensors
// shared, the adapter added in the graphs), or the artifact itself when it
// is a whole model.
func adapted(ref, set *weights.Set) (*weights.Set, error) {
	_, ok, err := lora.Of(set)
	switch {
	case err != nil:
		return nil, corrupt(err)
	case ok:
		return lora.With(ref, set), nil
	}
	return set, nil
}
