package fastgo

import (
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/backends/simplego"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newBackends returns a fastgo backend and the stock pure-Go one, made
// once per test binary (each prints its parallelism).
var newBackends = func() func(t testing.TB) (fast, stock backends.Backend) {
	var fast, stock backends.Backend
	var err error
	var once sync.Once
	return func(t testing.TB) (backends.Backend, backends.Backend) {
		t.Helper()
		once.Do(func() {
			if fast, err = New("parallelism=-1"); err == nil {
				stock, err = simplego.New("parallelism=-1")
			}
		})
		require.NoError(t, err)
		return fast, stock
	}
}()

func randTensor(r *rand.Rand, dims ...int) *tensors.Tensor {
	data := make([]float32, shapes.Make(dtypes.Float32, dims...).Size())
	for i := range data {
		data[i] = float32(r.NormFloat64())
	}
	return tensors.FromFlatDataAndDimensions(data, dims...)
}

// execOn runs fn once on be with local copies of args: a tensor, once
// used, is tied to one backend.
func execOn[F graph.ExecGraphFn](be backends.Backend, fn F, args ...*tensors.Tensor) []*tensors.Tensor {
	in := make([]any, len(args))
	for i, a := range args {
		c, err := a.LocalClone()
		if err != nil {
			panic(err)
		}
		in[i] = c
	}
	return graph.MustExecOnceN(be, fn, in...)
}

// requireClose checks got against want element by element within tol
// relative to the larger of the element and the tensor's RMS (an element
// that cancels to near zero is compared at the tensor's scale).
func requireClose(t testing.TB, want, got *tensors.Tensor, tol float64, what string) {
	t.Helper()
	require.True(t, want.Shape().Equal(got.Shape()), "%s: shape %s, want %s", what, got.Shape(), want.Shape())
	w, g := tensors.MustCopyFlatData[float32](want), tensors.MustCopyFlatData[float32](got)
	var ss float64
	for _, v := range w {
		ss += float64(v) * float64(v)
	}
	rms := math.Sqrt(ss / float64(max(1, len(w))))
	for i := range w {
		scale := max(math.Abs(float64(w[i])), rms)
		if d := math.Abs(float64(w[i]) - float64(g[i])); d > tol*scale {
			t.Fatalf("%s: element %d is %g, want %g (relative error %.3g > %g)", what, i, g[i], w[i], d/scale, tol)
		}
	}
}

// TestDotGeneralMatchesSimplego runs DotGenerals of every layout kind the
// kernel call must handle, between elementwise ops so each crosses
// segments, on both backends.
func TestDotGeneralMatchesSimplego(t *testing.T) {
	fast, stock := newBackends(t)
	cases := []struct {
		name    string
		lhsDims []int
		lc, lb  []int
		rhsDims []int
		rc, rb  []int
	}{
		{"linear", []int{3, 5, 4}, []int{2}, nil, []int{4, 6}, []int{0}, nil},
		{"linear transposed weight", []int{3, 5, 4}, []int{-1}, nil, []int{6, 4}, []int{1}, nil},
		{"scores bhtd,bhsd->bhts", []int{2, 3, 4, 5}, []int{3}, []int{0, 1}, []int{2, 3, 6, 5}, []int{3}, []int{0, 1}},
		{"context bhts,bhsd->bhtd", []int{2, 3, 4, 6}, []int{3}, []int{0, 1}, []int{2, 3, 6, 5}, []int{2}, []int{0, 1}},
		{"weight gradient: contract the leading axes", []int{3, 5, 6}, []int{0, 1}, nil, []int{3, 5, 4}, []int{0, 1}, nil},
		{"contracted axis in the middle (transpose)", []int{3, 7, 4}, []int{1}, nil, []int{7}, []int{0}, nil},
		{"batch last, two contracting swapped", []int{4, 5, 3, 2}, []int{0, 1}, []int{3}, []int{2, 5, 4, 7}, []int{2, 1}, []int{0}},
		{"outer product (k=1)", []int{3, 4, 1}, []int{2}, nil, []int{1, 5}, []int{0}, nil},
		{"unit axes anywhere", []int{1, 3, 1, 4}, []int{3}, []int{0}, []int{1, 4, 1, 2}, []int{1}, []int{0}},
		{"vector dot", []int{9}, []int{0}, nil, []int{9}, []int{0}, nil},
		{"grouped-query scores", []int{2, 2, 3, 4, 5}, []int{4}, []int{0, 1}, []int{2, 2, 6, 5}, []int{3}, []int{0, 1}},
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lhs, rhs := randTensor(r, tc.lhsDims...), randTensor(r, tc.rhsDims...)
			fn := func(l, rr *graph.Node) []*graph.Node {
				d := graph.DotGeneral(graph.Tanh(l), tc.lc, tc.lb, rr, tc.rc, tc.rb)
				return []*graph.Node{graph.AddScalar(d, 1), d}
			}
			want := execOn(stock, fn, lhs, rhs)
			got := execOn(fast, fn, lhs, rhs)
			for i := range want {
				requireClose(t, want[i], got[i], 1e-5, tc.name)
			}
		})
	}
}

// TestKernelLayouts: the kernel reads each operand layout fastgo hands it
// (plain or transposed a and b) as the same product.
func TestKernelLayouts(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	m, n, k := 3, 5, 4
	a, b := make([]float32, m*k), make([]float32, k*n)
	for i := range a {
		a[i] = float32(r.NormFloat64())
	}
	for i := range b {
		b[i] = float32(r.NormFloat64())
	}
	at, bt := make([]float32, m*k), make([]float32, k*n)
	for i := range m {
		for p := range k {
			at[p*m+i] = a[i*k+p]
		}
	}
	for p := range k {
		for j := range n {
			bt[j*k+p] = b[p*n+j]
		}
	}
	want := make([]float64, m*n)
	for i := range m {
		for j := range n {
			for p := range k {
				want[i*n+j] += float64(a[i*k+p]) * float64(b[p*n+j])
			}
		}
	}
	for _, tc := range []struct {
		a    []float32
		lda  int
		ta   bool
		b    []float32
		ldb  int
		tb   bool
		name string
	}{{a, k, false, b, n, false, "nn"}, {at, m, true, b, n, false, "tn"}, {a, k, false, bt, k, true, "nt"}, {at, m, true, bt, k, true, "tt"}} {
		c := make([]float32, m*n)
		for i := range c {
			c[i] = 99 // overwritten, not accumulated
		}
		matMul(1, m, n, k, tc.a, 0, tc.lda, tc.ta, tc.b, 0, tc.ldb, tc.tb, c, 0, n)
		for i := range c {
			assert.InDelta(t, want[i], float64(c[i]), 1e-5, "%s: element %d", tc.name, i)
		}
	}
}

// compile builds a graph with the backend's Builder directly, to look at
// the executable fastgo makes.
func compile(t *testing.T, be backends.Backend, build func(b backends.Builder) []backends.Op) *Executable {
	t.Helper()
	b := be.Builder("test")
	exe, err := b.Compile(build(b), nil)
	require.NoError(t, err)
	return exe.(*Executable)
}

func must(op backends.Op, err error) backends.Op {
	if err != nil {
		panic(err)
	}
	return op
}

// TestStepsNothingNeedsAreDropped: a kernel call whose result no output
// reads (a gradient of a constant, in a real graph) and the segment only
// it feeds are not run; the segment after it still runs, with a
// placeholder where the dead value was its parameter.
func TestStepsNothingNeedsAreDropped(t *testing.T) {
	fast, _ := newBackends(t)
	m := shapes.Make(dtypes.Float32, 4, 4)
	exe := compile(t, fast, func(b backends.Builder) []backends.Op {
		x := must(b.Parameter("x", m, nil))
		live := must(b.DotGeneral(x, []int{1}, nil, x, []int{0}, nil))
		dead := must(b.DotGeneral(x, []int{0}, nil, x, []int{1}, nil))
		_ = must(b.Tanh(dead))
		return []backends.Op{must(b.Exp(live))}
	})
	assert.Equal(t, Stats{Name: "test", Segments: 1, KernelCalls: 1, Placeholders: 1}, exe.Stats())
	x := []float32{1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 3, 0, 0, 0, 0, 4}
	buf, err := fast.BufferFromFlatData(0, x, m)
	require.NoError(t, err)
	outs, err := exe.Execute([]backends.Buffer{buf}, nil, 0)
	require.NoError(t, err)
	got := make([]float32, 16)
	require.NoError(t, fast.BufferToFlatData(outs[0], got))
	assert.InDelta(t, math.Exp(9), got[10], 1e-2)
	assert.InDelta(t, 1, got[1], 0) // exp(0)
}

// TestIntermediatesAreFreedAfterLastUse: a chain of products through
// elementwise ops holds a bounded number of buffers however long it is,
// and a run ends holding none but what it returns.
func TestIntermediatesAreFreedAfterLastUse(t *testing.T) {
	fast, stock := newBackends(t)
	const layers = 12
	r := rand.New(rand.NewPCG(5, 6))
	args := []*tensors.Tensor{randTensor(r, 8, 16)}
	for range layers {
		w := tensors.MustCopyFlatData[float32](randTensor(r, 16, 16))
		for i := range w {
			w[i] /= 8 // keeps the chain from amplifying rounding differences
		}
		args = append(args, tensors.FromFlatDataAndDimensions(w, 16, 16))
	}
	fn := func(in []*graph.Node) *graph.Node {
		x := in[0]
		for _, w := range in[1:] {
			x = graph.Tanh(graph.DotGeneral(x, []int{1}, nil, w, []int{0}, nil))
		}
		return x
	}
	want := execOn(stock, func(in []*graph.Node) []*graph.Node { return []*graph.Node{fn(in)} }, args...)[0]

	got := execOn(fast, func(in []*graph.Node) []*graph.Node { return []*graph.Node{fn(in)} }, args...)[0]
	requireClose(t, want, got, 1e-5, "chain")

	// The same chain on the Builder, to read the run's accounting.
	x := shapes.Make(dtypes.Float32, 8, 16)
	wShape := shapes.Make(dtypes.Float32, 16, 16)
	exe := compile(t, fast, func(b backends.Builder) []backends.Op {
		v := must(b.Parameter("x", x, nil))
		var ws []backends.Op
		for i := range layers {
			ws = append(ws, must(b.Parameter("w"+string(rune('a'+i)), wShape, nil)))
		}
		for _, w := range ws {
			v = must(b.Tanh(must(b.DotGeneral(v, []int{1}, nil, w, []int{0}, nil))))
		}
		return []backends.Op{v}
	})
	assert.Equal(t, Stats{Name: "test", Segments: layers, KernelCalls: layers}, exe.Stats())
	bufs := []backends.Buffer{}
	for _, a := range args {
		buf, err := fast.BufferFromFlatData(0, tensors.MustCopyFlatData[float32](a), a.Shape())
		require.NoError(t, err)
		bufs = append(bufs, buf)
	}
	outs, err := exe.Execute(bufs, nil, 0)
	require.NoError(t, err)
	require.Len(t, outs, 1)
	assert.LessOrEqual(t, exe.peakHeld.Load(), int64(2), "a product's input is freed once the next segment has read it")
	assert.Zero(t, exe.held.Load(), "nothing is left held after a run but the returned buffer")
	// The caller's buffers are untouched and still valid.
	back := make([]float32, 8*16)
	require.NoError(t, fast.BufferToFlatData(bufs[0], back))
	assert.Equal(t, tensors.MustCopyFlatData[float32](args[0]), back)
}

// TestKernelReadsOperandsInPlace: the products the models use read their
// operands where they lie, transposed or not, with no copy; an operand
// whose contracted axis sits between others is transposed first.
func TestKernelReadsOperandsInPlace(t *testing.T) {
	fast, _ := newBackends(t)
	f32 := func(dims ...int) shapes.Shape { return shapes.Make(dtypes.Float32, dims...) }
	for _, tc := range []struct {
		name     string
		lhs, rhs shapes.Shape
		lc, lb   []int
		rc, rb   []int
		segments int
	}{
		{"x·w", f32(2, 3, 4), f32(4, 5), []int{2}, nil, []int{0}, nil, 0},
		{"x·wᵀ", f32(2, 3, 4), f32(5, 4), []int{2}, nil, []int{1}, nil, 0},
		{"weight gradient gᵀ·x", f32(2, 3, 5), f32(2, 3, 4), []int{0, 1}, nil, []int{0, 1}, nil, 0},
		{"q·kᵀ", f32(2, 3, 4, 5), f32(2, 3, 6, 5), []int{3}, []int{0, 1}, []int{3}, []int{0, 1}, 0},
		{"p·v", f32(2, 3, 4, 6), f32(2, 3, 6, 5), []int{3}, []int{0, 1}, []int{2}, []int{0, 1}, 0},
		{"x[B,T,D]·pick[T]", f32(2, 7, 4), f32(7), []int{1}, nil, []int{0}, nil, 1},
	} {
		exe := compile(t, fast, func(b backends.Builder) []backends.Op {
			l := must(b.Parameter("l", tc.lhs, nil))
			r := must(b.Parameter("r", tc.rhs, nil))
			return []backends.Op{must(b.DotGeneral(l, tc.lc, tc.lb, r, tc.rc, tc.rb))}
		})
		assert.Equal(t, Stats{Name: "test", Segments: tc.segments, KernelCalls: 1}, exe.Stats(), tc.name)
	}
}

// TestOutputsThatAreInputsOrConstantsAreCopies: the caller may finalize
// every output, so an output that is an undonated input or a constant is a
// copy; a donated input comes back as itself.
func TestOutputsThatAreInputsOrConstantsAreCopies(t *testing.T) {
	fast, _ := newBackends(t)
	v := shapes.Make(dtypes.Float32, 3)
	exe := compile(t, fast, func(b backends.Builder) []backends.Op {
		x := must(b.Parameter("x", v, nil))
		c := must(b.Constant([]float32{7, 8, 9}, 3))
		return []backends.Op{x, c, must(b.DotGeneral(x, []int{0}, nil, c, []int{0}, nil))}
	})
	in, err := fast.BufferFromFlatData(0, []float32{1, 2, 3}, v)
	require.NoError(t, err)
	outs, err := exe.Execute([]backends.Buffer{in}, nil, 0)
	require.NoError(t, err)
	assert.NotSame(t, in, outs[0])
	got := make([]float32, 3)
	require.NoError(t, fast.BufferToFlatData(outs[1], got))
	assert.Equal(t, []float32{7, 8, 9}, got)
	dot := make([]float32, 1)
	require.NoError(t, fast.BufferToFlatData(outs[2], dot))
	assert.Equal(t, float32(7+16+27), dot[0])
	for _, o := range outs {
		require.NoError(t, fast.BufferFinalize(o))
	}
	// Run again: the constants' buffers survive the caller's finalizing.
	outs, err = exe.Execute([]backends.Buffer{in}, []bool{true}, 0)
	require.NoError(t, err)
	assert.Same(t, in, outs[0].(any), "a donated input returned unchanged is handed back")
	require.NoError(t, fast.BufferToFlatData(outs[1], got))
	assert.Equal(t, []float32{7, 8, 9}, got)
}

// TestSameBitsAtAnyParallelism: segments and kernel calls run in a fixed
// order, so the pure-Go backend's parallelism changes no bit.
func TestSameBitsAtAnyParallelism(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	x, w1, w2 := randTensor(r, 4, 6, 16), randTensor(r, 16, 32), randTensor(r, 32, 16)
	fn := func(x, w1, w2 *graph.Node) []*graph.Node {
		h := graph.DotGeneral(x, []int{2}, nil, w1, []int{0}, nil)
		h = graph.Mul(h, graph.Sigmoid(h))
		y := graph.DotGeneral(h, []int{2}, nil, w2, []int{0}, nil)
		s := graph.DotGeneral(y, []int{2}, []int{0}, x, []int{2}, []int{0})
		loss := graph.ReduceAllSum(graph.Square(s))
		return append([]*graph.Node{loss}, graph.Gradient(loss, w1, w2)...)
	}
	var first []*tensors.Tensor
	for _, config := range []string{"parallelism=1", "parallelism=-1", "parallelism=2,ops_sequential", "parallelism=2,ops_parallel"} {
		be, err := New(config)
		require.NoError(t, err)
		outs := execOn(be, fn, x, w1, w2)
		if first == nil {
			first = outs
			continue
		}
		for i := range outs {
			assert.Equal(t, tensors.MustCopyFlatData[float32](first[i]), tensors.MustCopyFlatData[float32](outs[i]), "%s output %d", config, i)
		}
	}
}
