package fastgo

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTransposeMatchesSimplego: fastgo's own transposes give simplego's
// values bit for bit, on the permutations attention makes (head splits and
// merges, their gradients), ones that move the last axis, axes of size 1
// among them, neighbours that merge, and sizes that split among workers.
func TestTransposeMatchesSimplego(t *testing.T) {
	fast, stock := newBackends(t)
	r := rand.New(rand.NewPCG(7, 7))
	cases := []struct {
		dims, perm []int
	}{
		{[]int{4, 64, 9, 64}, []int{0, 2, 1, 3}}, // split heads
		{[]int{4, 9, 64, 64}, []int{0, 2, 1, 3}}, // merge heads
		{[]int{4, 9, 64, 64}, []int{0, 1, 3, 2}}, // the last axis moves
		{[]int{256, 576}, []int{1, 0}},
		{[]int{3, 1, 70, 5, 11}, []int{4, 1, 2, 0, 3}},
		{[]int{2, 3, 4, 5, 6, 7}, []int{5, 4, 3, 2, 1, 0}},
		{[]int{64, 1, 128}, []int{1, 0, 2}},      // only a size-1 axis moves
		{[]int{8, 16, 32, 4}, []int{1, 2, 0, 3}}, // 16 and 32 stay neighbours
		{[]int{300, 7000}, []int{1, 0}},          // several workers
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.dims, tc.perm), func(t *testing.T) {
			x := randTensor(r, tc.dims...)
			fn := func(x *graph.Node) *graph.Node {
				// Ops before and after, so the transpose sits between segments.
				return graph.Neg(graph.TransposeAllAxes(graph.Neg(x), tc.perm...))
			}
			want := execOn(stock, fn, x)[0]
			got := execOn(fast, fn, x)[0]
			require.True(t, want.Shape().Equal(got.Shape()), "shape %s, want %s", got.Shape(), want.Shape())
			assert.Equal(t, tensors.MustCopyFlatData[float32](want), tensors.MustCopyFlatData[float32](got))
		})
	}
}

// TestLargeTransposesRunInGo: a float32 transpose of minGoCopy
// elements or more is a step of fastgo's own; a smaller one, one that
// moves only axes of size 1, and one of another dtype stay in the segment.
func TestLargeTransposesRunInGo(t *testing.T) {
	fast, _ := newBackends(t)
	for _, tc := range []struct {
		name     string
		shape    shapes.Shape
		perm     []int
		copies   int
		segments int
	}{
		{"large", shapes.Make(dtypes.Float32, 64, 128), []int{1, 0}, 1, 2},
		{"small", shapes.Make(dtypes.Float32, 8, 16), []int{1, 0}, 0, 1},
		{"size-1 axes only", shapes.Make(dtypes.Float32, 64, 1, 128), []int{1, 0, 2}, 0, 1},
		{"float64", shapes.Make(dtypes.Float64, 64, 128), []int{1, 0}, 0, 1},
	} {
		exe := compile(t, fast, func(b backends.Builder) []backends.Op {
			x := must(b.Parameter("x", tc.shape, nil))
			return []backends.Op{must(b.Neg(must(b.Transpose(must(b.Neg(x)), tc.perm...))))}
		})
		assert.Equal(t, tc.copies, exe.Stats().Copies, tc.name)
		assert.Equal(t, tc.segments, exe.Stats().Segments, tc.name)
	}
}

// TestBroadcastInDimMatchesSimplego: fastgo's own broadcasts give
// simplego's values bit for bit: new leading, middle and trailing axes,
// axes of size 1 that repeat, a scalar filled, and sizes that split among
// workers; small ones stay simplego's.
func TestBroadcastInDimMatchesSimplego(t *testing.T) {
	fast, stock := newBackends(t)
	r := rand.New(rand.NewPCG(8, 8))
	cases := []struct {
		in, out []int
		axes    []int
		copies  int
	}{
		{[]int{576}, []int{4, 64, 576}, []int{2}, 1},            // a gain over the rows
		{[]int{4, 64, 1}, []int{4, 64, 576}, []int{0, 1, 2}, 1}, // a norm over the columns
		{[]int{64, 64}, []int{4, 9, 64, 64}, []int{2, 3}, 1},    // a mask over batch and heads
		{[]int{4, 64}, []int{4, 9, 64, 64}, []int{0, 3}, 1},     // middle axes
		{nil, []int{300, 70}, nil, 1},                           // a scalar
		{[]int{7, 1, 5}, []int{7, 400, 5}, []int{0, 1, 2}, 1},
		{[]int{3000}, []int{3, 3000}, []int{1}, 1},
		{[]int{8}, []int{8, 16}, []int{0}, 0}, // small: simplego's
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.in, tc.out, tc.axes), func(t *testing.T) {
			in := shapes.Make(dtypes.Float32, tc.in...)
			x := tensors.MustCopyFlatData[float32](randTensor(r, tc.in...))
			build := func(b backends.Builder) []backends.Op {
				x := must(b.Parameter("x", in, nil))
				return []backends.Op{must(b.Neg(must(b.BroadcastInDim(must(b.Neg(x)), shapes.Make(dtypes.Float32, tc.out...), tc.axes))))}
			}
			want, got := runBuilt(t, stock, in, x, build), runBuilt(t, fast, in, x, build)
			assert.Equal(t, want, got)
			assert.Equal(t, tc.copies, compile(t, fast, build).Stats().Copies)
		})
	}
}

// runBuilt compiles build on be and runs it on x, of shape in: its output's
// values.
func runBuilt(t *testing.T, be backends.Backend, in shapes.Shape, x []float32, build func(b backends.Builder) []backends.Op) []float32 {
	t.Helper()
	b := be.Builder("test")
	exe, err := b.Compile(build(b), nil)
	require.NoError(t, err)
	defer exe.Finalize()
	buf, err := be.BufferFromFlatData(0, x, in)
	require.NoError(t, err)
	outs, err := exe.Execute([]backends.Buffer{buf}, nil, 0)
	require.NoError(t, err)
	got := make([]float32, exe.Outputs()[0].Size())
	require.NoError(t, be.BufferToFlatData(outs[0], got))
	return got
}
