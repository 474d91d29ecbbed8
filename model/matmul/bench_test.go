package matmul

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkMul times the 135M model's products (hidden 576, MLP 1536, vocabulary
// 49152; 256 tokens in training, 16 or 1 when sampling) on each path at 1 and 2
// threads, with b as stored (NN), transposed (NT: x·Wᵀ, the tied output layer and
// the input gradients) and a transposed (TN: the weight gradients). Select with
// e.g. -bench 'Mul/avx512/.*/threads=1'. The Go path is only timed on the small
// shapes: it is a correctness fallback, some 100 times slower.
//
// GFLOP/s-cpu divides by the CPU time the process used (times the threads), not
// the wall time: what the path would reach on cores it does not share.
func BenchmarkMul(b *testing.B) {
	shapes := [][3]int{ // m, k, n
		{256, 576, 1536},
		{256, 1536, 576},
		{256, 576, 49152},
		{16, 576, 576},
		{1, 576, 49152},
	}
	for _, p := range Available() {
		for _, th := range []int{1, 2} {
			for _, s := range shapes {
				m, k, n := s[0], s[1], s[2]
				if p == PathGo && m*n*k > 1<<24 {
					continue
				}
				for _, tr := range []string{"NN", "NT", "TN"} {
					name := fmt.Sprintf("%v/%dx%dx%d/%s/threads=%d", p, m, k, n, tr, th)
					b.Run(name, func(b *testing.B) {
						benchMul(b, p, th, m, n, k, tr[0] == 'T', tr[1] == 'T')
					})
				}
			}
		}
	}
}

func benchMul(b *testing.B, p Path, threads, m, n, k int, transA, transB bool) {
	defer SetPath(p)()
	defer SetThreads(threads)()
	rng := rand.New(rand.NewPCG(1, 1))
	a, bb, c := randomFloats(rng, m*k), randomFloats(rng, k*n), make([]float32, m*n)
	lda, ldb := k, n
	if transA {
		lda = m
	}
	if transB {
		ldb = k
	}
	cpu0 := cpuSeconds()
	for b.Loop() {
		Mul(m, n, k, a, lda, transA, bb, ldb, transB, c, n)
	}
	gflop := 2 * float64(m) * float64(n) * float64(k) * float64(b.N) / 1e9
	b.ReportMetric(gflop/b.Elapsed().Seconds(), "GFLOP/s")
	if cpu := cpuSeconds() - cpu0; cpu > 0 {
		// On a shared machine the wall clock counts other processes' time too.
		b.ReportMetric(gflop/cpu*float64(threads), "GFLOP/s-cpu")
	}
}
