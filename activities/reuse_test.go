package activities

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/internal/fixtures"
	"github.com/alignflow/alignflow/pipeline"
)

// TestReuseOfCompletedStageOutputs: a stage computed by one run is handed to
// a later run with the same inputs (whatever its name and operational
// settings), not to one whose inputs differ, and not once an artifact it
// names is damaged.
func TestReuseOfCompletedStageOutputs(t *testing.T) {
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	a := New(store)
	ctx := context.Background()
	computed := 0
	stage := func(runID string, spec config.Spec, base artifact.Ref) (pipeline.TrainResult, error) {
		in := pipeline.TrainInput{RunID: runID, Spec: spec, Base: base, Data: pipeline.Data{Reused: pipeline.Reused{ReusedFrom: runID}}}
		return reuse(ctx, a, pipeline.StageSFT, spec, runID, in, func() (pipeline.TrainResult, error) {
			computed++
			ref, err := store.Put("runs/"+runID+"/sft/model.bin", []byte("weights of "+spec.Name))
			return pipeline.TrainResult{Checkpoint: ref, Digest: "d", Steps: spec.SFT.Steps}, err
		})
	}
	spec := config.Default()
	spec.Name = "first"
	base := artifact.Ref{Path: "runs/a/base.bin", SHA256: "abc", Bytes: 3}

	first, err := stage("run-1", spec, base)
	require.NoError(t, err)
	assert.Equal(t, 1, computed)
	assert.Empty(t, first.ReusedFrom)

	same := spec
	same.Name, same.HeartbeatTimeoutSeconds, same.SFT.CheckpointEvery, same.Reinforce.ContinueAsNewEvery = "second", 30, 7, 3
	movedBase := base
	movedBase.Path = "runs/b/base.bin" // the same bytes stored by another run
	got, err := stage("run-2", same, movedBase)
	require.NoError(t, err)
	assert.Equal(t, 1, computed, "same inputs: reused")
	assert.Equal(t, "run-1", got.ReusedFrom)
	assert.Equal(t, first.Checkpoint, got.Checkpoint)

	for name, change := range map[string]func(s *config.Spec, b *artifact.Ref){
		"seed":          func(s *config.Spec, _ *artifact.Ref) { s.Seed++ },
		"sft.steps":     func(s *config.Spec, _ *artifact.Ref) { s.SFT.Steps++ },
		"input digest":  func(_ *config.Spec, b *artifact.Ref) { b.SHA256 = "abd" },
		"reuse is off":  func(s *config.Spec, _ *artifact.Ref) { s.ReuseStageOutputs = false },
		"model.max_len": func(s *config.Spec, _ *artifact.Ref) { s.Model.MaxLen += 8 },
	} {
		s, b := spec, base
		change(&s, &b)
		before := computed
		got, err := stage("run-"+name, s, b)
		require.NoError(t, err)
		assert.Equal(t, before+1, computed, "%s changed: recomputed", name)
		assert.Empty(t, got.ReusedFrom, name)
	}

	require.NoError(t, os.WriteFile(store.Abs(first.Checkpoint), []byte("damaged"), 0o644))
	before := computed
	got, err = stage("run-3", spec, base)
	require.NoError(t, err)
	assert.Equal(t, before+1, computed, "a damaged artifact is not reused")
	assert.Empty(t, got.ReusedFrom)
	got, err = stage("run-4", spec, base)
	require.NoError(t, err)
	assert.Equal(t, "run-3", got.ReusedFrom, "the recomputed output is reused next")
}

func TestReuseKeyCountsDataFileContents(t *testing.T) {
	dir := t.TempDir()
	spec := config.Default()
	spec.Data.Ratings = dir + "/ratings.jsonl"
	require.NoError(t, os.WriteFile(spec.Data.Ratings, []byte("one\n"), 0o644))
	k1, err := reuseKey(context.Background(), pipeline.StagePrepareData, spec, pipeline.PrepareDataInput{Spec: spec}, config.AnyFile())
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(spec.Data.Ratings, []byte("two\n"), 0o644))
	k2, err := reuseKey(context.Background(), pipeline.StagePrepareData, spec, pipeline.PrepareDataInput{Spec: spec}, config.AnyFile())
	require.NoError(t, err)
	assert.NotEqual(t, k1, k2, "the same path with new contents is new data")
}

// TestReuseKeyTellsLargeSeedsApart: seeds above 2^53 that a float64 rounds
// to the same number are different runs and must not share stage outputs.
func TestReuseKeyTellsLargeSeedsApart(t *testing.T) {
	a, b := config.Default(), config.Default()
	a.Seed, b.Seed = 9007199254740993, 9007199254740992
	ka, err := reuseKey(context.Background(), pipeline.StagePrepareData, a, pipeline.PrepareDataInput{Spec: a}, config.AnyFile())
	require.NoError(t, err)
	kb, err := reuseKey(context.Background(), pipeline.StagePrepareData, b, pipeline.PrepareDataInput{Spec: b}, config.AnyFile())
	require.NoError(t, err)
	assert.NotEqual(t, ka, kb)
}

// TestReuseOnAWorkerThatCannotSeeTheModel: stages after the data stage key
// their reuse on the stored model's digests, not on model.path, so a
// worker that cannot see the directory (here: it is gone) reuses a
// completed SFT like any other, where it used to recompute it silently.
func TestReuseOnAWorkerThatCannotSeeTheModel(t *testing.T) {
	src := fixtures.Path(t, "models", "stories260K")
	dir := filepath.Join(t.TempDir(), "stories260K")
	require.NoError(t, os.CopyFS(dir, os.DirFS(src)))
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	ctx := context.Background()
	spec := config.Default()
	spec.Model.Path = dir
	spec.Data.Generate.Prompts = 200
	spec.SFT.Steps, spec.SFT.BatchSize = 2, 8

	mounted := New(store) // a worker that mounts the models
	mounted.DataRoots = config.AnyFile()
	data, err := mounted.PrepareData(ctx, pipeline.PrepareDataInput{RunID: "one", Spec: spec})
	require.NoError(t, err)
	sft, err := mounted.TrainSFT(ctx, pipeline.TrainInput{RunID: "one", Spec: spec, Data: data})
	require.NoError(t, err)
	again, err := mounted.PrepareData(ctx, pipeline.PrepareDataInput{RunID: "two", Spec: spec})
	require.NoError(t, err)
	assert.Equal(t, "one", again.ReusedFrom, "the data stage reads model.path and reuses by its contents")

	require.NoError(t, os.RemoveAll(dir))
	other := New(store) // a worker without the directory
	got, err := other.TrainSFT(ctx, pipeline.TrainInput{RunID: "two", Spec: spec, Data: again})
	require.NoError(t, err)
	assert.Equal(t, "one", got.ReusedFrom, "reused without reading model.path")
	assert.Equal(t, sft.Digest, got.Digest)
}
