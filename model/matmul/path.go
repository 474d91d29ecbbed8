package matmul

import (
	"fmt"
	"runtime"
	"sync/atomic"
)

// Path names an implementation of the micro-kernel. Every path gives bit-identical
// results; they differ only in speed and in the CPUs that can run them.
type Path int

const (
	PathGo     Path = iota // portable Go, with an exact software float32 FMA
	PathAVX2               // amd64 with AVX2 and FMA: 4×24 tiles in ymm registers
	PathAVX512             // amd64 with AVX-512F: 8×48 tiles in zmm registers
	numPaths
)

func (p Path) String() string {
	switch p {
	case PathGo:
		return "go"
	case PathAVX2:
		return "avx2"
	case PathAVX512:
		return "avx512"
	}
	return fmt.Sprintf("Path(%d)", int(p))
}

// paths[p] are path p's kernels, nil where this CPU cannot run them.
var paths = [numPaths]*kernels{PathGo: {goTile, goRow}}

var (
	path    atomic.Int32 // the Path Mul uses
	threads atomic.Int32 // workers for one call; 0 for GOMAXPROCS
)

func init() {
	registerAsm()
	ps := Available()
	path.Store(int32(ps[len(ps)-1]))
}

// Available returns the paths this CPU can run, slowest first; Mul uses the last.
func Available() []Path {
	var ps []Path
	for p, k := range paths {
		if k != nil {
			ps = append(ps, Path(p))
		}
	}
	return ps
}

// SetPath makes Mul use p until restore is called, so that tests can run each
// path. It panics if this CPU cannot run p. It is a process-wide setting: do not
// change it while other goroutines multiply.
func SetPath(p Path) (restore func()) {
	if p < 0 || p >= numPaths || paths[p] == nil {
		panic(fmt.Sprintf("matmul: path %v is not available on this CPU", p))
	}
	old := path.Swap(int32(p))
	return func() { path.Store(old) }
}

// SetThreads makes Mul use at most n worker goroutines (n <= 0: GOMAXPROCS, the
// default) until restore is called. The result does not depend on it. It is a
// process-wide setting, like SetPath.
func SetThreads(n int) (restore func()) {
	old := threads.Swap(int32(max(n, 0)))
	return func() { threads.Store(old) }
}

func maxThreads() int {
	if n := int(threads.Load()); n > 0 {
		return n
	}
	return runtime.GOMAXPROCS(0)
}
