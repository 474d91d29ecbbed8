package workflows

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

// TestReplayRecordedHistory replays the history of a real run (recorded by
// `go test ./e2e -run TestAlignmentEndToEnd -update-history`) against the
// current workflow code: a change that would break running workflows on a
// worker upgrade fails here. Such changes go behind workflow.GetVersion.
func TestReplayRecordedHistory(t *testing.T) {
	replayer := worker.NewWorkflowReplayer()
	replayer.RegisterWorkflowWithOptions(Alignment, workflow.RegisterOptions{Name: AlignmentName})
	require.NoError(t, replayer.ReplayWorkflowHistoryFromJSONFile(nil, "testdata/alignment-history.json"))
}
