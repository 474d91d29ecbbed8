package activities

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/data/helpsteer"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/ops/report"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/policy"
	"github.com/alignflow/alignflow/reinforce"
)

// loadModels loads and verifies the policy, the reference policy and the
// reward model that evaluation and REINFORCE both start from.
func (a *Activities) loadModels(policy, reference, rewardModel artifact.Ref) (pol, ref, rm *weights.Set, err error) {
	if pol, err = a.Store.GetWeights(policy); err != nil {
		return nil, nil, nil, err
	}
	if ref, err = a.Store.GetWeights(reference); err != nil {
		return nil, nil, nil, err
	}
	if rm, err = a.Store.GetWeights(rewardModel); err != nil {
		return nil, nil, nil, err
	}
	return pol, ref, rm, nil
}

// evalPrompts are the held-out prompts a policy is measured on: the first
// eval.prompts of the validation split (of the training split if there is
// none), each sampled eval.samples_per_prompt times.
func evalPrompts(ds *dataset, spec config.Spec) []string {
	var pool []string
	for _, split := range []string{helpsteer.SplitValidation, helpsteer.SplitTrain} {
		for _, p := range ds.prompts(split) {
			if ds.fits(p, ds.m.cfg.MaxLen) {
				pool = append(pool, p)
			}
		}
		if len(pool) > 0 {
			break
		}
	}
	return pool[:min(len(pool), spec.Eval.Prompts)]
}

func sampleOptions(spec config.Spec, ds *dataset, temperature float64) policy.SampleOptions {
	return policy.SampleOptions{Temperature: temperature, TopP: spec.Reinforce.TopP, MaxTokens: spec.Reinforce.MaxTokens, Stop: ds.m.codec.Stop()}
}

// EvaluatePolicy samples responses to the held-out prompts with the eval
// seed and scores them with the gold rubric (when the data has one), the
// reward model, and the KL to the reference policy, both as the KL of whole
// responses and as the per-token penalty REINFORCE trains against.
func (a *Activities) EvaluatePolicy(ctx context.Context, in pipeline.PolicyEvalInput) (pipeline.PolicyEval, error) {
	defer keepAlive(ctx, pipeline.Progress{Stage: in.Label})()
	res, err := reuse(ctx, a, "policy_eval", in.Spec, in.RunID, in, func() (pipeline.PolicyEval, error) { return a.evaluatePolicy(ctx, in) })
	if err == nil {
		err = a.logPolicyEval(in, res)
	}
	return res, classify(err)
}

func (a *Activities) evaluatePolicy(ctx context.Context, in pipeline.PolicyEvalInput) (pipeline.PolicyEval, error) {
	spec := in.Spec
	eng, ds, err := a.setup(spec, in.Data)
	if err != nil {
		return pipeline.PolicyEval{}, err
	}
	pol, ref, rm, err := a.loadModels(in.Policy, in.Reference, in.RewardModel)
	if err != nil {
		return pipeline.PolicyEval{}, err
	}
	cfg := ds.m.cfg
	prompts := evalPrompts(ds, spec)
	if len(prompts) == 0 {
		return pipeline.PolicyEval{}, invalidData(fmt.Errorf("no prompts fit model.max_len %d", cfg.MaxLen))
	}
	var texts []string
	var ids [][]int32
	for _, p := range prompts {
		pi, _ := ds.promptIDs(p) // evalPrompts kept those that encode
		ids = append(ids, pi)
		for j := 0; j < spec.Eval.SamplesPerPrompt; j++ {
			texts = append(texts, p)
		}
	}
	bs := spec.Reinforce.BatchSize
	heartbeat(ctx, pipeline.Progress{Stage: in.Label, Step: 0, Total: len(texts)})
	ro, err := reinforce.Rollout(eng.policy, pol, ids, spec.Eval.SamplesPerPrompt, bs, sampleOptions(spec, ds, spec.Eval.Temperature), stageRNG(spec.Seed, "eval", 0))
	if err != nil {
		return pipeline.PolicyEval{}, err
	}
	res := pipeline.PolicyEval{Prompts: len(prompts)}
	responses := ro.Responses()
	goldSum := 0.0
	for i, s := range ro.Samples {
		if s.Ended {
			res.EndedFraction++
		}
		if ds.task != nil {
			goldSum += ds.task.Gold(texts[i], ds.m.codec.Text(s.Tokens)).Helpfulness
		}
	}
	n := float64(len(ro.Samples))
	res.EndedFraction /= n
	res.MeanLength = meanLength(ro.Samples)
	if ds.task != nil {
		g := goldSum / n
		res.GoldScore = &g
	}
	rewards, lp, err := reinforce.ScoreAndLogProbs(eng.policy, eng.reward, pol, ref, rm, ro, bs)
	if err != nil {
		return res, err
	}
	for _, d := range lp.LogRatios() {
		for _, x := range d {
			res.KLSequence += float64(x) / n
		}
	}
	kl, err := lp.KL(spec.Reinforce.KLEstimator)
	if err != nil {
		return res, err
	}
	for _, k := range kl {
		res.KLPenalty += k / n
	}
	for _, r := range rewards {
		res.Reward += r / n
	}
	for i := 0; i < min(spec.Eval.ShowSamples, len(prompts)); i++ {
		k := i * spec.Eval.SamplesPerPrompt // the first sample of prompt i
		st := pipeline.SampleText{Prompt: texts[k], Response: ds.m.codec.Text(responses[k]), Reward: rewards[k]}
		if ds.task != nil {
			st.Gold = ds.task.Gold(texts[k], st.Response).Helpfulness
		}
		res.Samples = append(res.Samples, st)
	}
	return res, nil
}

// iterationPrompts picks the iteration's prompts from the training split: a
// seeded shuffle walked in order, so every iteration sees the next slice and
// a resumed run sees exactly the prompts it would have.
func iterationPrompts(ds *dataset, spec config.Spec, iteration int) []string {
	var pool []string
	for _, p := range ds.prompts(helpsteer.SplitTrain) {
		if ds.fits(p, ds.m.cfg.MaxLen) {
			pool = append(pool, p)
		}
	}
	if len(pool) == 0 {
		return nil
	}
	order := stageRNG(spec.Seed, "reinforce-prompts", 0).Perm(len(pool))
	n := spec.Reinforce.PromptsPerIteration
	out := make([]string, n)
	for j := range out {
		out[j] = pool[order[(iteration*n+j)%len(pool)]]
	}
	return out
}

// rolloutRecord is one line of the rollouts artifact.
type rolloutRecord struct {
	Prompt    string   `json:"prompt"`
	Response  string   `json:"response"`
	Ended     bool     `json:"ended"`
	Reward    float64  `json:"reward"`
	KL        float64  `json:"kl"`
	Advantage float64  `json:"advantage"`
	Gold      *float64 `json:"gold,omitempty"`
}

// ReinforceIteration runs one REINFORCE iteration and stores the updated
// policy, its optimizer state and the rollouts. Runs started before
// rollout shards schedule it; later ones RolloutShard and UpdatePolicy,
// whose rows sample from streams of their own.
func (a *Activities) ReinforceIteration(ctx context.Context, in pipeline.IterationInput) (pipeline.IterationResult, error) {
	defer keepAlive(ctx, pipeline.Progress{Stage: pipeline.StageReinforce, Step: in.Iteration + 1, Total: in.Spec.Reinforce.Iterations})()
	res, err := reuse(ctx, a, pipeline.StageReinforce, in.Spec, in.RunID, in, func() (pipeline.IterationResult, error) { return a.reinforceIteration(ctx, in) })
	if err == nil {
		err = a.logIteration(in, res, res.Seconds)
	}
	return res, classify(err)
}

func (a *Activities) reinforceIteration(ctx context.Context, in pipeline.IterationInput) (pipeline.IterationResult, error) {
	start := time.Now()
	spec := in.Spec
	eng, ds, err := a.setup(spec, in.Data)
	if err != nil {
		return pipeline.IterationResult{}, err
	}
	pol, ref, rm, err := a.loadModels(in.Policy, in.Reference, in.RewardModel)
	if err != nil {
		return pipeline.IterationResult{}, err
	}
	st, err := a.optimizerState(in, pol)
	if err != nil {
		return pipeline.IterationResult{}, err
	}
	r := spec.Reinforce
	it := &reinforce.Iteration{
		Policy: eng.policy, Reward: eng.reward, Trainer: a.rlTrainer(eng), Reference: ref, RM: rm,
		Settings: reinforce.Settings{
			SamplesPerPrompt: r.SamplesPerPrompt, KLBeta: r.KLBeta, KLEstimator: r.KLEstimator,
			LearningRate: r.LearningRate, BatchSize: r.BatchSize, Sample: sampleOptions(spec, ds, r.Temperature),
		},
	}
	prompts := iterationPrompts(ds, spec, in.Iteration)
	if len(prompts) == 0 {
		return pipeline.IterationResult{}, invalidData(fmt.Errorf("no training prompts fit model.max_len %d", ds.m.cfg.MaxLen))
	}
	ctxs := make([][]int32, len(prompts))
	for i, p := range prompts {
		ctxs[i], _ = ds.promptIDs(p) // iterationPrompts kept those that encode
	}
	heartbeat(ctx, pipeline.Progress{Stage: pipeline.StageReinforce, Step: in.Iteration + 1, Total: spec.Reinforce.Iterations})
	rollouts, stats, err := it.Run(pol, st, ctxs, stageRNG(spec.Seed, "rollout", in.Iteration))
	if err != nil {
		return pipeline.IterationResult{}, err
	}
	res := pipeline.IterationResult{Iteration: in.Iteration, Loss: stats.Loss}
	records := make([]rolloutRecord, len(rollouts))
	for i, ro := range rollouts {
		records[i] = rolloutRecord{Prompt: prompts[ro.Prompt], Response: ds.m.codec.Text(ro.Response), Ended: ro.Ended,
			Reward: ro.Reward, KL: ro.KL, Advantage: ro.Advantage}
	}
	if err := a.saveIteration(in, ds, pol, st, records, &res); err != nil {
		return res, err
	}
	n := 0
	for _, ro := range rollouts {
		n += len(ro.Response)
	}
	res.MeanLength = float64(n) / float64(max(1, len(rollouts)))
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// WriteReport writes a comparison's report where users look for it, as
// runs/<run>/comparison.json and, as tables shaped like the paper's,
// comparison.md, in the store (<data-dir>/runs/<run>/ for a local one).
func (a *Activities) WriteReport(_ context.Context, in pipeline.ReportInput) (pipeline.ReportPaths, error) {
	var out pipeline.ReportPaths
	if in.Report == nil {
		return out, fmt.Errorf("write report: no report given")
	}
	var err error
	if out.JSON, err = a.putRecordJSON(runPath(in.RunID, pipeline.ComparisonFile), in.Report); err != nil {
		return out, classify(fmt.Errorf("write comparison report: %w", err))
	}
	if out.Markdown, err = a.Store.PutRecord(runPath(in.RunID, "comparison.md"), []byte(report.ComparisonMarkdown(in.Report))); err != nil {
		return out, classify(fmt.Errorf("write comparison report: %w", err))
	}
	return out, nil
}

// putRecordJSON writes v as indented JSON to a record of the store and
// says where it is.
func (a *Activities) putRecordJSON(key string, v any) (string, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return "", err
	}
	return a.Store.PutRecord(key, append(b, '\n'))
}

// curveSegment is the stored form of a CurveInput.
type curveSegment struct {
	Previous *artifact.Ref               `json:"previous,omitempty"`
	Points   []pipeline.IterationMetrics `json:"points"`
}

// SaveCurve stores a segment of the REINFORCE curve as
// <data-dir>/runs/<run>/reinforce/curve-<first>-<last>.json.
func (a *Activities) SaveCurve(_ context.Context, in pipeline.CurveInput) (artifact.Ref, error) {
	name := "curve-empty.json"
	if n := len(in.Points); n > 0 {
		name = fmt.Sprintf("curve-%05d-%05d.json", in.Points[0].Iteration, in.Points[n-1].Iteration)
	}
	ref, err := a.Store.PutJSON(runPath(in.RunID, "reinforce", name), curveSegment{Previous: in.Previous, Points: in.Points})
	return ref, classify(err)
}

// loadCurve follows a chain of curve segments back to the first and returns
// every point in order, verifying each segment.
func (a *Activities) loadCurve(last artifact.Ref) ([]pipeline.IterationMetrics, error) {
	var segments [][]pipeline.IterationMetrics
	for ref := &last; ref != nil; {
		var seg curveSegment
		if err := a.Store.GetJSON(*ref, &seg); err != nil {
			return nil, fmt.Errorf("REINFORCE curve segment: %w", err)
		}
		segments = append(segments, seg.Points)
		ref = seg.Previous
	}
	var points []pipeline.IterationMetrics
	for i := len(segments) - 1; i >= 0; i-- {
		points = append(points, segments[i]...)
	}
	return points, nil
}

// WriteSummary writes the run summary to runs/<run>/summary.json in the
// store (<data-dir>/runs/<run>/summary.json for a local one),
// with the whole REINFORCE curve when it was stored in segments.
func (a *Activities) WriteSummary(_ context.Context, in pipeline.SummaryInput) (string, error) {
	if in.Summary == nil {
		return "", fmt.Errorf("write summary: no summary given")
	}
	s := *in.Summary
	if in.Curve != nil {
		points, err := a.loadCurve(*in.Curve)
		if err != nil {
			return "", classify(err)
		}
		s.Curve = points
	}
	p, err := a.putRecordJSON(runPath(in.RunID, pipeline.SummaryFile), s)
	if err != nil {
		return "", classify(fmt.Errorf("write summary: %w", err))
	}
	return p, nil
}
