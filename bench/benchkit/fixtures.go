package benchkit

import (
	"errors"
	"fmt"
	"math/rand/v2"

	"github.com/gomlx/gomlx/backends"

	"github.com/alignflow/alignflow/data/helpsteer"
	"github.com/alignflow/alignflow/data/matched"
	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/tokenizer"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/policy"
	"github.com/alignflow/alignflow/reward"
)

// Data is the tokenised training data the stages draw from, built as the
// pipeline's activities build it: training-split ratings for SFT, non-tie
// training preferences for Bradley-Terry, training prompts for sampling.
type Data struct {
	SFTPrompts, SFTResponses [][]int32
	Pairs                    []reward.Pair
	Prompts                  [][]int32
}

// fitPrompt is the pipeline's filter: a prompt must leave room for a response.
func fitPrompt(p string, maxLen int) bool { return len(tokenizer.EncodePrompt(p)) < maxLen-4 }

// LoadData generates the matched data set of the sizes' data settings.
func LoadData(s Sizes) *Data {
	noise := func(v float64) float64 {
		if v == 0 {
			return -1 // the generator reads 0 as "default"; the spec means none
		}
		return v
	}
	g := s.Data
	ds, task := matched.Generate(matched.Options{Seed: int64(s.Seed), Prompts: g.Prompts, ValidationFraction: g.ValidationFraction,
		RatingNoise: noise(g.RatingNoise), PreferenceNoise: noise(g.PreferenceNoise)})
	maxLen := s.Model.MaxLen
	d := &Data{}
	for _, r := range ds.Ratings {
		if r.Split != helpsteer.SplitTrain || !fitPrompt(r.Prompt, maxLen) {
			continue
		}
		d.SFTPrompts = append(d.SFTPrompts, tokenizer.EncodePrompt(r.Prompt))
		d.SFTResponses = append(d.SFTResponses, tokenizer.EncodeResponse(r.Response))
	}
	for _, p := range ds.Preferences {
		if p.Tie() || p.Split != helpsteer.SplitTrain {
			continue
		}
		pair, _, ok := reward.PairOf(tokenizer.EncodePrompt(p.Prompt), tokenizer.EncodeResponse(p.Chosen()),
			tokenizer.EncodeResponse(p.Rejected()), float64(p.Margin()), maxLen, 1)
		if ok { // the pipeline's filter too
			d.Pairs = append(d.Pairs, pair)
		}
	}
	for _, p := range task.Prompts(helpsteer.SplitTrain) {
		if fitPrompt(p, maxLen) {
			d.Prompts = append(d.Prompts, tokenizer.EncodePrompt(p))
		}
	}
	return d
}

// Counts says how many steps each stage runs after its warmup steps.
type Counts struct {
	// policy_train_step and reward_train_step
	TrainWarmup int `json:"train_warmup"`
	TrainSteps  int `json:"train_steps"`
	// generation_batch*
	GenWarmup int `json:"generation_warmup"`
	GenSteps  int `json:"generation_steps"`
	// reinforce_iteration
	RLWarmup int `json:"reinforce_warmup"`
	RLSteps  int `json:"reinforce_steps"`
}

// For returns the warmup and timed steps of a stage.
func (c Counts) For(stage string) (warmup, steps int) {
	switch stage {
	case PolicyTrainStep, PolicyTrainStepLoRA, RewardTrainStep:
		return c.TrainWarmup, c.TrainSteps
	case ReinforceIteration:
		return c.RLWarmup, c.RLSteps
	}
	return c.GenWarmup, c.GenSteps
}

// QuickCounts keep a full comparison under a few minutes on 2 cores.
var QuickCounts = Counts{TrainWarmup: 1, TrainSteps: 3, GenWarmup: 1, GenSteps: 3, RLWarmup: 1, RLSteps: 2}

// FullCounts give steadier medians and a longer loss curve.
var FullCounts = Counts{TrainWarmup: 2, TrainSteps: 20, GenWarmup: 1, GenSteps: 10, RLWarmup: 1, RLSteps: 6}

// RLCheckIterations are the iterations the REINFORCE check records (the
// first has KL 0: the policy still equals its reference).
const RLCheckIterations = 2

// Fixtures are everything the stages start from: weights and batches. The
// harness writes them to disk so the PyTorch reference starts from the same.
type Fixtures struct {
	Sizes  Sizes
	Counts Counts
	// Policy is a fresh policy.Init; Reward starts from its backbone.
	Policy, Reward *weights.Set
	// RLPolicy is Policy after Sizes.Reinforce.PolicySFTSteps SFT steps: the
	// REINFORCE stage's policy and its frozen reference.
	RLPolicy *weights.Set
	// SFTBatches and PairBatches feed the training stages, one per step
	// (warmup included).
	SFTBatches  []*policy.Batch
	PairBatches []*reward.PairBatch
	// GenPrompts are the prompts of one generation call, by batch size.
	GenPrompts map[int][][]int32
	// RLPrompts are the prompts of each REINFORCE iteration: the check
	// iterations first, then warmup and timed ones.
	RLPrompts [][][]int32
}

// NewFixtures builds the fixtures deterministically from the sizes' seed.
// Only the REINFORCE policy needs computation (its SFT steps, on be).
func NewFixtures(be backends.Backend, s Sizes, c Counts, d *Data) (*Fixtures, error) {
	cfg := s.Model
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(d.SFTPrompts) == 0 || len(d.Pairs) == 0 || len(d.Prompts) == 0 {
		return nil, fmt.Errorf("benchkit: the generated data has %d SFT rows, %d pairs and %d prompts", len(d.SFTPrompts), len(d.Pairs), len(d.Prompts))
	}
	rng := rand.New(rand.NewPCG(s.Seed, 0xbe7c4))
	f := &Fixtures{Sizes: s, Counts: c, GenPrompts: map[int][][]int32{}}
	f.Policy = policy.Init(cfg, s.Seed)
	var err error
	if f.Reward, err = reward.InitFromBackbone(f.Policy, s.Seed); err != nil {
		return nil, err
	}

	sftBatch := func() (*policy.Batch, error) {
		var pr, rs [][]int32
		for _, i := range rng.Perm(len(d.SFTPrompts))[:min(s.SFT.BatchSize, len(d.SFTPrompts))] {
			pr, rs = append(pr, d.SFTPrompts[i]), append(rs, d.SFTResponses[i])
		}
		return policy.MakeBatch(cfg, s.SFT.BatchSize, pr, rs)
	}
	for i := 0; i < c.TrainWarmup+c.TrainSteps; i++ {
		b, err := sftBatch()
		if err != nil {
			return nil, err
		}
		f.SFTBatches = append(f.SFTBatches, b)
	}
	for i := 0; i < c.TrainWarmup+c.TrainSteps; i++ {
		var pairs []reward.Pair
		for _, j := range rng.Perm(len(d.Pairs))[:min(s.Reward.BatchSize, len(d.Pairs))] {
			pairs = append(pairs, d.Pairs[j])
		}
		b, err := reward.MakePairBatch(pairs, s.Reward.BatchSize, cfg, s.Reward.Loss)
		if err != nil {
			return nil, err
		}
		f.PairBatches = append(f.PairBatches, b)
	}
	pick := func(n int) [][]int32 {
		out := make([][]int32, n)
		for i := range out {
			out[i] = d.Prompts[rng.IntN(len(d.Prompts))]
		}
		return out
	}
	for _, bs := range s.GenBatches {
		f.GenPrompts[bs] = pick(bs)
	}
	for i := 0; i < RLCheckIterations+c.RLWarmup+c.RLSteps; i++ {
		f.RLPrompts = append(f.RLPrompts, pick(s.Reinforce.PromptsPerIteration))
	}

	// The REINFORCE policy: a short SFT run from the fresh policy, on its own batches.
	f.RLPolicy = f.Policy.Clone()
	if s.Reinforce.PolicySFTSteps > 0 {
		tr := optim.NewTrainer(be, f.RLPolicy.Names(), s.AdamW.Optim(), policy.SFTLoss(cfg))
		if err := trainSFT(tr, f.RLPolicy, s.SFT.LearningRate, s.Reinforce.PolicySFTSteps, sftBatch); err != nil {
			return nil, fmt.Errorf("benchkit: REINFORCE fixture policy: %w", err)
		}
	}
	f.RLPolicy.Metadata["kind"] = "policy"
	return f, nil
}

// trainSFT takes steps optimizer steps of tr on params, in place, from a
// fresh optimizer state, on the batches next makes.
func trainSFT(tr *optim.Trainer, params *weights.Set, lr float64, steps int, next func() (*policy.Batch, error)) error {
	sess, err := tr.Start(params, optim.NewState(params))
	if err != nil {
		return err
	}
	for i := 0; i < steps && err == nil; i++ {
		var b *policy.Batch
		if b, err = next(); err == nil {
			_, err = sess.Step(lr, b)
		}
	}
	return errors.Join(err, sess.Close())
}
