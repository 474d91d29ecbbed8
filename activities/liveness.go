package activities

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/alignflow/alignflow/model/progress"
	"github.com/alignflow/alignflow/pipeline"
)

// liveTick is how often an activity's liveness looks at its progress.
const liveTick = time.Second

// liveness heartbeats an activity's progress, not a clock: the work
// reports what it finishes (Advance: graphs run through the engines and the
// trainer, chunks read and hashed; Show: a training step with its loss and
// checkpoint), and a heartbeat carrying it goes out only while it moved
// within the stall limit, the activity's heartbeat timeout. An attempt
// whose work hangs (a graph that never returns, a read that blocks) goes
// silent after that, so the server's heartbeat timeout retries it on
// another worker; it does not look alive until its start-to-close timeout.
// A slow step is not a hung one: a unit of work may take up to the stall
// limit plus the heartbeat timeout. Setup (store loads, compiling the
// first graph) counts as the attempt's first unit.
//
// Advance returns the context's error once the activity ended (timed out,
// cancelled, its worker stopping), so the computations stop at their next
// graph instead of running on after the attempt.
type liveness struct {
	ctx    context.Context
	record func(pipeline.Progress) // sends a heartbeat
	stall  time.Duration

	work atomic.Int64 // units done, shown as Progress.Work

	mu     sync.Mutex // guards the rest; tick holds it while it sends
	shown  pipeline.Progress
	shows  int64 // Show calls, so that a shown step counts as movement
	sent   struct{ work, shows int64 }
	moved  time.Time // when the progress last moved (or the attempt began)
	closed bool
}

// newLiveness starts at now, with p the progress shown until the work
// reports its own.
func newLiveness(ctx context.Context, record func(pipeline.Progress), stall time.Duration, p pipeline.Progress, now time.Time) *liveness {
	return &liveness{ctx: ctx, record: record, stall: stall, shown: p, moved: now, shows: 1}
}

// live starts the liveness of the activity of ctx, showing p (its stage)
// at once, and returns the context the work runs with, which carries it as
// the progress.Meter of readers and hashes, and stop, which returns once
// no heartbeat is in flight (so none races the activity's completion,
// which the SDK would log as an error). Outside an activity (a test
// calling the work directly) nothing is sent.
func (a *Activities) live(ctx context.Context, p pipeline.Progress) (context.Context, *liveness, func()) {
	record := func(pipeline.Progress) {}
	stall := time.Duration(0)
	if activity.IsActivity(ctx) {
		record = func(p pipeline.Progress) { activity.RecordHeartbeat(ctx, p) }
		stall = activity.GetInfo(ctx).HeartbeatTimeout
	}
	l := newLiveness(ctx, record, stall, p, time.Now())
	l.tick(time.Now())
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(liveTick)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case now := <-t.C:
				l.tick(now)
			}
		}
	}()
	stop := func() {
		close(done)
		<-exited
		l.mu.Lock()
		l.closed = true // a Beat from work still unwinding sends nothing
		l.mu.Unlock()
	}
	return progress.NewContext(ctx, l), l, stop
}

// Advance counts units of work done (progress.Meter); it returns the
// context's error once the activity ended: stop.
func (l *liveness) Advance(units int) error {
	l.work.Add(int64(units))
	return l.ctx.Err()
}

// Show makes p (stage, step, total, loss, checkpoint) what heartbeats
// carry from now on; a new step counts as movement.
func (l *liveness) Show(p pipeline.Progress) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.shown = p
	l.shows++
}

// Beat shows p and heartbeats it at once: a saved checkpoint, which a
// retried attempt resumes from, reaches the server without waiting for the
// next tick.
func (l *liveness) Beat(p pipeline.Progress) {
	l.Show(p)
	l.tick(time.Now())
}

// tick sends a heartbeat unless the progress has not moved for longer
// than the stall limit, and reports whether it did.
func (l *liveness) tick(now time.Time) bool {
	w := l.work.Load()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	if w != l.sent.work || l.shows != l.sent.shows {
		l.moved = now
	} else if now.Sub(l.moved) > l.stall {
		return false // stalled: let the server's heartbeat timeout retry the attempt elsewhere
	}
	p := l.shown
	p.Work = w
	l.record(p)
	l.sent.work, l.sent.shows = w, l.shows
	return true
}

// show makes p what the heartbeats of ctx's activity carry (see Show);
// outside an activity's liveness it does nothing.
func show(ctx context.Context, p pipeline.Progress) {
	if l, ok := progress.FromContext(ctx).(*liveness); ok {
		l.Show(p)
	}
}

// beat is show, heartbeating at once (see Beat).
func beat(ctx context.Context, p pipeline.Progress) {
	if l, ok := progress.FromContext(ctx).(*liveness); ok {
		l.Beat(p)
	}
}

// stopper is the progress.Meter of work run without a liveness: it counts
// nothing and stops the work once ctx ends.
type stopper struct{ ctx context.Context }

func (s stopper) Advance(int) error { return s.ctx.Err() }
