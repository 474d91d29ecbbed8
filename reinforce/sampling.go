package reinforce

import (
	"math"
	"slices"
)

// Dynamic sampling (DAPO, Yu et al. 2025, section 3.2; veRL's
// algorithm.filter_groups): a group whose K rewards are all equal has an
// advantage of 0 under every group estimator, so it gives the update no
// signal and only dilutes it. An iteration then samples further rounds of
// prompts and trains on the first groups that are not uniform. As veRL's
// filter metric "seq_reward", the rewards compared are the task's (the
// reward model's and the verifier's, weighed), before any KL penalty.
//
// Rows are split into shards by generation batches, so a group may
// straddle two shards: each shard reports the groups it holds whole and
// uniform, and the range of rewards of the groups it holds only part of;
// UniformGroups joins them.

// GroupRange is the range of the rewards a shard holds of a group it holds
// only some samples of.
type GroupRange struct {
	Group int     `json:"group"`
	Min   float64 `json:"min"`
	Max   float64 `json:"max"`
}

// ShardGroups is what a shard's rows say of their groups' uniformity.
type ShardGroups struct {
	// Uniform are the groups the shard holds whole whose rewards are all
	// equal.
	Uniform []int `json:"uniform,omitempty"`
	// Edges are the groups the shard holds only part of (at most two).
	Edges []GroupRange `json:"edges,omitempty"`
}

// GroupsOf summarises rows [first, first+len(rewards)) of a round whose
// groups are k consecutive rows. A NaN reward makes its group not uniform.
func GroupsOf(first int, rewards []float64, k int) ShardGroups {
	var out ShardGroups
	if len(rewards) == 0 {
		return out
	}
	last := first + len(rewards)
	for g := first / k; g*k < last; g++ {
		from, to := max(g*k, first), min((g+1)*k, last)
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, x := range rewards[from-first : to-first] {
			lo, hi = min(lo, x), max(hi, x) // min and max of a NaN are NaN
		}
		switch {
		case from != g*k || to != (g+1)*k:
			out.Edges = append(out.Edges, GroupRange{Group: g, Min: lo, Max: hi})
		case lo == hi:
			out.Uniform = append(out.Uniform, g)
		}
	}
	return out
}

// UniformGroups joins the shards of a round of groups groups: whether each
// group's rewards are all equal. Groups outside [0, groups) are ignored.
func UniformGroups(groups int, shards []ShardGroups) []bool {
	out := make([]bool, groups)
	edges := map[int]GroupRange{}
	for _, sh := range shards {
		for _, g := range sh.Uniform {
			if g >= 0 && g < groups {
				out[g] = true
			}
		}
		for _, e := range sh.Edges {
			if got, seen := edges[e.Group]; seen {
				e.Min, e.Max = min(got.Min, e.Min), max(got.Max, e.Max)
			}
			edges[e.Group] = e
		}
	}
	for g, e := range edges {
		if g >= 0 && g < groups {
			out[g] = e.Min == e.Max
		}
	}
	return out
}

// GroupID names a group by its sampling round and its place in the round.
type GroupID struct {
	Round int `json:"round"`
	Group int `json:"group"`
}

// Selection is the groups an update trains on after dynamic sampling, and
// what it left out.
type Selection struct {
	Groups []GroupID // in the order drawn
	// Dropped counts the uniform groups left out; Filled the uniform groups
	// trained on because the rounds held too few others; Surplus the
	// groups that are not uniform beyond the batch, left out too.
	Dropped, Filled, Surplus int
}

// Varied counts the groups of rounds (each round's UniformGroups) that are
// not uniform: the iteration samples another round while it is below n.
func Varied(rounds [][]bool) int {
	n := 0
	for _, r := range rounds {
		for _, u := range r {
			if !u {
				n++
			}
		}
	}
	return n
}

// SelectGroups picks n groups from rounds (each round's UniformGroups):
// the first n that are not uniform in the order drawn and, when there are
// fewer, the first uniform ones to fill up the batch.
func SelectGroups(rounds [][]bool, n int) Selection {
	var s Selection
	var varied, uniform []GroupID
	for r, round := range rounds {
		for g, u := range round {
			if u {
				uniform = append(uniform, GroupID{r, g})
			} else {
				varied = append(varied, GroupID{r, g})
			}
		}
	}
	keep := min(n, len(varied))
	s.Surplus = len(varied) - keep
	s.Filled = min(n-keep, len(uniform))
	s.Dropped = len(uniform) - s.Filled
	s.Groups = append(slices.Clone(varied[:keep]), uniform[:s.Filled]...)
	slices.SortFunc(s.Groups, func(a, b GroupID) int {
		if a.Round != b.Round {
			return a.Round - b.Round
		}
		return a.Group - b.Group
	})
	return s
}
