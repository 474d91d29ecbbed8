package fastgo

import (
	"fmt"
	"math"
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

// TestReduceSumMatchesSimplego: fastgo's own sums and maxima give
// simplego's values bit for bit (same order, same float32 rounding), over the last axis (the
// log-softmax's), the leading axes (a broadcast's gradient), a middle run,
// everything, with axes of size 1 among them, on sizes that split among
// workers by rows and by columns; and on values whose sums depend on the
// order (mixed magnitudes, signed zeros).
func TestReduceSumMatchesSimplego(t *testing.T) {
	fast, stock := newBackends(t)
	r := rand.New(rand.NewPCG(9, 9))
	cases := []struct {
		dims, axes []int
	}{
		{[]int{256, 4099}, []int{1}},
		{[]int{4, 64, 576}, []int{0, 1}},
		{[]int{4, 64, 9, 64}, []int{1, 2}},
		{[]int{3, 1, 70, 5, 11}, []int{1, 2, 3}},
		{[]int{2, 300, 40}, []int{0, 1, 2}},
		{[]int{576, 1536}, nil}, // no axes: all of them
		{[]int{1, 20000}, []int{1}},
		{[]int{20000, 1}, []int{0}},
		{[]int{64, 1, 512}, []int{0, 1}},
		{[]int{16, 8, 512}, []int{0, 2}}, // not neighbours: simplego's
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.dims, tc.axes), func(t *testing.T) {
			x := randTensor(r, tc.dims...)
			tensors.MustMutableFlatData(x, func(flat []float32) {
				for i := range flat {
					switch i % 7 {
					case 0:
						flat[i] *= 1e6
					case 3:
						flat[i] = float32(math.Copysign(0, -1))
					case 5:
						flat[i] = 0
					}
				}
				if len(flat) > 4000 {
					flat[4000] = float32(math.NaN()) // a NaN reaches its maximum as Go's max passes it on
				}
			})
			for _, reduce := range []func(*graph.Node, ...int) *graph.Node{graph.ReduceSum, graph.ReduceMax} {
				fn := func(x *graph.Node) *graph.Node {
					return graph.Neg(reduce(graph.Neg(x), tc.axes...))
				}
				want := execOn(stock, fn, x)[0]
				got := execOn(fast, fn, x)[0]
				require.True(t, want.Shape().Equal(got.Shape()), "shape %s, want %s", got.Shape(), want.Shape())
				w, g := tensors.MustCopyFlatData[float32](want), tensors.MustCopyFlatData[float32](got)
				for i := range w {
					require.Equal(t, math.Float32bits(w[i]), math.Float32bits(g[i]), "element %d: %g, want %g", i, g[i], w[i])
				}
			}
		})
	}
}

// TestLargeSumsRunInGo: which ReduceSums fastgo runs itself.
func TestLargeSumsRunInGo(t *testing.T) {
	fast, _ := newBackends(t)
	for _, tc := range []struct {
		name     string
		shape    shapes.Shape
		axes     []int
		sums     int
		segments int
	}{
		{"last axis", shapes.Make(dtypes.Float32, 64, 1024), []int{1}, 1, 2},
		{"leading axes", shapes.Make(dtypes.Float32, 4, 64, 576), []int{0, 1}, 1, 2},
		{"all axes", shapes.Make(dtypes.Float32, 576, 576), nil, 0, 1},
		{"small", shapes.Make(dtypes.Float32, 8, 16), []int{1}, 0, 1},
		{"not neighbours", shapes.Make(dtypes.Float32, 16, 8, 512), []int{0, 2}, 0, 1},
		{"size-1 axes only", shapes.Make(dtypes.Float32, 64, 1, 512), []int{1}, 0, 1},
		{"float64", shapes.Make(dtypes.Float64, 64, 1024), []int{1}, 0, 1},
	} {
		exe := compile(t, fast, func(b backends.Builder) []backends.Op {
			x := must(b.Parameter("x", tc.shape, nil))
			return []backends.Op{must(b.Neg(must(b.ReduceSum(must(b.Neg(x)), tc.axes...))))}
		})
		assert.Equal(t, tc.sums, exe.Stats().Reductions, tc.name)
		assert.Equal(t, tc.segments, exe.Stats().Segments, tc.name)
	}
}
