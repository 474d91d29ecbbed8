package reinforce

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestUniformGroupsAcrossShards: a round of four groups of three rows,
// rewards written out by hand, split into shards at every pair of
// boundaries; whatever the split, the joined answer is the one read off
// the rewards: groups 0 (all 1) and 3 (all 0) are uniform, group 1 (one
// differs) and group 2 (a NaN) are not. This is DAPO's filter (a group's
// rewards' std is 0, veRL's filter_groups).
func TestUniformGroupsAcrossShards(t *testing.T) {
	const k = 3
	rewards := []float64{1, 1, 1, 0, 1, 0, 0.5, math.NaN(), 0.5, 0, 0, 0}
	want := []bool{true, false, false, true}
	for a := 0; a <= len(rewards); a++ {
		for b := a; b <= len(rewards); b++ {
			shards := []ShardGroups{GroupsOf(0, rewards[:a], k), GroupsOf(a, rewards[a:b], k), GroupsOf(b, rewards[b:], k)}
			assert.Equal(t, want, UniformGroups(4, shards), "split at %d and %d", a, b)
			for _, sh := range shards {
				assert.LessOrEqual(t, len(sh.Edges), 2, "split at %d and %d", a, b)
			}
		}
	}
	// Halves of one group that are uniform each, at different rewards, make
	// a group that is not.
	split := []ShardGroups{GroupsOf(0, []float64{2, 2}, 4), GroupsOf(2, []float64{3, 3}, 4)}
	assert.Equal(t, []bool{false}, UniformGroups(1, split))
	assert.Equal(t, ShardGroups{Edges: []GroupRange{{Group: 0, Min: 2, Max: 2}}}, split[0])
}

// TestSelectGroupsKeepsTheFirstVariedInOrder: the update trains on the
// first n groups that are not uniform, in the order drawn (round, then
// place); with too few, the first uniform ones fill the batch; the counts
// say what was left out.
func TestSelectGroupsKeepsTheFirstVariedInOrder(t *testing.T) {
	rounds := [][]bool{{true, false, true, false}, {false, true, false, false}}
	assert.Equal(t, 5, Varied(rounds))
	for _, tc := range []struct {
		name string
		n    int
		want Selection
	}{
		{"enough in the rounds", 3, Selection{Groups: []GroupID{{0, 1}, {0, 3}, {1, 0}}, Dropped: 3, Surplus: 2}},
		{"all varied ones", 5, Selection{Groups: []GroupID{{0, 1}, {0, 3}, {1, 0}, {1, 2}, {1, 3}}, Dropped: 3}},
		{"filled with uniform ones in order", 7, Selection{Groups: []GroupID{{0, 0}, {0, 1}, {0, 2}, {0, 3}, {1, 0}, {1, 2}, {1, 3}}, Dropped: 1, Filled: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, SelectGroups(rounds, tc.n))
		})
	}
	// One round and no uniform group: every group, as without dynamic sampling.
	assert.Equal(t, Selection{Groups: []GroupID{{0, 0}, {0, 1}}}, SelectGroups([][]bool{{false, false}}, 2))
}
