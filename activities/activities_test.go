package activities

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/data/helpsteer"
	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/reward"
)

// TestBadDataIsNonRetryableAndNamesFileAndLine feeds malformed HelpSteer2
// files to the data stage: each fails with InvalidData (so Temporal does not
// retry it), the message names the file and line, and no artifact is stored.
func TestBadDataIsNonRetryableAndNamesFileAndLine(t *testing.T) {
	dir := t.TempDir()
	goodPrefs := filepath.Join(dir, "prefs.jsonl")
	require.NoError(t, os.WriteFile(goodPrefs, []byte(`{"split":"train","prompt":"p","response_1":"a","response_2":"b","preference_strength":1,"preference_statement":"","preference_elaboration":"","three_most_similar_preferences":[],"all_preferences_unprocessed":[]}`+"\n"), 0o644))
	cases := []struct {
		name, ratings string
		want          []string
	}{
		{"attribute out of range", `{"prompt":"p","response":"r","helpfulness":9,"correctness":1,"coherence":1,"complexity":1,"verbosity":1}`, []string{":1:", "helpfulness"}},
		{"missing field", `{"prompt":"p","response":"r","correctness":1,"coherence":1,"complexity":1,"verbosity":1}`, []string{":1:", "helpfulness"}},
		{"malformed JSON on line 2", `{"prompt":"p","response":"r","helpfulness":1,"correctness":1,"coherence":1,"complexity":1,"verbosity":1}` + "\n{oops", []string{":2:"}},
		{"empty response", `{"prompt":"p","response":"","helpfulness":1,"correctness":1,"coherence":1,"complexity":1,"verbosity":1}`, []string{":1:", "response"}},
	}
	var env testsuite.WorkflowTestSuite
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			store, err := artifact.Open(root)
			require.NoError(t, err)
			ratings := filepath.Join(dir, tc.name+".jsonl")
			require.NoError(t, os.WriteFile(ratings, []byte(tc.ratings+"\n"), 0o644))
			spec := config.Default()
			spec.Data.Ratings, spec.Data.Preferences = ratings, goodPrefs
			ae := env.NewTestActivityEnvironment()
			a := New(store)
			a.DataRoots = config.AnyFile()
			ae.RegisterActivity(a)
			_, err = ae.ExecuteActivity(a.PrepareData, pipeline.PrepareDataInput{RunID: "bad", Spec: spec})
			require.Error(t, err)
			var app *temporal.ApplicationError
			require.True(t, errors.As(err, &app), "%v", err)
			assert.Equal(t, pipeline.ErrInvalidData, app.Type())
			assert.True(t, app.NonRetryable())
			assert.Contains(t, err.Error(), ratings)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
			_, statErr := os.Stat(filepath.Join(root, "runs", "bad", "data"))
			assert.True(t, os.IsNotExist(statErr), "no data artifact is stored for bad input")
		})
	}
}

func TestClassifyKeepsTypesThroughWrapping(t *testing.T) {
	cases := []struct {
		name         string
		err          error
		wantType     string
		nonRetryable bool
	}{
		{"diverged", fmt.Errorf("sft step 3: %w", &optim.NonFiniteError{Step: 3, Loss: math.NaN()}), pipeline.ErrDiverged, true},
		{"wrapped invalid data", fmt.Errorf("sft step 0: %w", invalidData(errors.New("prompt too long"))), pipeline.ErrInvalidData, true},
		{"corrupt artifact", fmt.Errorf("load: %w", artifact.ErrCorrupt), pipeline.ErrCorruptArtifact, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := classify(tc.err)
			var app *temporal.ApplicationError
			require.True(t, errors.As(err, &app))
			assert.Equal(t, tc.wantType, app.Type())
			assert.Equal(t, tc.nonRetryable, app.NonRetryable())
			assert.Contains(t, err.Error(), tc.err.Error())
		})
	}
	transient := errors.New("connection reset")
	assert.Equal(t, transient, classify(transient), "other errors stay retryable")
}

// TestSameSeedSameWeights runs data preparation and a short SFT twice in
// separate stores: the same spec must give bit-identical weights, and another
// seed different ones.
func TestSameSeedSameWeights(t *testing.T) {
	spec := config.Default()
	spec.Data.Generate.Prompts = 200
	spec.Model = config.Model{Dim: 32, Heads: 4, Layers: 1, Hidden: 64, MaxLen: 56}
	spec.SFT.Steps = 5
	digest := func(seed int64) string {
		spec.Seed = seed
		store, err := artifact.Open(t.TempDir())
		require.NoError(t, err)
		a := New(store)
		ctx := context.Background()
		data, err := a.PrepareData(ctx, pipeline.PrepareDataInput{RunID: "r", Spec: spec})
		require.NoError(t, err)
		res, err := a.TrainSFT(ctx, pipeline.TrainInput{RunID: "r", Spec: spec, Data: data})
		require.NoError(t, err)
		return res.Digest
	}
	first := digest(1)
	assert.Equal(t, first, digest(1), "same seed, same weights")
	assert.NotEqual(t, first, digest(2), "another seed, other weights")
}

func chainWith(t *testing.T, a *Activities, spec config.Spec, data pipeline.Data, base artifact.Ref, recipe string) pipeline.TrainResult {
	t.Helper()
	res, err := a.TrainRewardModel(context.Background(), pipeline.TrainInput{RunID: "lr", Spec: spec, Data: data, Base: base, Recipe: recipe})
	require.NoError(t, err, recipe)
	return res
}

// TestEveryRewardRecipeTrains runs each recipe of the paper's comparison for a
// few steps on a tiny model: each must produce a reward model, recipes that
// differ must give different weights, and ExPO must pick an alpha from its sweep.
func TestEveryRewardRecipeTrains(t *testing.T) {
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	a := New(store)
	ctx := context.Background()
	spec := config.Default()
	spec.Data.Generate.Prompts = 200
	spec.Model = config.Model{Dim: 32, Heads: 4, Layers: 1, Hidden: 64, MaxLen: 56}
	spec.SFT.Steps = 2
	spec.Reward.Steps, spec.Reward.RegressionSteps = 3, 4 // each phase its own budget
	spec.Reward.BatchSize = 8
	data, err := a.PrepareData(ctx, pipeline.PrepareDataInput{RunID: "r", Spec: spec})
	require.NoError(t, err)
	sft, err := a.TrainSFT(ctx, pipeline.TrainInput{RunID: "r", Spec: spec, Data: data})
	require.NoError(t, err)
	digests := map[string]string{}
	for _, recipe := range reward.Recipes {
		spec.Reward.Recipe = recipe.Name
		res, err := a.TrainRewardModel(ctx, pipeline.TrainInput{RunID: "r-" + recipe.Name, Spec: spec, Data: data, Base: sft.Checkpoint})
		require.NoError(t, err, recipe.Name)
		steps := 0
		if recipe.Regression {
			steps += spec.Reward.RegressionSteps
		}
		if recipe.BT != "" {
			steps += spec.Reward.Steps
		}
		assert.Equal(t, steps, res.Steps, recipe.Name)
		if recipe.ExPO {
			assert.Contains(t, reward.ExPOAlphas, res.ExPOAlpha)
		} else {
			assert.Zero(t, res.ExPOAlpha)
		}
		digests[recipe.Name] = res.Digest
	}
	assert.NotEqual(t, digests["bt"], digests["bt-scaled"])
	assert.NotEqual(t, digests["regression"], digests["regression-helpfulness"])
	assert.NotEqual(t, digests["bt-scaled"], digests["bt-scaled-from-regression"])

	// The comparison's chained variants (starting from a trained regression
	// model, ExPO from trained weak and strong models) give exactly the
	// weights of the recipes trained in one go.
	chain := func(recipe string, from, strong *artifact.Ref) pipeline.TrainResult {
		res, err := a.TrainRewardModel(ctx, pipeline.TrainInput{RunID: "chain", Spec: spec, Data: data, Base: sft.Checkpoint, Recipe: recipe, From: from, Strong: strong})
		require.NoError(t, err, recipe)
		assert.Contains(t, res.Checkpoint.Path, "reward/"+recipe+"/", "each variant has its own folder")
		return res
	}
	reg := chain("regression-helpfulness", nil, nil)
	scaled := chain("bt-scaled-from-regression", &reg.Checkpoint, nil)
	assert.Equal(t, spec.Reward.Steps, scaled.Steps, "the regression phase is not trained again")
	assert.Equal(t, digests["bt-scaled-from-regression"], scaled.Digest)
	expo := chain("bt-scaled-from-regression-expo", &reg.Checkpoint, &scaled.Checkpoint)
	assert.Zero(t, expo.Steps, "ExPO from trained models only extrapolates")
	assert.Equal(t, digests["bt-scaled-from-regression-expo"], expo.Digest)
	bt := chain("bt", &reg.Checkpoint, nil)
	assert.Equal(t, digests["bt"], bt.Digest, "recipes from the backbone ignore From")

	eval, err := a.EvaluateRewardModel(ctx, pipeline.RewardEvalInput{RunID: "chain", Spec: spec, Data: data, RewardModel: scaled.Checkpoint})
	require.NoError(t, err)
	pairs := 0
	for _, g := range eval.ByStrength {
		assert.Contains(t, []int{1, 2, 3}, g.Strength)
		pairs += g.Pairs
	}
	assert.Equal(t, eval.HeldoutPairs, pairs, "the strengths partition the held-out pairs")
	require.Len(t, eval.Ratings, 5)
	assert.Equal(t, "helpfulness", eval.Ratings[0].Attribute)
	require.NotNil(t, eval.Bench)
	assert.Len(t, eval.Bench.Subsets, 6)
	assert.Nil(t, eval.Bench.Categories[2].Score, "the opposites task has no safety subsets")

	// The regression phase trains with its own learning rate, not the BT
	// phase's.
	other := spec
	other.Reward.LearningRate *= 3
	same := chainWith(t, a, other, data, sft.Checkpoint, "regression-helpfulness")
	assert.Equal(t, reg.Digest, same.Digest, "reward.learning_rate is the BT phase's")
	other = spec
	other.Reward.RegressionLearningRate *= 3
	changed := chainWith(t, a, other, data, sft.Checkpoint, "regression-helpfulness")
	assert.NotEqual(t, reg.Digest, changed.Digest, "reward.regression_learning_rate is the regression phase's")

	spec.Reward.Recipe = "dpo"
	_, err = a.TrainRewardModel(ctx, pipeline.TrainInput{RunID: "r-bad", Spec: spec, Data: data, Base: sft.Checkpoint})
	var app *temporal.ApplicationError
	require.True(t, errors.As(err, &app))
	assert.Equal(t, pipeline.ErrInvalidSpec, app.Type())
	assert.Contains(t, err.Error(), "bt-scaled-from-regression-expo")
}

// TestPrepareDataCountsPairsThatDoNotFit: the data report counts the pairs
// left out because a response cannot fit model.max_len whole and those kept
// with the start of a long prompt cut, and only the pairs that fit count as
// training and validation pairs.
func TestPrepareDataCountsPairsThatDoNotFit(t *testing.T) {
	dir := t.TempDir()
	pref := func(split, prompt, r1, r2 string) string {
		return fmt.Sprintf(`{"split":%q,"prompt":%q,"response_1":%q,"response_2":%q,"preference_strength":2,"preference_statement":"","preference_elaboration":"","three_most_similar_preferences":[],"all_preferences_unprocessed":[]}`, split, prompt, r1, r2)
	}
	long := strings.Repeat("a very long prompt ", 5) // 95 bytes: more than max_len 56
	lines := []string{
		pref("train", "opposite of hot?", "cold", "warm"),
		pref("train", "opposite of up?", "down", strings.Repeat("no ", 30)), // a 91-token response
		pref("train", long, "cold", "warm"),
		pref("val", "opposite of big?", "small", "huge"),
		pref("val", long, strings.Repeat("x", 40), "y"), // the prompt keeps half the window: 40 do not fit
	}
	prefs := filepath.Join(dir, "prefs.jsonl")
	require.NoError(t, os.WriteFile(prefs, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
	ratings := filepath.Join(dir, "ratings.jsonl")
	require.NoError(t, os.WriteFile(ratings, []byte(`{"prompt":"p","response":"r","helpfulness":1,"correctness":1,"coherence":1,"complexity":1,"verbosity":1}`+"\n"), 0o644))
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	spec := config.Default()
	spec.Data.Ratings, spec.Data.Preferences = ratings, prefs
	a := New(store)
	a.DataRoots = config.AnyFile()
	d, err := a.PrepareData(context.Background(), pipeline.PrepareDataInput{RunID: "fit", Spec: spec})
	require.NoError(t, err)
	assert.Equal(t, 2, d.TrainPairs)
	assert.Equal(t, 1, d.ValidationPairs)
	assert.Equal(t, 1, d.DroppedTrainPairs)
	assert.Equal(t, 1, d.DroppedValidationPairs)
	assert.Equal(t, 1, d.TruncatedPairs)
}

// TestPrepareDataKeepsToTheDataRoots: a worker with data roots refuses a
// spec naming a file outside them, non-retryably, naming the field, the
// file and the roots, even when an earlier run recorded the same stage for
// reuse; inside them the same data loads.
func TestPrepareDataKeepsToTheDataRoots(t *testing.T) {
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	a := New(store)
	dir := t.TempDir()
	spec := config.Default()
	spec.ReuseStageOutputs = true
	spec.Data.Ratings, spec.Data.Preferences = filepath.Join(dir, "ratings.jsonl"), filepath.Join(dir, "prefs.jsonl")
	pref := func(split, prompt string) string {
		return fmt.Sprintf(`{"split":%q,"prompt":%q,"response_1":"cold","response_2":"warm","preference_strength":2,"preference_statement":"","preference_elaboration":"","three_most_similar_preferences":[],"all_preferences_unprocessed":[]}`, split, prompt)
	}
	require.NoError(t, os.WriteFile(spec.Data.Preferences, []byte(pref("train", "opposite of hot?")+"\n"+pref("validation", "opposite of up?")+"\n"), 0o644))
	require.NoError(t, os.WriteFile(spec.Data.Ratings, []byte(`{"prompt":"p","response":"r","helpfulness":1,"correctness":1,"coherence":1,"complexity":1,"verbosity":1}`+"\n"), 0o644))
	_, err = a.PrepareData(context.Background(), pipeline.PrepareDataInput{RunID: "none", Spec: spec})
	require.ErrorContains(t, err, "this worker reads no files", "no roots: no file")
	a.DataRoots = config.AnyFile()
	_, err = a.PrepareData(context.Background(), pipeline.PrepareDataInput{RunID: "open", Spec: spec})
	require.NoError(t, err, "any file")

	root := t.TempDir()
	a.DataRoots = config.RootsAt(root)
	_, err = a.PrepareData(context.Background(), pipeline.PrepareDataInput{RunID: "confined", Spec: spec})
	var app *temporal.ApplicationError
	require.True(t, errors.As(err, &app), "%v", err)
	assert.True(t, app.NonRetryable())
	assert.Equal(t, pipeline.ErrInvalidSpec, app.Type())
	for _, want := range []string{"data.ratings", "data.preferences", spec.Data.Ratings, root} {
		assert.Contains(t, err.Error(), want)
	}

	a.DataRoots = config.RootsAt(root, dir)
	_, err = a.PrepareData(context.Background(), pipeline.PrepareDataInput{RunID: "inside", Spec: spec})
	require.NoError(t, err)
}

// TestPrepareDataReadsThePromptsFile: data.prompts is stored with the run's
// data and counted by the prompts that fit; with a verifier a row without
// an answer fails the run at once, non-retryably, naming the field, the
// file and the line; a prompt too long for the window is left out.
func TestPrepareDataReadsThePromptsFile(t *testing.T) {
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	a := New(store)
	a.DataRoots = config.AnyFile()
	spec := config.Default()
	spec.Data.Prompts = filepath.Join(t.TempDir(), "prompts.jsonl")
	long := strings.Repeat("far ", spec.Model.MaxLen)
	require.NoError(t, os.WriteFile(spec.Data.Prompts, []byte(`{"prompt":"opposite of hot?","answer":"cold"}`+"\n"+
		`{"prompt":"opposite of up?"}`+"\n"+fmt.Sprintf(`{"prompt":%q,"answer":"near"}`, long)+"\n"), 0o644))
	d, err := a.PrepareData(context.Background(), pipeline.PrepareDataInput{RunID: "prompts", Spec: spec})
	require.NoError(t, err)
	require.NotNil(t, d.Prompts)
	assert.Equal(t, 2, d.RLPrompts, "the long prompt does not fit model.max_len")
	p, release, err := store.LocalFile(*d.Prompts)
	require.NoError(t, err)
	rows, err := helpsteer.ReadPrompts(p)
	release()
	require.NoError(t, err)
	assert.Len(t, rows, 3, "stored as given")

	spec.Reward.Verifier = "exact"
	_, err = a.PrepareData(context.Background(), pipeline.PrepareDataInput{RunID: "unanswered", Spec: spec})
	var app *temporal.ApplicationError
	require.True(t, errors.As(err, &app), "%v", err)
	assert.True(t, app.NonRetryable())
	assert.Equal(t, pipeline.ErrInvalidData, app.Type())
	assert.Contains(t, err.Error(), "data.prompts: "+spec.Data.Prompts+":2: answer: is missing or empty")
}
