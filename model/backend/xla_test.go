//go:build xla

package backend

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestXLAWithoutPluginIsAClearError: the XLA backend is linked, but a
// missing plugin fails with a message that says where to get one.
func TestXLAWithoutPluginIsAClearError(t *testing.T) {
	require.NoError(t, CheckAvailable("xla"))
	require.NoError(t, CheckAvailable("xla:/opt/pjrt/cuda.so"))
	assert.Contains(t, Names(), XLA)
	t.Setenv(PluginEnv, "")

	_, err := New("xla:/nonexistent/pjrt_plugin.so")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "/nonexistent/pjrt_plugin.so")

	_, err = New("xla:relative/plugin.so")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "must be absolute")

	t.Setenv("PJRT_PLUGIN_LIBRARY_PATH", t.TempDir())
	_, err = New("xla")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no XLA PJRT plugin found")
}

// TestXLAOpenLoadsOnlyWhatTheWorkerAllows: with XLA linked, a spec's
// plugin name resolves through the worker's allow-list to the file it
// maps to; a path in the spec never reaches the loader.
func TestXLAOpenLoadsOnlyWhatTheWorkerAllows(t *testing.T) {
	allowed := Plugins{"cuda": "/nonexistent/allowed_cuda_plugin.so"}
	_, err := Open("xla:cuda", allowed)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "/nonexistent/allowed_cuda_plugin.so", "the allowed file is the one looked for")

	_, err = Open("xla:/nonexistent/evil.so", allowed)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not a plain name")
	assert.NotContains(t, err.Error(), "no such file", "nothing was looked for")

	_, err = Open("xla:tpu", allowed)
	assert.ErrorContains(t, err, `allows no XLA plugin named "tpu" (allowed: cuda;`)

	t.Setenv(PluginEnv, "cuda=/nonexistent/env_cuda_plugin.so")
	_, err = New("xla:cuda")
	assert.ErrorContains(t, err, "/nonexistent/env_cuda_plugin.so", "the operator's tools take the environment's names")
}
