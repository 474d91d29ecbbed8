package pipeline

// Activity type names: the names the worker registers the activities
// under (the method names of *activities.Activities) and that workflow
// histories record. They live here, beside the inputs and results, because
// both the activities and what reads histories need them, and the history
// readers cannot import activities: ops/report, which draws the stage
// timeline, is itself imported by activities (WriteRunReport).
// activities.Names lists them, and its test holds them to the method set.
const (
	ActivityPrepareData         = "PrepareData"
	ActivityTrainSFT            = "TrainSFT"
	ActivityTrainRewardModel    = "TrainRewardModel"
	ActivityEvaluateRewardModel = "EvaluateRewardModel"
	ActivityEvaluatePolicy      = "EvaluatePolicy"
	// ActivityReinforceIteration is a whole REINFORCE iteration in one
	// activity, as runs recorded before rollout shards scheduled it.
	ActivityReinforceIteration = "ReinforceIteration"
	ActivityRolloutShard       = "RolloutShard"
	ActivityUpdatePolicy       = "UpdatePolicy"
	ActivitySaveCurve          = "SaveCurve"
	ActivityWriteSummary       = "WriteSummary"
	ActivityWriteReport        = "WriteReport"
	ActivityWriteRunReport     = "WriteRunReport"
)
