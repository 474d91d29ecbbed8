package optim

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"
)

// adamwStep is one AdamW step's scalars, as float32 values rounded the way
// the graph form of the update rounded them: hyperparameters converted from
// float64 (1-beta converted after the float64 subtraction, as
// graph.MulScalar(x, 1-beta) did), the learning rate and the bias
// corrections computed in float64 and then converted, the clipping scale as
// the graph computed it.
type adamwStep struct {
	beta1, oneMinusBeta1 float32
	beta2, oneMinusBeta2 float32
	eps, weightDecay     float32
	lr, c1, c2, scale    float32
}

// newAdamWStep is the scalars of step (1-based) at rate lr with the
// gradients scaled by scale.
func newAdamWStep(opt AdamW, step int64, lr float64, scale float32) adamwStep {
	return adamwStep{
		beta1: float32(opt.Beta1), oneMinusBeta1: float32(1 - opt.Beta1),
		beta2: float32(opt.Beta2), oneMinusBeta2: float32(1 - opt.Beta2),
		eps: float32(opt.Eps), weightDecay: float32(opt.WeightDecay),
		lr:    float32(lr),
		c1:    float32(1 - math.Pow(opt.Beta1, float64(step))),
		c2:    float32(1 - math.Pow(opt.Beta2, float64(step))),
		scale: scale,
	}
}

// apply updates the parameters p and moments m, v in place from the
// gradient g, element by element, with decoupled weight decay when decay:
//
//	g' = g*scale
//	m  = m*beta1 + g'*(1-beta1)
//	v  = v*beta2 + g'^2*(1-beta2)
//	u  = (m/c1) / (sqrt(v/c2) + eps)  [+ p*weightDecay]
//	p  = p - lr*u
//
// Every operation is a float32 operation rounded on its own, as the graph
// form computed them one op at a time: each product sits in an explicit
// float32 conversion, which the Go spec says rounds and so keeps the
// compiler from fusing it with the addition that follows into an FMA (which
// Go may do on arm64, ppc64le, s390x and riscv64, and which would give
// those workers other bits than amd64's). The square root is computed in
// float64 and rounded, as the pure-Go backend computes it, which is the
// correctly rounded float32 square root. Elements are independent, so any
// split of the slices among goroutines gives the same bits.
func (a *adamwStep) apply(p, m, v, g []float32, decay bool) {
	n := len(p)
	m, v, g = m[:n], v[:n], g[:n]
	for i := range n {
		gs := float32(g[i] * a.scale)
		mi := float32(m[i]*a.beta1) + float32(gs*a.oneMinusBeta1)
		vi := float32(v[i]*a.beta2) + float32(float32(gs*gs)*a.oneMinusBeta2)
		u := (mi / a.c1) / (float32(math.Sqrt(float64(vi/a.c2))) + a.eps)
		if decay {
			u += float32(p[i] * a.weightDecay)
		}
		p[i] -= float32(a.lr * u)
		m[i], v[i] = mi, vi
	}
}

// applyChunk is the number of elements one goroutine updates at a time:
// large enough that handing out chunks costs nothing next to the update,
// small enough to balance a tensor over the cores.
const applyChunk = 1 << 15

// applyParallel is apply over chunks of the slices on GOMAXPROCS
// goroutines; a tensor of one chunk or less is updated on the caller's.
func (a *adamwStep) applyParallel(p, m, v, g []float32, decay bool) {
	n := len(p)
	chunks := (n + applyChunk - 1) / applyChunk
	if chunks <= 1 {
		a.apply(p, m, v, g, decay)
		return
	}
	parallel(chunks, func(c int) {
		lo, hi := c*applyChunk, min(n, (c+1)*applyChunk)
		a.apply(p[lo:hi], m[lo:hi], v[lo:hi], g[lo:hi], decay)
	})
}

// parallel calls fn(i) for every i < n on up to GOMAXPROCS goroutines, each
// taking the next i as it finishes one; the calls must be independent of
// one another, so which goroutine makes them changes no result.
func parallel(n int, fn func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				fn(i)
			}
		})
	}
	wg.Wait()
}
