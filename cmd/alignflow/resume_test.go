package main

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	historypb "go.temporal.io/api/history/v1"

	"github.com/alignflow/alignflow/ops/temporalconn/historytest"
)

// TestResetPointOfRecordedRuns finds where `resume` resets real runs to.
// The event IDs are the files': the xla run's TrainSFT (scheduled as event
// 20 by the workflow task completed in event 18) failed; the continued run
// failed nowhere and its last workflow task completed in event 94.
func TestResetPointOfRecordedRuns(t *testing.T) {
	tests := []struct {
		file  string
		event int64
		why   string
	}{
		{"alignment-history-xla.json", 18, "before the first failed activity, TrainSFT (event 20)"},
		{"alignment-history-continued.json", 94, "from its last completed workflow task"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			cl := historytest.Client{WorkflowID: "run-1", Runs: loadRecorded(t, tt.file)}
			event, why, err := resetPoint(context.Background(), cl, "run-1", "")
			require.NoError(t, err)
			assert.Equal(t, tt.event, event)
			assert.Equal(t, tt.why, why)
		})
	}

	started := loadRecorded(t, "alignment-history-xla.json")[0].Events[:1]
	cl := historytest.Client{WorkflowID: "run-1", Runs: []*historypb.History{{Events: started}}}
	_, _, err := resetPoint(context.Background(), cl, "run-1", "")
	assert.ErrorContains(t, err, "no completed workflow task to resume from")
	_, _, err = resetPoint(context.Background(), cl, "another", "")
	assert.ErrorContains(t, err, "another", "the server's error names the workflow")
}
