package fastgo

import (
	"slices"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/shapes"
)

// minGoCopy is the fewest output elements of a float32 transpose or
// broadcast fastgo runs itself; smaller ones stay in the segment, where
// simplego's iterator costs less than ending the segment. simplego walks
// them element by element through a generic index iterator (transposes
// alone were about 12 % of a train step at SmolLM2-135M's shape:
// attention's head splits and merges and their gradients); fastgo copies
// or fills whole runs of the innermost axes. They only move values, so
// where they run changes no bit.
const minGoCopy = 1 << 12

// copyCall is a float32 Transpose or BroadcastInDim run in Go: the output,
// of rank len(dims), walked in row-major order, reads the input at
// sum(index[j] * strides[j]) (a broadcast axis has stride 0). Runs of the
// last axis are copied whole when its stride is 1, and filled with one
// value when it is 0.
type copyCall struct {
	dims, strides []int
}

// Transpose implements backends.Builder: a float32 transpose of at least
// minGoCopy elements becomes a step of its own (copyCall), any other one
// goes to the current segment.
func (b *Builder) Transpose(x backends.Op, permutation ...int) (backends.Op, error) {
	n, err := b.node("Transpose", x)
	if err != nil {
		return nil, err
	}
	perm := slices.Clone(permutation)
	var cp *copyCall // nil: simplego's (another dtype, small, invalid, or moving only axes of size 1)
	outDims := make([]int, len(perm))
	if n.shape.DType == dtypes.Float32 && n.shape.Size() >= minGoCopy && validPermutation(perm, n.shape.Rank()) {
		strides := make([]int, len(perm))
		inStrides := rowMajorStrides(n.shape.Dimensions)
		for j, a := range perm {
			outDims[j], strides[j] = n.shape.Dimensions[a], inStrides[a]
		}
		cp = newCopyCall(outDims, strides)
	}
	if cp == nil {
		return b.forward1("Transpose", []backends.Op{n}, func(sb backends.Builder, in []backends.Op) (backends.Op, error) {
			return sb.Transpose(in[0], perm...)
		})
	}
	return b.goCopy(n, cp, outDims), nil
}

// BroadcastInDim implements backends.Builder: a float32 broadcast to at
// least minGoCopy elements becomes a step of its own (copyCall), any other
// one goes to the current segment.
func (b *Builder) BroadcastInDim(x backends.Op, outputShape shapes.Shape, broadcastAxes []int) (backends.Op, error) {
	n, err := b.node("BroadcastInDim", x)
	if err != nil {
		return nil, err
	}
	axes := slices.Clone(broadcastAxes)
	var cp *copyCall
	if strides := broadcastStrides(n.shape, outputShape, axes); strides != nil && outputShape.Size() >= minGoCopy {
		cp = newCopyCall(outputShape.Dimensions, strides)
	}
	if cp == nil {
		return b.forward1("BroadcastInDim", []backends.Op{n}, func(sb backends.Builder, in []backends.Op) (backends.Op, error) {
			return sb.BroadcastInDim(in[0], outputShape, axes)
		})
	}
	return b.goCopy(n, cp, outputShape.Dimensions), nil
}

// goCopy makes cp, from n into an array of outDims, a step of its own.
func (b *Builder) goCopy(n *node, cp *copyCall, outDims []int) *node {
	return b.addCall(&goCall{in: []*node{n}, cp: cp}, shapes.Make(dtypes.Float32, outDims...))
}

// rowMajorStrides are the strides of the axes of a row-major array of dims.
func rowMajorStrides(dims []int) []int {
	strides := make([]int, len(dims))
	s := 1
	for a := len(dims) - 1; a >= 0; a-- {
		strides[a] = s
		s *= dims[a]
	}
	return strides
}

// broadcastStrides are the input strides of a broadcast's output axes (0
// where the input repeats), or nil for a broadcast fastgo leaves to
// simplego (and its error): another dtype, axes out of order or range, or
// dimensions that do not fit.
func broadcastStrides(in, out shapes.Shape, axes []int) []int {
	if in.DType != dtypes.Float32 || out.DType != dtypes.Float32 || len(axes) != in.Rank() {
		return nil
	}
	inStrides := rowMajorStrides(in.Dimensions)
	strides := make([]int, out.Rank())
	prev := -1
	for i, o := range axes {
		if o <= prev || o >= out.Rank() {
			return nil
		}
		prev = o
		switch d := in.Dimensions[i]; {
		case d == out.Dimensions[o]:
			strides[o] = inStrides[i]
		case d != 1:
			return nil
		}
	}
	return strides
}

// validPermutation reports whether perm is a permutation of 0..rank-1;
// simplego reports the error of one that is not.
func validPermutation(perm []int, rank int) bool {
	if len(perm) != rank {
		return false
	}
	seen := make([]bool, rank)
	for _, a := range perm {
		if a < 0 || a >= rank || seen[a] {
			return false
		}
		seen[a] = true
	}
	return true
}

// newCopyCall plans the copy into an array of dims reading the input at
// the given strides: axes of size 1 dropped and neighbours that stay
// neighbours merged. It returns nil when the flat values do not move.
func newCopyCall(dims, strides []int) *copyCall {
	cp := &copyCall{}
	for j, d := range dims {
		st := strides[j]
		if d == 1 {
			continue
		}
		if last := len(cp.dims) - 1; last >= 0 && cp.strides[last] == st*d {
			cp.dims[last] *= d
			cp.strides[last] = st
			continue
		}
		cp.dims = append(cp.dims, d)
		cp.strides = append(cp.strides, st)
	}
	if len(cp.dims) == 0 || len(cp.dims) == 1 && cp.strides[0] == 1 {
		return nil
	}
	return cp
}

// run writes the copy of in into out, in rows of the last axis split
// among up to GOMAXPROCS goroutines.
func (cp *copyCall) run(in, out []float32) {
	width := cp.dims[len(cp.dims)-1]
	split(len(out)/width, len(out), 1<<15, func(lo, hi int) { cp.rows(in, out, lo, hi) })
}

// rows writes output rows lo..hi-1 (of the last axis).
func (cp *copyCall) rows(in, out []float32, lo, hi int) {
	last := len(cp.dims) - 1
	width, step := cp.dims[last], cp.strides[last]
	// idx is the output index of row lo over the axes before the last, and
	// src the input offset it starts at.
	idx := make([]int, last)
	src := 0
	for j, r := last-1, lo; j >= 0; j-- {
		idx[j] = r % cp.dims[j]
		r /= cp.dims[j]
		src += idx[j] * cp.strides[j]
	}
	for row := lo; row < hi; row++ {
		dst := out[row*width : (row+1)*width]
		switch step {
		case 1:
			copy(dst, in[src:src+width])
		case 0:
			v := in[src]
			for i := range dst {
				dst[i] = v
			}
		default:
			for i, p := 0, src; i < width; i, p = i+1, p+step {
				dst[i] = in[p]
			}
		}
		for j := last - 1; j >= 0; j-- { // the next row's index
			idx[j]++
			src += cp.strides[j]
			if idx[j] < cp.dims[j] {
				break
			}
			src -= idx[j] * cp.strides[j]
			idx[j] = 0
		}
	}
}
