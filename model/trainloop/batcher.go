package trainloop

import (
	"fmt"
	"math/rand/v2"
	"sort"
)

// Batcher yields training batches (row indices) epoch after epoch. Each epoch
// is shuffled, then rows are sorted by length within windows of eight batches
// and the batches shuffled again: batches hold sequences of similar length,
// so padding (which the pure-Go backend pays for in full) stays small, while
// the order stays random and reproducible from the stage's seed.
type Batcher struct {
	src     *rand.PCG
	rng     *rand.Rand
	lengths []int
	size    int
	queue   [][]int
}

// NewBatcher batches rows of the given lengths size at a time, shuffled by
// src (whose state the batcher's State saves).
func NewBatcher(src *rand.PCG, lengths []int, size int) *Batcher {
	return &Batcher{src: src, rng: rand.New(src), lengths: lengths, size: size}
}

// BatcherState is a batcher's position in its data: the random stream and
// the batches left in the current epoch. Restoring it continues exactly
// where the checkpointed run was.
type BatcherState struct {
	RNG   []byte  `json:"rng"`
	Queue [][]int `json:"queue"`
}

// State is the batcher's position, for a checkpoint.
func (b *Batcher) State() (BatcherState, error) {
	rng, err := b.src.MarshalBinary()
	if err != nil {
		return BatcherState{}, fmt.Errorf("batcher state: %w", err)
	}
	return BatcherState{RNG: rng, Queue: b.queue}, nil
}

// Restore continues from a checkpointed position, after checking that it
// fits the batcher's rows and batch size.
func (b *Batcher) Restore(s BatcherState) error {
	if err := b.src.UnmarshalBinary(s.RNG); err != nil {
		return fmt.Errorf("batcher state: %w", err)
	}
	for _, batch := range s.Queue {
		for _, i := range batch {
			if i < 0 || i >= len(b.lengths) || len(batch) != b.size {
				return fmt.Errorf("batcher state: batch %v does not fit %d rows in batches of %d", batch, len(b.lengths), b.size)
			}
		}
	}
	b.queue = s.Queue
	return nil
}

// Next returns the next batch's row indices.
func (b *Batcher) Next() []int {
	if len(b.queue) == 0 {
		b.queue = b.epoch()
	}
	out := b.queue[0]
	b.queue = b.queue[1:]
	return out
}

func (b *Batcher) epoch() [][]int {
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
