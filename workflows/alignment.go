// Package workflows orchestrates alignflow's runs. Workflow code here is
// deterministic: no I/O, clocks or randomness outside Temporal's APIs; the work
// happens in activities, which exchange artifact references and small metrics.
package workflows

import (
	"encoding/json"
	"errors"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/alignflow/alignflow/activities"
	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/pipeline"
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

// segmentsVersion is the workflow version from which the REINFORCE loop
// continues as new every reinforce.continue_as_new_every iterations and keeps
// its curve in artifact segments; runs recorded before it keep the curve in
// the workflow and never continue as new.
const segmentsVersion = 1

// shardsVersion is the workflow version from which a REINFORCE iteration is
// reinforce.rollout_shards RolloutShard activities and one UpdatePolicy;
// runs started before it keep the single ReinforceIteration activity (and
// its one random stream) to their end, continuations included.
const shardsVersion = 1

// pinnedVersion is the version of the rollout-shards change from which an
// iteration's update goes to the worker that made the previous one (its
// own task queue), where the policy and optimizer state are still in
// memory, falling back to queues.train when that worker does not take it
// within the heartbeat timeout.
const pinnedVersion = 2

// Continuation is what an alignment run hands to the run it continues as:
// references and small results of the finished stages, the REINFORCE
// position, the signals' state and the last curve segment. No tensors, and
// nothing that grows with the number of iterations.
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
	Paused       bool                       `json:"paused,omitempty"`
	Stop         bool                       `json:"stop,omitempty"`
	Runs         int                        `json:"runs"` // workflow runs before this one
	// Sharded: the run's iterations are rollout shards and an update
	// (false for runs started before shardsVersion).
	Sharded bool `json:"sharded,omitempty"`
	// Pinned: updates go to the previous update's worker first (false for
	// runs started before pinnedVersion).
	Pinned bool `json:"pinned,omitempty"`
}

// Alignment runs RLHF end to end: prepare matched data, SFT the initial
// policy, train and evaluate the reward model, evaluate the SFT policy, run
// REINFORCE iterations, evaluate the aligned policy and write the summary.
//
// Its input is the run spec as JSON. It is taken raw so that a spec given
// through the temporal CLI is parsed and validated here, and a bad one fails
// the run with a non-retryable error that names the field, instead of failing
// workflow tasks forever on decoding. The REINFORCE loop continues as new
// every reinforce.continue_as_new_every iterations: the next run gets the
// same spec and a Continuation (nil when a run starts).
func Alignment(ctx workflow.Context, input json.RawMessage, cont *Continuation) (*pipeline.Summary, error) {
	t, spec, err := begin(ctx, input)
	if err != nil {
		return nil, err
	}
	segmented := workflow.GetVersion(ctx, "segments", workflow.DefaultVersion, segmentsVersion) >= segmentsVersion
	progress := t.p
	progress.Iterations = spec.Reinforce.Iterations
	runID := workflow.GetInfo(ctx).WorkflowExecution.ID
	var a *activities.Activities
	enter, done := t.enter, t.done

	st := cont
	if st == nil {
		t.listen()
		if st, err = t.beforeReinforce(runID, spec); err != nil {
			return nil, err
		}
		v := workflow.GetVersion(ctx, "rollout-shards", workflow.DefaultVersion, pinnedVersion)
		st.Sharded, st.Pinned = v >= shardsVersion, v >= pinnedVersion
	} else {
		progress.Completed, progress.Iteration, progress.Last = st.Completed, st.Iteration, st.Last
		progress.Paused, progress.StopRequested = st.Paused, st.Stop
		t.listen()
		t.upsert(IterationAttribute.ValueSet(int64(st.Iteration)))
	}
	progress.Metrics = map[string]float64{"reward_model.heldout_accuracy": st.RewardEval.HeldoutAccuracy}

	enter(pipeline.StageReinforce)
	var points []pipeline.IterationMetrics // this run's part of the curve (all of it before segments)
	saveCurve := func() error {
		if len(points) == 0 && st.Curve != nil {
			return nil
		}
		var seg artifact.Ref
		if err := workflow.ExecuteActivity(t.work.bookkeeping, a.SaveCurve, pipeline.CurveInput{RunID: runID, Previous: st.Curve, Points: points}).Get(ctx, &seg); err != nil {
			return err
		}
		st.Curve, points = &seg, nil
		return nil
	}
	started := st.Iteration
	for st.Iteration < spec.Reinforce.Iterations {
		if t.gate() {
			break
		}
		if segmented && st.Iteration > started &&
			(st.Iteration-started >= spec.Reinforce.ContinueAsNewEvery || workflow.GetInfo(ctx).GetContinueAsNewSuggested()) {
			if err := saveCurve(); err != nil {
				return nil, t.fail(err)
			}
			t.drain()
			st.Completed, st.Paused, st.Stop = progress.Completed, progress.Paused, progress.StopRequested
			st.Runs++
			return nil, workflow.NewContinueAsNewError(ctx, AlignmentName, input, st)
		}
		var res pipeline.IterationResult
		in := pipeline.IterationInput{RunID: runID, Spec: spec, Data: st.Data, Iteration: st.Iteration, Policy: st.Policy,
			Optimizer: st.Optimizer, Reference: st.SFT.Checkpoint, RewardModel: st.RewardModel.Checkpoint}
		if st.Sharded {
			pin := ""
			if st.Pinned && st.Last != nil {
				pin = st.Last.WorkerQueue
			}
			res, err = t.shardedIteration(in, pin)
		} else {
			err = workflow.ExecuteActivity(t.work.iteration, a.ReinforceIteration, in).Get(ctx, &res)
		}
		if err != nil {
			return nil, t.fail(err)
		}
		m := res.Metrics()
		st.Policy, st.Optimizer, st.PolicyDigest, st.Last = res.Policy, res.Optimizer, res.PolicyDigest, &res
		if st.First == nil {
			st.First = &m
		}
		st.Iteration++
		progress.Iteration, progress.Last = st.Iteration, &res
		t.upsert(IterationAttribute.ValueSet(int64(st.Iteration)), RewardMeanAttribute.ValueSet(res.RewardMean))
		points = append(points, m)
	}
	var curve []pipeline.IterationMetrics
	if segmented {
		if err := saveCurve(); err != nil {
			return nil, t.fail(err)
		}
	} else {
		curve = points
	}
	done(pipeline.StageReinforce)

	evalIn := pipeline.PolicyEvalInput{RunID: runID, Spec: spec, Data: st.Data, Policy: st.Policy, Reference: st.SFT.Checkpoint,
		RewardModel: st.RewardModel.Checkpoint, Label: pipeline.StageEvalAfter}
	enter(pipeline.StageEvalAfter)
	var after pipeline.PolicyEval
	if err := workflow.ExecuteActivity(t.work.evaluation, a.EvaluatePolicy, evalIn).Get(ctx, &after); err != nil {
		return nil, t.fail(err)
	}
	done(pipeline.StageEvalAfter)

	rm, rmEval, before := st.RewardModel, st.RewardEval, st.Before
	s := &pipeline.Summary{
		WorkflowID: runID, Name: spec.Name, Seed: spec.Seed, Backend: spec.Backend, Data: st.Data,
		SFT: pipeline.ModelOf(st.SFT), KeepIterations: spec.Retention.KeepIterations,
		RewardModel: pipeline.RewardModelSummary{StageModel: pipeline.ModelOf(rm), Recipe: spec.Reward.Recipe, ExPOAlpha: rm.ExPOAlpha,
			HeldoutAccuracy: rmEval.HeldoutAccuracy, HeldoutPairs: rmEval.HeldoutPairs, TrainAccuracy: rmEval.TrainAccuracy,
			ByStrength: rmEval.ByStrength, Bench: rmEval.Bench},
		Policy: pipeline.PolicySummary{
			Checkpoint: st.Policy, Digest: st.PolicyDigest, Iterations: st.Iteration, StoppedEarly: st.Iteration < spec.Reinforce.Iterations,
			GoldScoreBefore: before.GoldScore, GoldScoreAfter: after.GoldScore,
			RewardBefore: before.Reward, RewardAfter: after.Reward,
			KLSequenceBefore: before.KLSequence, KLSequenceAfter: after.KLSequence,
			KLEstimator: spec.Reinforce.KLEstimator, KLPenaltyBefore: before.KLPenalty, KLPenaltyAfter: after.KLPenalty,
			EndedBefore: before.EndedFraction, EndedAfter: after.EndedFraction,
			LengthBefore: before.MeanLength, LengthAfter: after.MeanLength, EvalPrompts: after.Prompts,
		},
		Curve: curve,
		Runs:  st.Runs + 1,
	}
	if segmented {
		s.CurveRef = st.Curve
		s.Policy.FirstIteration = st.First
		if st.Last != nil {
			last := st.Last.Metrics()
			s.Policy.LastIteration = &last
		}
	}
	for i := range min(len(before.Samples), len(after.Samples)) {
		s.Samples = append(s.Samples, pipeline.SamplePair{Prompt: before.Samples[i].Prompt, Before: before.Samples[i], After: after.Samples[i]})
	}

	enter(pipeline.StageSummary)
	if err := workflow.ExecuteActivity(t.work.bookkeeping, a.WriteSummary, pipeline.SummaryInput{RunID: runID, Summary: s, Curve: s.CurveRef}).Get(ctx, &s.SummaryPath); err != nil {
		return nil, t.fail(err)
	}
	done(pipeline.StageSummary)
	s.ReportPath = t.writeReport(runID)
	enter(pipeline.StageDone)
	return s, nil
}

// beforeReinforce runs the stages before REINFORCE: data, SFT, the reward
// model and its evaluation, and the SFT policy's evaluation.
func (t *tracker) beforeReinforce(runID string, spec config.Spec) (*Continuation, error) {
	ctx := t.ctx
	var a *activities.Activities
	data, sft, err := t.prepareAndSFT(runID, spec)
	if err != nil {
		return nil, err
	}
	st := &Continuation{Data: data, SFT: sft, Policy: sft.Checkpoint, PolicyDigest: sft.Digest}

	t.enter(pipeline.StageRewardModel)
	if err := workflow.ExecuteActivity(t.work.training, a.TrainRewardModel, pipeline.TrainInput{RunID: runID, Spec: spec, Data: data, Base: sft.Checkpoint}).Get(ctx, &st.RewardModel); err != nil {
		return nil, t.fail(err)
	}
	t.done(pipeline.StageRewardModel)

	t.enter(pipeline.StageRewardEval)
	if err := workflow.ExecuteActivity(t.work.evaluation, a.EvaluateRewardModel,
		pipeline.RewardEvalInput{RunID: runID, Spec: spec, Data: data, RewardModel: st.RewardModel.Checkpoint}).Get(ctx, &st.RewardEval); err != nil {
		return nil, t.fail(err)
	}
	t.done(pipeline.StageRewardEval)
	t.p.Metrics = map[string]float64{"reward_model.heldout_accuracy": st.RewardEval.HeldoutAccuracy}

	evalIn := pipeline.PolicyEvalInput{RunID: runID, Spec: spec, Data: data, Policy: sft.Checkpoint, Reference: sft.Checkpoint,
		RewardModel: st.RewardModel.Checkpoint, Label: pipeline.StageEvalBefore}
	t.enter(pipeline.StageEvalBefore)
	if err := workflow.ExecuteActivity(t.work.evaluation, a.EvaluatePolicy, evalIn).Get(ctx, &st.Before); err != nil {
		return nil, t.fail(err)
	}
	t.done(pipeline.StageEvalBefore)
	return st, nil
}

// shardedIteration runs a REINFORCE iteration as reinforce.rollout_shards
// RolloutShard activities at once (on queues.rollout), then UpdatePolicy
// on their results: on the worker queue pin (the previous update's
// worker), else, or when no worker takes it there within the heartbeat
// timeout, on queues.train. A failed shard fails the iteration once its
// retries are spent; the others' results are reused on resume.
func (t *tracker) shardedIteration(in pipeline.IterationInput, pin string) (pipeline.IterationResult, error) {
	var a *activities.Activities
	n := in.Spec.Reinforce.Shards()
	futures := make([]workflow.Future, n)
	for i := range futures {
		futures[i] = workflow.ExecuteActivity(t.work.rollout, a.RolloutShard, pipeline.ShardInput{IterationInput: in, Shard: i, Shards: n})
	}
	up := pipeline.UpdateInput{IterationInput: in, Shards: make([]pipeline.ShardResult, n)}
	var firstErr error
	for i, f := range futures {
		if err := f.Get(t.ctx, &up.Shards[i]); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	var res pipeline.IterationResult
	if firstErr != nil {
		return res, firstErr
	}
	if pin != "" {
		err := workflow.ExecuteActivity(t.work.pinned(pin), a.UpdatePolicy, up).Get(t.ctx, &res)
		var timeout *temporal.TimeoutError
		if !errors.As(err, &timeout) || timeout.TimeoutType() != enums.TIMEOUT_TYPE_SCHEDULE_TO_START {
			return res, err
		}
		workflow.GetLogger(t.ctx).Info("the previous update's worker did not take the update; any train worker will", "queue", pin)
	}
	err := workflow.ExecuteActivity(t.work.iteration, a.UpdatePolicy, up).Get(t.ctx, &res)
	return res, err
}
