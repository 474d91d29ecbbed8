package trainloop

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBatcherCoversEveryRowAndGroupsLengths(t *testing.T) {
	lengths := make([]int, 100)
	for i := range lengths {
		lengths[i] = (i * 37) % 50
	}
	b := NewBatcher(rand.NewPCG(1, 2), lengths, 8)
	seen := map[int]int{}
	spread := 0
	for k := 0; k < 13; k++ { // one epoch: 100 rows padded to 104
		batch := b.Next()
		require.Len(t, batch, 8)
		lo, hi := 1<<30, 0
		for _, i := range batch {
			seen[i]++
			lo, hi = min(lo, lengths[i]), max(hi, lengths[i])
		}
		spread += hi - lo
	}
	assert.Len(t, seen, 100, "every row appears in an epoch")
	assert.Less(t, spread/13, 25, "rows of a batch have similar lengths")

	again := NewBatcher(rand.NewPCG(1, 2), lengths, 8)
	b2 := NewBatcher(rand.NewPCG(1, 2), lengths, 8)
	for k := 0; k < 30; k++ {
		assert.Equal(t, again.Next(), b2.Next(), "the same seed gives the same batches")
	}
}

func TestBatcherStateResumesExactly(t *testing.T) {
	lengths := make([]int, 30)
	for i := range lengths {
		lengths[i] = i % 7
	}
	ref := NewBatcher(rand.NewPCG(3, 4), lengths, 4)
	b := NewBatcher(rand.NewPCG(3, 4), lengths, 4)
	for range 11 { // into the second epoch (8 batches each)
		ref.Next()
		b.Next()
	}
	st, err := b.State()
	require.NoError(t, err)
	resumed := NewBatcher(rand.NewPCG(9, 9), lengths, 4) // another stream, overwritten by the state
	require.NoError(t, resumed.Restore(st))
	for k := range 20 {
		assert.Equal(t, ref.Next(), resumed.Next(), "batch %d after the restore", k)
	}
	require.Error(t, resumed.Restore(BatcherState{RNG: st.RNG, Queue: [][]int{{0, 1, 2, 99}}}), "rows outside the data are rejected")
}
