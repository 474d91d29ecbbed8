package dataset

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/data/helpsteer"
	"github.com/alignflow/alignflow/data/matched"
	"github.com/alignflow/alignflow/model/lm"
	"github.com/alignflow/alignflow/pipeline"
)

// With the bundled byte codec a prompt p reads as BOS, p's bytes and "\n"
// (len(p)+2 ids) and a response r as r's bytes and EOS (len(r)+1), so what
// fits a window of 20 can be counted by hand.
const window = 20

func pref(split, prompt, r1, r2 string, strength int) helpsteer.Preference {
	return helpsteer.Preference{Split: split, Prompt: prompt, Response1: r1, Response2: r2, PreferenceStrength: strength}
}

func TestPairsFitTheWindow(t *testing.T) {
	ds := New(nil, []helpsteer.Preference{
		pref("train", "hot?", "cold", "warm", 2),                 // 6 + 5: whole
		pref("train", "tie?", "a", "b", 0),                       // a tie: never a pair
		pref("train", "long?", "a", strings.Repeat("x", 19), -1), // 20 ids alone: cannot fit whole
		pref("train", strings.Repeat("p", 16), "no", "yes", 3),   // 18 + 4 > 20: the prompt loses its start
		pref("validation", "up?", "down", "left", 1),             // the other split
		pref("", "dry?", "wet", "moist", -3),                     // no split: training
	}, nil, lm.Bundled(), window)

	pairs, dropped, cut := ds.Pairs(helpsteer.SplitTrain)
	require.Len(t, pairs, 3)
	assert.Equal(t, 1, dropped, "the pair whose response cannot fit whole")
	assert.Equal(t, 1, cut, "the pair kept with the end of its prompt")
	assert.Equal(t, 2.0, pairs[0].Magnitude)
	assert.Equal(t, "warm", string(bytesOf(pairs[0].Chosen[6:10])), "a positive strength prefers response_2")
	for _, p := range pairs {
		assert.LessOrEqual(t, len(p.Chosen), window)
		assert.LessOrEqual(t, len(p.Rejected), window)
	}
	held, _, _ := ds.Pairs(helpsteer.SplitValidation)
	assert.Len(t, held, 1)
	assert.Equal(t, 1, ds.Ties(helpsteer.SplitTrain))
	assert.Equal(t, 0, ds.Ties(helpsteer.SplitValidation))
}

func bytesOf(ids []int32) []byte {
	out := make([]byte, len(ids))
	for i, id := range ids {
		out[i] = byte(id)
	}
	return out
}

func TestRatedAndSFTKeepWholeResponses(t *testing.T) {
	ratings := []helpsteer.Rating{
		{Prompt: "hot?", Response: "cold", Helpfulness: 4, Verbosity: 1, Split: "train"},
		{Prompt: "hot?", Response: strings.Repeat("x", 15), Helpfulness: 1, Split: "train"}, // 6 + 16 > 20
		{Prompt: strings.Repeat("p", 14), Response: "a", Split: "train"},                    // 16 ids: no room left
		{Prompt: "up?", Response: "down", Split: "validation"},
	}
	ds := New(ratings, nil, nil, lm.Bundled(), window)
	rated := ds.Rated(helpsteer.SplitTrain)
	require.Len(t, rated, 2, "the long response is left out: its EOS would be cut")
	assert.Equal(t, [5]float32{4, 0, 0, 0, 1}, rated[0].Ratings)
	assert.Equal(t, [5]bool{true, true, true, true, true}, rated[0].Present)

	prompts, responses, err := ds.SFT()
	require.NoError(t, err)
	require.Len(t, prompts, 1, "only the first fits the window whole and leaves room after its prompt")
	assert.Equal(t, "cold", string(bytesOf(responses[0][:4])))

	_, _, err = New(ratings[1:3], nil, nil, lm.Bundled(), window).SFT()
	require.True(t, IsInvalid(err), "%v", err)
	assert.ErrorContains(t, err, "no training ratings fit model.max_len 20")
}

func TestPromptsOfASplit(t *testing.T) {
	ds := New([]helpsteer.Rating{{Prompt: "b?", Split: "train"}, {Prompt: "z?", Split: "validation"}},
		[]helpsteer.Preference{pref("train", "c?", "x", "y", 1), pref("train", "b?", "x", "y", 1), pref("validation", "a?", "x", "y", 1)},
		nil, lm.Bundled(), window)
	assert.Equal(t, []string{"b?", "c?"}, ds.Prompts(helpsteer.SplitTrain), "distinct and sorted")
	assert.Equal(t, []string{"a?", "z?"}, ds.Prompts(helpsteer.SplitValidation))

	got, err := ds.EvalPrompts(1)
	require.NoError(t, err)
	assert.Equal(t, []string{"a?"}, got, "held-out prompts first")
	trainOnly := New(nil, []helpsteer.Preference{pref("train", "c?", "x", "y", 1)}, nil, lm.Bundled(), window)
	got, err = trainOnly.EvalPrompts(5)
	require.NoError(t, err)
	assert.Equal(t, []string{"c?"}, got, "the training split when there is no held-out one")
	_, err = New(nil, []helpsteer.Preference{pref("train", strings.Repeat("p", 30), "x", "y", 1)}, nil, lm.Bundled(), window).EvalPrompts(5)
	assert.True(t, IsInvalid(err))
}

// TestIterationPromptsWalkOneShuffle: position p takes the slice
// [p, p+n) of one seeded permutation of the training prompts,
// wrapping around, so consecutive iterations see each prompt once before
// any repeats and a resumed run sees the same prompts.
func TestIterationPromptsWalkOneShuffle(t *testing.T) {
	var prefs []helpsteer.Preference
	for _, p := range []string{"a?", "b?", "c?", "d?", "e?"} {
		prefs = append(prefs, pref("train", p, "x", "y", 1))
	}
	ds := New(nil, prefs, nil, lm.Bundled(), window)
	var walk []string
	for it := range 5 {
		got, err := ds.IterationPrompts(7, 2*it, 2)
		require.NoError(t, err)
		require.Len(t, got, 2)
		walk = append(walk, got...)
	}
	assert.ElementsMatch(t, walk[:5], []string{"a?", "b?", "c?", "d?", "e?"}, "the first five cover every prompt once")
	assert.Equal(t, walk[:5], walk[5:], "then the same order again")
	again, err := ds.IterationPrompts(7, 6, 2)
	require.NoError(t, err)
	assert.Equal(t, walk[6:8], again, "the same position, the same prompts")
	shifted, err := ds.IterationPrompts(7, 3, 2)
	require.NoError(t, err)
	assert.Equal(t, walk[3:5], shifted, "a position between slices")
	other, err := ds.IterationPrompts(8, 0, 5)
	require.NoError(t, err)
	assert.NotEqual(t, walk[:5], other, "another seed, another order")
}

func TestCountReportsTheData(t *testing.T) {
	ds := New([]helpsteer.Rating{{Prompt: "hot?", Response: "cold", Split: "train"}}, []helpsteer.Preference{
		pref("train", "hot?", "cold", "warm", 2),
		pref("train", "tie?", "a", "b", 0),
		pref("train", "long?", "a", strings.Repeat("x", 19), -1),
		pref("validation", "up?", "down", "left", 1),
		pref("validation", "on?", "off", "of", 0),
	}, nil, lm.Bundled(), window)
	var d pipeline.Data
	require.NoError(t, ds.Count(&d))
	assert.Equal(t, pipeline.Data{RatingRows: 1, PreferenceRows: 5, TrainPairs: 1, ValidationPairs: 1, TiesExcluded: 2,
		DroppedTrainPairs: 1, TrainPrompts: 3, ValidationPrompts: 2}, d)

	noHeld := New(nil, []helpsteer.Preference{pref("train", "hot?", "cold", "warm", 2), pref("validation", "x?", "a", strings.Repeat("x", 19), 1)},
		nil, lm.Bundled(), window)
	err := noHeld.Count(&d)
	require.True(t, IsInvalid(err))
	assert.ErrorContains(t, err, `no non-tie validation pairs (rows with split "val" or "validation"); 1 were left out because a response does not fit model.max_len 20 whole`)
}

// TestGoldOfGeneratedData: generated data scores responses with its gold
// rubric; a user's data has none.
func TestGoldOfGeneratedData(t *testing.T) {
	spec := config.Default()
	spec.Data.Generate.Prompts = 20
	gen, task := matched.Generate(GeneratorOptions(spec))
	ds := New(gen.Ratings, gen.Preferences, task, lm.Bundled(), spec.Model.MaxLen)
	p := ds.Prompts(helpsteer.SplitTrain)[0]
	answer, ok := task.Answer(p)
	require.True(t, ok)
	gold := ds.Gold([]string{p, p}, [][]int32{encode(answer), encode("well, maybe " + answer + "?")})
	require.Len(t, gold, 2)
	assert.Equal(t, task.Gold(p, answer).Helpfulness, gold[0])
	assert.Greater(t, gold[0], gold[1], "the concise correct answer scores above the padded one")
	assert.Nil(t, New(gen.Ratings, gen.Preferences, nil, lm.Bundled(), spec.Model.MaxLen).Gold([]string{p}, [][]int32{encode(answer)}))
}

func encode(s string) []int32 {
	out := make([]int32, len(s))
	for i := range s {
		out[i] = int32(s[i])
	}
	return out
}

// TestGeneratorOptionsReadZeroNoiseAsNone: a spec's noise of 0 means none;
// the generator reads 0 as its default, so it gets -1.
func TestGeneratorOptionsReadZeroNoiseAsNone(t *testing.T) {
	spec := config.Default()
	spec.Data.Generate.RatingNoise, spec.Data.Generate.PreferenceNoise = 0, 0.25
	o := GeneratorOptions(spec)
	assert.Equal(t, -1.0, o.RatingNoise)
	assert.Equal(t, 0.25, o.PreferenceNoise)
	assert.Equal(t, spec.Seed, o.Seed)
}

// TestPromptsFileIsReinforcesPool: with data.prompts' rows REINFORCE walks
// them (each once, those that fit the window) instead of the training
// split, and a verifier reads their answers first; a prompt the file
// leaves unanswered falls back to the gold rubric of generated data.
func TestPromptsFileIsReinforcesPool(t *testing.T) {
	spec := config.Default()
	spec.Data.Generate.Prompts = 20
	gen, task := matched.Generate(GeneratorOptions(spec))
	ds := New(gen.Ratings, gen.Preferences, task, lm.Bundled(), spec.Model.MaxLen)
	rubric := ds.Prompts(helpsteer.SplitTrain)[0]
	ds.RL = []helpsteer.PromptRow{{Prompt: "6 x 7?", Answer: "42"}, {Prompt: "6 x 7?", Answer: "41"}, {Prompt: rubric},
		{Prompt: strings.Repeat("long ", spec.Model.MaxLen)}}
	got, err := ds.IterationPrompts(spec.Seed, 0, 4)
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"6 x 7?", rubric}, got[:2], "the two prompts that fit, each once")
	assert.Equal(t, got[:2], got[2:], "then the walk wraps around")
	a, ok := ds.Answer("6 x 7?")
	assert.True(t, ok)
	assert.Equal(t, "42", a, "the first answer given")
	a, ok = ds.Answer(rubric)
	want, _ := task.Answer(rubric)
	assert.True(t, ok)
	assert.Equal(t, want, a)
	var d pipeline.Data
	require.NoError(t, ds.Count(&d))
	assert.Equal(t, 2, d.RLPrompts)

	ds.RL = []helpsteer.PromptRow{{Prompt: strings.Repeat("long ", spec.Model.MaxLen)}}
	assert.ErrorContains(t, ds.Count(&d), "no prompt of data.prompts fits model.max_len")
}

// TestVerifyAnsweredLeavesOutTheUnanswered: of four rows, the two whose
// prompt has an answer are scored (one right, one wrong: 0.5, one prompt);
// with none answered there is no score.
func TestVerifyAnsweredLeavesOutTheUnanswered(t *testing.T) {
	ds := New(nil, nil, nil, lm.Bundled(), window)
	ds.RL = []helpsteer.PromptRow{{Prompt: "6 x 7?", Answer: "42"}, {Prompt: "say hi"}}
	mean, answered, ok, err := ds.VerifyAnswered("numeric", []string{"6 x 7?", "6 x 7?", "say hi", "other"}, []string{"#### 42", "41", "hi", "x"})
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, 0.5, mean)
	assert.Equal(t, 1, answered)
	_, _, ok, err = ds.VerifyAnswered("numeric", []string{"say hi"}, []string{"hi"})
	require.NoError(t, err)
	assert.False(t, ok)
}
