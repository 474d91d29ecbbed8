package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func loadConnection(t *testing.T, settings string, args ...string) (Connection, error) {
	t.Helper()
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	AddConnectionFlags(fs)
	require.NoError(t, fs.Parse(args))
	return LoadConnection(fs, settings)
}

func TestConnectionTLSAndDataRoots(t *testing.T) {
	t.Run("flags", func(t *testing.T) {
		c, err := loadConnection(t, "", "--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-ca", "ca.pem",
			"--tls-server-name", "temporal.internal", "--data-root", "/data", "--data-root", "/models")
		require.NoError(t, err)
		assert.Equal(t, Connection{Address: DefaultAddress, Namespace: DefaultNamespace, TaskQueue: DefaultTaskQueue, DataDir: DefaultDataDir,
			CacheMaxGB: 20, TLSCert: "c.pem", TLSKey: "k.pem", TLSCA: "ca.pem", TLSServerName: "temporal.internal",
			DataRoots: []string{"/data", "/models"}}, c)
		assert.True(t, c.TLS())
	})
	t.Run("environment", func(t *testing.T) {
		t.Setenv("ALIGNFLOW_API_KEY", "secret-key")
		t.Setenv("ALIGNFLOW_DATA_ROOT", "/data"+string(os.PathListSeparator)+"/models")
		c, err := loadConnection(t, "")
		require.NoError(t, err)
		assert.Equal(t, "secret-key", c.APIKey)
		assert.True(t, c.TLS(), "an API key turns TLS on")
		assert.Equal(t, []string{"/data", "/models"}, c.DataRoots)
	})
	t.Run("settings file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "settings.yaml")
		require.NoError(t, os.WriteFile(f, []byte("tls-ca: /etc/ca.pem\ndata-root: [/a, /b]\n"), 0o644))
		c, err := loadConnection(t, f)
		require.NoError(t, err)
		assert.Equal(t, "/etc/ca.pem", c.TLSCA)
		assert.Equal(t, []string{"/a", "/b"}, c.DataRoots)
	})
	t.Run("object store", func(t *testing.T) {
		t.Setenv("ALIGNFLOW_STORE", "s3://bucket?region=us-east-1")
		c, err := loadConnection(t, "", "--cache-dir", "/var/cache/af", "--cache-max-gb", "2.5")
		require.NoError(t, err)
		assert.Equal(t, "s3://bucket?region=us-east-1", c.Store)
		assert.Equal(t, "/var/cache/af", c.CacheDir)
		assert.Equal(t, 2.5, c.CacheMaxGB)
	})
	t.Run("plain by default", func(t *testing.T) {
		c, err := loadConnection(t, "")
		require.NoError(t, err)
		assert.False(t, c.TLS())
		assert.Empty(t, c.DataRoots)
	})
	t.Run("a certificate needs its key", func(t *testing.T) {
		_, err := loadConnection(t, "", "--tls-cert", "c.pem")
		require.ErrorContains(t, err, "--tls-cert and --tls-key go together")
	})
}

func TestCheckRoots(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	inRoot := filepath.Join(root, "ratings.jsonl")
	require.NoError(t, os.WriteFile(inRoot, []byte("{}\n"), 0o644))
	secret := filepath.Join(outside, "secret.jsonl")
	require.NoError(t, os.WriteFile(secret, []byte("{}\n"), 0o644))
	link := filepath.Join(root, "escape.jsonl")
	require.NoError(t, os.Symlink(secret, link))
	require.NoError(t, os.MkdirAll(filepath.Join(root, "models", "m"), 0o755))

	spec := func(edit func(*Spec)) Spec { s := Default(); edit(&s); return s }
	cases := []struct {
		name   string
		spec   Spec
		roots  Roots
		fields []string // the fields refused, none for allowed
	}{
		{"any file", spec(func(s *Spec) { s.Data.Ratings = secret }), AnyFile(), nil},
		{"no roots: no file", spec(func(s *Spec) { s.Data.Ratings = inRoot }), RootsAt(), []string{"data.ratings"}},
		{"inside", spec(func(s *Spec) { s.Data.Ratings, s.Model.Path = inRoot, filepath.Join(root, "models", "m") }), RootsAt(root), nil},
		{"the root itself", spec(func(s *Spec) { s.Model.Path = root }), RootsAt(root), nil},
		{"outside", spec(func(s *Spec) { s.Data.Ratings, s.Data.Preferences = inRoot, secret }), RootsAt(root), []string{"data.preferences"}},
		{"a link out of the root", spec(func(s *Spec) { s.Compare.RewardBench = link }), RootsAt(root), []string{"compare.rewardbench"}},
		{"dot-dot out of the root", spec(func(s *Spec) { s.Reward.Path = filepath.Join(root, "..", filepath.Base(outside)) }), RootsAt(root), []string{"reward.path"}},
		{"a sibling whose name starts like the root", spec(func(s *Spec) { s.Data.Ratings = root + "-other/x.jsonl" }), RootsAt(root), []string{"data.ratings"}},
		{"any of several roots", spec(func(s *Spec) { s.Data.Ratings, s.Data.Preferences = inRoot, secret }), RootsAt(root, outside), nil},
		{"a missing file is judged by where it would be", spec(func(s *Spec) { s.Data.Ratings = filepath.Join(outside, "nope.jsonl") }), RootsAt(root), []string{"data.ratings"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.spec.CheckRoots(tc.roots)
			if tc.fields == nil {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, f := range tc.fields {
				assert.Contains(t, err.Error(), f)
			}
			assert.Contains(t, err.Error(), tc.roots.String(), "the error names the roots")
			assert.Equal(t, len(tc.fields), strings.Count(err.Error(), "outside the worker's data roots"))
		})
	}
}

// TestMetricsAddr: worker and dev declare --metrics-addr; it resolves like
// the connection settings, and a value that is not HOST:PORT names the
// setting.
func TestMetricsAddr(t *testing.T) {
	load := func(settings string, args ...string) (Connection, error) {
		fs := pflag.NewFlagSet("worker", pflag.ContinueOnError)
		AddConnectionFlags(fs)
		fs.String("metrics-addr", "", "")
		require.NoError(t, fs.Parse(args))
		return LoadConnection(fs, settings)
	}
	c, err := load("")
	require.NoError(t, err)
	assert.Empty(t, c.MetricsAddr, "off by default")
	c, err = load("", "--metrics-addr", "127.0.0.1:9464")
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:9464", c.MetricsAddr)
	f := filepath.Join(t.TempDir(), "settings.yaml")
	require.NoError(t, os.WriteFile(f, []byte("metrics-addr: :9100\n"), 0o644))
	c, err = load(f)
	require.NoError(t, err)
	assert.Equal(t, ":9100", c.MetricsAddr)
	t.Setenv("ALIGNFLOW_METRICS_ADDR", ":9200")
	c, err = load(f)
	require.NoError(t, err)
	assert.Equal(t, ":9200", c.MetricsAddr, "the environment wins over the settings file")
	_, err = load("", "--metrics-addr", "9464")
	require.ErrorContains(t, err, `metrics-addr "9464" (flag --metrics-addr, env ALIGNFLOW_METRICS_ADDR): want HOST:PORT`)
}
