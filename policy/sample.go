package policy

import (
	"math"
	"math/rand/v2"
	"sort"
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
	order := make([]int, len(logits))
	for i := range order {
		order[i] = i
	}
	// Stable order (probability, then id) keeps sampling reproducible.
	sort.SliceStable(order, func(a, b int) bool { return probs[order[a]] > probs[order[b]] })
	kept, mass := 0, 0.0
	for _, id := range order {
		kept++
		mass += probs[id] / sum
		if mass >= topP {
			break
		}
	}
	u := rng.Float64() * mass * sum
	acc := 0.0
	for _, id := range order[:kept] {
		acc += probs[id]
		if u < acc {
			return int32(id)
		}
	}
	return int32(order[kept-1])
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
