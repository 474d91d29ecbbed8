// Package backend chooses the GoMLX backend that executes alignflow's graphs and
// makes the pure-Go backend usable for training: it sets a parallelism that does
// not deadlock on small machines and replaces the stock DotGeneral gradient, which
// materialises a broadcast outer product, with one made of two DotGenerals.
// "go" runs alignflow's own backend (fastgo: the pure-Go backend with its matrix
// products on a kernel); "go-stock" is GoMLX's pure-Go backend as it comes.
package backend

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/gomlx/gomlx/backends"
	_ "github.com/gomlx/gomlx/backends/simplego" // registers the pure-Go backend as "go"

	"github.com/alignflow/alignflow/model/backend/fastgo"
)

// Go is the name of the default backend: fastgo, the pure-Go backend with
// float32 matrix products on a matrix kernel (same graphs, same results up to
// float32 summation order).
const Go = "go"

// GoStock is GoMLX's pure-Go backend (simplego) as it comes, every op in Go
// loops: the reference fastgo is checked against.
const GoStock = "go-stock"

// XLA is the name of GoMLX's XLA backend (PJRT), linked only into builds
// with `-tags xla` and cgo (see xla.go). The name may carry the plugin:
// "xla:cuda" or "xla:/abs/path/to/plugin.so".
const XLA = "xla"

// Spellings lists the backend names a run spec may give, in every build:
// whether this binary can run one is CheckAvailable's answer, not theirs.
var Spellings = []string{Go, GoStock, XLA, XLA + ":PLUGIN"}

// CheckName reports whether name is a backend name alignflow knows, in any
// build: "go", "go-stock", "xla", or "xla:" followed by a plugin. It depends
// only on the name, so workflow code can call it: the same history replays on
// every worker, whatever backends it was built with. Whether a worker can run the
// backend is CheckAvailable's question, asked by the activities.
func CheckName(name string) error {
	base, arg, hasArg := strings.Cut(name, ":")
	switch {
	case name == Go || name == GoStock:
		return nil
	case base == XLA && !hasArg:
		return nil
	case base == XLA && strings.TrimSpace(arg) != "":
		return nil
	case base == XLA:
		return fmt.Errorf("backend %q names no plugin after the colon", name)
	case base == Go || base == GoStock:
		return fmt.Errorf("backend %q: the pure-Go backend takes no argument", name)
	}
	return fmt.Errorf("unknown backend %q", name)
}

// goConfig is the pure-Go backend's configuration. Its default parallelism
// deadlocked a second train step on 2 cores (toolchain.md); unlimited
// parallelism (-1) was both safe and fastest there. fastgo runs its segments
// on the pure-Go backend made with the same setting.
const (
	goConfig      = fastgo.BackendName + ":parallelism=-1"
	goStockConfig = "go:parallelism=-1"
)

// Names lists the backends this binary can run, for error messages and validation.
func Names() []string {
	names := []string{Go, GoStock}
	for name := range extraBackends {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// extraBackends holds the backends linked by build tags (see xla.go), keyed by
// name; each turns the part of the backend name after a colon (a plugin, for
// "xla:/path/to/plugin.so") into its GoMLX configuration string.
var extraBackends = map[string]func(arg string) (string, error){}

var (
	mu    sync.Mutex
	cache = map[string]backends.Backend{}
)

// CheckAvailable reports whether name is a backend this binary can run:
// "go", "go-stock", or one linked by a build tag, optionally with an argument
// ("xla:cuda"). Its answer depends on how the binary was built: activities
// ask it, workflows must not (they call CheckName).
func CheckAvailable(name string) error {
	if err := CheckName(name); err != nil {
		return err
	}
	base, _, _ := strings.Cut(name, ":")
	if base == Go || base == GoStock || extraBackends[base] != nil {
		return nil
	}
	return fmt.Errorf("backend %q is not linked into this build: build with CGO_ENABLED=1 go build -tags xla", name)
}

// New returns the backend with the given name ("" means Go). Backends are
// created once per process and shared: a backend owns worker pools and, for
// XLA, a device client, and every Exec built on it can run concurrently.
func New(name string) (backends.Backend, error) {
	if name == "" {
		name = Go
	}
	if err := CheckAvailable(name); err != nil {
		return nil, fmt.Errorf("%w (available: %v)", err, Names())
	}
	installFastDotGradient()
	mu.Lock()
	defer mu.Unlock()
	if b, ok := cache[name]; ok {
		return b, nil
	}
	config := goConfig
	if name == GoStock {
		config = goStockConfig
	} else if base, arg, _ := strings.Cut(name, ":"); base != Go {
		c, err := extraBackends[base](arg)
		if err != nil {
			return nil, fmt.Errorf("backend %q: %w", name, err)
		}
		config = c
	}
	b, err := newQuiet(config)
	if err != nil {
		return nil, fmt.Errorf("start backend %q: %w", name, err)
	}
	cache[name] = b
	return b, nil
}

// newQuiet creates a GoMLX backend from its configuration string. The pure-Go
// backend prints its parallelism setting to standard output; that line would
// land in the middle of the CLI's progress display and in users' pipes, so
// os.Stdout points at the null device while it is created (once per process;
// writers that already hold the real stdout are unaffected).
func newQuiet(config string) (backends.Backend, error) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return backends.NewWithConfig(config)
	}
	defer null.Close()
	saved := os.Stdout
	os.Stdout = null
	defer func() { os.Stdout = saved }()
	return backends.NewWithConfig(config)
}
