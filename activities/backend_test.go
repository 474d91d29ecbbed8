package activities

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/pipeline"
)

// TestSpecBackendCannotLoadAFile: a spec whose backend names a file
// ("xla:/abs/path.so", as a run recorded before the workflow refused it
// still may) made the training stage load that shared library on a worker
// with XLA. The activity resolves the plugin through the worker's
// allow-list instead: a path is refused before anything is loaded, and so
// is a name the worker does not allow, non-retryably, naming what it
// allows (on a build without XLA, how to get it).
func TestSpecBackendCannotLoadAFile(t *testing.T) {
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	a := New(store)
	a.XLAPlugins = backend.Plugins{"cuda": "/opt/pjrt/xla_cuda_plugin.so"}
	ctx := context.Background()
	spec := tinySpec()
	data, err := a.PrepareData(ctx, pipeline.PrepareDataInput{RunID: "r", Spec: spec})
	require.NoError(t, err)
	linked := backend.CheckAvailable(backend.XLA) == nil
	for name, want := range map[string]string{
		"xla:/tmp/evil.so":   "not a plain name",
		"xla:../lib/evil.so": "not a plain name",
		"xla:tpu":            map[bool]string{true: `allows no XLA plugin named "tpu" (allowed: cuda;`, false: "-tags xla"}[linked],
	} {
		spec.Backend = name
		_, err := a.TrainSFT(ctx, pipeline.TrainInput{RunID: "r", Spec: spec, Data: data})
		require.Error(t, err, name)
		var app *temporal.ApplicationError
		require.True(t, errors.As(err, &app), "%s: %v", name, err)
		assert.Equal(t, pipeline.ErrInvalidSpec, app.Type(), name)
		assert.True(t, app.NonRetryable(), name)
		assert.Contains(t, err.Error(), want, name)
	}
}
