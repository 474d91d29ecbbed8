package fastgo

import (
	"slices"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/pkg/errors"
)

// dotCall is a float32 DotGeneral run on the kernel: batch products of
// [m,k] by [k,n] matrices, read from the operands' buffers in place (the
// goCall's two inputs, maybe transposed copies) with the kernel's
// transpose flags and leading dimensions. Its output's layout,
// [batch..., lhs cross..., rhs cross...], is the [batch, m, n] the kernel
// writes.
type dotCall struct {
	batch, m, n, k int
	transA, transB bool
	lda, ldb       int
}

// DotGeneral implements backends.Builder. A float32 product ends the
// current segment and becomes a kernel call; other dtypes stay in the
// segment, on simplego's own DotGeneral.
func (b *Builder) DotGeneral(lhsOp backends.Op, lhsContractingAxes, lhsBatchAxes []int,
	rhsOp backends.Op, rhsContractingAxes, rhsBatchAxes []int) (backends.Op, error) {
	lhs, err := b.node("DotGeneral", lhsOp)
	if err != nil {
		return nil, err
	}
	rhs, err := b.node("DotGeneral", rhsOp)
	if err != nil {
		return nil, err
	}
	if lhs.shape.DType != dtypes.Float32 || rhs.shape.DType != dtypes.Float32 {
		lc, lb := slices.Clone(lhsContractingAxes), slices.Clone(lhsBatchAxes)
		rc, rb := slices.Clone(rhsContractingAxes), slices.Clone(rhsBatchAxes)
		return b.forward1("DotGeneral", []backends.Op{lhs, rhs}, func(sb backends.Builder, in []backends.Op) (backends.Op, error) {
			return sb.DotGeneral(in[0], lc, lb, in[1], rc, rb)
		})
	}
	spec, err := newDotSpec(lhs.shape, lhsContractingAxes, lhsBatchAxes, rhs.shape, rhsContractingAxes, rhsBatchAxes)
	if err != nil {
		return nil, errors.WithMessage(err, "fastgo DotGeneral")
	}
	call := &dotCall{batch: spec.batch, m: spec.m, n: spec.n, k: spec.k}
	// The kernel reads lhs as [m,k] (or [k,m] transposed) and rhs as [k,n]
	// (or [n,k]) per batch; an operand laid out otherwise is transposed
	// into [batch, m, k] or [batch, k, n] in the current segment.
	lhsNormal := slices.Concat(spec.lhsBatch, spec.lhsCross, spec.lhsContracting)
	lhsTrans := slices.Concat(spec.lhsBatch, spec.lhsContracting, spec.lhsCross)
	switch {
	case sameLayout(lhs.shape, lhsNormal):
		call.lda = spec.k
	case sameLayout(lhs.shape, lhsTrans):
		call.transA, call.lda = true, spec.m
	default:
		if lhs, err = b.transposed(lhs, lhsNormal); err != nil {
			return nil, err
		}
		call.lda = spec.k
	}
	rhsNormal := slices.Concat(spec.rhsBatch, spec.rhsContracting, spec.rhsCross)
	rhsTrans := slices.Concat(spec.rhsBatch, spec.rhsCross, spec.rhsContracting)
	switch {
	case sameLayout(rhs.shape, rhsNormal):
		call.ldb = spec.n
	case sameLayout(rhs.shape, rhsTrans):
		call.transB, call.ldb = true, spec.k
	default:
		if rhs, err = b.transposed(rhs, rhsNormal); err != nil {
			return nil, err
		}
		call.ldb = spec.n
	}
	return b.addCall(&goCall{in: []*node{lhs, rhs}, dot: call}, shapes.Make(dtypes.Float32, spec.outDims...)), nil
}

// Dot implements backends.Builder as DotGeneral does it: vector·vector,
// matrix·vector and matrix·matrix.
func (b *Builder) Dot(lhsOp, rhsOp backends.Op) (backends.Op, error) {
	lhs, err := b.node("Dot", lhsOp)
	if err != nil {
		return nil, err
	}
	rhs, err := b.node("Dot", rhsOp)
	if err != nil {
		return nil, err
	}
	switch lr, rr := lhs.shape.Rank(), rhs.shape.Rank(); {
	case lr == 1 && rr == 1:
		return b.DotGeneral(lhs, []int{0}, nil, rhs, []int{0}, nil)
	case lr == 2 && (rr == 1 || rr == 2):
		return b.DotGeneral(lhs, []int{1}, nil, rhs, []int{0}, nil)
	}
	return nil, errors.Errorf("fastgo Dot: operands of ranks %d and %d (want 1 or 2, and 1 or 2)", lhs.shape.Rank(), rhs.shape.Rank())
}

// transposed returns n with its axes in the order perm (Transpose).
func (b *Builder) transposed(n *node, perm []int) (*node, error) {
	out, err := b.Transpose(n, perm...)
	if err != nil {
		return nil, err
	}
	return out.(*node), nil
}

// dotSpec is a DotGeneral's axes, checked and normalised: axes
// non-negative, cross axes in increasing order, and the products of the
// dimensions of each kind.
type dotSpec struct {
	lhsContracting, lhsBatch, lhsCross []int
	rhsContracting, rhsBatch, rhsCross []int
	batch, m, n, k                     int
	outDims                            []int
}

func newDotSpec(lhs shapes.Shape, lc, lb []int, rhs shapes.Shape, rc, rb []int) (*dotSpec, error) {
	if len(lc) != len(rc) || len(lb) != len(rb) {
		return nil, errors.Errorf("lhs has %d contracting and %d batch axes, rhs %d and %d", len(lc), len(lb), len(rc), len(rb))
	}
	s := &dotSpec{batch: 1, m: 1, n: 1, k: 1}
	var err error
	if s.lhsContracting, s.lhsBatch, s.lhsCross, err = classify(lhs, lc, lb); err != nil {
		return nil, errors.WithMessagef(err, "lhs %s", lhs)
	}
	if s.rhsContracting, s.rhsBatch, s.rhsCross, err = classify(rhs, rc, rb); err != nil {
		return nil, errors.WithMessagef(err, "rhs %s", rhs)
	}
	for i, a := range s.lhsBatch {
		d := lhs.Dimensions[a]
		if d != rhs.Dimensions[s.rhsBatch[i]] {
			return nil, errors.Errorf("batch axes %d of %s and %d of %s differ", a, lhs, s.rhsBatch[i], rhs)
		}
		s.batch *= d
		s.outDims = append(s.outDims, d)
	}
	for i, a := range s.lhsContracting {
		d := lhs.Dimensions[a]
		if d != rhs.Dimensions[s.rhsContracting[i]] {
			return nil, errors.Errorf("contracting axes %d of %s and %d of %s differ", a, lhs, s.rhsContracting[i], rhs)
		}
		s.k *= d
	}
	for _, a := range s.lhsCross {
		s.m *= lhs.Dimensions[a]
		s.outDims = append(s.outDims, lhs.Dimensions[a])
	}
	for _, a := range s.rhsCross {
		s.n *= rhs.Dimensions[a]
		s.outDims = append(s.outDims, rhs.Dimensions[a])
	}
	return s, nil
}

// classify normalises an operand's contracting and batch axes and returns
// them with its cross axes (the others, in increasing order).
func classify(shape shapes.Shape, contracting, batch []int) (c, b, cross []int, err error) {
	rank := shape.Rank()
	seen := make([]bool, rank)
	norm := func(axes []int) ([]int, error) {
		out := make([]int, len(axes))
		for i, a := range axes {
			if a < 0 {
				a += rank
			}
			if a < 0 || a >= rank {
				return nil, errors.Errorf("axis %d out of range", axes[i])
			}
			if seen[a] {
				return nil, errors.Errorf("axis %d given twice", a)
			}
			seen[a] = true
			out[i] = a
		}
		return out, nil
	}
	if c, err = norm(contracting); err != nil {
		return
	}
	if b, err = norm(batch); err != nil {
		return
	}
	for a := range rank {
		if !seen[a] {
			cross = append(cross, a)
		}
	}
	return
}

// sameLayout reports whether an array of shape, stored row-major, holds
// the same flat layout as its transpose to axis order perm: the axes of
// size above 1 come in the same order. Axes of size 1 move freely.
func sameLayout(shape shapes.Shape, perm []int) bool {
	next := 0
	for _, a := range perm {
		if shape.Dimensions[a] == 1 {
			continue
		}
		for next < shape.Rank() && shape.Dimensions[next] == 1 {
			next++
		}
		if a != next {
			return false
		}
		next++
	}
	return true
}
