package activities

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/alignflow/alignflow/model/lora"
	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/rng"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/policy"
	"github.com/alignflow/alignflow/reinforce"
)

// A REINFORCE iteration as shards: RolloutShard samples, scores and
// compares with the reference a slice of the iteration's generation
// batches, on whichever workers poll queues.rollout; UpdatePolicy merges
// the shards by reference and takes the update once. Every row samples
// from its own stream (seed, iteration, row), and shards are whole
// generation batches, so every row is computed exactly as in one shard:
// the final weights are bit-identical for any number of shards.

// shardRow is one rollout as a shard stores it.
type shardRow struct {
	Response []int32 `json:"response"`
	Ended    bool    `json:"ended"`
	Reward   float64 `json:"reward"`
	// Verifier is reward.verifier's score of the response (nil: none).
	Verifier *float64 `json:"verifier,omitempty"`
	KL       float64  `json:"kl"` // the per-token penalty, reinforce.kl_estimator
	// LogProbs and RefLogProbs are the response tokens' log-probabilities
	// under the policy that sampled them and under the reference: what a
	// clipped update's ratio and the KL in the loss read.
	LogProbs    []float32 `json:"logprobs"`
	RefLogProbs []float32 `json:"ref_logprobs"`
}

// RolloutShard samples, scores and takes the KL penalty of one shard of a
// REINFORCE iteration's rollouts, and stores them.
func (a *Activities) RolloutShard(ctx context.Context, in pipeline.ShardInput) (pipeline.ShardResult, error) {
	ctx, _, stop := a.live(ctx, pipeline.Progress{Stage: pipeline.StageReinforce, Step: in.Iteration + 1, Total: in.Spec.Reinforce.Iterations})
	defer stop()
	res, err := reuse(ctx, a, "reinforce-shard", in.Spec, in.RunID, in, func() (pipeline.ShardResult, error) { return a.rolloutShard(ctx, in) })
	return res, classify(err)
}

func (a *Activities) rolloutShard(ctx context.Context, in pipeline.ShardInput) (pipeline.ShardResult, error) {
	start := time.Now()
	spec := in.Spec
	r := spec.Reinforce
	first, last, err := r.ShardRows(in.Shard, in.Shards)
	if err != nil {
		return pipeline.ShardResult{}, invalidSpec(err)
	}
	j, err := a.setup(ctx, spec, in.Data)
	if err != nil {
		return pipeline.ShardResult{}, err
	}
	defer j.release()
	pol, ref, rm, err := a.loadModels(in.Spec.Reward, in.Policy, in.Reference, in.RewardModel)
	if err != nil {
		return pipeline.ShardResult{}, err
	}
	prompts, texts, err := j.iterationPrompts(in.IterationInput, in.Round)
	if err != nil {
		return pipeline.ShardResult{}, err
	}
	rngs := make([]*rand.Rand, 0, last-first)
	for i := first; i < last; i++ {
		rngs = append(rngs, rng.Row(spec.Seed, in.Iteration, in.RowStream(in.Round, i)))
	}
	rows := reinforce.Repeat(prompts, r.SamplesPerPrompt)[first:last]
	ro, err := reinforce.RolloutEach(j.eng.policy, pol, rows, r.BatchSize, j.sampleOptions(spec, r.Temperature), rngs)
	if err != nil {
		return pipeline.ShardResult{}, err
	}
	rewards, lp, err := reinforce.ScoreAndLogProbs(j.eng.policy, j.eng.reward, pol, ref, rm, ro, r.BatchSize)
	if err != nil {
		return pipeline.ShardResult{}, err
	}
	kl, err := lp.KL(r.KLEstimator)
	if err != nil {
		return pipeline.ShardResult{}, err
	}
	var verified []float64
	if v := spec.Reward.Verifier; v != "" {
		if verified, err = j.ds.Verify(v, texts[first:last], j.m.codec.Texts(ro.Responses())); err != nil {
			return pipeline.ShardResult{}, invalidData(err)
		}
	}
	lpPol, lpRef := lp.ResponseLogProbs()
	out := make([]shardRow, len(ro.Samples))
	for i, s := range ro.Samples {
		out[i] = shardRow{Response: s.Tokens, Ended: s.Ended, Reward: rewards[i], KL: kl[i], LogProbs: lpPol[i], RefLogProbs: lpRef[i]}
		if verified != nil {
			out[i].Verifier = &verified[i]
		}
	}
	res := pipeline.ShardResult{Shard: in.Shard, First: first, Rows: len(out), Round: in.Round}
	if r.SkipUniformGroups {
		g := reinforce.GroupsOf(first, combined(spec.Reward, rewards, verified), r.SamplesPerPrompt)
		res.Groups = &g
	}
	name := fmt.Sprintf("shard-%d-of-%d.json", in.Shard, in.Shards)
	if in.Round > 0 {
		name = fmt.Sprintf("round-%d-shard-%d-of-%d.json", in.Round, in.Shard, in.Shards)
	}
	key, err := runPath(in.RunID, iterationDir(in.Iteration), name)
	if err != nil {
		return res, err
	}
	if res.Rollouts, err = a.Store.PutJSON(key, out); err != nil {
		return res, err
	}
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// UpdatePolicy merges an iteration's shards and takes the policy update:
// shaped rewards, leave-one-out baselines over each prompt's samples, one
// pass of optimizer steps in row order. It stores the policy, its
// optimizer state and the rollouts, as ReinforceIteration does.
func (a *Activities) UpdatePolicy(ctx context.Context, in pipeline.UpdateInput) (pipeline.IterationResult, error) {
	ctx, _, stop := a.live(ctx, pipeline.Progress{Stage: pipeline.StageReinforce, Step: in.Iteration + 1, Total: in.Spec.Reinforce.Iterations})
	defer stop()
	res, err := reuse(ctx, a, "reinforce-update", in.Spec, in.RunID, in, func() (pipeline.IterationResult, error) { return a.updatePolicy(ctx, in) })
	if err == nil {
		// The iteration took its slowest shard's time, then the update's.
		slowest := 0.0
		for _, sh := range in.Shards {
			slowest = max(slowest, sh.Seconds)
		}
		err = a.logIteration(in.IterationInput, res, slowest+res.Seconds)
	}
	return res, classify(err)
}

func (a *Activities) updatePolicy(ctx context.Context, in pipeline.UpdateInput) (pipeline.IterationResult, error) {
	o := iterationOutcome{started: time.Now()}
	spec := in.Spec
	r := spec.Reinforce
	j, err := a.setup(ctx, spec, in.Data)
	if err != nil {
		return pipeline.IterationResult{}, err
	}
	defer j.release()
	if o.pol, o.st, err = a.updateState(in.IterationInput); err != nil {
		return pipeline.IterationResult{}, err
	}
	tr, err := a.policyTrainer(j, in.IterationInput, &o)
	if err != nil {
		return pipeline.IterationResult{}, err
	}
	m, sel, err := a.sampled(j, in)
	if err != nil {
		return pipeline.IterationResult{}, err
	}
	o.texts, o.rollouts, o.rewards, o.verified, o.kl, o.logprobs = m.texts, m.rollouts, m.rewards, m.verified, m.kl, m.logprobs
	o.groups, o.dropped = sel.trained, sel.dropped
	o.sampling = sel.sampling
	obj := r.Objective()
	if o.shaped, _, o.adv, err = reinforce.Advantages(combined(spec.Reward, o.rewards, o.verified), o.kl, o.rollouts.Ended(), obj, r.SamplesPerPrompt); err != nil {
		return pipeline.IterationResult{}, err
	}
	batches, err := reinforce.Batches(j.eng.policy.Cfg, o.rollouts, r.BatchSize)
	if err != nil {
		return pipeline.IterationResult{}, err
	}
	lp := &reinforce.TokenLogProbs{BatchSize: r.BatchSize, Batches: batches}
	if obj.Clipped() || obj.KLIn == reinforce.KLInLoss { // the loss reads what the rollouts recorded
		if lp, err = reinforce.Recorded(batches, r.BatchSize, m.logprobs, m.refLogprobs); err != nil {
			return pipeline.IterationResult{}, corrupt(err)
		}
	}
	if o.update, err = reinforce.Update(tr, o.pol, o.st, r.LearningRate, lp, o.adv, obj); err != nil {
		return pipeline.IterationResult{}, err
	}
	res, err := a.saveIteration(in.IterationInput, j, o)
	if err != nil {
		return res, err
	}
	a.hold(res, o.pol, o.st, in.IterationInput, tr.Frozen())
	res.WorkerQueue = a.WorkerQueue
	return res, nil
}

// merged is an iteration's shards read as one: its rollouts, their
// prompts' texts and what each row recorded.
type merged struct {
	texts                 []string
	rollouts              *reinforce.Rollouts
	rewards, kl           []float64
	verified              []float64 // nil without a verifier
	logprobs, refLogprobs [][]float32
}

// add appends rows [from, to) of src.
func (m *merged) add(src merged, from, to int) {
	if m.rollouts == nil {
		m.rollouts = &reinforce.Rollouts{}
	}
	m.texts = append(m.texts, src.texts[from:to]...)
	m.rollouts.Contexts = append(m.rollouts.Contexts, src.rollouts.Contexts[from:to]...)
	m.rollouts.Samples = append(m.rollouts.Samples, src.rollouts.Samples[from:to]...)
	m.rewards, m.kl = append(m.rewards, src.rewards[from:to]...), append(m.kl, src.kl[from:to]...)
	if src.verified != nil {
		m.verified = append(m.verified, src.verified[from:to]...)
	}
	m.logprobs, m.refLogprobs = append(m.logprobs, src.logprobs[from:to]...), append(m.refLogprobs, src.refLogprobs[from:to]...)
}

// selected is what dynamic sampling made of an iteration's rounds: the
// groups trained on, in the update's order, the records of those it left
// out, and the counts.
type selected struct {
	trained  []reinforce.GroupID // nil: every group of round 0, in order
	dropped  []pipeline.RolloutRecord
	sampling *pipeline.Sampling // nil without skip_uniform_groups
}

// sampled reads an iteration's shards, round by round, and returns the
// rows the update trains on: every row of its one round, or with
// skip_uniform_groups the groups reinforce.SelectGroups picks from the
// rounds' uniformity as the shards reported it (the workflow decided the
// rounds from the same reports).
func (a *Activities) sampled(j *job, in pipeline.UpdateInput) (merged, selected, error) {
	r := in.Spec.Reinforce
	k, n := r.SamplesPerPrompt, r.PromptsPerIteration
	var rounds []merged
	var uniform [][]bool
	for from := 0; from < len(in.Shards); {
		round := len(rounds)
		to := from
		for to < len(in.Shards) && in.Shards[to].Round == round {
			to++
		}
		if to == from || round >= r.SamplingRounds() {
			return merged{}, selected{}, corrupt(fmt.Errorf("the update's shard %d is of sampling round %d, after round %d's (the iteration samples at most %d)", from, in.Shards[from].Round, round-1, r.SamplingRounds()))
		}
		prompts, texts, err := j.iterationPrompts(in.IterationInput, round)
		if err != nil {
			return merged{}, selected{}, err
		}
		m, err := a.mergeShards(in.Shards[from:to], reinforce.Repeat(prompts, k))
		if err != nil {
			return merged{}, selected{}, err
		}
		m.texts = texts
		rounds, uniform = append(rounds, m), append(uniform, pipeline.Uniform(in.Shards[from:to], n))
		from = to
	}
	if len(rounds) == 0 {
		return merged{}, selected{}, corrupt(fmt.Errorf("the update has no shards"))
	}
	if !r.SkipUniformGroups {
		return rounds[0], selected{}, nil
	}
	sel := reinforce.SelectGroups(uniform, n)
	counts := pipeline.SamplingOf(len(rounds), sel)
	out := selected{trained: sel.Groups, sampling: &counts}
	var m merged
	trained := map[reinforce.GroupID]bool{}
	for _, g := range sel.Groups {
		m.add(rounds[g.Round], g.Group*k, (g.Group+1)*k)
		trained[g] = true
	}
	for ri, round := range rounds {
		for i, s := range round.rollouts.Samples {
			if trained[reinforce.GroupID{Round: ri, Group: i / k}] {
				continue
			}
			rec := pipeline.RolloutRecord{Round: ri, PromptIndex: i / k, SampleIndex: i % k, Dropped: true, Prompt: round.texts[i],
				Response: j.m.codec.Text(s.Tokens), Tokens: s.Tokens, Ended: s.Ended, Reward: round.rewards[i], KL: round.kl[i]}
			if round.verified != nil {
				rec.Verifier = &round.verified[i]
			}
			out.dropped = append(out.dropped, rec)
		}
	}
	return m, out, nil
}

// mergeShards reads the shards' rollouts, in order, as the rows of one
// sampling round of an iteration.
func (a *Activities) mergeShards(shards []pipeline.ShardResult, rows [][]int32) (merged, error) {
	m := merged{rollouts: &reinforce.Rollouts{Contexts: rows}}
	ro := m.rollouts
	for _, sh := range shards {
		var part []shardRow
		if err := a.Store.GetJSON(sh.Rollouts, &part); err != nil {
			return merged{}, err
		}
		if sh.First != len(ro.Samples) || len(part) != sh.Rows {
			return merged{}, corrupt(fmt.Errorf("shard %d holds rows %d-%d (%d stored), but rows up to %d are merged", sh.Shard, sh.First, sh.First+sh.Rows-1, len(part), len(ro.Samples)))
		}
		for _, row := range part {
			ro.Samples = append(ro.Samples, policy.Sample{Tokens: row.Response, Ended: row.Ended})
			m.rewards, m.kl = append(m.rewards, row.Reward), append(m.kl, row.KL)
			if row.Verifier != nil {
				m.verified = append(m.verified, *row.Verifier)
			}
			m.logprobs, m.refLogprobs = append(m.logprobs, row.LogProbs), append(m.refLogprobs, row.RefLogProbs)
		}
	}
	if len(ro.Samples) != len(rows) {
		return merged{}, corrupt(fmt.Errorf("the shards hold %d of the iteration's %d rollouts", len(ro.Samples), len(rows)))
	}
	if m.verified != nil && len(m.verified) != len(rows) {
		return merged{}, corrupt(fmt.Errorf("the shards hold verifier scores for %d of the iteration's %d rollouts", len(m.verified), len(rows)))
	}
	return m, nil
}

// held is the policy and optimizer state the worker's last update left,
// by the digests of their stored copies: the next update, pinned to this
// worker, starts from them without reading the store.
type held struct {
	policy, optimizer string // sha256 of the stored artifacts
	pol               *weights.Set
	st                *optim.State
	// ref is a LoRA run's reference, the adapter's frozen base, by the
	// digest of its stored copy: read, never changed, it is shared.
	reference string
	ref       *weights.Set
}

func (a *Activities) hold(res pipeline.IterationResult, pol *weights.Set, st *optim.State, in pipeline.IterationInput, ref *weights.Set) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.last = &held{policy: res.Policy.SHA256, optimizer: res.Optimizer.SHA256, pol: pol, st: st, reference: in.Reference.SHA256, ref: ref}
}

// reference is a LoRA update's frozen base: the one the worker's last
// update held when it is the one asked for, else loaded from the store.
func (a *Activities) reference(in pipeline.IterationInput) (*weights.Set, error) {
	a.mu.Lock()
	h := a.last
	a.mu.Unlock()
	if h != nil && h.ref != nil && h.reference == in.Reference.SHA256 {
		return h.ref, nil
	}
	return a.Store.GetWeights(in.Reference)
}

// updateState is the policy and optimizer state an update starts from:
// copies of what this worker's last update left when they are the ones
// asked for, else loaded from the store.
func (a *Activities) updateState(in pipeline.IterationInput) (*weights.Set, *optim.State, error) {
	a.mu.Lock()
	h := a.last
	a.mu.Unlock()
	if h != nil && h.policy == in.Policy.SHA256 && h.optimizer == in.Optimizer.SHA256 {
		return h.pol.Clone(), &optim.State{Step: h.st.Step, M: h.st.M.Clone(), V: h.st.V.Clone()}, nil
	}
	pol, err := a.Store.GetWeights(in.Policy)
	if err != nil {
		return nil, nil, err
	}
	if in.Optimizer.Path == "" && in.Spec.LoRA.On() {
		return pol, nil, nil // the SFT policy: policyTrainer starts the adapter and its state
	}
	st, err := a.optimizerState(in, pol)
	return pol, st, err
}

// optimizerState loads the iteration's optimizer state, or starts one.
func (a *Activities) optimizerState(in pipeline.IterationInput, pol *weights.Set) (*optim.State, error) {
	if in.Optimizer.Path == "" {
		return optim.NewState(pol), nil
	}
	set, err := a.Store.GetWeights(in.Optimizer)
	if err != nil {
		return nil, err
	}
	st, err := optim.LoadState(set)
	if err != nil {
		return nil, corrupt(err)
	}
	return st, nil
}

// policyTrainer is the optimizer of an update of o.pol: the engines' for a
// whole policy, or, with lora, an adapter trainer over the reference, the
// adapter's frozen base. The first update of a LoRA run starts the adapter
// (o.pol is then the SFT policy, the reference itself).
func (a *Activities) policyTrainer(j *job, in pipeline.IterationInput, o *iterationOutcome) (*optim.Trainer, error) {
	lc, err := adapterOf(in.Spec, j.m.cfg)
	if err != nil || lc == nil {
		return a.rlTrainer(j.eng, in.Spec.Reinforce.Objective()), err
	}
	ref, err := a.reference(in)
	if err != nil {
		return nil, err
	}
	_, isAdapter, err := lora.Of(o.pol)
	if err != nil {
		return nil, corrupt(err)
	}
	if !isAdapter { // the first update: o.pol is the SFT policy, the reference
		if o.pol, err = freshAdapter(j.m.cfg, *lc, in.Spec.Seed, "reinforce"); err != nil {
			return nil, err
		}
		o.st = optim.NewState(o.pol)
	}
	return a.adapterTrainer(j.eng, in.Spec.Seed, adapterRL, in.Spec.Reinforce.Objective(), *lc, o.pol, ref), nil
}

// rlTrainer is the engines' REINFORCE optimizer of obj, made on first use
// in the worker's shared set, reporting to eng's meter.
func (a *Activities) rlTrainer(eng *engineSet, obj reinforce.Objective) *optim.Trainer {
	shared := eng
	if eng.shared != nil {
		shared = eng.shared
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if shared.rl[obj] == nil {
		if shared.rl == nil {
			shared.rl = map[reinforce.Objective]*optim.Trainer{}
		}
		shared.rl[obj] = reinforce.NewTrainer(shared.policy, obj)
	}
	return shared.rl[obj].WithProgress(eng.meter)
}
