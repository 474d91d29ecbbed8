// Package backend chooses the GoMLX backend that executes alignflow's graphs and
// makes the pure-Go backend usable for training: it sets a parallelism that does
// not deadlock on small machines and replaces the stock DotGeneral gradient, which
// materialises a broadcast outer product, with one made of two DotGenerals.
// "go" runs alignflow's own backend (fastgo: the pure-Go backend with its matrix
// products on a kernel); "go-stock" is GoMLX's pure-Go backend as it comes.
package backend

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
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
// with `-tags xla` and cgo (see xla.go). In a run spec the name may carry
// a plugin's plain name, "xla:cuda", which each worker resolves through its
// own allow-list (Plugins); on the command line of the operator's own
// tools (New) it may also be a path, "xla:/abs/path/to/plugin.so".
const XLA = "xla"

// PluginEnv holds the XLA plugins of a process (Plugins, as ParsePlugins
// reads them): a worker's --xla-plugin, and what New resolves.
const PluginEnv = "ALIGNFLOW_XLA_PLUGIN"

// Spellings lists the backend names a run spec may give, in every build:
// whether this binary can run one is CheckAvailable's answer, not theirs.
var Spellings = []string{Go, GoStock, XLA, XLA + ":PLUGIN"}

// CheckName reports whether name is a backend a run spec may give, in any
// build: "go", "go-stock", "xla", or "xla:PLUGIN" with PLUGIN a plain name (A-Z, a-z,
// 0-9, '.', '_', '-'; not a path), which a worker resolves through the
// plugins its operator allows (Plugins): a spec that named a file would
// make every worker that runs it load that shared library. It depends only
// on the name, so workflow code can call it: the same history replays on
// every worker, whatever backends it was built with. Whether a worker can
// run the backend is for the activities to find out (Open).
func CheckName(name string) error {
	if err := CheckRecordedName(name); err != nil {
		return err
	}
	if base, arg, _ := strings.Cut(name, ":"); base == XLA && arg != "" {
		if err := checkPluginName(arg); err != nil {
			return fmt.Errorf("backend %q: %w", name, err)
		}
	}
	return nil
}

// CheckRecordedName is CheckName as runs started before plugin names were
// plain ones checked it: "xla:" may be followed by anything, a path too. It
// is for replaying those runs' validation only (config.Spec.ValidateRecorded);
// their workers still resolve the plugin through their allow-lists (Open).
func CheckRecordedName(name string) error {
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

// maxPluginName bounds a plugin's name.
const maxPluginName = 64

// checkPluginName reports whether name is a plain plugin name.
func checkPluginName(name string) error {
	bad := strings.IndexFunc(name, func(c rune) bool {
		return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-')
	})
	switch {
	case name == "":
		return errors.New("the plugin name is empty")
	case len(name) > maxPluginName:
		return fmt.Errorf("plugin name %.20q... is longer than %d bytes", name, maxPluginName)
	case bad >= 0, name[0] == '.':
		return fmt.Errorf("plugin %q is not a plain name: a run names a plugin its workers allow (A-Z, a-z, 0-9, '.', '_', '-', not starting with '.'; "+
			"each worker maps the name to a file with --xla-plugin NAME=PATH), never a file", name)
	}
	return nil
}

// Plugins are the XLA PJRT plugins a worker lets runs use, by the name a
// spec gives ("xla:NAME"); "" is plain "xla"'s. Each is what GoMLX loads:
// an absolute path to the plugin's shared library, or the name of one found
// on PJRT_PLUGIN_LIBRARY_PATH, optionally followed by GoMLX's plugin
// options (",tf32"). The worker's operator sets them (--xla-plugin, or
// $ALIGNFLOW_XLA_PLUGIN), never a run.
type Plugins map[string]string

// ParsePlugins reads --xla-plugin values: NAME=PLUGIN lets runs name PLUGIN
// "xla:NAME"; a PLUGIN alone is plain "xla"'s (else GoMLX takes the first
// plugin on PJRT_PLUGIN_LIBRARY_PATH). A value may hold several, separated
// as in PATH. Nil when there are none.
func ParsePlugins(values []string) (Plugins, error) {
	var p Plugins
	for _, v := range values {
		for _, entry := range filepath.SplitList(v) {
			if entry = strings.TrimSpace(entry); entry == "" {
				continue
			}
			name, plugin, named := strings.Cut(entry, "=")
			if !named {
				name, plugin = "", entry
			} else if err := checkPluginName(name); err != nil {
				return nil, fmt.Errorf("entry %q: %w", entry, err)
			}
			file, _, _ := strings.Cut(plugin, ",")
			switch {
			case file == "":
				return nil, fmt.Errorf("entry %q names no plugin (want NAME=PATH, or PATH for plain %q)", entry, XLA)
			case strings.ContainsRune(file, filepath.Separator) && !filepath.IsAbs(file):
				return nil, fmt.Errorf("entry %q: the plugin path must be absolute", entry)
			}
			if _, dup := p[name]; dup {
				return nil, fmt.Errorf("entry %q: %s is given twice", entry, pluginLabel(name))
			}
			if p == nil {
				p = Plugins{}
			}
			p[name] = plugin
		}
	}
	return p, nil
}

func pluginLabel(name string) string {
	if name == "" {
		return "plain " + XLA + "'s plugin"
	}
	return fmt.Sprintf("plugin %q", name)
}

// Names lists the plugin names runs may give, sorted (plain "xla" aside).
func (p Plugins) Names() []string {
	return slices.DeleteFunc(slices.Sorted(maps.Keys(p)), func(name string) bool { return name == "" })
}

// plugin is what GoMLX loads for a spec's plugin name ("" for plain xla:
// the default, if any). An unknown name is an error that lists the names
// allowed.
func (p Plugins) plugin(name string) (string, error) {
	if plugin, ok := p[name]; ok || name == "" {
		return plugin, nil
	}
	allowed := "none: start the worker with --xla-plugin " + name + "=/abs/path/to/plugin.so to allow one"
	if names := p.Names(); len(names) > 0 {
		allowed = strings.Join(names, ", ") + "; a worker's operator adds one with --xla-plugin NAME=PATH"
	}
	return "", fmt.Errorf("this worker allows no XLA plugin named %q (allowed: %s)", name, allowed)
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
// name; each turns a plugin (resolved: a path, or a name GoMLX finds; ""
// for its default) into its GoMLX configuration string.
var extraBackends = map[string]func(arg string) (string, error){}

var (
	mu    sync.Mutex
	cache = map[string]backends.Backend{}
)

// CheckAvailable reports whether name is a backend this binary can run:
// "go", "go-stock", or one linked by a build tag, optionally with an argument
// ("xla:cuda", or a path where New takes one). Its answer depends on how
// the binary was built: activities ask it, workflows must not (they call
// CheckName).
func CheckAvailable(name string) error {
	if err := CheckRecordedName(name); err != nil {
		return err
	}
	base, _, _ := strings.Cut(name, ":")
	if base == Go || base == GoStock || extraBackends[base] != nil {
		return nil
	}
	return fmt.Errorf("backend %q is not linked into this build: build with CGO_ENABLED=1 go build -tags xla", name)
}

// Open returns the backend a run spec names ("" means Go), with an XLA
// plugin resolved through plugins, the worker's allow-list: the spec gives
// a plain name (CheckName), never a file. A name the worker does not allow
// is an error that lists the names it does.
func Open(name string, plugins Plugins) (backends.Backend, error) {
	if name == "" {
		name = Go
	}
	if err := CheckName(name); err != nil {
		return nil, err
	}
	return open(name, func(arg string) (string, error) { return plugins.plugin(arg) })
}

// New returns the backend with the given name ("" means Go) for the
// operator's own tools (`alignflow generate --backend`, the benchmarks),
// never for a run spec (Open is): "xla:ARG" loads the plugin
// $ALIGNFLOW_XLA_PLUGIN names ARG, else ARG itself, a path or a plugin
// name; plain "xla" loads that list's default.
func New(name string) (backends.Backend, error) {
	if name == "" {
		name = Go
	}
	if err := CheckRecordedName(name); err != nil {
		return nil, err
	}
	return open(name, func(arg string) (string, error) {
		env, err := ParsePlugins(strings.Fields(os.Getenv(PluginEnv)))
		if err != nil {
			return "", fmt.Errorf("$%s: %w", PluginEnv, err)
		}
		if plugin, ok := env[arg]; ok || arg == "" {
			return plugin, nil
		}
		return arg, nil
	})
}

// open starts (once per process) the backend name, whose argument after
// the colon resolve turns into the plugin to load. Backends are shared: a
// backend owns worker pools and, for XLA, a device client, and every Exec
// built on it can run concurrently.
func open(name string, resolve func(arg string) (string, error)) (backends.Backend, error) {
	if err := CheckAvailable(name); err != nil {
		return nil, fmt.Errorf("%w (available: %v)", err, Names())
	}
	config := goConfig
	if name == GoStock {
		config = goStockConfig
	} else if base, arg, _ := strings.Cut(name, ":"); base != Go {
		plugin, err := resolve(arg)
		if err != nil {
			return nil, fmt.Errorf("backend %q: %w", name, err)
		}
		if config, err = extraBackends[base](plugin); err != nil {
			return nil, fmt.Errorf("backend %q: %w", name, err)
		}
	}
	installFastDotGradient()
	mu.Lock()
	defer mu.Unlock()
	if b, ok := cache[config]; ok {
		return b, nil
	}
	b, err := newQuiet(config)
	if err != nil {
		return nil, fmt.Errorf("start backend %q: %w", name, err)
	}
	cache[config] = b
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
