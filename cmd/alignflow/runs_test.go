package main

import (
	"time"

	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCollapseIterations(t *testing.T) {
	row := func(activity, status string, attempts int32) *stageRow {
		return &stageRow{activity: activity, status: status, attempts: attempts}
	}
	names := func(rows []*stageRow) []string {
		var out []string
		for _, r := range rows {
			out = append(out, r.activity)
		}
		return out
	}
	var long []*stageRow
	long = append(long, row("TrainSFT", "completed", 1))
	for i := 0; i < 7; i++ {
		long = append(long, row("ReinforceIteration", "completed", 1))
	}
	long[3].attempts = 3
	long = append(long, row("SaveCurve", "completed", 1), row("ReinforceIteration", "failed", 2))

	tests := []struct {
		name string
		rows []*stageRow
		want []string
	}{
		{"short stretches stay", []*stageRow{row("TrainSFT", "completed", 1), row("ReinforceIteration", "completed", 1), row("ReinforceIteration", "running", 1)},
			[]string{"TrainSFT", "ReinforceIteration", "ReinforceIteration"}},
		{"a long stretch keeps its ends and the failure after it", long,
			[]string{"TrainSFT", "ReinforceIteration", "... 6 more", "SaveCurve", "ReinforceIteration"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := collapseIterations(tt.rows, 4)
			assert.Equal(t, tt.want, names(got))
		})
	}
	got := collapseIterations(long, 4)
	assert.Equal(t, int32(3), got[2].attempts, "the most attempts in the hidden rows is shown")
	assert.Equal(t, "failed", got[4].status)
}

func TestTemporalShare(t *testing.T) {
	at := func(s float64) time.Time { return time.Unix(1000, 0).Add(time.Duration(s * float64(time.Second))) }
	h := runHistory{start: at(0), end: at(100), rows: []*stageRow{
		{scheduled: at(0.5), started: at(1), end: at(41)},          // 40 s in the activity
		{scheduled: at(41.5), started: at(42), end: at(99)},        // 57 s
		{scheduled: at(99.2), started: time.Time{}, end: at(99.5)}, // never started: not counted
	}}
	wall, outside, ok := h.temporalShare()
	require.True(t, ok)
	assert.Equal(t, 100*time.Second, wall)
	assert.Equal(t, 3*time.Second, outside)

	// Overlapping activities (the comparison's variants run side by side)
	// count once: activities cover 1..60 and 70..95 (84 s), so 16 s are outside.
	h = runHistory{start: at(0), end: at(100), rows: []*stageRow{
		{started: at(1), end: at(50)}, {started: at(10), end: at(60)}, {started: at(20), end: at(30)},
		{started: at(70), end: at(90)}, {started: at(80), end: at(95)},
	}}
	_, outside, ok = h.temporalShare()
	require.True(t, ok)
	assert.Equal(t, 16*time.Second, outside, "never negative, however many activities overlap")

	_, _, ok = runHistory{start: at(0)}.temporalShare()
	assert.False(t, ok, "a running workflow has no share yet")
}
