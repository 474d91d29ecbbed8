package activities

import "github.com/alignflow/alignflow/pipeline"

// Names are the type names the activities are registered under: the
// worker registers *Activities' methods by their names, and workflow
// histories record them. The constants themselves are pipeline.Activity*,
// where ops/report and the command line, which read histories, can reach
// them without importing this package (ops/report cannot: WriteRunReport
// imports it). The test of this file checks the list against the method
// set, so a renamed or added activity fails it instead of silently
// dropping out of `alignflow runs show` and the report's timeline.
var Names = []string{
	pipeline.ActivityPrepareData,
	pipeline.ActivityTrainSFT,
	pipeline.ActivityTrainRewardModel,
	pipeline.ActivityEvaluateRewardModel,
	pipeline.ActivityEvaluatePolicy,
	pipeline.ActivityReinforceIteration,
	pipeline.ActivityRolloutShard,
	pipeline.ActivityUpdatePolicy,
	pipeline.ActivitySaveCurve,
	pipeline.ActivityWriteSummary,
	pipeline.ActivityWriteReport,
	pipeline.ActivityWriteRunReport,
}
