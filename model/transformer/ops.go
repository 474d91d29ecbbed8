package transformer

import (
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"

	"github.com/alignflow/alignflow/model/backend"
)

// The pure-Go backend runs elementwise ops between tensors of different shapes
// through a per-element index iterator that took a quarter of a train step's
// time. These helpers keep big elementwise ops on equal shapes: prefix
// broadcasts use BroadcastPrefix (a plain copy), and suffix broadcasts an outer
// product with a ones vector (a matrix product with one contracting element).

// ExpandLast repeats x [...] along a new last axis of size d: [..., d].
func ExpandLast(x *graph.Node, d int) *graph.Node {
	ones := graph.Ones(x.Graph(), shapes.Make(x.DType(), 1, d))
	return backend.Dot(graph.InsertAxes(x, -1), []int{x.Rank()}, nil, ones, []int{0}, nil)
}

// Softmax over the last axis.
func Softmax(x *graph.Node) *graph.Node {
	d := x.Shape().Dimensions[x.Rank()-1]
	m := graph.StopGradient(graph.ReduceMax(x, -1))
	e := graph.Exp(graph.Sub(x, ExpandLast(m, d)))
	return graph.Div(e, ExpandLast(graph.ReduceSum(e, -1), d))
}

// LogSoftmax over the last axis.
func LogSoftmax(x *graph.Node) *graph.Node {
	d := x.Shape().Dimensions[x.Rank()-1]
	m := graph.StopGradient(graph.ReduceMax(x, -1))
	z := graph.Sub(x, ExpandLast(m, d))
	lse := graph.Log(graph.ReduceSum(graph.Exp(z), -1))
	return graph.Sub(z, ExpandLast(lse, d))
}
