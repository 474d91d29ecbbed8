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

	_, err := New("xla:/nonexistent/pjrt_plugin.so")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "/nonexistent/pjrt_plugin.so")

	_, err = New("xla:relative/plugin.so")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "must be absolute")

	t.Setenv(PluginEnv, "")
	t.Setenv("PJRT_PLUGIN_LIBRARY_PATH", t.TempDir())
	_, err = New("xla")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no XLA PJRT plugin found")
}
