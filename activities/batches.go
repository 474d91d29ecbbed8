package activities

import (
	"math/rand/v2"
	"sort"
)

// batcher yields training batches (row indices) epoch after epoch. Each epoch
// is shuffled, then rows are sorted by length within windows of eight batches
// and the batches shuffled again: batches hold sequences of similar length,
// so padding (which the pure-Go backend pays for in full) stays small, while
// the order stays random and reproducible from the stage's seed.
type batcher struct {
	rng     *rand.Rand
	lengths []int
	size    int
	queue   [][]int
}

func newBatcher(rng *rand.Rand, lengths []int, size int) *batcher {
	return &batcher{rng: rng, lengths: lengths, size: size}
}

func (b *batcher) next() []int {
	if len(b.queue) == 0 {
		b.queue = b.epoch()
	}
	out := b.queue[0]
	b.queue = b.queue[1:]
	return out
}

func (b *batcher) epoch() [][]int {
	perm := b.rng.Perm(len(b.lengths))
	for len(perm)%b.size != 0 { // pad the last batch with rows from the start
		perm = append(perm, perm[len(perm)%len(b.lengths)])
	}
	window := 8 * b.size
	for start := 0; start < len(perm); start += window {
		w := perm[start:min(start+window, len(perm))]
		sort.SliceStable(w, func(i, j int) bool { return b.lengths[w[i]] < b.lengths[w[j]] })
	}
	var batches [][]int
	for start := 0; start < len(perm); start += b.size {
		batches = append(batches, perm[start:start+b.size])
	}
	b.rng.Shuffle(len(batches), func(i, j int) { batches[i], batches[j] = batches[j], batches[i] })
	return batches
}
