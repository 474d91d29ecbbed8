package fastgo

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestExpAndLogisticMatchSimplego: fastgo's own Exp and Logistic give
// simplego's bits on values across their range (both signs, underflow and
// overflow, infinities, zeros of both signs) on a size split among
// workers; small ones stay simplego's.
func TestExpAndLogisticMatchSimplego(t *testing.T) {
	fast, stock := newBackends(t)
	r := rand.New(rand.NewPCG(4, 4))
	in := shapes.Make(dtypes.Float32, 3, 40000)
	x := make([]float32, in.Size())
	for i := range x {
		x[i] = float32(r.NormFloat64() * 30)
	}
	copy(x, []float32{0, float32(math.Copysign(0, -1)), 88.7, 89, -103, -104, 1e-30, -1e-30,
		float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN())})
	for _, op := range []struct {
		name string
		op   func(b backends.Builder, x backends.Op) (backends.Op, error)
	}{
		{"Exp", func(b backends.Builder, x backends.Op) (backends.Op, error) { return b.Exp(x) }},
		{"Logistic", func(b backends.Builder, x backends.Op) (backends.Op, error) { return b.Logistic(x) }},
	} {
		for _, shape := range []shapes.Shape{in, shapes.Make(dtypes.Float32, 100)} {
			build := func(b backends.Builder) []backends.Op {
				p := must(b.Parameter("x", shape, nil))
				return []backends.Op{must(b.Neg(must(op.op(b, must(b.Neg(p))))))}
			}
			xs := x[:shape.Size()]
			want, got := runBuilt(t, stock, shape, xs, build), runBuilt(t, fast, shape, xs, build)
			for i := range want {
				require.Equal(t, math.Float32bits(want[i]), math.Float32bits(got[i]), "%s of %g: %g, want %g", op.name, -xs[i], got[i], want[i])
			}
			wantGo := 0
			if shape.Size() >= minGoUnary {
				wantGo = 1
			}
			assert.Equal(t, wantGo, compile(t, fast, build).Stats().Elementwise, "%s %s", op.name, shape)
		}
	}
}
