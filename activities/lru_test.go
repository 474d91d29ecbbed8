package activities

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	_ "gocloud.dev/blob/memblob" // mem:// buckets

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/internal/fixtures"
	"github.com/alignflow/alignflow/pipeline"
)

// TestWorkerKeepsFewModelsAndEngines: a worker serving many runs (each
// model.max_len another model and another engine set) keeps at most
// maxModels models and maxEngineSets engine sets, the least recently used
// going first; the one an activity is still using is never dropped (asked
// for again, it is the same), and once released it can go like the others.
func TestWorkerKeepsFewModelsAndEngines(t *testing.T) {
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	a := New(store)
	a.DataRoots = config.AnyFile()
	spec := config.Default()
	spec.ReuseStageOutputs = false
	spec.Model.Path = fixtures.Path(t, "models", "stories260K")
	spec.Data.Generate.Prompts = 200
	data, err := a.PrepareData(context.Background(), pipeline.PrepareDataInput{RunID: "m", Spec: spec})
	require.NoError(t, err)
	at := func(maxLen int) config.Spec {
		s := spec
		s.Model.MaxLen = maxLen
		return s
	}

	inUse, err := a.setup(context.Background(), at(64), data)
	require.NoError(t, err)
	for i := range 6 {
		j, err := a.setup(context.Background(), at(72+8*i), data)
		require.NoError(t, err)
		j.release()
		assert.LessOrEqual(t, a.models.len(), maxModels)
		assert.LessOrEqual(t, a.engines.len(), maxEngineSets)
	}
	again, err := a.setup(context.Background(), at(64), data)
	require.NoError(t, err)
	assert.Same(t, inUse.m, again.m, "the model in use was kept")
	assert.Same(t, inUse.eng.shared, again.eng.shared, "its engines too (the worker's set each job views)")
	again.release()
	inUse.release()

	for i := range maxModels + maxEngineSets {
		j, err := a.setup(context.Background(), at(72+8*i), data)
		require.NoError(t, err)
		j.release()
	}
	fresh, err := a.setup(context.Background(), at(64), data)
	require.NoError(t, err)
	defer fresh.release()
	assert.NotSame(t, inUse.m, fresh.m, "released and least recently used, it went")
}

// TestLRU: values are made once while kept, a failed make is not kept, and
// eviction takes the least recently used value no one holds.
func TestLRU(t *testing.T) {
	c := lru[int]{max: 1}
	made := map[string]int{}
	get := func(key string, fail bool) (func(), error) {
		_, release, err := c.get(key, func() (int, error) {
			made[key]++
			if fail {
				return 0, errors.New("load failed")
			}
			return made[key], nil
		})
		return release, err
	}
	_, err := get("a", true)
	require.Error(t, err)
	assert.Equal(t, 0, c.len(), "a failure is not kept")
	a, err := get("a", false)
	require.NoError(t, err)
	b, err := get("b", false)
	require.NoError(t, err)
	b()
	b() // a second release does nothing
	assert.Equal(t, 1, c.len(), "b went: a is in use")
	c2, err := get("c", false)
	require.NoError(t, err)
	a()
	c2()
	assert.Equal(t, 1, c.len())
	again, err := get("c", false)
	require.NoError(t, err)
	again()
	assert.Equal(t, map[string]int{"a": 2, "b": 1, "c": 1}, made, "c was kept, a (least recently used) went")
}

// TestForgedDigestsAreCorruptArtifacts: a stage given a ref whose sha256
// is a path (here to a copy of the run's own ratings, outside the worker's
// cache) fails as CorruptArtifact, not retried, and reads nothing.
func TestForgedDigestsAreCorruptArtifacts(t *testing.T) {
	cacheDir := t.TempDir()
	store, err := artifact.OpenURL(context.Background(), "mem://", artifact.Options{CacheDir: cacheDir})
	require.NoError(t, err)
	a := New(store)
	spec := tinySpec()
	spec.SFT.Steps = 1
	data, err := a.PrepareData(context.Background(), pipeline.PrepareDataInput{RunID: "f", Spec: spec})
	require.NoError(t, err)
	b, err := store.Get(data.Ratings)
	require.NoError(t, err)
	copied := filepath.Join(t.TempDir(), "ratings.jsonl.gz")
	require.NoError(t, os.WriteFile(copied, b, 0o644))
	forged, err := filepath.Rel(filepath.Join(cacheDir, "artifacts"), copied)
	require.NoError(t, err)
	data.Ratings.SHA256 = forged

	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	env.RegisterActivity(a)
	_, err = env.ExecuteActivity(a.TrainSFT, pipeline.TrainInput{RunID: "f", Spec: spec, Data: data})
	var app *temporal.ApplicationError
	require.True(t, errors.As(err, &app), "%v", err)
	assert.Equal(t, pipeline.ErrCorruptArtifact, app.Type())
	assert.True(t, app.NonRetryable())
	assert.Contains(t, err.Error(), "not a sha256 digest")
}
