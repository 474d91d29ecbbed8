package rng

import (
	"hash/fnv"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestStreamsAreNamed: a stream is PCG seeded with the run's seed and the
// FNV-1a hash of "stage/index" (the derivation every recorded run used), so
// the same name gives the same numbers and another name others.
func TestStreamsAreNamed(t *testing.T) {
	h := fnv.New64a()
	h.Write([]byte("sft/0"))
	want := rand.New(rand.NewPCG(7, h.Sum64())).Uint64()
	assert.Equal(t, want, New(7, "sft", 0).Uint64())
	assert.Equal(t, New(7, "rollout/3", 5).Uint64(), Row(7, 3, 5).Uint64())
	assert.NotEqual(t, New(7, "sft", 0).Uint64(), New(7, "sft", 1).Uint64())
	assert.NotEqual(t, New(7, "sft", 0).Uint64(), New(8, "sft", 0).Uint64())
}
