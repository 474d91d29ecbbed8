package matmul

import (
	"runtime"
	"sync"
	"time"
)

// Peak measures the rate of the current path's micro-kernel on packed panels
// that stay in the L1 cache, in GFLOP/s, on every core at once (GOMAXPROCS
// goroutines, each with its own panels) for about d: the fused
// multiply-adds the machine sustains with no memory traffic, the ceiling Mul
// is measured against. On the AVX-512 path it is the FMA units' peak (one or
// two 16-lane FMAs a cycle a core, by CPU).
func Peak(d time.Duration) float64 {
	const steps = 128 // 8×128 of a and 128×48 of b: 28 KiB, in any L1
	kern := paths[path.Load()]
	workers := runtime.GOMAXPROCS(0)
	calls := make([]int, workers)
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			a, b, c := make([]float32, mr*steps), make([]float32, steps*nr), make([]float32, mr*nr)
			for i := range a {
				a[i] = 1
			}
			for i := range b {
				b[i] = 1
			}
			for time.Now().Before(deadline) {
				for range 64 {
					kern.tile(mr, nr, steps, a, b, nr, c, nr, false)
				}
				calls[w] += 64
			}
		})
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	total := 0
	for _, n := range calls {
		total += n
	}
	return float64(total) * 2 * mr * nr * steps / secs / 1e9
}
