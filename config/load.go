package config

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/alignflow/alignflow/model/backend"
)

// LoadFile reads a spec from a YAML, JSON or TOML file (by extension) over the
// defaults, strictly: unknown fields and wrong types are errors naming the file
// and the field.
func LoadFile(path string) (Spec, error) {
	if _, err := os.Stat(path); err != nil {
		return Default(), fmt.Errorf("config %s: %w", path, err)
	}
	v := viper.New()
	v.SetConfigFile(path)
	if ext := strings.TrimPrefix(filepath.Ext(path), "."); ext == "yml" {
		v.SetConfigType("yaml")
	}
	if err := v.ReadInConfig(); err != nil {
		return Default(), fmt.Errorf("config %s: %w", path, err)
	}
	data, err := json.Marshal(v.AllSettings())
	if err != nil {
		return Default(), fmt.Errorf("config %s: %w", path, err)
	}
	spec, err := Parse(data)
	if err != nil {
		return spec, fmt.Errorf("config %s: %w", path, err)
	}
	return spec, nil
}

// Connection says where the Temporal server is, how to reach it, and where
// artifacts live.
type Connection struct {
	Address   string `mapstructure:"address"`
	Namespace string `mapstructure:"namespace"`
	TaskQueue string `mapstructure:"task-queue"`
	DataDir   string `mapstructure:"data-dir"`
	// Store is where artifacts live: "" for DataDir, or an object-storage
	// URL (s3://bucket?region=...&endpoint=...&use_path_style=true,
	// gs://bucket, azblob://container) shared by every worker.
	Store string `mapstructure:"store"`
	// CacheDir and CacheMaxGB are a worker's local cache of artifacts from
	// object storage (default: the user's cache directory, 20 GB).
	CacheDir   string  `mapstructure:"cache-dir"`
	CacheMaxGB float64 `mapstructure:"cache-max-gb"`

	// TLS: a client certificate and key (mutual TLS; both or neither), the
	// CA that signed the server's certificate (default: the system's), and
	// the server name to verify (default: the address's host). Any of them
	// turns TLS on.
	TLSCert       string `mapstructure:"tls-cert"`
	TLSKey        string `mapstructure:"tls-key"`
	TLSCA         string `mapstructure:"tls-ca"`
	TLSServerName string `mapstructure:"tls-server-name"`
	// APIKey authenticates to Temporal Cloud (sent as a bearer token; it
	// turns TLS on). Never printed.
	APIKey string `mapstructure:"api-key"`
	// DataRoots confine the files a run's spec may name (data, model and
	// reward-model paths, and every file in the model directories) to these
	// directories, so that whoever can start a workflow cannot make a worker
	// read arbitrary files. Empty: any file on a loopback Address (a
	// developer's own machine), none on any other (see Roots).
	DataRoots []string `mapstructure:"data-root"`
	// MetricsAddr is where `worker` and `dev` serve Prometheus metrics on
	// /metrics (HOST:PORT; empty: not served).
	MetricsAddr string `mapstructure:"metrics-addr"`
	// XLAPlugins are the XLA PJRT plugins a worker lets runs name (backend
	// "xla:NAME"), so that a spec names a plugin, never a file to load
	// (backend.Plugins; nil: plain "xla" only, with the plugin GoMLX finds).
	XLAPlugins backend.Plugins `mapstructure:"xla-plugin"`
}

// TLS reports whether the connection uses TLS.
func (c Connection) TLS() bool {
	return c.TLSCert != "" || c.TLSKey != "" || c.TLSCA != "" || c.TLSServerName != "" || c.APIKey != ""
}

// Connection defaults.
const (
	DefaultAddress   = "127.0.0.1:7233"
	DefaultNamespace = "default"
	DefaultTaskQueue = "alignflow"
	DefaultDataDir   = "./.alignflow"
	EnvPrefix        = "ALIGNFLOW"
)

// AddConnectionFlags declares the connection flags: --address,
// --namespace, --task-queue, --data-dir, the TLS flags, --api-key and
// --data-root.
func AddConnectionFlags(fs *pflag.FlagSet) {
	fs.String("address", DefaultAddress, "Temporal frontend host:port (env ALIGNFLOW_ADDRESS)")
	fs.String("namespace", DefaultNamespace, "Temporal namespace (env ALIGNFLOW_NAMESPACE)")
	fs.String("task-queue", DefaultTaskQueue, "task queue of alignflow workers (env ALIGNFLOW_TASK_QUEUE)")
	fs.String("data-dir", DefaultDataDir, "artifact store and embedded server data (env ALIGNFLOW_DATA_DIR)")
	fs.String("store", "", "artifact store: empty for --data-dir, or an object-storage URL such as s3://bucket?region=us-east-1 (env ALIGNFLOW_STORE; credentials from the environment, e.g. AWS_ACCESS_KEY_ID)")
	fs.String("cache-dir", "", "local cache of artifacts from object storage (env ALIGNFLOW_CACHE_DIR; default: the user's cache directory/alignflow)")
	fs.Float64("cache-max-gb", 20, "size cap of the artifact cache, GB (env ALIGNFLOW_CACHE_MAX_GB)")
	fs.String("tls-cert", "", "client certificate (PEM) for mutual TLS, with --tls-key (env ALIGNFLOW_TLS_CERT)")
	fs.String("tls-key", "", "client private key (PEM) for mutual TLS, with --tls-cert (env ALIGNFLOW_TLS_KEY)")
	fs.String("tls-ca", "", "CA certificate (PEM) that signed the server's certificate; default: the system's CAs (env ALIGNFLOW_TLS_CA)")
	fs.String("tls-server-name", "", "server name to verify in the server's certificate; default: the address's host (env ALIGNFLOW_TLS_SERVER_NAME)")
	fs.String("api-key", "", "Temporal Cloud API key; turns TLS on (env ALIGNFLOW_API_KEY, which keeps it out of the process list)")
	fs.StringArray("data-root", nil, "directory the files a run names must lie in (repeatable; env ALIGNFLOW_DATA_ROOT, a list like PATH); none: any file when --address is loopback, no file otherwise (--data-root / allows any)")
}

// AddXLAPluginFlag declares --xla-plugin, a worker's (`worker`, `dev`):
// resolved with the connection settings, so $ALIGNFLOW_XLA_PLUGIN and a
// settings file's xla-plugin work too.
func AddXLAPluginFlag(fs *pflag.FlagSet) {
	fs.StringArray("xla-plugin", nil, `XLA PJRT plugin runs may name: NAME=PATH lets a spec's backend "xla:NAME" load PATH (an absolute .so path, or a plugin name on PJRT_PLUGIN_LIBRARY_PATH); a PATH alone is plain "xla"'s (repeatable; env ALIGNFLOW_XLA_PLUGIN, a list like PATH). A spec can name no other plugin`)
}

// connectionKeys are the settings LoadConnection resolves.
var connectionKeys = []string{"address", "namespace", "task-queue", "data-dir", "store", "cache-dir", "cache-max-gb",
	"tls-cert", "tls-key", "tls-ca", "tls-server-name", "api-key", "data-root", "metrics-addr", "xla-plugin"}

// LoadConnection resolves connection settings with viper: flags set on the
// command line win over ALIGNFLOW_* environment variables, which win over the
// optional settings file (keys address, namespace, task-queue, data-dir), which
// wins over defaults.
func LoadConnection(fs *pflag.FlagSet, settingsFile string) (Connection, error) {
	v := viper.New()
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_"))
	v.AutomaticEnv()
	for _, k := range connectionKeys {
		if f := fs.Lookup(k); f != nil {
			if err := v.BindPFlag(k, f); err != nil {
				return Connection{}, err
			}
		}
	}
	if settingsFile != "" {
		v.SetConfigFile(settingsFile)
		if err := v.ReadInConfig(); err != nil {
			return Connection{}, fmt.Errorf("settings %s: %w", settingsFile, err)
		}
	}
	c := Connection{
		Address:   v.GetString("address"),
		Namespace: v.GetString("namespace"),
		TaskQueue: v.GetString("task-queue"),
		DataDir:   v.GetString("data-dir"),

		Store:      v.GetString("store"),
		CacheDir:   v.GetString("cache-dir"),
		CacheMaxGB: v.GetFloat64("cache-max-gb"),

		TLSCert:       v.GetString("tls-cert"),
		TLSKey:        v.GetString("tls-key"),
		TLSCA:         v.GetString("tls-ca"),
		TLSServerName: v.GetString("tls-server-name"),
		APIKey:        v.GetString("api-key"),

		MetricsAddr: v.GetString("metrics-addr"),
	}
	// A list from a flag or a settings file, or PATH-like from the environment.
	for _, r := range v.GetStringSlice("data-root") {
		for _, part := range filepath.SplitList(r) {
			if part != "" {
				c.DataRoots = append(c.DataRoots, part)
			}
		}
	}
	plugins, err := backend.ParsePlugins(v.GetStringSlice("xla-plugin"))
	if err != nil {
		return c, fmt.Errorf("xla-plugin (flag --xla-plugin, env %s, settings file key xla-plugin): %w", backend.PluginEnv, err)
	}
	c.XLAPlugins = plugins
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			return c, fmt.Errorf("metrics-addr %q (flag --metrics-addr, env ALIGNFLOW_METRICS_ADDR): want HOST:PORT, e.g. 127.0.0.1:9464 (loopback: only this machine can scrape it)", c.MetricsAddr)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return c, fmt.Errorf("--tls-cert and --tls-key go together (mutual TLS needs both), got cert %q and key %q", c.TLSCert, c.TLSKey)
	}
	if c.Address == "" || c.Namespace == "" || c.TaskQueue == "" || c.DataDir == "" {
		return c, fmt.Errorf("connection settings must not be empty: address %q, namespace %q, task-queue %q, data-dir %q", c.Address, c.Namespace, c.TaskQueue, c.DataDir)
	}
	return c, nil
}
