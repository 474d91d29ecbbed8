package fastgo

import (
	"runtime"
	"slices"
	"sync"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/shapes"
)

// minGoTranspose is the fewest elements of a float32 transpose fastgo
// runs itself; smaller ones stay in the segment, where simplego's
// iterator costs less than ending the segment. simplego walks a
// transpose element by element through a generic index iterator (about
// 12 % of a train step at SmolLM2-135M's shape: attention's head splits and
// merges and their gradients); fastgo copies whole runs of the innermost
// axes. A transpose only moves values, so where it runs changes no bit.
const minGoTranspose = 1 << 12

// transposeCall is a float32 Transpose run in Go: the output, of rank
// len(dims), walked in row-major order, reads the input at
// sum(index[j] * strides[j]); runs of the last axis are contiguous in the
// input when contiguous is set, and copied whole.
type transposeCall struct {
	dims, strides []int
	contiguous    bool
}

// Transpose implements backends.Builder: a float32 transpose of at least
// minGoTranspose elements becomes a step of its own (transposeCall), any
// other one goes to the current segment.
func (b *Builder) Transpose(x backends.Op, permutation ...int) (backends.Op, error) {
	n, err := b.node("Transpose", x)
	if err != nil {
		return nil, err
	}
	perm := slices.Clone(permutation)
	if n.shape.DType != dtypes.Float32 || n.shape.Size() < minGoTranspose || !validPermutation(perm, n.shape.Rank()) {
		return b.forward1("Transpose", []backends.Op{n}, func(sb backends.Builder, in []backends.Op) (backends.Op, error) {
			return sb.Transpose(in[0], perm...)
		})
	}
	tr := newTransposeCall(n.shape.Dimensions, perm)
	if tr == nil { // moves only axes of size 1: the same flat values
		return b.forward1("Transpose", []backends.Op{n}, func(sb backends.Builder, in []backends.Op) (backends.Op, error) {
			return sb.Transpose(in[0], perm...)
		})
	}
	outDims := make([]int, len(perm))
	for j, a := range perm {
		outDims[j] = n.shape.Dimensions[a]
	}
	call := &goCall{in: []*node{n}, tr: tr}
	call.out = b.newNode(shapes.Make(dtypes.Float32, outDims...), call.in)
	call.out.call = call
	b.steps = append(b.steps, step{call: call})
	b.cur = nil
	return call.out, nil
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

// newTransposeCall plans the transpose of an array of dims to axis order
// perm: the output's axes with their strides in the input, axes of size 1
// dropped and neighbours that stay neighbours merged. It returns nil when
// the flat values do not move.
func newTransposeCall(dims, perm []int) *transposeCall {
	inStride := make([]int, len(dims))
	s := 1
	for a := len(dims) - 1; a >= 0; a-- {
		inStride[a] = s
		s *= dims[a]
	}
	tr := &transposeCall{}
	for _, a := range perm {
		d, st := dims[a], inStride[a]
		if d == 1 {
			continue
		}
		if last := len(tr.dims) - 1; last >= 0 && tr.strides[last] == st*d {
			tr.dims[last] *= d
			tr.strides[last] = st
			continue
		}
		tr.dims = append(tr.dims, d)
		tr.strides = append(tr.strides, st)
	}
	if len(tr.dims) <= 1 {
		return nil
	}
	tr.contiguous = tr.strides[len(tr.strides)-1] == 1
	return tr
}

// run writes the transpose of in into out, in rows of the last axis split
// among up to GOMAXPROCS goroutines.
func (tr *transposeCall) run(in, out []float32) {
	last := len(tr.dims) - 1
	width := tr.dims[last]
	rows := len(out) / width
	workers := min(runtime.GOMAXPROCS(0), max(1, len(out)/(1<<15)), rows)
	if workers <= 1 {
		tr.rows(in, out, 0, rows)
		return
	}
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := rows*w/workers, rows*(w+1)/workers
		wg.Go(func() { tr.rows(in, out, lo, hi) })
	}
	wg.Wait()
}

// rows writes output rows lo..hi-1 (of the last axis).
func (tr *transposeCall) rows(in, out []float32, lo, hi int) {
	last := len(tr.dims) - 1
	width, step := tr.dims[last], tr.strides[last]
	// idx is the output index of row lo over the axes before the last, and
	// src the input offset it starts at.
	idx := make([]int, last)
	src := 0
	for j, r := last-1, lo; j >= 0; j-- {
		idx[j] = r % tr.dims[j]
		r /= tr.dims[j]
		src += idx[j] * tr.strides[j]
	}
	for row := lo; row < hi; row++ {
		dst := out[row*width : (row+1)*width]
		if tr.contiguous {
			copy(dst, in[src:src+width])
		} else {
			for i, p := 0, src; i < width; i, p = i+1, p+step {
				dst[i] = in[p]
			}
		}
		for j := last - 1; j >= 0; j-- { // the next row's index
			idx[j]++
			src += tr.strides[j]
			if idx[j] < tr.dims[j] {
				break
			}
			src -= idx[j] * tr.strides[j]
			idx[j] = 0
		}
	}
}
