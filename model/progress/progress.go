// Package progress lets long computations say that they advance, and stop
// when asked to, without taking a context: the policy and reward engines
// and the trainer report every graph they run (a prefill, a decode step, a
// batch of log-probabilities or scores, an optimizer step) to a Meter, and
// return its error, which a Meter gives once the work should stop (the
// activity's context ended: it timed out, was cancelled, or its worker is
// stopping). An activity heartbeats only while its Meter moves, so an
// attempt whose work hangs stops heartbeating and Temporal retries it
// elsewhere, and one that ended leaves no computation running past its
// current graph.
package progress

import (
	"context"
	"io"
)

// Meter is told of the units of work a computation finishes. It is safe
// for concurrent use (graphs of one computation run in parallel).
type Meter interface {
	// Advance counts units of work done; an error means stop, and the
	// computation returns it.
	Advance(units int) error
}

// Advance tells m of units done; a nil m counts nothing and never stops.
func Advance(m Meter, units int) error {
	if m == nil {
		return nil
	}
	return m.Advance(units)
}

type key struct{}

// NewContext returns ctx carrying m, for code that takes a context
// (reading, hashing) to report to.
func NewContext(ctx context.Context, m Meter) context.Context {
	return context.WithValue(ctx, key{}, m)
}

// FromContext is the Meter ctx carries (nil: none).
func FromContext(ctx context.Context) Meter {
	m, _ := ctx.Value(key{}).(Meter)
	return m
}

// Reader reads r, counting every read as a unit on ctx's Meter, and stops
// with ctx's error once ctx ends: a copy or a hash of a large file through
// it shows progress and ends with its activity.
func Reader(ctx context.Context, r io.Reader) io.Reader {
	return &reader{ctx: ctx, r: r, m: FromContext(ctx)}
}

type reader struct {
	ctx context.Context
	r   io.Reader
	m   Meter
}

func (r *reader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := r.r.Read(p)
	if n > 0 {
		if aerr := Advance(r.m, 1); aerr != nil {
			return n, aerr
		}
	}
	return n, err
}
