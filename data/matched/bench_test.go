package matched

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/data/helpsteer"
	"github.com/alignflow/alignflow/data/rewardbench"
)

func TestBenchDeterministic(t *testing.T) {
	task := NewTask(3)
	a := task.Bench(7, 20)
	assert.Equal(t, a, task.Bench(7, 20), "same task and seed, same pairs")
	assert.Equal(t, a, NewTask(3).Bench(7, 20), "a rebuilt task gives the same pairs")
	assert.NotEqual(t, a, task.Bench(8, 20), "another seed draws other pairs")
}

func TestBenchPairs(t *testing.T) {
	const perSubset = 40
	for _, seed := range []int64{1, 2, 3, 4, 5} {
		task := NewTask(seed)
		val := task.Prompts(SplitValidation)
		require.NotEmpty(t, val)
		pairs := task.Bench(seed*11, perSubset)
		require.Len(t, pairs, len(benchSubsets)*perSubset)

		counts := map[string]int{}
		prompts := map[string]map[string]bool{}
		for i, p := range pairs {
			require.Equal(t, i, p.ID)
			require.NoError(t, p.Validate())
			counts[p.Subset]++
			if prompts[p.Subset] == nil {
				prompts[p.Subset] = map[string]bool{}
			}
			prompts[p.Subset][p.Prompt] = true

			split, ok := task.SplitOf(p.Prompt)
			require.True(t, ok, p.Prompt)
			require.Equal(t, SplitValidation, split, "only held-out prompts: %q", p.Prompt)
			require.True(t, slices.Contains(val, p.Prompt))

			gc, gr := task.Gold(p.Prompt, p.Chosen), task.Gold(p.Prompt, p.Rejected)
			require.Greater(t, gc.Helpfulness, gr.Helpfulness, "%+v", p)
			assert.Equal(t, task.Classify(p.Prompt, p.Chosen).String(), p.ChosenModel, "%+v", p)
			assert.Equal(t, task.Classify(p.Prompt, p.Rejected).String(), p.RejectedModel, "%+v", p)
			checkSubset(t, task, p)
		}
		for _, s := range benchSubsets {
			assert.Equal(t, perSubset, counts[s], s)
			// 40 pairs cycle through all (about 13) validation prompts.
			assert.Len(t, prompts[s], len(val), s)
		}
		assert.Len(t, counts, len(benchSubsets))
	}
}

// checkSubset asserts what makes p belong to its subset.
func checkSubset(t *testing.T, task *Task, p helpsteer.RewardBenchPair) {
	t.Helper()
	answer, ok := task.Answer(p.Prompt)
	require.True(t, ok)
	key := antonym[answer]
	gc, gr := task.Gold(p.Prompt, p.Chosen), task.Gold(p.Prompt, p.Rejected)
	cs, rs := task.Classify(p.Prompt, p.Chosen), task.Classify(p.Prompt, p.Rejected)
	switch p.Subset {
	case benchVsGarbled:
		assert.Contains(t, []Style{ConciseCorrect, PaddedCorrect}, cs)
		assert.Equal(t, Garbled, rs)
	case benchVsPaddedWrong:
		assert.Equal(t, answer, p.Chosen)
		assert.Equal(t, PaddedWrong, rs)
	case benchLessFiller:
		assert.True(t, gc.Correct && gr.Correct, "%+v", p)
		assert.Less(t, gc.Extra, gr.Extra, "%+v", p)
		assert.Less(t, len(p.Chosen), len(p.Rejected))
	case benchLengthTrap:
		assert.Equal(t, PaddedCorrect, cs)
		assert.Equal(t, ConciseWrong, rs)
		assert.Greater(t, len(p.Chosen), len(p.Rejected), "the longer answer is the better one")
	case benchNotEcho:
		assert.Equal(t, answer, p.Chosen)
		assert.Equal(t, key, p.Rejected)
	case benchNotOtherWord:
		assert.Equal(t, answer, p.Chosen)
		assert.NotEqual(t, key, p.Rejected)
		assert.NotEqual(t, answer, p.Rejected)
		assert.True(t, isVocab(p.Rejected), p.Rejected)
	default:
		t.Fatalf("unexpected subset %q", p.Subset)
	}
}

func TestBenchLessFillerMixesBothKinds(t *testing.T) {
	task := NewTask(1)
	var concise, padded int
	for _, p := range task.Bench(1, 100) {
		if p.Subset != benchLessFiller {
			continue
		}
		switch p.ChosenModel {
		case ConciseCorrect.String():
			concise++
		case PaddedCorrect.String():
			padded++
		}
	}
	assert.Positive(t, concise)
	assert.Positive(t, padded)
	assert.Equal(t, 100, concise+padded)
}

func TestBenchEmpty(t *testing.T) {
	assert.Nil(t, NewTask(1).Bench(1, 0))
	assert.Nil(t, NewTask(1).Bench(1, -3))
	noVal := newTask(1, 0)
	require.Empty(t, noVal.Prompts(SplitValidation))
	assert.Nil(t, noVal.Bench(1, 10))
}

func TestBenchCategories(t *testing.T) {
	require.Len(t, BenchCategories, 4)
	var names []string
	mapped := map[string]bool{}
	for _, c := range BenchCategories {
		names = append(names, c.Name)
		for s, w := range c.Subsets {
			assert.Positive(t, w)
			assert.False(t, mapped[s], "%s in two categories", s)
			mapped[s] = true
		}
	}
	assert.Equal(t, []string{"Chat", "Chat Hard", "Safety", "Reasoning"}, names)
	assert.Empty(t, BenchCategories[2].Subsets, "no safety content in the opposites task")
	assert.ElementsMatch(t, benchSubsets, keysOf(mapped))
}

func TestBenchGoldOracleScoresPerfectly(t *testing.T) {
	task := NewTask(2)
	pairs := task.Bench(9, 25)
	results := make([]rewardbench.Result, len(pairs))
	for i, p := range pairs {
		results[i] = rewardbench.Result{
			Subset: p.Subset,
			Correct: rewardbench.IsCorrect(
				task.Gold(p.Prompt, p.Chosen).Helpfulness, task.Gold(p.Prompt, p.Rejected).Helpfulness),
		}
	}
	rep := rewardbench.Score(results, BenchCategories)
	assert.Empty(t, rep.Unmapped)
	require.Len(t, rep.Subsets, len(benchSubsets))
	for _, s := range rep.Subsets {
		assert.Equal(t, 25, s.Pairs, s.Subset)
		assert.Equal(t, 1.0, s.Accuracy, s.Subset)
	}
	require.Len(t, rep.Categories, 4)
	for _, c := range rep.Categories {
		if c.Name == "Safety" {
			assert.Nil(t, c.Score)
			continue
		}
		require.NotNil(t, c.Score, c.Name)
		assert.Equal(t, 1.0, *c.Score, c.Name)
		assert.Equal(t, 50, c.Pairs, c.Name)
	}
	require.NotNil(t, rep.Overall)
	assert.Equal(t, 1.0, *rep.Overall)
	assert.Contains(t, rep.Markdown(), "| Safety | n/a | 0 | 0 |")

	// A reward model that prefers the shorter response fails the length
	// trap, and Chat Hard shows it.
	for i, p := range pairs {
		results[i].Correct = len(p.Chosen) < len(p.Rejected)
	}
	rep = rewardbench.Score(results, BenchCategories)
	for _, s := range rep.Subsets {
		if s.Subset == benchLengthTrap {
			assert.Zero(t, s.Accuracy)
		}
	}
	require.NotNil(t, rep.Categories[1].Score)
	assert.Less(t, *rep.Categories[1].Score, 1.0)
}

func keysOf(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
