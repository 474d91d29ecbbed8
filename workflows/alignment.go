// Package workflows orchestrates alignflow's runs. Workflow code here is
// deterministic: no I/O, clocks or randomness outside Temporal's APIs; the work
// happens in activities, which exchange artifact references and small metrics.
package workflows

import (
	"encoding/json"
	"errors"
	"fmt"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/alignflow/alignflow/activities"
	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/reinforce"
)

// TaskQueue is the default task queue of alignflow workers.
const TaskQueue = "alignflow"

// AlignmentName is the registered workflow type.
const AlignmentName = "Alignment"

// ProgressQuery returns a Progress.
const ProgressQuery = "progress"

// Progress is the live state of a run, answered by the "progress" query.
type Progress struct {
	Stage      string                    `json:"stage"`
	Iteration  int                       `json:"iteration"`  // REINFORCE iterations finished
	Iterations int                       `json:"iterations"` // planned
	Completed  []string                  `json:"completed"`  // stages finished, in order
	Last       *pipeline.IterationResult `json:"last_iteration,omitempty"`
	Metrics    map[string]float64        `json:"metrics,omitempty"`
	// Paused and StopRequested reflect the pause, resume and stop signals.
	Paused        bool `json:"paused,omitempty"`
	StopRequested bool `json:"stop_requested,omitempty"`
	// Variants are the comparison's reward models and their states.
	Variants []VariantStatus `json:"variants,omitempty"`
}

// Continuation is what an alignment run hands to the run it continues as:
// references and small results of the finished stages, the REINFORCE
// position, the signals' state, the last curve segment and the choices
// between versions made once per alignment. No tensors, and nothing that
// grows with the number of iterations.
type Continuation struct {
	Data         pipeline.Data              `json:"data"`
	SFT          pipeline.TrainResult       `json:"sft"`
	RewardModel  pipeline.TrainResult       `json:"reward_model"`
	RewardEval   pipeline.RewardEval        `json:"reward_eval"`
	Before       pipeline.PolicyEval        `json:"before"`
	Completed    []string                   `json:"completed"`
	Iteration    int                        `json:"iteration"` // REINFORCE iterations finished
	Policy       artifact.Ref               `json:"policy"`
	PolicyDigest string                     `json:"policy_sha256"`
	Optimizer    artifact.Ref               `json:"optimizer"`
	First        *pipeline.IterationMetrics `json:"first_iteration,omitempty"`
	Last         *pipeline.IterationResult  `json:"last_iteration,omitempty"`
	Curve        *artifact.Ref              `json:"curve,omitempty"` // the last saved segment
	// ExtraRounds counts the sampling rounds the iterations so far drew
	// beyond their first (reinforce.skip_uniform_groups), and Sampling
	// sums their counts (nil without dynamic sampling).
	ExtraRounds int                `json:"extra_rounds,omitempty"`
	Sampling    *pipeline.Sampling `json:"sampling,omitempty"`
	// InFlight are the rollouts asynchronous sampling (max_staleness)
	// drew for the iterations after Iteration, by reference: the
	// iterations Iteration to Iteration + max_staleness - 1, those the
	// next run does not sample again.
	InFlight []Sampled `json:"in_flight,omitempty"`
	Paused   bool      `json:"paused,omitempty"`
	Stop     bool      `json:"stop,omitempty"`
	Runs     int       `json:"runs"` // workflow runs before this one
	// SpecDigest is the sha256 of the spec input of the run that made the
	// continuation: the next must have the same ("" from runs before
	// continuationChecksVersion).
	SpecDigest string `json:"spec_sha256,omitempty"`
	// versions are set when the run continues as new; their exported
	// fields (sharded, pinned) are the JSON's.
	versions
}

// Alignment runs RLHF end to end: prepare matched data, SFT the initial
// policy, train and evaluate the reward model, evaluate the SFT policy, run
// REINFORCE iterations, evaluate the aligned policy, write the summary and
// the report.
//
// Its input is the run spec as JSON. It is taken raw so that a spec given
// through the temporal CLI is parsed and validated here, and a bad one fails
// the run with a non-retryable error that names the field, instead of failing
// workflow tasks forever on decoding. The REINFORCE loop continues as new
// every reinforce.continue_as_new_every iterations: the next run gets the
// same spec and a Continuation (nil when a run starts).
func Alignment(ctx workflow.Context, input json.RawMessage, cont *Continuation) (*pipeline.Summary, error) {
	r, err := begin(ctx, input, cont)
	if err != nil {
		return nil, err
	}
	r.v.segmented = since(ctx, "segments", segmentsVersion)
	r.p.Iterations = r.spec.Reinforce.Iterations
	var a *activities.Activities

	st := cont
	if st == nil {
		r.listen()
		if st, err = r.beforeReinforce(); err != nil {
			return nil, err
		}
		r.v.chooseRollouts(ctx)
	} else {
		if since(ctx, "continuation-checks", continuationChecksVersion) {
			if err := checkContinuation(workflow.GetInfo(ctx), r.id, input, r.spec, st); err != nil {
				r.enter(pipeline.StageFailed)
				return nil, temporal.NewNonRetryableApplicationError(fmt.Sprintf("invalid continuation: %v", err), pipeline.ErrInvalidSpec, err)
			}
		}
		r.resume(st)
		r.carried(st)
	}

	r.enter(pipeline.StageReinforce)
	var points []pipeline.IterationMetrics // this workflow run's part of the curve (all of it before segments)
	started := st.Iteration
	for st.Iteration < r.spec.Reinforce.Iterations && !r.gate() {
		if r.continueDue(st.Iteration - started) {
			return nil, r.continueAsNew(input, st, points)
		}
		res, rounds, err := r.iteration(st)
		if err != nil {
			return nil, r.fail(err)
		}
		points = append(points, r.advance(st, res, rounds))
	}
	if err := r.saveCurve(st, points); err != nil {
		return nil, r.fail(err)
	}
	r.done(pipeline.StageReinforce)

	var after pipeline.PolicyEval
	if err := r.stage(pipeline.StageEvalAfter, r.work.evaluation, a.EvaluatePolicy, r.policyEval(st, pipeline.StageEvalAfter), &after); err != nil {
		return nil, err
	}
	s := r.summary(st, after, points)
	if err := r.stage(pipeline.StageSummary, r.work.bookkeeping, a.WriteSummary,
		pipeline.SummaryInput{RunID: r.id, Summary: s, Curve: s.CurveRef}, &s.SummaryPath); err != nil {
		return nil, err
	}
	s.ReportPath = r.writeReport()
	r.enter(pipeline.StageDone)
	return s, nil
}

// beforeReinforce runs the stages before REINFORCE: data, SFT, the reward
// model and its evaluation (unless the run leaves it out), and the SFT
// policy's evaluation. It returns the alignment's state with the SFT
// policy as the one REINFORCE starts from.
func (r *run) beforeReinforce() (*Continuation, error) {
	var a *activities.Activities
	data, sft, err := r.prepareAndSFT()
	if err != nil {
		return nil, err
	}
	st := &Continuation{Data: data, SFT: sft, Policy: sft.Checkpoint, PolicyDigest: sft.Digest}
	if !r.rewardModelLeftOut() {
		if err := r.rewardModel(st); err != nil {
			return nil, err
		}
	}
	if err := r.stage(pipeline.StageEvalBefore, r.work.evaluation, a.EvaluatePolicy, r.policyEval(st, pipeline.StageEvalBefore), &st.Before); err != nil {
		return nil, err
	}
	return st, nil
}

// rewardModel trains the reward model on st's SFT backbone and evaluates
// it, into st.
func (r *run) rewardModel(st *Continuation) error {
	var a *activities.Activities
	if err := r.stage(pipeline.StageRewardModel, r.work.training, a.TrainRewardModel,
		pipeline.TrainInput{RunID: r.id, Spec: r.spec, Data: st.Data, Base: st.SFT.Checkpoint}, &st.RewardModel); err != nil {
		return err
	}
	if err := r.stage(pipeline.StageRewardEval, r.work.evaluation, a.EvaluateRewardModel,
		pipeline.RewardEvalInput{RunID: r.id, Spec: r.spec, Data: st.Data, RewardModel: st.RewardModel.Checkpoint}, &st.RewardEval); err != nil {
		return err
	}
	r.showRewardModel(st.RewardEval)
	return nil
}

// rewardModelLeftOut reports whether the run trains no reward model: its
// reward leaves it out (reward.model_weight 0), and it started after
// rewardModelLeftOutVersion. The version is asked only by such runs,
// where their history has its marker.
func (r *run) rewardModelLeftOut() bool {
	return r.spec.Reward.ModelLeftOut() && since(r.ctx, "reward-model-left-out", rewardModelLeftOutVersion)
}

// resume picks up the alignment a continued run got: its choices between
// versions, progress and signals' state.
func (r *run) resume(st *Continuation) {
	r.size(&st.Data)
	r.v.Sharded, r.v.Pinned = st.Sharded, st.Pinned
	r.p.Completed, r.p.Iteration, r.p.Last = st.Completed, st.Iteration, st.Last
	r.p.Paused, r.p.StopRequested = st.Paused, st.Stop
	r.listen()
	r.upsert(IterationAttribute.ValueSet(int64(st.Iteration)))
	if st.RewardModel.Checkpoint != (artifact.Ref{}) {
		r.showRewardModel(st.RewardEval)
	}
}

// showRewardModel puts the reward model's held-out accuracy in the progress.
func (r *run) showRewardModel(eval pipeline.RewardEval) {
	r.p.Metrics = map[string]float64{"reward_model.heldout_accuracy": eval.HeldoutAccuracy}
}

// policyEval is the input of the evaluation labelled label of st's policy
// (the SFT policy before REINFORCE), against the SFT reference.
func (r *run) policyEval(st *Continuation, label string) pipeline.PolicyEvalInput {
	return pipeline.PolicyEvalInput{RunID: r.id, Spec: r.spec, Data: st.Data, Policy: st.Policy, Reference: st.SFT.Checkpoint,
		RewardModel: st.RewardModel.Checkpoint, Label: label}
}

// continueDue reports whether this workflow run hands the alignment on to
// a new one before its next iteration, having run done: after
// reinforce.continue_as_new_every, or sooner when Temporal suggests it (the
// history grows large), but never before its first. Runs recorded before
// segments never continue.
func (r *run) continueDue(done int) bool {
	return r.v.segmented && done > 0 &&
		(done >= r.spec.Reinforce.ContinueAsNewEvery || workflow.GetInfo(r.ctx).GetContinueAsNewSuggested())
}

// continueAsNew ends this workflow run for one that continues the alignment
// from st: it saves points, this run's part of the curve, applies signals
// that arrived and were not handled yet (they would be lost) and hands st
// on with the progress and the choices between versions.
func (r *run) continueAsNew(input json.RawMessage, st *Continuation, points []pipeline.IterationMetrics) error {
	if err := r.saveCurve(st, points); err != nil {
		return r.fail(err)
	}
	if err := r.landInFlight(st); err != nil {
		return r.fail(err)
	}
	r.drain()
	st.Completed, st.Paused, st.Stop = r.p.Completed, r.p.Paused, r.p.StopRequested
	st.versions = r.v
	st.SpecDigest = specDigest(input)
	st.Runs++
	return workflow.NewContinueAsNewError(r.ctx, AlignmentName, input, st)
}

// saveCurve saves points as the curve segment after st.Curve and makes it
// st.Curve. A run with no points saves none unless no segment exists yet
// (the summary refers to one); runs recorded before segments save nothing:
// their summary carries the curve.
func (r *run) saveCurve(st *Continuation, points []pipeline.IterationMetrics) error {
	if !r.v.segmented || len(points) == 0 && st.Curve != nil {
		return nil
	}
	var a *activities.Activities
	var seg artifact.Ref
	if err := workflow.ExecuteActivity(r.work.bookkeeping, a.SaveCurve, pipeline.CurveInput{RunID: r.id, Previous: st.Curve, Points: points}).Get(r.ctx, &seg); err != nil {
		return err
	}
	st.Curve = &seg
	return nil
}

// iteration runs REINFORCE iteration st.Iteration from st's policy and
// optimizer: as rollout shards and an update, or, for runs started before
// shardsVersion, as one ReinforceIteration. It returns the result and how
// many sampling rounds the iteration drew.
func (r *run) iteration(st *Continuation) (pipeline.IterationResult, int, error) {
	var a *activities.Activities
	in := r.iterationInput(st)
	if r.v.Sharded && r.spec.Reinforce.MaxStaleness > 0 {
		return r.asyncIteration(st)
	}
	if r.v.Sharded {
		return r.shardedIteration(in, r.pin(st))
	}
	var res pipeline.IterationResult
	err := workflow.ExecuteActivity(r.work.iteration, a.ReinforceIteration, in).Get(r.ctx, &res)
	return res, 1, err
}

// pin is the worker queue st's next update is offered on first: the
// previous update's worker's, for runs that pin ("" for none).
func (r *run) pin(st *Continuation) string {
	if r.v.Pinned && st.Last != nil {
		return st.Last.WorkerQueue
	}
	return ""
}

// iterationInput is the input of iteration st.Iteration, from st's policy
// and optimizer.
func (r *run) iterationInput(st *Continuation) pipeline.IterationInput {
	return pipeline.IterationInput{RunID: r.id, Spec: r.spec, Data: st.Data, Iteration: st.Iteration, Policy: st.Policy,
		Optimizer: st.Optimizer, Reference: st.SFT.Checkpoint, RewardModel: st.RewardModel.Checkpoint, ExtraRounds: st.ExtraRounds}
}

// advance records iteration res, which drew rounds sampling rounds, in st
// (the policy and optimizer the next one starts from, the prompts it took,
// the ends of the curve), the progress and the search attributes, and
// returns its point of the curve.
func (r *run) advance(st *Continuation, res pipeline.IterationResult, rounds int) pipeline.IterationMetrics {
	m := res.Metrics()
	st.Policy, st.Optimizer, st.PolicyDigest, st.Last = res.Policy, res.Optimizer, res.PolicyDigest, &res
	st.ExtraRounds += rounds - 1
	if res.Sampling != nil {
		if st.Sampling == nil {
			st.Sampling = &pipeline.Sampling{}
		}
		st.Sampling.Add(*res.Sampling)
	}
	if st.First == nil {
		st.First = &m
	}
	st.Iteration++
	r.p.Iteration, r.p.Last = st.Iteration, &res
	r.upsert(IterationAttribute.ValueSet(int64(st.Iteration)), RewardMeanAttribute.ValueSet(res.RewardMean))
	return m
}

// shardedIteration runs a REINFORCE iteration as its sampling rounds of
// rollout shards (sample), then UpdatePolicy on their results (update).
func (r *run) shardedIteration(in pipeline.IterationInput, pin string) (pipeline.IterationResult, int, error) {
	shards, rounds, err := r.sample(r.ctx, in)
	if err != nil {
		return pipeline.IterationResult{}, rounds, err
	}
	res, err := r.update(pipeline.UpdateInput{IterationInput: in, Shards: shards}, pin)
	return res, rounds, err
}

// sample runs an iteration's rollouts (in.Policy samples) as rounds of
// reinforce.rollout_shards RolloutShard activities at once (on
// queues.rollout), waiting in ctx (the coroutine's), and returns every
// round's results in order and the number of rounds. There is one round
// unless reinforce.skip_uniform_groups: then rounds follow while the
// shards report fewer than prompts_per_iteration groups that are not
// uniform, up to max_sampling_rounds, so the rounds follow from the
// shards' results alone. (Only specs with skip_uniform_groups, which no
// run recorded before it could have, take a second round: no version
// marker is needed.) A failed shard fails the iteration once its retries
// are spent; the others' results are reused on resume.
func (r *run) sample(ctx workflow.Context, in pipeline.IterationInput) ([]pipeline.ShardResult, int, error) {
	rs := in.Spec.Reinforce
	var all []pipeline.ShardResult
	var uniform [][]bool
	for round := 0; round < rs.SamplingRounds(); round++ {
		shards, err := r.rolloutRound(ctx, in, round)
		if err != nil {
			return nil, round + 1, err
		}
		all = append(all, shards...)
		if !rs.SkipUniformGroups {
			return all, 1, nil
		}
		if uniform = append(uniform, pipeline.Uniform(shards, rs.PromptsPerIteration)); reinforce.Varied(uniform) >= rs.PromptsPerIteration {
			break
		}
	}
	return all, len(uniform), nil
}

// update runs UpdatePolicy: on the worker queue pin (the previous
// update's worker), else, or when no worker takes it there within the
// heartbeat timeout, on queues.train.
func (r *run) update(up pipeline.UpdateInput, pin string) (pipeline.IterationResult, error) {
	var a *activities.Activities
	var res pipeline.IterationResult
	if pin != "" {
		err := workflow.ExecuteActivity(r.work.pinned(pin), a.UpdatePolicy, up).Get(r.ctx, &res)
		var timeout *temporal.TimeoutError
		if !errors.As(err, &timeout) || timeout.TimeoutType() != enums.TIMEOUT_TYPE_SCHEDULE_TO_START {
			return res, err
		}
		workflow.GetLogger(r.ctx).Info("the previous update's worker did not take the update; any train worker will", "queue", pin)
	}
	err := workflow.ExecuteActivity(r.work.iteration, a.UpdatePolicy, up).Get(r.ctx, &res)
	return res, err
}

// rolloutRound runs sampling round round of an iteration as
// reinforce.rollout_shards RolloutShard activities at once and returns
// their results in shard order.
func (r *run) rolloutRound(ctx workflow.Context, in pipeline.IterationInput, round int) ([]pipeline.ShardResult, error) {
	var a *activities.Activities
	n := in.Spec.Reinforce.Shards()
	futures := make([]workflow.Future, n)
	for i := range futures {
		futures[i] = workflow.ExecuteActivity(r.work.rollout, a.RolloutShard, pipeline.ShardInput{IterationInput: in, Shard: i, Shards: n, Round: round})
	}
	out := make([]pipeline.ShardResult, n)
	var firstErr error
	for i, f := range futures {
		if err := f.Get(ctx, &out[i]); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return out, firstErr
}
