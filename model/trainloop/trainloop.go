// Package trainloop runs a training phase's optimizer steps, calling the
// hooks its caller gives: after every step (metrics, progress), and every
// N steps to save a checkpoint, as GoMLX's train.Loop takes periodic
// callbacks. The loop knows nothing of Temporal or the artifact store: an
// activity adds resuming and heartbeats through the hooks.
package trainloop

import (
	"context"
	"fmt"
	"math"
	"time"
)

// Result is what a step reports.
type Result struct {
	Loss     float64
	GradNorm float64
	Tokens   int // trained on, not padding
}

// Loop is a phase of Steps optimizer steps.
type Loop struct {
	Name  string // in errors: "sft step 12: ..."
	Steps int
	// Start is how many steps are done (a resumed phase); 0 from scratch.
	Start int
	// LearningRate is the base rate of Schedule.
	LearningRate float64
	// Step takes one optimizer step at the given learning rate.
	Step func(lr float64) (Result, error)
	// AfterStep is called after every step with its number (1-based), the
	// learning rate it took, its result and how long it took.
	AfterStep func(step int, lr float64, r Result, took time.Duration)
	// CheckpointEvery is the checkpoint interval in steps (0: none); the
	// last step has none, the phase's result follows it.
	CheckpointEvery int
	// Checkpoint is called after every CheckpointEvery-th step; an error
	// stops the loop.
	Checkpoint func(step int) error
}

// Run takes the steps from Start to Steps, stopping when ctx is done.
func (l Loop) Run(ctx context.Context) error {
	for i := l.Start; i < l.Steps; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		lr := Schedule(l.LearningRate, i, l.Steps)
		began := time.Now()
		r, err := l.Step(lr)
		if err != nil {
			return fmt.Errorf("%s step %d: %w", l.Name, i, err)
		}
		if l.AfterStep != nil {
			l.AfterStep(i+1, lr, r, time.Since(began))
		}
		if l.CheckpointEvery > 0 && (i+1)%l.CheckpointEvery == 0 && i+1 < l.Steps && l.Checkpoint != nil {
			if err := l.Checkpoint(i + 1); err != nil {
				return err
			}
		}
	}
	return nil
}

// Schedule is the learning rate at step of total: linear warm-up over the
// first 5% of steps, then cosine decay to a tenth.
func Schedule(base float64, step, total int) float64 {
	warm := max(1, total/20)
	if step < warm {
		return base * float64(step+1) / float64(warm)
	}
	p := float64(step-warm) / float64(max(1, total-warm))
	return base * (0.1 + 0.9*0.5*(1+math.Cos(math.Pi*p)))
}
