package optim

import (
	"errors"
	"math"

	"github.com/gomlx/gomlx/pkg/core/tensors"
)

// clipping returns the gradients' global norm and the scale AdamW applies
// to them: min(1, clipNorm / (norm + 1e-6)), or 1 when clipNorm is 0.
//
// It computes them in float32 exactly as the graph form did, which the
// pure-Go backend evaluated one op at a time (TestSessionTrainsAsTheGraphTrainer
// compares with it bit for bit): each tensor's squares g*g, each rounded,
// summed from 0 in the tensor's flat order; those sums added from 0 in the
// order of the gradients; the square root in float64, rounded; then the
// scale. Each tensor's sum is one chain, computed by one goroutine, so
// spreading the tensors over the cores changes no bit. As graph ops the
// squares were a tensor the size of the parameters and the sums a pass
// through the backend's generic reduction iterator.
func clipping(clipNorm float64, grads []*tensors.Tensor) (norm, scale float32, err error) {
	sums := make([]float32, len(grads))
	errs := make([]error, len(grads))
	parallel(len(grads), func(i int) {
		errs[i] = tensors.ConstFlatData(grads[i], func(g []float32) { sums[i] = sumOfSquares(g) })
	})
	if err := errors.Join(errs...); err != nil {
		return 0, 0, err
	}
	var sq float32
	for _, s := range sums {
		sq += s
	}
	norm = float32(math.Sqrt(float64(sq)))
	scale = 1
	if clipNorm > 0 {
		scale = min(scale, float32(clipNorm)/(norm+float32(1e-6)))
	}
	return norm, scale, nil
}

// sumOfSquares is sum(g[i]*g[i]) from 0 in order, each square rounded to
// float32 on its own (the explicit conversion keeps a compiler from fusing
// it into an FMA with the addition, as Go may on arm64).
func sumOfSquares(g []float32) float32 {
	var s float32
	for _, v := range g {
		s += float32(v * v)
	}
	return s
}
