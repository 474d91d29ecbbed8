package optim

import (
	"testing"
)

// BenchmarkFusedAdamW is the fused update of a 4M-element matrix (a
// tenth of SmolLM2-135M's embedding) with weight decay, on GOMAXPROCS
// goroutines; ns/element times 134.5M is a SmolLM2-135M step's.
func BenchmarkFusedAdamW(b *testing.B) {
	const n = 4 << 20
	p, m, v, g := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
	for i := range n {
		p[i], g[i] = float32(i%97)*1e-3, float32(i%89-44)*1e-4
	}
	a := newAdamWStep(AdamW{Beta1: 0.9, Beta2: 0.99, Eps: 1e-8, WeightDecay: 0.1}, 3, 3e-4, 0.5)
	b.SetBytes(7 * 4 * n) // reads p, m, v, g; writes p, m, v
	for b.Loop() {
		a.applyParallel(p, m, v, g, true)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/element")
}
