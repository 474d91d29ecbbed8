// Package fastgo is alignflow's own GoMLX backend: GoMLX's pure-Go backend
// (simplego) for every op but float32 matrix products, which it runs on a
// matrix kernel instead.
//
// simplego multiplies matrices with scalar Go loops, 1-2 GFLOP/s where
// OpenBLAS does 130-200 on the same two cores, and a train step at a real
// model's size spends most of its time there. fastgo leaves the graphs as
// they are (built and differentiated by GoMLX's graph package) and changes
// only how they run: its Builder forwards every op to a simplego builder of
// the current segment, and each float32 DotGeneral ends that segment and
// becomes a kernel call (a large float32 Transpose, BroadcastInDim or
// ReduceSum becomes a loop of fastgo's own the same way, bit for bit
// simplego's result). Values one segment needs from an earlier one become
// that segment's parameters and the earlier one's outputs. Compile compiles
// each segment with simplego; Execute runs the segments and kernel calls in
// their fixed order on simplego's buffers, which the kernel reads and writes
// in place (shared buffers), and frees each intermediate buffer after its
// last use. The order is fixed and the kernel deterministic, so the same
// inputs give the same bits at any parallelism.
//
// The kernel is model/matmul's (the package variable matMul), vectorised
// for AVX-512 and AVX2 and bit-identical on every path and thread count.
package fastgo

import (
	"sync/atomic"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/backends/simplego"
)

// BackendName is the name fastgo registers with GoMLX: a configuration
// "fastgo:<simplego configuration>" (e.g. "fastgo:parallelism=-1") passes
// the part after the colon to the pure-Go backend it runs on.
const BackendName = "fastgo"

func init() {
	backends.Register(BackendName, New)
}

// Backend is simplego's backend with fastgo's Builder. Buffers, data
// transfers and everything but building graphs are simplego's own: fastgo's
// executables take and return simplego buffers.
type Backend struct {
	backends.Backend // the simplego backend

	observer atomic.Pointer[func(Stats)]
}

// Stats describe a compiled graph: the pure-Go segments and kernel calls
// one Execute runs (after dropping the steps no output needs), and the
// placeholder buffers fed to parameters only dropped ops read.
type Stats struct {
	Name                                string
	Segments, KernelCalls, Placeholders int
	// Copies and Reductions count the transposes and broadcasts, and the
	// sums and maxima, fastgo runs itself (Transpose, BroadcastInDim;
	// ReduceSum, ReduceMax).
	Copies, Reductions int
	// Elementwise counts the elementwise functions fastgo runs itself
	// (Exp, Logistic).
	Elementwise int
}

// ObserveCompiles calls fn with the Stats of every graph compiled on b
// from now on (nil stops it): for diagnostics and benchmarks, which see
// GoMLX's graph.Exec but not the executables under it.
func (b *Backend) ObserveCompiles(fn func(Stats)) {
	if fn == nil {
		b.observer.Store(nil)
		return
	}
	b.observer.Store(&fn)
}

var _ backends.Backend = (*Backend)(nil)

// New returns a fastgo backend over a new simplego backend made with config.
func New(config string) (backends.Backend, error) {
	inner, err := simplego.New(config)
	if err != nil {
		return nil, err
	}
	if !inner.HasSharedBuffers() {
		// The kernel reads and writes simplego's buffers in place.
		panic("fastgo: the pure-Go backend has no shared buffers")
	}
	return &Backend{Backend: inner}, nil
}

// Name implements backends.Backend.
func (b *Backend) Name() string {
	return "alignflow pure Go with a matrix kernel (" + BackendName + ")"
}

// String implements backends.Backend.
func (b *Backend) String() string { return BackendName }

// Description implements backends.Backend.
func (b *Backend) Description() string {
	return "GoMLX's pure-Go backend with float32 DotGeneral on a matrix kernel"
}

// Builder implements backends.Backend.
func (b *Backend) Builder(name string) backends.Builder {
	return newBuilder(b, name)
}
