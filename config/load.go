package config

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
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

// Connection says where the Temporal server is and where artifacts live.
type Connection struct {
	Address   string `mapstructure:"address"`
	Namespace string `mapstructure:"namespace"`
	TaskQueue string `mapstructure:"task-queue"`
	DataDir   string `mapstructure:"data-dir"`
}

// Connection defaults.
const (
	DefaultAddress   = "127.0.0.1:7233"
	DefaultNamespace = "default"
	DefaultTaskQueue = "alignflow"
	DefaultDataDir   = "./.alignflow"
	EnvPrefix        = "ALIGNFLOW"
)

// AddConnectionFlags declares --address, --namespace, --task-queue and --data-dir.
func AddConnectionFlags(fs *pflag.FlagSet) {
	fs.String("address", DefaultAddress, "Temporal frontend host:port (env ALIGNFLOW_ADDRESS)")
	fs.String("namespace", DefaultNamespace, "Temporal namespace (env ALIGNFLOW_NAMESPACE)")
	fs.String("task-queue", DefaultTaskQueue, "task queue of alignflow workers (env ALIGNFLOW_TASK_QUEUE)")
	fs.String("data-dir", DefaultDataDir, "artifact store and embedded server data (env ALIGNFLOW_DATA_DIR)")
}

// LoadConnection resolves connection settings with viper: flags set on the
// command line win over ALIGNFLOW_* environment variables, which win over the
// optional settings file (keys address, namespace, task-queue, data-dir), which
// wins over defaults.
func LoadConnection(fs *pflag.FlagSet, settingsFile string) (Connection, error) {
	v := viper.New()
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_"))
	v.AutomaticEnv()
	for _, k := range []string{"address", "namespace", "task-queue", "data-dir"} {
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
	}
	if c.Address == "" || c.Namespace == "" || c.TaskQueue == "" || c.DataDir == "" {
		return c, fmt.Errorf("connection settings must not be empty: address %q, namespace %q, task-queue %q, data-dir %q", c.Address, c.Namespace, c.TaskQueue, c.DataDir)
	}
	return c, nil
}
