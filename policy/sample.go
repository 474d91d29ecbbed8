package policy

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
)

// sampleToken draws a token from logits with temperature and nucleus (top-p)
// sampling; temperature 0 takes the most likely token. probs is scratch space
// of the vocabulary's size.
func sampleToken(logits []float32, probs []float64, opts SampleOptions, rng *rand.Rand) int32 {
	best := 0
	for i, l := range logits {
		if l > logits[best] {
			best = i
		}
	}
	if opts.Temperature <= 0 {
		return int32(best)
	}
	maxL := float64(logits[best])
	sum := 0.0
	for i, l := range logits {
		probs[i] = math.Exp((float64(l) - maxL) / opts.Temperature)
		sum += probs[i]
	}
	topP := opts.TopP
	if topP <= 0 || topP > 1 {
		topP = 1
	}
	// Most likely first, ties by id: reproducible sampling. Sorting (prob,
	// id) pairs gives the order sort.SliceStable gave over ids in a third of
	// its time (BenchmarkSampleToken), and sampling runs once per token.
	order := make([]candidate, len(logits))
	for i := range order {
		order[i] = candidate{probs[i], int32(i)}
	}
	slices.SortFunc(order, func(a, b candidate) int {
		if c := cmp.Compare(b.p, a.p); c != 0 {
			return c
		}
		return int(a.id - b.id)
	})
	kept, mass := 0, 0.0
	for _, c := range order {
		kept++
		mass += c.p / sum
		if mass >= topP {
			break
		}
	}
	u := rng.Float64() * mass * sum
	acc := 0.0
	for _, c := range order[:kept] {
		acc += c.p
		if u < acc {
			return c.id
		}
	}
	return order[kept-1].id
}

type candidate struct {
	p  float64
	id int32
}

// logSoftmaxAt returns log softmax(logits)[id].
func logSoftmaxAt(logits []float32, id int32) float32 {
	maxL := logits[0]
	for _, l := range logits {
		maxL = max(maxL, l)
	}
	sum := 0.0
	for _, l := range logits {
		sum += math.Exp(float64(l - maxL))
	}
	return float32(float64(logits[id]-maxL) - math.Log(sum))
}
