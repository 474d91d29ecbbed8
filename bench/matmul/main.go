// Command matmul times model/matmul's Mul at the SmolLM2-135M model's
// matrix shapes, in GFLOP/s and as a fraction of the machine's measured FMA
// peak (matmul.Peak), and writes DIR/matmul.json; bench/pytorch/matmul.py
// times torch.matmul on the same shapes and bench/compare.sh --matmul prints
// both:
//
//	go run ./bench/matmul -out DIR [-seconds 1]
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/alignflow/alignflow/model/matmul"
)

// Shape is one product: [M,K] x [K,N], b transposed ([N,K] in memory, as a
// layer's [out, in] weight) when TransB.
type Shape struct {
	Name    string `json:"name"`
	M, K, N int
	TransB  bool `json:"trans_b"`
}

// Shapes are the 135M model's products: its MLP up and down projections and
// LM head at 256 tokens, an attention projection at 16 (a decode batch), and
// the LM head for one row; each also with b transposed.
var Shapes = func() []Shape {
	base := []Shape{
		{Name: "mlp up 256x576x1536", M: 256, K: 576, N: 1536},
		{Name: "mlp down 256x1536x576", M: 256, K: 1536, N: 576},
		{Name: "lm head 256x576x49152", M: 256, K: 576, N: 49152},
		{Name: "projection 16x576x576", M: 16, K: 576, N: 576},
		{Name: "lm head 1x576x49152", M: 1, K: 576, N: 49152},
	}
	var out []Shape
	for _, s := range base {
		t := s
		t.TransB = true
		out = append(out, s, t)
	}
	return out
}()

// Result is one shape's measurement.
type Result struct {
	Shape
	Seconds float64 `json:"seconds"` // per product
	GFLOPS  float64 `json:"gflops"`
}

// Report is matmul.json.
type Report struct {
	Implementation string   `json:"implementation"`
	Path           string   `json:"path"`
	Threads        int      `json:"threads"`
	PeakGFLOPS     float64  `json:"peak_gflops"`
	Results        []Result `json:"results"`
}

func main() {
	out := flag.String("out", "", "directory for matmul.json (required)")
	secs := flag.Float64("seconds", 1, "time to spend on each shape")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "matmul: -out DIR is required")
		os.Exit(2)
	}
	ps := matmul.Available()
	rep := Report{Implementation: "alignflow", Path: ps[len(ps)-1].String(), Threads: runtime.GOMAXPROCS(0),
		PeakGFLOPS: matmul.Peak(time.Second)}
	fmt.Printf("alignflow matmul: path %s, %d threads, measured FMA peak %.0f GFLOP/s\n", rep.Path, rep.Threads, rep.PeakGFLOPS)
	r := rand.New(rand.NewPCG(1, 2))
	for _, s := range Shapes {
		a, b, c := random(r, s.M*s.K), random(r, s.K*s.N), make([]float32, s.M*s.N)
		ldb := s.N
		if s.TransB {
			ldb = s.K
		}
		mul := func() { matmul.Mul(s.M, s.N, s.K, a, s.K, false, b, ldb, s.TransB, c, s.N) }
		mul() // warm: pools, caches
		n, start := 0, time.Now()
		for time.Since(start).Seconds() < *secs || n < 3 {
			mul()
			n++
		}
		per := time.Since(start).Seconds() / float64(n)
		res := Result{Shape: s, Seconds: per, GFLOPS: 2 * float64(s.M) * float64(s.K) * float64(s.N) / per / 1e9}
		rep.Results = append(rep.Results, res)
		fmt.Printf("alignflow matmul: %-26s transB=%-5v %8.1f GFLOP/s\n", s.Name, s.TransB, res.GFLOPS)
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err == nil {
		err = os.WriteFile(filepath.Join(*out, "matmul.json"), b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "matmul:", err)
		os.Exit(1)
	}
}

func random(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}
