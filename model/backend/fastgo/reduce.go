package fastgo

import (
	"slices"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/shapes"
)

// minGoReduce is the fewest input elements of a float32 ReduceSum or
// ReduceMax fastgo runs itself; smaller ones stay in the segment. simplego
// reduces through a generic output-index iterator, one input element at a
// time, on one goroutine (sums were about 10 % of a train step at
// SmolLM2-135M's shape: the log-softmax over the vocabulary and the
// gradients of broadcasts).
const minGoReduce = 1 << 14

// reduceCall is a float32 ReduceSum (or, with max, ReduceMax) over a run of
// neighbouring axes: the input viewed as [rows, k, cols], reduced over k.
// Each output starts at simplego's initial value (0, or float32's lowest
// value) and takes its inputs in increasing k, in float32 (+, or Go's max,
// as simplego's), which is the order and rounding of simplego's reductions
// (it walks the input in flat order, combining each element into its
// output): the same bits, on any number of goroutines, since each output is
// reduced by one.
type reduceCall struct {
	rows, k, cols int
	max           bool
}

// ReduceSum implements backends.Builder: a float32 sum over neighbouring
// axes (axes of size 1 aside) of at least minGoReduce elements becomes a
// step of its own (reduceCall); any other goes to the current segment.
func (b *Builder) ReduceSum(x backends.Op, axes ...int) (backends.Op, error) {
	return b.reduce("ReduceSum", false, x, axes, func(sb backends.Builder, in backends.Op, axes ...int) (backends.Op, error) {
		return sb.ReduceSum(in, axes...)
	})
}

// ReduceMax implements backends.Builder as ReduceSum does.
func (b *Builder) ReduceMax(x backends.Op, axes ...int) (backends.Op, error) {
	return b.reduce("ReduceMax", true, x, axes, func(sb backends.Builder, in backends.Op, axes ...int) (backends.Op, error) {
		return sb.ReduceMax(in, axes...)
	})
}

func (b *Builder) reduce(name string, isMax bool, x backends.Op, axes []int, stock func(sb backends.Builder, in backends.Op, axes ...int) (backends.Op, error)) (backends.Op, error) {
	n, err := b.node(name, x)
	if err != nil {
		return nil, err
	}
	axes = slices.Clone(axes)
	rc, outDims := newReduceCall(n.shape, axes)
	if rc == nil {
		return b.forward1(name, []backends.Op{n}, func(sb backends.Builder, in []backends.Op) (backends.Op, error) {
			return stock(sb, in[0], axes...)
		})
	}
	rc.max = isMax
	return b.addCall(&goCall{in: []*node{n}, sum: rc}, shapes.Make(dtypes.Float32, outDims...)), nil
}

// newReduceCall plans a ReduceSum of shape over axes, with the output's
// dimensions; nil when fastgo leaves it to simplego: another dtype, a
// small input, no axes (all of them), an invalid axis, or axes that are
// not neighbours.
func newReduceCall(shape shapes.Shape, axes []int) (*reduceCall, []int) {
	rank := shape.Rank()
	if shape.DType != dtypes.Float32 || shape.Size() < minGoReduce {
		return nil, nil
	}
	if len(axes) == 0 {
		// All of them (a gradient's squared norm): one chain of additions
		// that cannot be split, and simplego runs the many of a step side
		// by side in one segment, which is faster than a step each here.
		return nil, nil
	}
	reduced := make([]bool, rank)
	for _, a := range axes {
		if a < 0 || a >= rank || reduced[a] {
			return nil, nil
		}
		reduced[a] = true
	}
	// The reduced axes of size above 1 must be one run among the axes of
	// size above 1: before it the rows, after it the columns.
	rc := &reduceCall{rows: 1, k: 1, cols: 1}
	var outDims []int
	phase := 0 // 0: rows, 1: the reduced run, 2: columns
	for a, d := range shape.Dimensions {
		if !reduced[a] {
			outDims = append(outDims, d)
		}
		if d == 1 {
			continue
		}
		switch {
		case reduced[a] && phase == 2:
			return nil, nil
		case reduced[a]:
			phase = 1
			rc.k *= d
		case phase == 0:
			rc.rows *= d
		default:
			phase = 2
			rc.cols *= d
		}
	}
	if rc.k == 1 {
		return nil, nil // only axes of size 1: simplego's copy
	}
	return rc, outDims
}

// run writes the sums of in into out, rows split among up to GOMAXPROCS
// goroutines (or, with one row, columns).
func (rc *reduceCall) run(in, out []float32) {
	parts := rc.rows
	if parts == 1 {
		parts = rc.cols
	}
	split(parts, len(in), 1<<16, func(lo, hi int) { rc.sum(in, out, lo, hi) })
}

// lowest is float32's lowest value, where simplego's ReduceMax starts.
var lowest = dtypes.Float32.LowestValue().(float32)

// sum computes rows lo..hi-1 of the output, or columns lo..hi-1 when
// there is one row.
func (rc *reduceCall) sum(in, out []float32, lo, hi int) {
	k, cols := rc.k, rc.cols
	if rc.rows == 1 {
		o := out[lo:hi]
		rc.start(o)
		for p := range k {
			rc.combine(o, in[p*cols+lo:p*cols+hi])
		}
		return
	}
	for r := lo; r < hi; r++ {
		o := out[r*cols : (r+1)*cols]
		base := in[r*k*cols : (r+1)*k*cols]
		if cols == 1 {
			o[0] = rc.chain(base)
			continue
		}
		rc.start(o)
		for p := range k {
			rc.combine(o, base[p*cols:(p+1)*cols])
		}
	}
}

// start sets o to the reduction's initial value.
func (rc *reduceCall) start(o []float32) {
	init := float32(0)
	if rc.max {
		init = lowest
	}
	for j := range o {
		o[j] = init
	}
}

// combine reduces x into o, element by element.
func (rc *reduceCall) combine(o, x []float32) {
	x = x[:len(o)]
	if rc.max {
		for j, v := range x {
			o[j] = max(o[j], v)
		}
		return
	}
	for j, v := range x {
		o[j] += v
	}
}

// chain reduces x to one value, in order from the initial value.
func (rc *reduceCall) chain(x []float32) float32 {
	if rc.max {
		m := lowest
		for _, v := range x {
			m = max(m, v)
		}
		return m
	}
	var s float32
	for _, v := range x {
		s += v
	}
	return s
}
