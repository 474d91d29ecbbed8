package benchkit

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/gomlx/gomlx/backends"

	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/tokenizer"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/policy"
	"github.com/alignflow/alignflow/reinforce"
	"github.com/alignflow/alignflow/reward"
)

// Stage names, as the harness, the PyTorch reference and compare.sh use them.
const (
	PolicyTrainStep = "policy_train_step"
	// PolicyTrainStepLoRA is the scale benchmark's train step of a LoRA
	// adapter over the frozen model (ScaleSizes.LoRA).
	PolicyTrainStepLoRA = "policy_train_step_lora"
	RewardTrainStep     = "reward_train_step"
	GenerationBatch1    = "generation_batch1"
	GenerationBatch16   = "generation_batch16"
	ReinforceIteration  = "reinforce_iteration"
)

// GenerationStageName is the stage name of generation at a batch size.
func GenerationStageName(batch int) string { return fmt.Sprintf("generation_batch%d", batch) }

// Stage is one measured unit of work, run as Prepare, then Step for every
// warmup and timed step.
type Stage struct {
	Name string
	// Unit is what Step.Work counts, per second: "tokens/s", "pairs/s", "prompts/s".
	Unit string
	// Prepare compiles every graph the steps use, on throwaway copies of the
	// state, so compilation stays out of the timings. It may record Check.
	Prepare func() error
	// Step runs step i (0-based, warmup included) and reports what it did.
	Step func(i int) (Step, error)
	// Check is data recorded by Prepare for the reference to verify
	// against (nil when none), written as JSON.
	Check any
	// Checks are further check data by file name (checks/<name>.json).
	Checks map[string]any
	// Breakdown, when set, times the parts of one step separately (seconds
	// by part); Run calls it after the timed steps.
	Breakdown func() (map[string]float64, error)
	// Done, when set, releases what the steps held (a train stage's
	// optimizer session); Run calls it last, so a later stage's peak memory
	// is its own.
	Done func() error
}

// Step is one step's outcome.
type Step struct {
	// Loss is the training loss of the step (computed before its update);
	// NaN for stages without one.
	Loss float64
	// Work is the step's amount of work in the stage's unit.
	Work float64
	// Extra are stage-specific numbers (accuracy, reward mean, tokens...).
	Extra map[string]float64
	// Seconds, when positive, is the step's own timing of the part it
	// measures, replacing the timing of the whole call: a decoding step
	// leaves out the prefill that sets it up.
	Seconds float64
}

// Stages returns the harness's five stages over the fixtures, in order.
func Stages(be backends.Backend, f *Fixtures) []*Stage {
	out := []*Stage{PolicyTrain(be, f), RewardTrain(be, f)}
	for _, bs := range f.Sizes.GenBatches {
		out = append(out, Generation(be, f, bs))
	}
	return append(out, Reinforce(be, f))
}

// compileStep takes one throwaway optimizer step of tr on b from a copy of
// params and a fresh optimizer state, which compiles the step's graph for
// b's shapes.
func compileStep(tr *optim.Trainer, params *weights.Set, lr float64, b optim.Batch) error {
	p := params.Clone()
	sess, err := tr.Start(p, optim.NewState(p))
	if err != nil {
		return err
	}
	_, err = sess.Step(lr, b)
	return errors.Join(err, sess.Close())
}

// closeSession is a train stage's Done: it closes the stage's optimizer
// session and drops it, with the weights and moments it kept.
func closeSession(sess **optim.Session) func() error {
	return func() error {
		err := (*sess).Close()
		*sess = nil
		return err
	}
}

// PolicyTrain is one SFT optimizer step (forward, backward, clipping,
// AdamW) on a batch of SFT.BatchSize sequences; Work counts every position
// of the padded batch. The steps run in one optimizer session, started at
// the end of Prepare and closed by Done.
func PolicyTrain(be backends.Backend, f *Fixtures) *Stage {
	s := f.Sizes
	params := f.Policy.Clone()
	tr := optim.NewTrainer(be, params.Names(), s.AdamW.Optim(), policy.SFTLoss(s.Model))
	var sess *optim.Session
	return &Stage{
		Name: PolicyTrainStep, Unit: "tokens/s",
		Prepare: func() error {
			seen := map[int]bool{}
			for _, b := range f.SFTBatches {
				w := len(b.Inputs[0])
				if seen[w] {
					continue
				}
				seen[w] = true
				if err := compileStep(tr, params, s.SFT.LearningRate, b); err != nil {
					return err
				}
			}
			var err error
			sess, err = tr.Start(params, optim.NewState(params))
			return err
		},
		Done: closeSession(&sess),
		Step: func(i int) (Step, error) {
			b := f.SFTBatches[i%len(f.SFTBatches)]
			res, err := sess.Step(s.SFT.LearningRate, b)
			if err != nil {
				return Step{}, err
			}
			return Step{Loss: res.Loss, Work: float64(len(b.Inputs) * len(b.Inputs[0])),
				Extra: map[string]float64{"grad_norm": res.GradNorm, "width": float64(len(b.Inputs[0]))}}, nil
		},
	}
}

// RewardTrain is one Bradley-Terry optimizer step of the reward model on
// Reward.BatchSize preference pairs (two forward passes: chosen and
// rejected), in one session as PolicyTrain's.
func RewardTrain(be backends.Backend, f *Fixtures) *Stage {
	s := f.Sizes
	params := f.Reward.Clone()
	tr := optim.NewTrainer(be, params.Names(), s.AdamW.Optim(), reward.BTLoss(s.Model))
	var sess *optim.Session
	return &Stage{
		Name: RewardTrainStep, Unit: "pairs/s",
		Prepare: func() error {
			seen := map[[2]int]bool{}
			for _, b := range f.PairBatches {
				w := [2]int{len(b.Chosen[0]), len(b.Rejected[0])}
				if seen[w] {
					continue
				}
				seen[w] = true
				if err := compileStep(tr, params, s.Reward.LearningRate, b); err != nil {
					return err
				}
			}
			var err error
			sess, err = tr.Start(params, optim.NewState(params))
			return err
		},
		Done: closeSession(&sess),
		Step: func(i int) (Step, error) {
			b := f.PairBatches[i%len(f.PairBatches)]
			res, err := sess.Step(s.Reward.LearningRate, b)
			if err != nil {
				return Step{}, err
			}
			valid := 0.0
			for _, v := range b.Valid {
				valid += float64(v)
			}
			extra := map[string]float64{"grad_norm": res.GradNorm}
			if len(res.Metrics) > 0 {
				extra["accuracy"] = res.Metrics[0]
			}
			return Step{Loss: res.Loss, Work: valid, Extra: extra}, nil
		},
	}
}

// GenCheck is one generation call recorded for the reference to replay:
// the sampled tokens and their log-probabilities at sampling time.
type GenCheck struct {
	Prompts  [][]int32   `json:"prompts"`
	Tokens   [][]int32   `json:"tokens"`
	LogProbs [][]float32 `json:"logprobs"`
	Ended    []bool      `json:"ended"`
}

// DecodeSteps is how many forward passes Engine.Generate runs for one
// chunk: the prefill of every prompt, which samples each row's first token,
// then a decode step per further token until every row is done.
func DecodeSteps(samples []policy.Sample) int {
	n := 0
	for _, sm := range samples {
		n = max(n, len(sm.Tokens))
	}
	return n
}

// Generation is one Engine.Generate call on batch prompts (one chunk of
// batch rows) with the KV cache and the REINFORCE sampling settings; Work
// counts the sampled tokens.
func Generation(be backends.Backend, f *Fixtures, batch int) *Stage {
	s := f.Sizes
	params := f.Policy
	e := policy.NewEngine(be, s.Model, params)
	prompts := f.GenPrompts[batch]
	opts := s.Sample.Options()
	rng := rand.New(rand.NewPCG(s.Seed, 0x6e40+uint64(batch)))
	st := &Stage{Name: GenerationStageName(batch), Unit: "tokens/s"}
	st.Prepare = func() error {
		// The check call, with the stage's own settings and a separate rng.
		samples, err := e.Generate(params, prompts, batch, opts, rand.New(rand.NewPCG(s.Seed, 0xc4ec)))
		if err != nil {
			return err
		}
		c := &GenCheck{Prompts: prompts}
		for _, sm := range samples {
			c.Tokens = append(c.Tokens, sm.Tokens)
			c.LogProbs = append(c.LogProbs, sm.LogProbs)
			c.Ended = append(c.Ended, sm.Ended)
		}
		st.Check = c
		// Each cache length compiles its own decode graph: run until one call
		// went through every length (a sampled EOS can end a call early).
		long := opts
		long.MaxTokens = s.Model.MaxLen
		warm := rand.New(rand.NewPCG(s.Seed, 0x3a43))
		shortest := prompts[0]
		for _, p := range prompts {
			if len(p) < len(shortest) {
				shortest = p
			}
		}
		rows := make([][]int32, batch)
		for i := range rows {
			rows[i] = shortest
		}
		for try := 0; try < 8; try++ {
			sm, err := e.Generate(params, rows, batch, long, warm)
			if err != nil {
				return err
			}
			reached := false // a row filled max_len: every cache length was compiled
			for i := range sm {
				reached = reached || len(rows[i])+len(sm[i].Tokens) >= s.Model.MaxLen
			}
			if reached {
				break
			}
		}
		return nil
	}
	st.Step = func(int) (Step, error) {
		samples, err := e.Generate(params, prompts, batch, opts, rng)
		if err != nil {
			return Step{}, err
		}
		tokens, ended := 0, 0
		for _, sm := range samples {
			tokens += len(sm.Tokens)
			if sm.Ended {
				ended++
			}
		}
		return Step{Loss: math.NaN(), Work: float64(tokens), Extra: map[string]float64{
			"decode_steps": float64(DecodeSteps(samples)), "ended_fraction": float64(ended) / float64(len(samples))}}, nil
	}
	return st
}

// RLCheckRollout is one rollout of a recorded REINFORCE iteration.
type RLCheckRollout struct {
	Prompt    int     `json:"prompt"`
	Response  []int32 `json:"response"`
	Ended     bool    `json:"ended"`
	Reward    float64 `json:"reward"`
	KL        float64 `json:"kl"`
	Shaped    float64 `json:"shaped"`
	Baseline  float64 `json:"baseline"`
	Advantage float64 `json:"advantage"`
}

// RLCheckIteration is one REINFORCE iteration recorded for the reference:
// it recomputes rewards, KL, baselines and the loss on the same tokens and
// applies the same update before the next iteration.
type RLCheckIteration struct {
	Prompts  [][]int32        `json:"prompts"`
	Rollouts []RLCheckRollout `json:"rollouts"`
	Loss     float64          `json:"loss"`
	GradNorm float64          `json:"grad_norm"`
	KLMean   float64          `json:"kl_mean"`
	Reward   float64          `json:"reward_mean"`
}

// Reinforce is one reinforce.Iteration.Run: sample SamplesPerPrompt
// responses for each of PromptsPerIteration prompts, score them with the
// reward model, log-probabilities under the policy and the reference, KL
// penalty, leave-one-out baseline and the policy update. Work counts prompts.
// Its Prepare records RLCheckIterations iterations of the default objective
// (Check) and of each of RLObjectiveVariants (Checks[RLObjectivesCheck]).
func Reinforce(be backends.Backend, f *Fixtures) *Stage {
	s := f.Sizes
	pe := policy.NewEngine(be, s.Model, f.RLPolicy)
	re := reward.NewEngine(be, s.Model, f.Reward)
	tr := optim.NewTrainer(be, pe.Names(), s.AdamW.Optim(), reinforce.PolicyLoss(s.Model, s.Reinforce.Settings(s.Sample).Objective))
	newIteration := func() *reinforce.Iteration {
		return &reinforce.Iteration{Policy: pe, Reward: re, Trainer: tr, Reference: f.RLPolicy, RM: f.Reward,
			Settings: s.Reinforce.Settings(s.Sample)}
	}
	pol := f.RLPolicy.Clone()
	st := optim.NewState(pol)
	it := newIteration()
	rng := rand.New(rand.NewPCG(s.Seed, 0x4e1f))
	stage := &Stage{Name: ReinforceIteration, Unit: "prompts/s"}
	stage.Prepare = func() error {
		// The check iterations also compile the graphs.
		p := f.RLPolicy.Clone()
		cst := optim.NewState(p)
		crng := rand.New(rand.NewPCG(s.Seed, 0xc4ec))
		var checks []RLCheckIteration
		for i := 0; i < RLCheckIterations; i++ {
			prompts := f.RLPrompts[i]
			rollouts, stats, err := newIteration().Run(p, cst, prompts, crng)
			if err != nil {
				return err
			}
			c := RLCheckIteration{Prompts: prompts, Loss: stats.Update.Loss, GradNorm: stats.Update.GradNorm, KLMean: stats.KLMean, Reward: stats.RewardMean}
			for _, r := range rollouts {
				c.Rollouts = append(c.Rollouts, RLCheckRollout{Prompt: r.Prompt, Response: r.Response, Ended: r.Ended,
					Reward: r.Reward, KL: r.KL, Shaped: r.Shaped, Baseline: r.Baseline, Advantage: r.Advantage})
			}
			checks = append(checks, c)
		}
		stage.Check = checks
		objectives, err := RecordObjectives(be, f, pe, re)
		if err != nil {
			return err
		}
		stage.Checks = map[string]any{RLObjectivesCheck: objectives}
		return precompileRL(f, pe, re, tr)
	}
	stage.Breakdown = func() (map[string]float64, error) {
		return reinforceBreakdown(f, pe, re, tr, pol, st, f.RLPrompts[len(f.RLPrompts)-1])
	}
	stage.Step = func(i int) (Step, error) {
		prompts := f.RLPrompts[(RLCheckIterations+i)%len(f.RLPrompts)]
		_, stats, err := it.Run(pol, st, prompts, rng)
		if err != nil {
			return Step{}, err
		}
		return Step{Loss: stats.Update.Loss, Work: float64(len(prompts)), Extra: map[string]float64{
			"reward_mean": stats.RewardMean, "kl_mean": stats.KLMean, "ended_fraction": stats.EndedFraction,
			"grad_norm": stats.Update.GradNorm, "optimizer_steps": float64(stats.Update.Steps)}}, nil
	}
	return stage
}

// reinforceBreakdown times the parts of Iteration.Run one at a time, with the
// same public calls in the same order, on copies of the policy and optimizer
// state: sampling, reward scoring, log-probabilities under the policy and the
// reference, and the update. Each part is timed twice; the faster counts.
func reinforceBreakdown(f *Fixtures, pe *policy.Engine, re *reward.Engine, tr *optim.Trainer,
	pol *weights.Set, st *optim.State, prompts [][]int32) (map[string]float64, error) {
	s := f.Sizes
	set := s.Reinforce.Settings(s.Sample)
	out := map[string]float64{}
	timeIt := func(part string, fn func() error) error {
		for rep := 0; rep < 2; rep++ {
			t := time.Now()
			if err := fn(); err != nil {
				return fmt.Errorf("breakdown %s: %w", part, err)
			}
			if d := time.Since(t).Seconds(); rep == 0 || d < out[part] {
				out[part] = d
			}
		}
		return nil
	}
	rng := rand.New(rand.NewPCG(s.Seed, 0xb4e))
	var ro *reinforce.Rollouts
	if err := timeIt("generate", func() (err error) {
		ro, err = reinforce.Rollout(pe, pol, prompts, set.SamplesPerPrompt, set.BatchSize, set.Sample, rng)
		return err
	}); err != nil {
		return nil, err
	}
	if err := timeIt("score", func() error {
		_, err := reinforce.Score(re, f.Reward, ro, set.BatchSize)
		return err
	}); err != nil {
		return nil, err
	}
	var lp *reinforce.TokenLogProbs
	if err := timeIt("logprobs", func() (err error) {
		lp, err = reinforce.LogProbs(pe, pol, f.RLPolicy, ro, set.BatchSize)
		return err
	}); err != nil {
		return nil, err
	}
	adv := make([]float64, len(ro.Samples))
	for j := range adv {
		adv[j] = float64(j%3) - 1
	}
	if err := timeIt("update", func() error {
		p := pol.Clone()
		cst := &optim.State{Step: st.Step, M: st.M.Clone(), V: st.V.Clone()}
		_, err := reinforce.Update(tr, p, cst, set.LearningRate, lp, adv, set.Objective)
		return err
	}); err != nil {
		return nil, err
	}
	return out, nil
}

// precompileRL compiles the scoring, log-probability and update graphs for
// every padded width a rollout batch can have (bucket lengths from the
// shortest prompt to max_len): sampled lengths vary between iterations, and
// each new width would otherwise compile inside a timed iteration.
func precompileRL(f *Fixtures, pe *policy.Engine, re *reward.Engine, tr *optim.Trainer) error {
	s := f.Sizes
	maxLen := s.Model.MaxLen
	prompt := f.RLPrompts[0][0]
	for _, ps := range f.RLPrompts {
		for _, p := range ps {
			if len(p) < len(prompt) {
				prompt = p
			}
		}
	}
	bs := s.Reinforce.BatchSize
	for w := policy.BucketLen(len(prompt), maxLen); ; w = policy.BucketLen(w+1, maxLen) {
		// A response making the longest teacher-forced row exactly w long.
		resp := make([]int32, w-len(prompt)+1)
		for i := range resp {
			resp[i] = 'a'
		}
		b, err := policy.MakeBatch(s.Model, bs, [][]int32{prompt}, [][]int32{resp})
		if err != nil {
			return err
		}
		if _, err := pe.LogProbs(f.RLPolicy, b); err != nil {
			return err
		}
		if err := compileStep(tr, f.RLPolicy, s.Reinforce.LearningRate, s.Reinforce.Settings(s.Sample).OnPolicyBatch(b, make([]float32, bs))); err != nil {
			return err
		}
		seq, _, _ := tokenizer.Fit(prompt, resp, maxLen, 1)
		if len(seq) > w {
			seq = seq[:w]
		}
		if _, err := re.Rewards(f.Reward, [][]int32{seq}, bs); err != nil {
			return err
		}
		if w >= maxLen {
			return nil
		}
	}
}
