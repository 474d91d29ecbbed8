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

// GoMLX's XLA backend (PJRT), linked with `-tags xla` and cgo. Which PJRT
// plugin it loads is resolved before it gets here: by a worker from the
// plugin name a spec gives, through the worker's allow-list (Open,
// Plugins); by the operator's own tools from their command line (New).

func init() {
	// The plugins are never downloaded: a run must not reach out to the
	// internet behind the user's back, and these machines cannot.
	xla.EnableAutoInstall(false)
	extraBackends[XLA] = xlaConfig
}

// xlaConfig is the GoMLX configuration that loads plugin: an absolute path
// to a plugin's shared library, the name of one on PJRT_PLUGIN_LIBRARY_PATH,
// or "" for the first found there; GoMLX's options may follow a comma.
func xlaConfig(plugin string) (string, error) {
	name, _, _ := strings.Cut(plugin, ",")
	switch {
	case name == "":
		if len(xla.GetAvailablePlugins()) == 0 {
			return "", fmt.Errorf("no XLA PJRT plugin found: a worker names one with --xla-plugin NAME=/abs/path/to/plugin.so (or a bare path for plain \"xla\"; env $%s), "+
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
