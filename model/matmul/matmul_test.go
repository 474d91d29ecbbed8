package matmul

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// problem is one MulBatch call's inputs.
type problem struct {
	batch, m, n, k            int
	transA, transB            bool
	lda, ldb, ldc             int
	strideA, strideB, strideC int
	a, b                      []float32
}

func (pr problem) String() string {
	return fmt.Sprintf("batch=%d m=%d n=%d k=%d transA=%v transB=%v ld=%d,%d,%d strides=%d,%d,%d",
		pr.batch, pr.m, pr.n, pr.k, pr.transA, pr.transB, pr.lda, pr.ldb, pr.ldc, pr.strideA, pr.strideB, pr.strideC)
}

// newProblem fills a and b with values of mixed magnitudes, so that any change in
// the order of a sum shows in its rounding. pad adds unused elements after each
// row and each matrix; sharedB gives every product the same b (stride 0).
func newProblem(rng *rand.Rand, batch, m, n, k int, transA, transB, pad, sharedB bool) problem {
	pr := problem{batch: batch, m: m, n: n, k: k, transA: transA, transB: transB}
	extra := func() int {
		if pad {
			return rng.IntN(5)
		}
		return 0
	}
	rowsA, colsA := m, k
	if transA {
		rowsA, colsA = k, m
	}
	rowsB, colsB := k, n
	if transB {
		rowsB, colsB = n, k
	}
	pr.lda, pr.ldb, pr.ldc = colsA+extra(), colsB+extra(), n+extra()
	pr.strideA, pr.strideB, pr.strideC = rowsA*pr.lda+extra(), rowsB*pr.ldb+extra(), m*pr.ldc+extra()
	pr.a = randomFloats(rng, batch*pr.strideA)
	if sharedB {
		pr.b = randomFloats(rng, pr.strideB)
		pr.strideB = 0
	} else {
		pr.b = randomFloats(rng, batch*pr.strideB)
	}
	return pr
}

func randomFloats(rng *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(math.Ldexp(rng.NormFloat64(), rng.IntN(9)-4))
	}
	return s
}

func (pr problem) atA(q, i, p int) float32 {
	if pr.transA {
		return pr.a[q*pr.strideA+p*pr.lda+i]
	}
	return pr.a[q*pr.strideA+i*pr.lda+p]
}

func (pr problem) atB(q, p, j int) float32 {
	if pr.transB {
		return pr.b[q*pr.strideB+j*pr.ldb+p]
	}
	return pr.b[q*pr.strideB+p*pr.ldb+j]
}

// reference is the definition: one FMA chain per output, in the order of p,
// from zero, one element at a time. Results are dense, batch×m×n.
func (pr problem) reference() []float32 {
	out := make([]float32, pr.batch*pr.m*pr.n)
	for q := range pr.batch {
		for i := range pr.m {
			for j := range pr.n {
				var acc float32
				for p := range pr.k {
					acc = fma32(pr.atA(q, i, p), pr.atB(q, p, j), acc)
				}
				out[(q*pr.m+i)*pr.n+j] = acc
			}
		}
	}
	return out
}

// sentinel marks the elements of c that MulBatch must leave alone.
var sentinel = math.Float32frombits(0x7fc0dead)

// run calls MulBatch on c prefilled with sentinels and checks that it wrote every
// output and nothing else. It returns the outputs, dense.
func (pr problem) run(t *testing.T) []float32 {
	t.Helper()
	c := make([]float32, pr.batch*pr.strideC)
	for i := range c {
		c[i] = sentinel
	}
	MulBatch(pr.batch, pr.m, pr.n, pr.k, pr.a, pr.strideA, pr.lda, pr.transA, pr.b, pr.strideB, pr.ldb, pr.transB, c, pr.strideC, pr.ldc)
	out := make([]float32, pr.batch*pr.m*pr.n)
	for q := range pr.batch {
		for i := range pr.m {
			for j := range pr.n {
				x := &c[q*pr.strideC+i*pr.ldc+j]
				out[(q*pr.m+i)*pr.n+j] = *x
				*x = sentinel
			}
		}
	}
	for i, x := range c {
		if math.Float32bits(x) != math.Float32bits(sentinel) {
			t.Fatalf("%v: c[%d] = %g is outside the output but was written", pr, i, x)
		}
	}
	return out
}

// checkBits fails unless got and want are bit-identical.
func checkBits(t *testing.T, what string, pr problem, got, want []float32) {
	t.Helper()
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			q, r := i/(pr.m*pr.n), i%(pr.m*pr.n)
			t.Fatalf("%s, %v: c[%d][%d][%d] = %08x (%g), want %08x (%g)", what, pr, q, r/pr.n, r%pr.n,
				math.Float32bits(got[i]), got[i], math.Float32bits(want[i]), want[i])
		}
	}
}

// checkFloat64 checks outputs against the float64 product within the error bound
// of a float32 chain of k FMAs: k·2^-24·Σ|a||b| (with a margin for the bound's
// second-order term).
func checkFloat64(t *testing.T, pr problem, got []float32) {
	t.Helper()
	for q := range pr.batch {
		for i := range pr.m {
			for j := range pr.n {
				var sum, abs float64
				for p := range pr.k {
					x := float64(pr.atA(q, i, p)) * float64(pr.atB(q, p, j))
					sum += x
					abs += math.Abs(x)
				}
				g := float64(got[(q*pr.m+i)*pr.n+j])
				if tol := 1.01 * float64(pr.k) * 0x1p-24 * abs; math.Abs(g-sum) > tol {
					t.Fatalf("%v: c[%d][%d][%d] = %g, float64 product %g, tolerance %g", pr, q, i, j, g, sum, tol)
				}
			}
		}
	}
}

var threadCounts = []int{1, 2, 3, 7}

// checkAllPaths runs pr on every path at every thread count: each result must
// be the reference bit for bit, so all of them are the same.
func checkAllPaths(t *testing.T, pr problem, want []float32) {
	t.Helper()
	for _, p := range Available() {
		restore := SetPath(p)
		for _, th := range threadCounts {
			restoreThreads := SetThreads(th)
			checkBits(t, fmt.Sprintf("path %v, %d threads", p, th), pr, pr.run(t), want)
			restoreThreads()
		}
		restore()
	}
}

func TestMulShapes(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	type shape struct{ m, n, k int }
	shapes := []shape{
		{1, 1, 1}, {1, 1, 7}, {3, 5, 1}, {1, 49, 3}, {2, 300, 5}, {300, 2, 5}, {8, 48, 16}, {9, 49, 17},
		{4, 24, 1}, {7, 95, 33}, {17, 13, 300}, {65, 70, 9}, {5, 1, 64}, {1, 97, 2},
		// Single rows: the row kernel, its steps by four and the wide blocks.
		{1, 48, 1}, {1, 96, 5}, {1, 150, 9}, {1, 2*rowCols + 100, 6},
	}
	for range 12 {
		shapes = append(shapes, shape{1 + rng.IntN(40), 1 + rng.IntN(120), 1 + rng.IntN(80)})
	}
	for i, s := range shapes {
		pr := newProblem(rng, 1, s.m, s.n, s.k, i%2 == 1, i%4 >= 2, i%3 != 0, false)
		want := pr.reference()
		checkFloat64(t, pr, want)
		checkAllPaths(t, pr, want)
	}
}

// TestMulLarge crosses every cache block of every path: m > mc, n > nc, k > kc.
func TestMulLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("large product")
	}
	rng := rand.New(rand.NewPCG(4, 4))
	for _, tr := range [][2]bool{{false, false}, {true, true}} {
		pr := newProblem(rng, 1, 261, 389, 263, tr[0], tr[1], true, false)
		want := pr.reference()
		checkFloat64(t, pr, want)
		checkAllPaths(t, pr, want)
	}
}

// TestMulSmallBlocks runs the blocking and edge logic with blocks shrunk to a
// few tiles, so that small products cross many of them.
func TestMulSmallBlocks(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	small := blocks{mc: 2 * mr, kc: 5, nc: 2 * nr}
	for _, p := range Available() {
		for i := range 8 {
			pr := newProblem(rng, 1+rng.IntN(3), 1+rng.IntN(5*mr), 1+rng.IntN(5*nr), 1+rng.IntN(23), i%2 == 1, i%4 >= 2, true, i%3 == 0)
			want := pr.reference()
			for _, th := range threadCounts {
				c := make([]float32, pr.batch*pr.strideC)
				ops := operands{pr.a, pr.b, c, pr.strideA, pr.strideB, pr.strideC, pr.lda, pr.ldb, pr.ldc, pr.transA, pr.transB}
				newPlan(paths[p], small, ops, pr.batch, pr.m, pr.n, pr.k, th).run()
				got := make([]float32, len(want))
				for q := range pr.batch {
					for r := range pr.m {
						copy(got[(q*pr.m+r)*pr.n:][:pr.n], c[q*pr.strideC+r*pr.ldc:])
					}
				}
				checkBits(t, fmt.Sprintf("path %v, small blocks, %d threads", p, th), pr, got, want)
			}
		}
	}
}

func TestMulBatch(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 6))
	for i := range 6 {
		pr := newProblem(rng, 1+rng.IntN(5), 1+rng.IntN(30), 1+rng.IntN(70), 1+rng.IntN(40), i%2 == 1, i >= 3, true, i%3 == 0)
		checkAllPaths(t, pr, pr.reference())
	}
}

// Signed zeros and special values follow the chains: a product of zeros is +0
// (the chain starts from +0), infinities and NaNs propagate.
func TestMulSpecialValues(t *testing.T) {
	negZero := float32(math.Copysign(0, -1))
	inf, nan := float32(math.Inf(1)), float32(math.NaN())
	a := []float32{negZero, 1, inf, 0, 1, nan}
	b := []float32{1, 0, 2, 0, negZero, 1}
	// a is 3×2, b is 2×3.
	for _, p := range Available() {
		restore := SetPath(p)
		c := make([]float32, 9)
		Mul(3, 3, 2, a, 2, false, b, 3, false, c, 3)
		restore()
		if got := math.Float32bits(c[1]); got != 0 {
			t.Errorf("%v: (-0)·0 + 1·(-0) = %08x, want +0", p, got)
		}
		if got := c[3]; got != inf {
			t.Errorf("%v: inf·1 + 0·0 = %g, want +Inf", p, got)
		}
		if got := math.Float32bits(c[4]); got != defaultNaN {
			t.Errorf("%v: inf·0 + 0·(-0) = %08x, want the default NaN", p, got)
		}
		if got := c[6]; got == got {
			t.Errorf("%v: 1·1 + NaN·0 = %g, want NaN", p, got)
		}
	}
}

func TestMulZeroK(t *testing.T) {
	c := []float32{1, 2, 3, 4, 5, 6}
	Mul(2, 2, 0, nil, 0, false, nil, 2, false, c, 3)
	if want := []float32{0, 0, 3, 0, 0, 6}; fmt.Sprint(c) != fmt.Sprint(want) {
		t.Fatalf("c = %v, want %v", c, want)
	}
}

func TestMulPanicsOnShortOperands(t *testing.T) {
	for name, f := range map[string]func(){
		"short a": func() {
			Mul(2, 2, 2, make([]float32, 3), 2, false, make([]float32, 4), 2, false, make([]float32, 4), 2)
		},
		"small ldb": func() { Mul(2, 2, 2, make([]float32, 4), 2, false, make([]float32, 4), 1, true, make([]float32, 4), 2) },
		"short c": func() {
			Mul(2, 2, 2, make([]float32, 4), 2, false, make([]float32, 4), 2, false, make([]float32, 3), 2)
		},
		"small ldc": func() {
			Mul(2, 3, 2, make([]float32, 4), 2, false, make([]float32, 6), 3, false, make([]float32, 9), 2)
		},
		"negative": func() { Mul(-1, 2, 2, nil, 2, false, nil, 2, false, nil, 2) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

func TestSetPath(t *testing.T) {
	ps := Available()
	if ps[0] != PathGo {
		t.Fatalf("Available() = %v, want the Go path first", ps)
	}
	best := Path(path.Load())
	restore := SetPath(PathGo)
	if got := Path(path.Load()); got != PathGo {
		t.Fatalf("path = %v after SetPath(go)", got)
	}
	restore()
	if got := Path(path.Load()); got != best {
		t.Fatalf("path = %v after restore, want %v", got, best)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("SetPath(numPaths) did not panic")
		}
	}()
	SetPath(numPaths)
}

// TestPeakRuns: Peak runs the micro-kernel and reports a positive rate (its
// value is a measurement, for benchmarks, not asserted).
func TestPeakRuns(t *testing.T) {
	if got := Peak(10 * time.Millisecond); !(got > 0) {
		t.Fatalf("Peak = %v", got)
	}
}
