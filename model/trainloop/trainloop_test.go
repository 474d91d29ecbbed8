package trainloop

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLoopCallsItsHooks(t *testing.T) {
	var steps, checkpoints []int
	var lrs []float64
	l := Loop{Name: "sft", Steps: 10, Start: 3, LearningRate: 1, CheckpointEvery: 4,
		Step: func(lr float64) (Result, error) { lrs = append(lrs, lr); return Result{Loss: lr}, nil },
		AfterStep: func(step int, lr float64, r Result, _ time.Duration) {
			steps = append(steps, step)
			assert.Equal(t, lr, r.Loss)
		},
		Checkpoint: func(step int) error { checkpoints = append(checkpoints, step); return nil },
	}
	require.NoError(t, l.Run(context.Background()))
	assert.Equal(t, []int{4, 5, 6, 7, 8, 9, 10}, steps, "from the resumed step on")
	assert.Equal(t, []int{4, 8}, checkpoints, "every 4 steps, none after the last")
	assert.Equal(t, Schedule(1, 3, 10), lrs[0], "the schedule continues where it was")

	l.Start, l.Checkpoint = 0, func(step int) error { return errors.New("disk full") }
	require.EqualError(t, l.Run(context.Background()), "disk full")
	l.Step = func(float64) (Result, error) { return Result{}, errors.New("loss NaN") }
	require.EqualError(t, l.Run(context.Background()), "sft step 0: loss NaN")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, l.Run(ctx), context.Canceled)
}

func TestSchedule(t *testing.T) {
	assert.Equal(t, 0.5, Schedule(1, 0, 40), "warm-up: 1 of 2 steps")
	assert.Equal(t, 1.0, Schedule(1, 2, 40), "the peak after warm-up")
	assert.InDelta(t, 0.1, Schedule(1, 40, 40), 1e-12, "a tenth at the end")
	assert.InDelta(t, 0.55, Schedule(1, 21, 40), 1e-12, "halfway through the decay")
}
