package activities

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/alignflow/alignflow/model/optim"
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

// iterationRows are an iteration's rollout rows: each prompt
// samples_per_prompt times, as token ids, and the prompts' texts.
func iterationRows(ds *dataset, in pipeline.IterationInput) (rows [][]int32, prompts []string, err error) {
	prompts = iterationPrompts(ds, in.Spec, in.Iteration)
	if len(prompts) == 0 {
		return nil, nil, invalidData(fmt.Errorf("no training prompts fit model.max_len %d", ds.m.cfg.MaxLen))
	}
	ids := make([][]int32, len(prompts))
	for i, p := range prompts {
		ids[i], _ = ds.promptIDs(p) // iterationPrompts kept those that encode
	}
	return reinforce.Repeat(ids, in.Spec.Reinforce.SamplesPerPrompt), prompts, nil
}

// shardRows are the rows [first, last) of the batches a shard covers.
func shardRows(in pipeline.ShardInput, rows, batchSize int) (first, last int, err error) {
	batches := (rows + batchSize - 1) / batchSize
	if in.Shards < 1 || in.Shards > batches || in.Shard < 0 || in.Shard >= in.Shards {
		return 0, 0, invalidSpec(fmt.Errorf("reinforce.rollout_shards: shard %d of %d does not fit the %d rollout batches of an iteration", in.Shard, in.Shards, batches))
	}
	first = in.Shard * batches / in.Shards * batchSize
	last = min((in.Shard+1)*batches/in.Shards*batchSize, rows)
	return first, last, nil
}

// rowRNG is the random stream of an iteration's rollout row.
func rowRNG(seed int64, iteration, row int) *rand.Rand {
	return stageRNG(seed, fmt.Sprintf("rollout/%d", iteration), row)
}

// shardRow is one rollout as a shard stores it.
type shardRow struct {
	Response []int32 `json:"response"`
	Ended    bool    `json:"ended"`
	Reward   float64 `json:"reward"`
	KL       float64 `json:"kl"` // the per-token penalty, reinforce.kl_estimator
}

// RolloutShard samples, scores and takes the KL penalty of one shard of a
// REINFORCE iteration's rollouts, and stores them.
func (a *Activities) RolloutShard(ctx context.Context, in pipeline.ShardInput) (pipeline.ShardResult, error) {
	defer keepAlive(ctx, pipeline.Progress{Stage: pipeline.StageReinforce, Step: in.Iteration + 1, Total: in.Spec.Reinforce.Iterations})()
	res, err := reuse(ctx, a, "reinforce-shard", in.Spec, in.RunID, in, func() (pipeline.ShardResult, error) { return a.rolloutShard(in) })
	return res, classify(err)
}

func (a *Activities) rolloutShard(in pipeline.ShardInput) (pipeline.ShardResult, error) {
	start := time.Now()
	spec := in.Spec
	r := spec.Reinforce
	eng, ds, err := a.setup(spec, in.Data)
	if err != nil {
		return pipeline.ShardResult{}, err
	}
	pol, ref, rm, err := a.loadModels(in.Policy, in.Reference, in.RewardModel)
	if err != nil {
		return pipeline.ShardResult{}, err
	}
	rows, _, err := iterationRows(ds, in.IterationInput)
	if err != nil {
		return pipeline.ShardResult{}, err
	}
	first, last, err := shardRows(in, len(rows), r.BatchSize)
	if err != nil {
		return pipeline.ShardResult{}, err
	}
	rngs := make([]*rand.Rand, 0, last-first)
	for i := first; i < last; i++ {
		rngs = append(rngs, rowRNG(spec.Seed, in.Iteration, i))
	}
	ro, err := reinforce.RolloutEach(eng.policy, pol, rows[first:last], r.BatchSize, sampleOptions(spec, ds, r.Temperature), rngs)
	if err != nil {
		return pipeline.ShardResult{}, err
	}
	rewards, lp, err := reinforce.ScoreAndLogProbs(eng.policy, eng.reward, pol, ref, rm, ro, r.BatchSize)
	if err != nil {
		return pipeline.ShardResult{}, err
	}
	kl, err := lp.KL(r.KLEstimator)
	if err != nil {
		return pipeline.ShardResult{}, err
	}
	out := make([]shardRow, len(ro.Samples))
	for i, s := range ro.Samples {
		out[i] = shardRow{Response: s.Tokens, Ended: s.Ended, Reward: rewards[i], KL: kl[i]}
	}
	res := pipeline.ShardResult{Shard: in.Shard, First: first, Rows: len(out)}
	name := fmt.Sprintf("shard-%d-of-%d.json", in.Shard, in.Shards)
	if res.Rollouts, err = a.Store.PutJSON(runPath(in.RunID, iterationDir(in.Iteration), name), out); err != nil {
		return res, err
	}
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// meanLength is the mean response length of samples, in tokens.
func meanLength(samples []policy.Sample) float64 {
	n := 0
	for _, s := range samples {
		n += len(s.Tokens)
	}
	return float64(n) / float64(max(1, len(samples)))
}

func iterationDir(iteration int) string { return fmt.Sprintf("reinforce/iter-%05d", iteration) }

// UpdatePolicy merges an iteration's shards and takes the policy update:
// shaped rewards, leave-one-out baselines over each prompt's samples, one
// pass of optimizer steps in row order. It stores the policy, its
// optimizer state and the rollouts, as ReinforceIteration does.
func (a *Activities) UpdatePolicy(ctx context.Context, in pipeline.UpdateInput) (pipeline.IterationResult, error) {
	defer keepAlive(ctx, pipeline.Progress{Stage: pipeline.StageReinforce, Step: in.Iteration + 1, Total: in.Spec.Reinforce.Iterations})()
	res, err := reuse(ctx, a, "reinforce-update", in.Spec, in.RunID, in, func() (pipeline.IterationResult, error) { return a.updatePolicy(in) })
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

func (a *Activities) updatePolicy(in pipeline.UpdateInput) (pipeline.IterationResult, error) {
	start := time.Now()
	spec := in.Spec
	r := spec.Reinforce
	eng, ds, err := a.setup(spec, in.Data)
	if err != nil {
		return pipeline.IterationResult{}, err
	}
	pol, st, err := a.updateState(in.IterationInput)
	if err != nil {
		return pipeline.IterationResult{}, err
	}
	rows, prompts, err := iterationRows(ds, in.IterationInput)
	if err != nil {
		return pipeline.IterationResult{}, err
	}
	ro := &reinforce.Rollouts{Contexts: rows}
	var rewards, kl []float64
	for _, sh := range in.Shards {
		var part []shardRow
		if err := a.Store.GetJSON(sh.Rollouts, &part); err != nil {
			return pipeline.IterationResult{}, err
		}
		if sh.First != len(ro.Samples) || len(part) != sh.Rows {
			return pipeline.IterationResult{}, corrupt(fmt.Errorf("shard %d holds rows %d-%d (%d stored), but rows up to %d are merged", sh.Shard, sh.First, sh.First+sh.Rows-1, len(part), len(ro.Samples)))
		}
		for _, row := range part {
			ro.Samples = append(ro.Samples, policy.Sample{Tokens: row.Response, Ended: row.Ended})
			rewards, kl = append(rewards, row.Reward), append(kl, row.KL)
		}
	}
	if len(ro.Samples) != len(rows) {
		return pipeline.IterationResult{}, corrupt(fmt.Errorf("the shards hold %d of the iteration's %d rollouts", len(ro.Samples), len(rows)))
	}
	ended := ro.Ended()
	_, _, adv, err := reinforce.Advantages(rewards, kl, ended, r.KLBeta, r.SamplesPerPrompt)
	if err != nil {
		return pipeline.IterationResult{}, err
	}
	batches, err := reinforce.Batches(eng.policy.Cfg, ro, r.BatchSize)
	if err != nil {
		return pipeline.IterationResult{}, err
	}
	up, err := reinforce.Update(a.rlTrainer(eng), pol, st, r.LearningRate, batches, adv)
	if err != nil {
		return pipeline.IterationResult{}, err
	}
	res := pipeline.IterationResult{Iteration: in.Iteration, Loss: up.Loss}
	records := make([]rolloutRecord, len(rows))
	for i, s := range ro.Samples {
		records[i] = rolloutRecord{Prompt: prompts[i/r.SamplesPerPrompt], Response: ds.m.codec.Text(s.Tokens), Ended: s.Ended,
			Reward: rewards[i], KL: kl[i], Advantage: adv[i]}
	}
	if err := a.saveIteration(in.IterationInput, ds, pol, st, records, &res); err != nil {
		return res, err
	}
	res.MeanLength = meanLength(ro.Samples)
	a.hold(res, pol, st)
	res.WorkerQueue = a.WorkerQueue
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// held is the policy and optimizer state the worker's last update left,
// by the digests of their stored copies: the next update, pinned to this
// worker, starts from them without reading the store.
type held struct {
	policy, optimizer string // sha256 of the stored artifacts
	pol               *weights.Set
	st                *optim.State
}

func (a *Activities) hold(res pipeline.IterationResult, pol *weights.Set, st *optim.State) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.last = &held{policy: res.Policy.SHA256, optimizer: res.Optimizer.SHA256, pol: pol, st: st}
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

// rlTrainer is the engines' REINFORCE optimizer, made on first use.
func (a *Activities) rlTrainer(eng *engineSet) *optim.Trainer {
	a.mu.Lock()
	defer a.mu.Unlock()
	if eng.rl == nil {
		eng.rl = reinforce.NewTrainer(eng.policy)
	}
	return eng.rl
}

// saveIteration fills res's means from the rollouts (with the gold score
// where the data has a rubric) and stores the policy, its optimizer state
// and the rollouts.
func (a *Activities) saveIteration(in pipeline.IterationInput, ds *dataset, pol *weights.Set, st *optim.State, records []rolloutRecord, res *pipeline.IterationResult) error {
	// Sums, then divided: as reinforce.Stats averages.
	var reward, kl, ended, goldSum float64
	for i := range records {
		reward += records[i].Reward
		kl += records[i].KL
		if records[i].Ended {
			ended++
		}
		if ds.task != nil {
			g := ds.task.Gold(records[i].Prompt, records[i].Response).Helpfulness
			records[i].Gold = &g
			goldSum += g
		}
	}
	n := float64(len(records))
	res.RewardMean, res.KLMean, res.EndedFraction = reward/n, kl/n, ended/n
	if ds.task != nil {
		g := goldSum / n
		res.GoldMean = &g
	}
	dir := iterationDir(in.Iteration)
	var err error
	if res.Policy, err = a.Store.PutWeights(runPath(in.RunID, dir, "policy.safetensors"), pol); err != nil {
		return err
	}
	res.PolicyDigest = pol.Digest()
	if res.Optimizer, err = a.Store.PutWeights(runPath(in.RunID, dir, "optimizer.safetensors"), st.Save()); err != nil {
		return err
	}
	res.Rollouts, err = a.Store.PutJSON(runPath(in.RunID, dir, "rollouts.json"), records)
	return err
}
