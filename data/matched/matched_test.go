package matched

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/data/helpsteer"
)

func TestGold(t *testing.T) {
	task := NewTask(1)
	tests := []struct {
		name, prompt, response string
		correct                bool
		extra                  int
		helpfulness            float64
		coherence              float64
	}{
		{"concise correct", "opposite of hot?", "cold", true, 0, 4, 4},
		{"padded correct", "opposite of hot?", "well, cold", true, 6, 3 + (1 - 6.0/16), 4},
		{"suffix only, capitalised", "the reverse of hot?", "Cold!!", true, 2, 3 + (1 - 2.0/16), 4},
		{"very padded correct", "antonym of up:", "down down down down down down", true, 25, 3, 4},
		{"non-vocabulary word", "antonym of hot:", "warm", false, 4, 1 - 4.0/16, 1},
		{"wrong vocabulary word", "what is not hot?", "small", false, 0, 1, 4},
		{"the key itself", "opposite of hot?", "hot", false, 0, 1, 4},
		{"first vocabulary word decides", "opposite of hot?", "hot, no cold", false, 9, 1 - 9.0/16, 4},
		{"padded wrong", "opposite of up?", "i think up ok", false, 11, 1 - 11.0/16, 4},
		{"short garbage", "opposite of hot?", "xqzvbn", false, 6, 1 - 6.0/16, 1},
		{"long garbage", "opposite of hot?", "hmm, it is qwertyui i guess", false, 27, 0, 1},
		{"punctuation only", "opposite of hot?", "!!", false, 2, 1 - 2.0/16, 1},
		{"empty", "opposite of hot?", "", false, 0, 0, 0},
		{"whitespace", "opposite of hot?", "  ", false, 0, 0, 0},
		{"not a task prompt", "what is hot?", "cold", false, 0, 1, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := task.Gold(tc.prompt, tc.response)
			assert.Equal(t, tc.correct, g.Correct)
			assert.Equal(t, tc.extra, g.Extra)
			assert.InDelta(t, tc.helpfulness, g.Helpfulness, 1e-9)
			assert.InDelta(t, g.Helpfulness, g.Attributes[0], 1e-9)
			assert.InDelta(t, tc.coherence, g.Attributes[2], 1e-9)
			if tc.response == "" || strings.TrimSpace(tc.response) == "" {
				assert.Equal(t, GoldScore{}, g)
				return
			}
			wantCorrectness := 0.0
			if tc.correct {
				wantCorrectness = 4
			}
			assert.InDelta(t, wantCorrectness, g.Attributes[1], 1e-9)
			assert.InDelta(t, 1+min(1, float64(tc.extra)/16), g.Attributes[3], 1e-9)
			assert.InDelta(t, min(4, float64(tc.extra)/6), g.Attributes[4], 1e-9)
			for _, a := range g.Attributes {
				assert.True(t, a >= 0 && a <= 4, "attribute %v in 0..4", a)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	task := NewTask(1)
	tests := []struct {
		response string
		want     Style
	}{
		{"cold", ConciseCorrect},
		{"so, cold ok", PaddedCorrect},
		{"hot", ConciseWrong},
		{"well, small!!", PaddedWrong},
		{"qwrt", Garbled},
		{"i think qwrt", Garbled},
		{"", Garbled},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, task.Classify("opposite of hot?", tc.response), "%q", tc.response)
	}
	assert.Equal(t, "padded_wrong", PaddedWrong.String())
	assert.Len(t, Styles(), len(styleMixture))
}

func TestAnswer(t *testing.T) {
	task := NewTask(3)
	for _, p := range pairs {
		for _, dir := range [][2]string{{p[0], p[1]}, {p[1], p[0]}} {
			for _, tp := range templates {
				prompt := tp.prefix + dir[0] + tp.suffix
				got, ok := task.Answer(prompt)
				require.True(t, ok, prompt)
				assert.Equal(t, dir[1], got, prompt)
				_, inSplit := task.SplitOf(prompt)
				assert.True(t, inSplit, prompt)
			}
		}
	}
	got, ok := task.Answer("  antonym of left:\n")
	assert.True(t, ok)
	assert.Equal(t, "right", got)

	for _, bad := range []string{"", "opposite of warm?", "opposite of hot", "opposite of ?", "OPPOSITE OF HOT?", "hot", "the reverse of ", "opposite of hot?!", "what is hot?"} {
		_, ok := task.Answer(bad)
		assert.False(t, ok, "%q is not a task prompt", bad)
	}
}

func TestSplit(t *testing.T) {
	task := NewTask(5)
	train, val := task.Prompts(SplitTrain), task.Prompts(SplitValidation)
	assert.Len(t, train, 51)
	assert.Len(t, val, 13)
	assert.True(t, slices.IsSorted(train) && slices.IsSorted(val))
	assert.Nil(t, task.Prompts("test"))
	for _, p := range val {
		assert.NotContains(t, train, p)
	}
	// Every key keeps at least one training template.
	trainKeys := map[string]bool{}
	for _, p := range train {
		a, ok := task.Answer(p)
		require.True(t, ok)
		trainKeys[antonym[a]] = true
	}
	assert.Len(t, trainKeys, 16)
	assert.Len(t, task.Words(), 16)

	assert.Equal(t, val, NewTask(5).Prompts(SplitValidation), "deterministic")
	assert.NotEqual(t, val, NewTask(6).Prompts(SplitValidation), "seed-dependent")
	assert.Len(t, newTask(5, 0.9).Prompts(SplitTrain), 16, "capped so each key keeps one template")
}

func TestDeterministicFiles(t *testing.T) {
	write := func(seed int64) (r, p []byte) {
		ds, _ := Generate(Options{Seed: seed, Prompts: 200})
		rp, pp, err := WriteDataset(filepath.Join(t.TempDir(), "nested", "dir"), ds)
		require.NoError(t, err)
		r, err = os.ReadFile(rp)
		require.NoError(t, err)
		p, err = os.ReadFile(pp)
		require.NoError(t, err)
		return r, p
	}
	r1, p1 := write(11)
	r2, p2 := write(11)
	r3, p3 := write(12)
	assert.Equal(t, r1, r2)
	assert.Equal(t, p1, p2)
	assert.NotEqual(t, r1, r3)
	assert.NotEqual(t, p1, p3)
}

func TestGeneratedFilesLoadStrictly(t *testing.T) {
	ds, _ := Generate(Options{Seed: 2})
	rp, pp, err := WriteDataset(t.TempDir(), ds)
	require.NoError(t, err)
	assert.Equal(t, "ratings.jsonl.gz", filepath.Base(rp))
	assert.Equal(t, "preferences.jsonl.gz", filepath.Base(pp))
	ratings, err := helpsteer.ReadRatings(rp)
	require.NoError(t, err)
	assert.Equal(t, ds.Ratings, ratings)
	prefs, err := helpsteer.ReadPreferences(pp)
	require.NoError(t, err)
	assert.Equal(t, ds.Preferences, prefs)
}

func TestGeneratedShape(t *testing.T) {
	ds, task := Generate(Options{Seed: 4})
	require.Len(t, ds.Ratings, 2*DefaultPrompts)
	require.Len(t, ds.Preferences, DefaultPrompts)

	validation, cannotJudge := 0, 0
	for i, p := range ds.Preferences {
		// Matched: the two ratings rows are the preference row's responses.
		r1, r2 := ds.Ratings[2*i], ds.Ratings[2*i+1]
		assert.Equal(t, []string{p.Prompt, p.Response1, p.Split}, []string{r1.Prompt, r1.Response, r1.Split})
		assert.Equal(t, []string{p.Prompt, p.Response2, p.Split}, []string{r2.Prompt, r2.Response, r2.Split})
		assert.NotEqual(t, p.Response1, p.Response2)

		split, ok := task.SplitOf(p.Prompt)
		require.True(t, ok)
		assert.Equal(t, split, p.Split, "instances use prompts of their own split")
		if split == SplitValidation {
			validation++
		}

		assert.LessOrEqual(t, len(p.Prompt), MaxPromptLen, p.Prompt)
		for _, r := range []string{p.Response1, p.Response2} {
			assert.LessOrEqual(t, len(r), MaxResponseLen, r)
			assert.True(t, isLowerASCII(r), "%q is lowercase printable ASCII", r)
		}
		assert.Contains(t, p.PreferenceStatement, "@Response")
		assert.Len(t, p.ThreeMostSimilarPreferences, 3)
		assert.True(t, len(p.AllPreferencesUnprocessed) >= 3 && len(p.AllPreferencesUnprocessed) <= 5)
		for _, a := range p.ThreeMostSimilarPreferences {
			assert.LessOrEqual(t, abs(a.Strength-p.PreferenceStrength), 1)
		}
		for _, a := range p.AllPreferencesUnprocessed {
			if a.Strength == helpsteer.CannotJudge {
				cannotJudge++
			}
		}
	}
	assert.InDelta(t, 0.2, float64(validation)/float64(len(ds.Preferences)), 0.02)
	assert.Greater(t, cannotJudge, 20, "-100 judgements occur occasionally")
	assert.Less(t, cannotJudge, 200)
}

func TestMixtureProportions(t *testing.T) {
	ds, task := Generate(Options{Seed: 9, Prompts: 600})
	var counts [numStyles]int
	sameStyle := 0
	for _, p := range ds.Preferences {
		s1, s2 := task.Classify(p.Prompt, p.Response1), task.Classify(p.Prompt, p.Response2)
		counts[s1]++
		counts[s2]++
		if s1 == s2 {
			sameStyle++
		}
	}
	total := float64(2 * len(ds.Preferences))
	for s, want := range styleMixture {
		assert.InDelta(t, want, float64(counts[s])/total, 0.04, "share of %v", Style(s))
	}
	assert.Less(t, float64(sameStyle)/float64(len(ds.Preferences)), 0.1, "pairs mostly contrast two styles")
}

func TestPreferencesFollowGold(t *testing.T) {
	ds, task := Generate(Options{Seed: 21})
	agree, decided := 0, 0
	for _, p := range ds.Preferences {
		d := task.Gold(p.Prompt, p.Response2).Helpfulness - task.Gold(p.Prompt, p.Response1).Helpfulness
		if p.PreferenceStrength == 0 || d == 0 {
			continue
		}
		decided++
		if (d > 0) == (p.PreferenceStrength > 0) {
			agree++
		}
	}
	require.Greater(t, decided, 400)
	assert.Greater(t, float64(agree)/float64(decided), 0.8)

	// Without noise, labels are exactly the bucketed/rounded gold values.
	clean, task := Generate(Options{Seed: 21, Prompts: 100, RatingNoise: -1, PreferenceNoise: -1})
	for i, p := range clean.Preferences {
		g1, g2 := task.Gold(p.Prompt, p.Response1), task.Gold(p.Prompt, p.Response2)
		assert.Equal(t, strengthOf(g2.Helpfulness-g1.Helpfulness), p.PreferenceStrength)
		r := clean.Ratings[2*i]
		assert.Equal(t, roundAttrs(g1.Attributes), [5]int{r.Helpfulness, r.Correctness, r.Coherence, r.Complexity, r.Verbosity})
	}
}

func TestStrengthOf(t *testing.T) {
	tests := []struct {
		d    float64
		want int
	}{
		{0, 0}, {0.24, 0}, {-0.24, 0}, {0.25, 1}, {-0.5, -1}, {0.99, 1},
		{1, 2}, {-1.5, -2}, {2, 3}, {-3.9, -3}, {10, 3},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, strengthOf(tc.d), "d=%v", tc.d)
	}
}

func roundAttrs(a [5]float64) [5]int {
	var out [5]int
	for i, v := range a {
		out[i] = clamp(int(v+0.5), 0, 4) // all gold attributes are >= 0
	}
	return out
}

func isLowerASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || (c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

func abs(v int) int { return max(v, -v) }
