package fastgo

import (
	"math"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
)

// minGoUnary is the fewest elements of a float32 Exp or Logistic fastgo
// runs itself. simplego computes each on one goroutine, with float64's
// math.Exp per element (the softmaxes' and SiLU's exponentials were about
// a quarter of a REINFORCE iteration on the bundled model); fastgo splits
// the elements among the cores, with simplego's formulas, so the bits are
// the same.
const minGoUnary = 1 << 15

// unaryCall is an elementwise float32 function run in Go.
type unaryCall struct {
	fn func(x float32) float32
}

// expOf is simplego's Exp of a float32: math.Exp in float64, rounded.
func expOf(x float32) float32 { return float32(math.Exp(float64(x))) }

// logisticOf is simplego's Logistic of a float32, in float64 and rounded:
// 1/(1+e^-x) for x >= 0, e^x/(1+e^x) below.
func logisticOf(x float32) float32 {
	if x >= 0 {
		return float32(1.0 / (1.0 + math.Exp(-float64(x))))
	}
	e := math.Exp(float64(x))
	return float32(e / (1.0 + e))
}

// Exp implements backends.Builder (unaryCall for large float32 inputs).
func (b *Builder) Exp(x backends.Op) (backends.Op, error) {
	return b.unary("Exp", x, expOf, func(sb backends.Builder, in backends.Op) (backends.Op, error) { return sb.Exp(in) })
}

// Logistic implements backends.Builder (unaryCall for large float32 inputs).
func (b *Builder) Logistic(x backends.Op) (backends.Op, error) {
	return b.unary("Logistic", x, logisticOf, func(sb backends.Builder, in backends.Op) (backends.Op, error) { return sb.Logistic(in) })
}

// unary makes a float32 op of at least minGoUnary elements a step of its
// own computing fn per element, and places any other in the current
// segment (stock).
func (b *Builder) unary(name string, x backends.Op, fn func(float32) float32, stock func(sb backends.Builder, in backends.Op) (backends.Op, error)) (backends.Op, error) {
	n, err := b.node(name, x)
	if err != nil {
		return nil, err
	}
	if n.shape.DType != dtypes.Float32 || n.shape.Size() < minGoUnary {
		return b.forward1(name, []backends.Op{n}, func(sb backends.Builder, in []backends.Op) (backends.Op, error) {
			return stock(sb, in[0])
		})
	}
	return b.addCall(&goCall{in: []*node{n}, unary: &unaryCall{fn: fn}}, n.shape), nil
}

// run writes fn of each element of in into out, in chunks split among up
// to GOMAXPROCS goroutines.
func (u *unaryCall) run(in, out []float32) {
	split(len(in), len(in), 1<<14, func(lo, hi int) { u.apply(in[lo:hi], out[lo:hi]) })
}

func (u *unaryCall) apply(in, out []float32) {
	out = out[:len(in)]
	for i, x := range in {
		out[i] = u.fn(x)
	}
}
