package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/model/backend"
)

// TestWorkersTakeAnXLAPluginAllowList: `worker` and `dev` take
// --xla-plugin, resolved with the connection settings, and say at start
// which plugin names runs may give.
func TestWorkersTakeAnXLAPluginAllowList(t *testing.T) {
	for _, name := range []string{"worker", "dev"} {
		root := rootCmd()
		cmd, _, err := root.Find([]string{name})
		require.NoError(t, err)
		require.NoError(t, cmd.ParseFlags([]string{"--xla-plugin", "cuda=/opt/pjrt/cuda.so", "--xla-plugin", "rocm=rocm"}))
		c, err := connection(cmd)
		require.NoError(t, err, name)
		assert.Equal(t, backend.Plugins{"cuda": "/opt/pjrt/cuda.so", "rocm": "rocm"}, c.XLAPlugins, name)
		assert.Equal(t, "; runs may name the XLA plugins cuda, rocm", pluginsLine(c))

		require.NoError(t, cmd.ParseFlags([]string{"--xla-plugin", "../evil=/tmp/evil.so"}))
		_, err = connection(cmd)
		assert.ErrorContains(t, err, "not a plain name", name)
	}
}
