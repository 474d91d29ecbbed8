//go:build xla

package backend

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gomlx/gomlx/backends/xla"
)

// GoMLX's XLA backend (PJRT), linked with `-tags xla` and cgo. The backend
// name may carry the PJRT plugin: "xla:cuda" (a plugin found on
// PJRT_PLUGIN_LIBRARY_PATH) or "xla:/abs/path/to/plugin.so"; with plain
// "xla" the plugin comes from $ALIGNFLOW_XLA_PLUGIN, so one spec can run on
// workers whose plugins live in different places.

// PluginEnv names the PJRT plugin when the backend is plain "xla".
const PluginEnv = "ALIGNFLOW_XLA_PLUGIN"

func init() {
	// The plugins are never downloaded: a run must not reach out to the
	// internet behind the user's back, and these machines cannot.
	xla.EnableAutoInstall(false)
	extraBackends[XLA] = xlaConfig
}

func xlaConfig(plugin string) (string, error) {
	if plugin == "" {
		plugin = os.Getenv(PluginEnv)
	}
	name, _, _ := strings.Cut(plugin, ",")
	switch {
	case name == "":
		if len(xla.GetAvailablePlugins()) == 0 {
			return "", fmt.Errorf("no XLA PJRT plugin found: name one with backend \"xla:/abs/path/to/plugin.so\" or $%s, "+
				"or put it on PJRT_PLUGIN_LIBRARY_PATH (on a CUDA machine with Python's jax-cuda13-pjrt: "+
				".../site-packages/jax_plugins/xla_cuda13/xla_cuda_plugin.so)", PluginEnv)
		}
	case filepath.IsAbs(name):
		if _, err := os.Stat(name); err != nil {
			return "", fmt.Errorf("XLA PJRT plugin %s: %w", name, err)
		}
	case !strings.ContainsRune(name, os.PathSeparator):
		if found := xla.GetAvailablePlugins(); !slices.Contains(found, name) {
			return "", fmt.Errorf("XLA PJRT plugin %q not found (found: %q); give an absolute path or set PJRT_PLUGIN_LIBRARY_PATH", name, found)
		}
	default:
		return "", fmt.Errorf("XLA PJRT plugin path %q must be absolute", name)
	}
	return XLA + ":" + plugin, nil
}
