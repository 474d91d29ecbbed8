package workflows

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

// TestReplayRecordedHistory replays the histories of real runs (recorded by
// `go test ./e2e -run 'TestAlignmentEndToEnd|TestRewardComparisonEndToEnd|TestXLARunOnAWorkerWithoutXLA|TestClusterObjectStore|TestWorkerKilledMidStageResumesExactly'
// -update-history`) against the current workflow code: a change that would
// break running workflows on a worker upgrade fails here. Such changes go
// behind workflow.GetVersion.
func TestReplayRecordedHistory(t *testing.T) {
	// The workflow IDs of the recorded runs that need theirs ("" replays as
	// the replayer's own).
	workflowIDs := map[string]string{"testdata/alignment-history-async-continued.json": "faults-async-uninterrupted"}
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
	// an iteration, pinned, across continue-as-new. -rlvr is a GRPO run on
	// the verifier alone (no reward-model stages) with dynamic sampling's
	// rounds over two shards; -async and -async-continued an alignment with
	// asynchronous rollouts (max_staleness 1), before and after it continued
	// as new with rollouts in flight (e2e TestWorkerKilledMidStageResumesExactly,
	// faults-rlvr and faults-async).
	for _, file := range []string{
		"testdata/alignment-history-rlvr.json", "testdata/alignment-history-async.json", "testdata/alignment-history-async-continued.json",
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
			f, err := os.Open(file)
			require.NoError(t, err)
			defer f.Close()
			hist, err := client.HistoryFromJSON(f, client.HistoryJSONOptions{})
			require.NoError(t, err)
			// A continued run checks that its continuation's artifacts are its
			// workflow's: it replays under the workflow ID it ran as.
			opts := worker.ReplayWorkflowHistoryOptions{OriginalExecution: workflow.Execution{ID: workflowIDs[file]}}
			require.NoError(t, replayer.ReplayWorkflowHistoryWithOptions(nil, hist, opts))
		})
	}
}
