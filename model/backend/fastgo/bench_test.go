package fastgo_test

import (
	"math/rand/v2"
	"testing"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/model/backend/fastgo"
	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/policy"
)

// zeroMul writes zeros where a product goes: a kernel without arithmetic.
func zeroMul(batch, m, n, _ int, _ []float32, _, _ int, _ bool, _ []float32, _, _ int, _ bool, c []float32, strideC, ldc int) {
	for q := range batch {
		for i := range m {
			clear(c[q*strideC+i*ldc : q*strideC+i*ldc+n])
		}
	}
}

// BenchmarkStepOverhead times a chain of products of 2x2 matrices with an
// elementwise op after each: on fastgo every link is a kernel call and a
// segment, so ns/step is what one segment boundary costs (a simplego
// Execute, the buffers passed between steps and the kernel call's
// dispatch), next to the stock backend running the same ops in one graph.
func BenchmarkStepOverhead(b *testing.B) {
	const links = 64
	r := rand.New(rand.NewPCG(1, 1))
	w := make([]float32, 4)
	for i := range w {
		w[i] = float32(r.NormFloat64() * 0.5)
	}
	fn := func(x, w *graph.Node) *graph.Node {
		for range links {
			x = graph.Tanh(graph.DotGeneral(x, []int{1}, nil, w, []int{0}, nil))
		}
		return x
	}
	for _, name := range []string{backend.Go, backend.GoStock} {
		b.Run(name, func(b *testing.B) {
			be, err := backend.New(name)
			if err != nil {
				b.Fatal(err)
			}
			exec := graph.MustNewExec(be, fn)
			x := tensors.FromFlatDataAndDimensions([]float32{1, 2, 3, 4}, 2, 2)
			wt := tensors.FromFlatDataAndDimensions(w, 2, 2)
			exec.MustExec1(x, wt).FinalizeAll()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				exec.MustExec1(x, wt).FinalizeAll()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/links, "ns/step")
		})
	}
}

// BenchmarkSFTStep times the bundled model's SFT train step at the default
// run spec's sizes: on go-stock, on fastgo with the stand-in kernel, and on
// fastgo with a kernel that does nothing (what is left is everything but
// the products: the segments, their boundaries, the transposes). It
// reports fastgo's segments and kernel calls per step.
func BenchmarkSFTStep(b *testing.B) {
	cfg := architectures()["bundled"]
	pol := policy.Init(cfg, 5)
	prompts, responses := texts(rand.New(rand.NewPCG(1, 1)), 16)
	batch, err := policy.MakeBatch(cfg, 16, prompts, responses)
	if err != nil {
		b.Fatal(err)
	}
	for _, variant := range []string{"go-stock", "go", "go-no-op-kernel"} {
		b.Run(variant, func(b *testing.B) {
			name := variant
			if variant == "go-no-op-kernel" {
				name = backend.Go
				defer fastgo.SetMatMul(zeroMul)()
			}
			be, err := backend.New(name)
			if err != nil {
				b.Fatal(err)
			}
			var stats fastgo.Stats
			if fb, ok := be.(*fastgo.Backend); ok {
				fb.ObserveCompiles(func(s fastgo.Stats) { stats = s })
				defer fb.ObserveCompiles(nil)
			}
			step := trainer(b, be, pol, batch)
			step()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				step()
			}
			if stats.Name != "" {
				b.ReportMetric(float64(stats.Segments), "segments")
				b.ReportMetric(float64(stats.KernelCalls), "kernel-calls")
			}
		})
	}
}

// trainer returns one SFT optimizer step on be, from a copy of pol, in a
// session that ends with the benchmark.
func trainer(b *testing.B, be backends.Backend, pol *weights.Set, batch *policy.Batch) func() {
	p := pol.Clone()
	tr := optim.NewTrainer(be, p.Names(), optim.DefaultAdamW, policy.SFTLoss(architectures()["bundled"]))
	sess, err := tr.Start(p, optim.NewState(p))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sess.Close() })
	return func() {
		if _, err := sess.Step(4e-3, batch); err != nil {
			b.Fatal(err)
		}
	}
}
