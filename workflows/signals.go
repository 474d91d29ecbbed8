package workflows

import "go.temporal.io/sdk/workflow"

// Signals an alignment run answers. Pause and stop take effect between
// REINFORCE iterations; stop runs the final evaluation and completes.
const (
	PauseSignal  = "pause"
	ResumeSignal = "resume"
	StopSignal   = "stop"
)

// StagePaused is the stage a paused run shows.
const StagePaused = "paused"

// listen starts handling the pause, resume and stop signals.
func (r *run) listen() {
	workflow.Go(r.ctx, func(ctx workflow.Context) {
		for {
			sel := workflow.NewSelector(ctx)
			for _, sig := range r.signals() {
				sel.AddReceive(workflow.GetSignalChannel(ctx, sig.name), func(c workflow.ReceiveChannel, _ bool) { c.Receive(ctx, nil); sig.apply() })
			}
			sel.Select(ctx)
		}
	})
}

// drain applies signals that arrived but were not handled yet, before the
// run continues as new: they would be lost with it.
func (r *run) drain() {
	for _, sig := range r.signals() {
		for workflow.GetSignalChannel(r.ctx, sig.name).ReceiveAsync(nil) {
			sig.apply()
		}
	}
}

// signal is a control signal and what it does to the progress.
type signal struct {
	name  string
	apply func()
}

// signals are the control signals in a fixed order: workflow code must not
// depend on map order.
func (r *run) signals() []signal {
	return []signal{
		{PauseSignal, func() { r.p.Paused = true }},
		{ResumeSignal, func() { r.p.Paused = false }},
		{StopSignal, func() { r.p.StopRequested = true }},
	}
}

// gate waits while the run is paused (showing StagePaused) and reports
// whether a stop was asked for.
func (r *run) gate() (stop bool) {
	if r.p.Paused && !r.p.StopRequested {
		stage := r.p.Stage
		r.enter(StagePaused)
		_ = workflow.Await(r.ctx, func() bool { return !r.p.Paused || r.p.StopRequested })
		r.enter(stage)
	}
	return r.p.StopRequested
}
