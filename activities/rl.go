package activities

import (
	"context"
	"fmt"
	"path"
	"time"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/rng"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/policy"
	"github.com/alignflow/alignflow/reinforce"
	"github.com/alignflow/alignflow/reward"
)

// loadModels loads and verifies the policy, the reference policy and the
// reward model that evaluation and REINFORCE both start from. A run that
// leaves the reward model out (reward.model_weight 0) has none: rm is nil.
func (a *Activities) loadModels(r config.Reward, policy, reference, rewardModel artifact.Ref) (pol, ref, rm *weights.Set, err error) {
	if pol, err = a.Store.GetWeights(policy); err != nil {
		return nil, nil, nil, err
	}
	if ref, err = a.Store.GetWeights(reference); err != nil {
		return nil, nil, nil, err
	}
	switch {
	case rewardModel != (artifact.Ref{}):
		if rm, err = a.Store.GetWeights(rewardModel); err != nil {
			return nil, nil, nil, err
		}
	case !r.ModelLeftOut():
		return nil, nil, nil, invalidSpec(fmt.Errorf("no reward model was given, and reward.model_weight is not 0: the reward model's scores are part of the reward"))
	}
	if pol, err = adapted(ref, pol); err != nil { // a LoRA run's policy: the reference with its adapter on
		return nil, nil, nil, err
	}
	return pol, ref, rm, nil
}

// settings are the spec's REINFORCE settings for an iteration or, with the
// eval's samples and temperature, an evaluation.
func (j *job) settings(spec config.Spec, samples int, temperature float64) reinforce.Settings {
	r := spec.Reinforce
	return reinforce.Settings{Objective: r.Objective(), SamplesPerPrompt: samples,
		LearningRate: r.LearningRate, BatchSize: r.BatchSize, Sample: j.sampleOptions(spec, temperature)}
}

// EvaluatePolicy samples responses to the held-out prompts with the eval
// seed and scores them with the gold rubric (when the data has one), the
// reward model, and the KL to the reference policy, both as the KL of whole
// responses and as the per-token penalty REINFORCE trains against.
func (a *Activities) EvaluatePolicy(ctx context.Context, in pipeline.PolicyEvalInput) (pipeline.PolicyEval, error) {
	ctx, _, stop := a.live(ctx, pipeline.Progress{Stage: in.Label})
	defer stop()
	res, err := reuse(ctx, a, "policy_eval", in.Spec, in.RunID, in, func() (pipeline.PolicyEval, error) { return a.evaluatePolicy(ctx, in) })
	if err == nil {
		err = a.logPolicyEval(in, res)
	}
	return res, classify(err)
}

func (a *Activities) evaluatePolicy(ctx context.Context, in pipeline.PolicyEvalInput) (pipeline.PolicyEval, error) {
	spec := in.Spec
	j, err := a.setup(ctx, spec, in.Data)
	if err != nil {
		return pipeline.PolicyEval{}, err
	}
	defer j.release()
	pol, ref, rm, err := a.loadModels(in.Spec.Reward, in.Policy, in.Reference, in.RewardModel)
	if err != nil {
		return pipeline.PolicyEval{}, err
	}
	prompts, err := j.ds.EvalPrompts(spec.Eval.Prompts)
	if err != nil {
		return pipeline.PolicyEval{}, err
	}
	k := spec.Eval.SamplesPerPrompt
	show(ctx, pipeline.Progress{Stage: in.Label, Step: 0, Total: len(prompts) * k})
	ev, err := reinforce.Evaluate(j.eng.policy, j.eng.reward, pol, ref, rm, j.ds.Encode(prompts), j.settings(spec, k, spec.Eval.Temperature), rng.New(spec.Seed, "eval", 0))
	if err != nil {
		return pipeline.PolicyEval{}, err
	}
	texts := repeatText(prompts, k)
	responses := ev.Rollouts.Responses()
	gold := j.ds.Gold(texts, responses)
	sum := reinforce.Summarize(ev.Rollouts.Samples, ev.Rewards, ev.KL, gold)
	res := pipeline.PolicyEval{Prompts: len(prompts), GoldScore: sum.GoldMean, Reward: sum.RewardMean, KLSequence: ev.KLSequence,
		KLPenalty: sum.KLMean, EndedFraction: sum.EndedFraction, MeanLength: sum.MeanLength}
	if v := spec.Reward.Verifier; v != "" {
		mean, answered, ok, err := j.ds.VerifyAnswered(v, texts, j.m.codec.Texts(responses))
		if err != nil {
			return pipeline.PolicyEval{}, invalidData(err)
		}
		if ok {
			res.Verifier, res.VerifiedPrompts = &mean, answered
		}
	}
	for i := 0; i < min(spec.Eval.ShowSamples, len(prompts)); i++ {
		s := i * k // the first sample of prompt i
		st := pipeline.SampleText{Prompt: texts[s], Response: j.m.codec.Text(responses[s]), Reward: ev.Rewards[s]}
		if gold != nil {
			st.Gold = gold[s]
		}
		res.Samples = append(res.Samples, st)
	}
	return res, nil
}

// repeatText lists each prompt k times, as the rollouts' rows answer them.
func repeatText(prompts []string, k int) []string {
	out := make([]string, 0, len(prompts)*k)
	for _, p := range prompts {
		for range k {
			out = append(out, p)
		}
	}
	return out
}

// iterationPrompts are the prompts of an iteration's sampling round (0
// without dynamic sampling) as token ids, and the texts of its rollout
// rows: each prompt samples_per_prompt times (reinforce.Repeat's rows).
func (j *job) iterationPrompts(in pipeline.IterationInput, round int) (prompts [][]int32, rowTexts []string, err error) {
	r := in.Spec.Reinforce
	texts, err := j.ds.IterationPrompts(in.Spec.Seed, in.PromptPosition(round), r.PromptsPerIteration)
	if err != nil {
		return nil, nil, err
	}
	return j.ds.Encode(texts), repeatText(texts, r.SamplesPerPrompt), nil
}

// iterationOutcome is what an iteration's update leaves: the rows it
// trained on, their scores, and the updated policy and optimizer state.
type iterationOutcome struct {
	texts                    []string
	rollouts                 *reinforce.Rollouts
	rewards, kl, shaped, adv []float64
	verified                 []float64   // the verifier's scores (nil: no verifier)
	logprobs                 [][]float32 // the policy's when sampled, by row (nil: not recorded)
	// groups are the trained rows' groups (k rows each) by round and place
	// (nil: round 0's, in order); dropped the records of the rows dynamic
	// sampling left out, and sampling its counts (nil without it).
	groups   []reinforce.GroupID
	dropped  []pipeline.RolloutRecord
	sampling *pipeline.Sampling
	update   reinforce.UpdateStats
	pol      *weights.Set
	st       *optim.State
	started  time.Time
}

// combined is every rollout's reward as REINFORCE reads it: the reward
// model's score and, with a verifier (verified not nil), its score,
// weighed (reward.CombineRewards).
func combined(r config.Reward, rewards, verified []float64) []float64 {
	if verified == nil {
		return rewards
	}
	mw, vw := r.Weights()
	out := make([]float64, len(rewards))
	for i := range out {
		out[i] = reward.CombineRewards(mw, rewards[i], vw, verified[i])
	}
	return out
}

// saveIteration summarises an iteration's rollouts (reinforce.Summarize,
// with the gold score where the data has a rubric) and stores the policy,
// its optimizer state and the rollouts.
func (a *Activities) saveIteration(in pipeline.IterationInput, j *job, o iterationOutcome) (pipeline.IterationResult, error) {
	res := pipeline.IterationResult{Iteration: in.Iteration, Loss: o.update.Loss}
	if in.Spec.Reinforce.Objective().Clipped() {
		res.RatioMean, res.ClipFraction = &o.update.RatioMean, &o.update.ClipFraction
	}
	responses := o.rollouts.Responses()
	gold := j.ds.Gold(o.texts, responses)
	sum := reinforce.Summarize(o.rollouts.Samples, o.rewards, o.kl, gold)
	res.RewardMean, res.KLMean, res.EndedFraction, res.GoldMean = sum.RewardMean, sum.KLMean, sum.EndedFraction, sum.GoldMean
	if o.verified != nil {
		v := 0.0
		for _, x := range o.verified {
			v += x / float64(len(o.verified))
		}
		res.VerifierMean = &v
	}
	k := in.Spec.Reinforce.SamplesPerPrompt
	records := make([]pipeline.RolloutRecord, len(responses))
	for i, s := range o.rollouts.Samples {
		records[i] = pipeline.RolloutRecord{PromptIndex: i / k, SampleIndex: i % k, Prompt: o.texts[i], Response: j.m.codec.Text(s.Tokens),
			Tokens: s.Tokens, Ended: s.Ended, Reward: o.rewards[i], KL: o.kl[i], Advantage: o.adv[i]}
		if o.groups != nil {
			records[i].Round, records[i].PromptIndex = o.groups[i/k].Round, o.groups[i/k].Group
		}
		if o.shaped != nil {
			records[i].Shaped = &o.shaped[i]
		}
		if o.verified != nil {
			records[i].Verifier = &o.verified[i]
		}
		if o.logprobs != nil && o.logprobs[i] != nil {
			lp := reinforce.Sum(o.logprobs[i])
			records[i].LogProb = &lp
		}
		if gold != nil {
			records[i].Gold = &gold[i]
		}
	}
	records = append(records, o.dropped...)
	res.Sampling = o.sampling
	dir, err := runPath(in.RunID, iterationDir(in.Iteration))
	if err != nil {
		return res, err
	}
	if res.Policy, err = a.Store.PutWeights(path.Join(dir, "policy.safetensors"), o.pol); err != nil {
		return res, err
	}
	res.PolicyDigest = o.pol.Digest()
	if res.Optimizer, err = a.Store.PutWeights(path.Join(dir, "optimizer.safetensors"), o.st.Save()); err != nil {
		return res, err
	}
	if res.Rollouts, err = a.Store.PutJSON(path.Join(dir, pipeline.RolloutsFile), records); err != nil {
		return res, err
	}
	res.MeanLength = sum.MeanLength
	res.Seconds = time.Since(o.started).Seconds()
	return res, nil
}

// ReinforceIteration runs one REINFORCE iteration and stores the updated
// policy, its optimizer state and the rollouts. Runs started before
// rollout shards schedule it; later ones RolloutShard and UpdatePolicy,
// whose rows sample from streams of their own.
func (a *Activities) ReinforceIteration(ctx context.Context, in pipeline.IterationInput) (pipeline.IterationResult, error) {
	ctx, _, stop := a.live(ctx, pipeline.Progress{Stage: pipeline.StageReinforce, Step: in.Iteration + 1, Total: in.Spec.Reinforce.Iterations})
	defer stop()
	res, err := reuse(ctx, a, pipeline.StageReinforce, in.Spec, in.RunID, in, func() (pipeline.IterationResult, error) { return a.reinforceIteration(ctx, in) })
	if err == nil {
		err = a.logIteration(in, res, res.Seconds)
	}
	return res, classify(err)
}

func (a *Activities) reinforceIteration(ctx context.Context, in pipeline.IterationInput) (pipeline.IterationResult, error) {
	o := iterationOutcome{started: time.Now()}
	spec := in.Spec
	j, err := a.setup(ctx, spec, in.Data)
	if err != nil {
		return pipeline.IterationResult{}, err
	}
	defer j.release()
	pol, ref, rm, err := a.loadModels(in.Spec.Reward, in.Policy, in.Reference, in.RewardModel)
	if err != nil {
		return pipeline.IterationResult{}, err
	}
	if spec.LoRA.On() {
		return pipeline.IterationResult{}, invalidSpec(fmt.Errorf("spec field lora: runs that take REINFORCE as one activity per iteration (started before rollout shards) train every weight"))
	}
	if o.st, err = a.optimizerState(in, pol); err != nil {
		return pipeline.IterationResult{}, err
	}
	prompts, texts, err := j.iterationPrompts(in, 0)
	if err != nil {
		return pipeline.IterationResult{}, err
	}
	k := spec.Reinforce.SamplesPerPrompt
	it := &reinforce.Iteration{Policy: j.eng.policy, Reward: j.eng.reward, Trainer: a.rlTrainer(j.eng, spec.Reinforce.Objective()), Reference: ref, RM: rm,
		Settings: j.settings(spec, k, spec.Reinforce.Temperature)}
	outcomes, stats, err := it.Run(pol, o.st, prompts, rng.New(spec.Seed, "rollout", in.Iteration))
	if err != nil {
		return pipeline.IterationResult{}, err
	}
	o.texts, o.pol, o.update = texts, pol, stats.Update
	o.rollouts = &reinforce.Rollouts{Contexts: reinforce.Repeat(prompts, k)}
	for _, ro := range outcomes {
		o.rollouts.Samples = append(o.rollouts.Samples, policy.Sample{Tokens: ro.Response, Ended: ro.Ended})
		o.rewards, o.kl, o.adv = append(o.rewards, ro.Reward), append(o.kl, ro.KL), append(o.adv, ro.Advantage)
		o.shaped = append(o.shaped, ro.Shaped)
	}
	return a.saveIteration(in, j, o)
}

func iterationDir(iteration int) string { return pipeline.IterationDir(iteration) }
