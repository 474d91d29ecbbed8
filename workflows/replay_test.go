package workflows

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

// TestReplayRecordedHistory replays the histories of real runs (recorded by
// `go test ./e2e -run 'TestAlignmentEndToEnd|TestRewardComparisonEndToEnd|TestXLARunOnAWorkerWithoutXLA|TestClusterObjectStore'
// -update-history`) against the current workflow code: a change that would
// break running workflows on a worker upgrade fails here. Such changes go
// behind workflow.GetVersion.
func TestReplayRecordedHistory(t *testing.T) {
	// The -v0 files were recorded before the visibility version (search
	// attributes and memo), alignment-history-v1 before curve segments and
	// continue-as-new, the -v2 alignment and -v1 comparison files before the
	// regression phase had its own budget (phase-budgets): runs started
	// then must still replay. alignment-history.json is the first workflow
	// run of an alignment (it ends by continuing as new), -continued its
	// last; -xla-name is a run with backend xla:cuda on a worker without
	// XLA (e2e TestXLARunOnAWorkerWithoutXLA), which must replay on any
	// build, and -xla one recorded before the checked-inputs version, whose
	// backend names a plugin file ("xla:/opt/..."), as specs may no longer.
	// -shards is the first workflow run of an alignment whose iterations are
	// three rollout shards and an update each, the later updates pinned to
	// the worker of the one before (e2e TestClusterObjectStore, on three
	// workers); -shards-v1 is one recorded before pinning. The -v3
	// alignment files were recorded before rollout shards and keep the
	// single ReinforceIteration; the current ones have a shard and an update
	// an iteration, pinned, across continue-as-new.
	for _, file := range []string{
		"testdata/alignment-history-shards.json", "testdata/alignment-history-shards-v1.json",
		"testdata/alignment-history.json", "testdata/alignment-history-continued.json", "testdata/comparison-history.json",
		"testdata/alignment-history-continued-v4.json", "testdata/comparison-history-v2.json",
		"testdata/alignment-history-v3.json", "testdata/alignment-history-continued-v3.json",
		"testdata/alignment-history-xla-name.json", "testdata/alignment-history-xla.json",
		"testdata/alignment-history-v2.json", "testdata/alignment-history-continued-v2.json", "testdata/comparison-history-v1.json",
		"testdata/alignment-history-v1.json", "testdata/alignment-history-v0.json", "testdata/comparison-history-v0.json",
	} {
		t.Run(file, func(t *testing.T) {
			replayer := worker.NewWorkflowReplayer()
			replayer.RegisterWorkflowWithOptions(Alignment, workflow.RegisterOptions{Name: AlignmentName})
			replayer.RegisterWorkflowWithOptions(RewardModelComparison, workflow.RegisterOptions{Name: ComparisonName})
			require.NoError(t, replayer.ReplayWorkflowHistoryFromJSONFile(nil, file))
		})
	}
}
