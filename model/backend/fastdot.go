package backend

import (
	"slices"
	"sync"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
)

// dotAxes records the axes of a DotGeneral built by Dot: the graph package keeps
// them private, and the gradient needs them.
type dotAxes struct {
	lhsContracting, lhsBatch, rhsContracting, rhsBatch []int
}

var (
	dotSpecs    sync.Map // *graph.Node -> dotAxes
	installOnce sync.Once
	stockDotVJP graph.VJP
)

// Dot is graph.DotGeneral whose gradient is computed with two DotGenerals and a
// transpose instead of the stock broadcast outer product (7.8x slower and 10x the
// memory on a tiny GPT step with the pure-Go backend). Use it for every matrix
// product that is differentiated.
func Dot(lhs *graph.Node, lhsContracting, lhsBatch []int, rhs *graph.Node, rhsContracting, rhsBatch []int) *graph.Node {
	installFastDotGradient()
	out := graph.DotGeneral(lhs, lhsContracting, lhsBatch, rhs, rhsContracting, rhsBatch)
	if out.Type() == graph.NodeTypeDotGeneral {
		dotSpecs.Store(out, dotAxes{
			lhsContracting: normAxes(lhs.Rank(), lhsContracting),
			lhsBatch:       normAxes(lhs.Rank(), lhsBatch),
			rhsContracting: normAxes(rhs.Rank(), rhsContracting),
			rhsBatch:       normAxes(rhs.Rank(), rhsBatch),
		})
	}
	return out
}

// Linear multiplies the last axis of x by w[in, out].
func Linear(x, w *graph.Node) *graph.Node {
	return Dot(x, []int{x.Rank() - 1}, nil, w, []int{0}, nil)
}

func normAxes(rank int, axes []int) []int {
	out := make([]int, len(axes))
	for i, a := range axes {
		if a < 0 {
			a += rank
		}
		out[i] = a
	}
	return out
}

// installFastDotGradient swaps the registered DotGeneral VJP once per process.
// DotGenerals not built through Dot keep the stock gradient.
func installFastDotGradient() {
	installOnce.Do(func() {
		stockDotVJP = graph.VJPRegistration[graph.NodeTypeDotGeneral]
		graph.VJPRegistration[graph.NodeTypeDotGeneral] = fastDotVJP
	})
}

func fastDotVJP(node *graph.Node, vjpOutputs []*graph.Node, outputShape shapes.Shape) []*graph.Node {
	spec, ok := dotSpecs.Load(node)
	if !ok {
		return stockDotVJP(node, vjpOutputs, outputShape)
	}
	ax := spec.(dotAxes)
	v := vjpOutputs[0]
	lhs, rhs := node.Inputs()[0], node.Inputs()[1]
	return []*graph.Node{
		operandGradient(v, lhs, ax.lhsContracting, ax.lhsBatch, rhs, ax.rhsContracting, ax.rhsBatch, true),
		operandGradient(v, rhs, ax.rhsContracting, ax.rhsBatch, lhs, ax.lhsContracting, ax.lhsBatch, false),
	}
}

// crossAxes are the axes of an operand that are neither contracted nor batch,
// in increasing order: the order in which they appear in DotGeneral's output.
func crossAxes(rank int, contracting, batch []int) []int {
	var out []int
	for a := 0; a < rank; a++ {
		if !slices.Contains(contracting, a) && !slices.Contains(batch, a) {
			out = append(out, a)
		}
	}
	return out
}

// operandGradient computes d(out)/d(this) contracted with v. DotGeneral's output
// is laid out [batch..., lhs cross..., rhs cross...]; contracting v's "other"
// cross axes with the other operand's cross axes gives
// [batch..., this cross..., other's contracted axes (in axis order)], which a
// transpose puts back into this operand's axis order.
func operandGradient(v, this *graph.Node, thisContracting, thisBatch []int,
	other *graph.Node, otherContracting, otherBatch []int, thisIsLHS bool) *graph.Node {
	nb := len(thisBatch)
	thisCross := crossAxes(this.Rank(), thisContracting, thisBatch)
	otherCross := crossAxes(other.Rank(), otherContracting, otherBatch)

	vBatch := make([]int, nb)
	for i := range vBatch {
		vBatch[i] = i
	}
	otherCrossStart := nb + len(thisCross)
	if !thisIsLHS {
		otherCrossStart = nb
	}
	vContracting := make([]int, len(otherCross))
	for i := range vContracting {
		vContracting[i] = otherCrossStart + i
	}
	g := graph.DotGeneral(v, vContracting, vBatch, other, otherCross, otherBatch)

	// Result axes: [0,nb) batch, then thisCross, then other's remaining axes,
	// which are otherContracting sorted by axis.
	perm := make([]int, this.Rank())
	for i, a := range thisBatch {
		perm[a] = i
	}
	for j, a := range thisCross {
		perm[a] = nb + j
	}
	sortedOther := slices.Clone(otherContracting)
	slices.Sort(sortedOther)
	for k, oa := range sortedOther {
		idx := slices.Index(otherContracting, oa)
		perm[thisContracting[idx]] = nb + len(thisCross) + k
	}
	identity := true
	for i, p := range perm {
		if i != p {
			identity = false
			break
		}
	}
	if identity {
		return g
	}
	return graph.TransposeAllAxes(g, perm...)
}
