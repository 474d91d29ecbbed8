package workflows

import "go.temporal.io/sdk/workflow"

// visibilityVersion is the workflow version from which runs keep search
// attributes and a memo; runs recorded before it replay without them.
const visibilityVersion = 1

// phaseBudgetsVersion is the workflow version from which the regression
// phase of a reward recipe has its own reward.regression_steps and
// reward.regression_learning_rate; runs started before it train that phase
// with reward.steps and reward.learning_rate, as they began.
const phaseBudgetsVersion = 1

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

// reportVersion is the workflow version from which a run ends by writing
// its report (charts, timeline, metrics.jsonl); runs recorded before it
// replay without it.
const reportVersion = 1

// checkedVersion is the workflow version from which a run checks its
// inputs as a worker shared with strangers needs: its workflow ID must be a
// safe store key (pipeline.CheckRunID), its spec's sizes have upper bounds
// and its backend may name an XLA plugin only by a plain name that workers
// resolve through their own allow-lists (config.Spec.Validate). Runs
// started before it validate as they did (config.Spec.ValidateRecorded),
// to their end, continuations included.
const checkedVersion = 1

// continuationChecksVersion is the workflow version from which a run
// takes a Continuation only when an alignment continued as new into it,
// and checks every reference the continuation carries (checkContinuation);
// continued runs recorded before it took theirs unchecked.
const continuationChecksVersion = 1

// sizedTimeoutsVersion is the workflow version from which each kind of
// work's start-to-close timeout is the spec's timeouts setting, or sized
// by the model and the work (sizedTimeouts); runs recorded before it keep
// the fixed ones (formerTimeouts).
const sizedTimeoutsVersion = 1

// rewardModelLeftOutVersion is the workflow version from which a run whose
// reward leaves the reward model out (reward.model_weight 0, a verifier's
// rewards alone) trains and evaluates none; such runs started before it
// train and report one they never read.
const rewardModelLeftOutVersion = 1

// versions are a run's choices between workflow versions (the *Version
// constants above), each one workflow.GetVersion call made where recorded
// histories have its marker: when replaying, GetVersion answers from the
// markers replayed so far, so a call moved to an earlier workflow task would
// answer DefaultVersion for a history whose marker comes later. Hence
// visible, phaseBudgets, sized and segmented are chosen when each workflow
// run starts (and whether to check a continuation, as it is taken);
// Checked when a run's first workflow run starts; Sharded and Pinned once
// per alignment, after its stages before REINFORCE. Checked, Sharded and
// Pinned travel in the Continuation (as its "checked", "sharded" and
// "pinned"); whether to write the report is asked at the end (report).
type versions struct {
	// Sharded: the alignment's iterations are rollout shards and an update
	// (false for runs started before shardsVersion).
	Sharded bool `json:"sharded,omitempty"`
	// Pinned: updates go to the previous update's worker first (false for
	// runs started before pinnedVersion).
	Pinned bool `json:"pinned,omitempty"`
	// Checked: the alignment checked its ID and spec as checkedVersion does
	// (false for runs started before it).
	Checked bool `json:"checked,omitempty"`

	visible      bool // search attributes and a memo (visibilityVersion)
	phaseBudgets bool // the regression phase's own budget (phaseBudgetsVersion)
	segmented    bool // curve segments and continue-as-new (segmentsVersion)
	sized        bool // the spec's or sized timeouts (sizedTimeoutsVersion)
}

// since reports whether the run takes version (the newest) of change: a
// run recorded before it was introduced takes DefaultVersion.
func since(ctx workflow.Context, change string, version workflow.Version) bool {
	return workflow.GetVersion(ctx, change, workflow.DefaultVersion, version) >= version
}

// chooseChecked makes the checked-inputs choice (checkedVersion) when a
// run starts; a continued alignment keeps its first run's choice, so that
// one started before the checks is not refused half-way.
func (v *versions) chooseChecked(ctx workflow.Context, cont *Continuation) {
	if cont != nil {
		v.Checked = cont.Checked
		return
	}
	v.Checked = since(ctx, "checked-inputs", checkedVersion)
}

// chooseRollouts makes the rollout-shards choice of a new alignment, after
// its stages before REINFORCE, where recorded histories have the marker.
func (v *versions) chooseRollouts(ctx workflow.Context) {
	got := workflow.GetVersion(ctx, "rollout-shards", workflow.DefaultVersion, pinnedVersion)
	v.Sharded, v.Pinned = got >= shardsVersion, got >= pinnedVersion
}

// report reports whether the run ends by writing its report; it is asked
// where the run ends, after its summary, as recorded histories have it. (The
// SDK keeps each change's answer, so asking again records nothing more.)
func (v *versions) report(ctx workflow.Context) bool {
	return since(ctx, "run-report", reportVersion)
}
