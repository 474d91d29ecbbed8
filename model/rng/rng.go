// Package rng names the random streams of a run. Every stage draws from a
// stream derived from the run's seed, the stage's name and an index (a
// rollout row, an iteration), never from shared state: whichever worker
// runs a stage, after whatever crash, and however the work is split into
// shards, the same stage sees the same numbers.
package rng

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
)

// Source is the stream of a stage of a run; its state can be saved with
// MarshalBinary for a checkpoint.
func Source(seed int64, stage string, index int) *rand.PCG {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", stage, index)
	return rand.NewPCG(uint64(seed), h.Sum64())
}

// New is a generator over Source.
func New(seed int64, stage string, index int) *rand.Rand {
	return rand.New(Source(seed, stage, index))
}

// Row is the stream of one rollout row of a REINFORCE iteration.
func Row(seed int64, iteration, row int) *rand.Rand {
	return New(seed, fmt.Sprintf("rollout/%d", iteration), row)
}
