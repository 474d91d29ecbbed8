package config

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRootsOpenOnlyBeneathARoot: a worker's reads go through Roots.Open,
// which follows links that stay in the roots (relative ones, absolute ones,
// a link to another root) and refuses, naming the link and its target, any
// that lead out: a file of a model directory linked out of the root, or the
// directory itself.
func TestRootsOpenOnlyBeneathARoot(t *testing.T) {
	root, other, outside := t.TempDir(), t.TempDir(), t.TempDir()
	write := func(p, s string) string {
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(s), 0o644))
		return p
	}
	link := func(target, at string) string {
		require.NoError(t, os.MkdirAll(filepath.Dir(at), 0o755))
		require.NoError(t, os.Symlink(target, at))
		return at
	}
	write(filepath.Join(root, "m", "config.json"), "model")
	write(filepath.Join(root, "blobs", "abc"), "blob")
	write(filepath.Join(other, "data.jsonl"), "other root")
	secret := write(filepath.Join(outside, "secret.json"), "secret")
	write(filepath.Join(outside, "m", "config.json"), "outside model")

	cases := []struct {
		name       string
		roots      Roots
		path       string
		want       string // the contents read, "" for refused
		link, to   string // the link an error names
		notInRoots bool
	}{
		{"a file in the root", RootsAt(root), filepath.Join(root, "m", "config.json"), "model", "", "", false},
		{"a relative link in the root (the Hugging Face cache's)", RootsAt(root), link("../blobs/abc", filepath.Join(root, "m", "rel.json")), "blob", "", "", false},
		{"an absolute link in the root", RootsAt(root), link(filepath.Join(root, "blobs", "abc"), filepath.Join(root, "m", "abs.json")), "blob", "", "", false},
		{"a link to another root", RootsAt(root, other), link(filepath.Join(other, "data.jsonl"), filepath.Join(root, "to-other.jsonl")), "other root", "", "", false},
		{"a model file linked out", RootsAt(root), link(secret, filepath.Join(root, "m", "tokenizer_config.json")), "", filepath.Join(root, "m", "tokenizer_config.json"), secret, true},
		{"a relative link out", RootsAt(root), link("../../"+filepath.Base(outside)+"/secret.json", filepath.Join(root, "m", "up.json")), "", filepath.Join(root, "m", "up.json"), "../../" + filepath.Base(outside) + "/secret.json", true},
		{"a model directory linked out", RootsAt(root), filepath.Join(link(filepath.Join(outside, "m"), filepath.Join(root, "linked")), "config.json"), "", filepath.Join(root, "linked"), filepath.Join(outside, "m"), true},
		{"outside", RootsAt(root), secret, "", "", "", true},
		{"dot-dot out", RootsAt(root), filepath.Join(root, "..", filepath.Base(outside), "secret.json"), "", "", "", true},
		{"no roots: no file", RootsAt(), filepath.Join(root, "m", "config.json"), "", "", "", true},
		{"any file", AnyFile(), secret, "secret", "", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := tc.roots.Open(tc.path)
			if tc.want != "" {
				require.NoError(t, err)
				defer f.Close()
				b, err := io.ReadAll(f)
				require.NoError(t, err)
				assert.Equal(t, tc.want, string(b))
				require.NoError(t, tc.roots.Check(tc.path))
				return
			}
			require.Error(t, err)
			var oe *OutsideError
			require.True(t, errors.As(err, &oe), "%v", err)
			assert.True(t, errors.Is(err, ErrOutsideRoots))
			assert.Equal(t, tc.link, oe.Link)
			assert.Equal(t, tc.to, oe.To)
			assert.Contains(t, err.Error(), tc.path)
			if tc.link != "" {
				assert.Contains(t, err.Error(), tc.link+" is a symbolic link to "+tc.to)
			}
			assert.ErrorIs(t, tc.roots.Check(tc.path), ErrOutsideRoots, "the early check says the same")
		})
	}
}

// TestRootsReadWhatWasChecked: a model directory is read through the roots
// file by file, so a directory swapped for a link out of the root after it
// was checked (or after its first file was read) is refused, not followed.
func TestRootsReadWhatWasChecked(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	dir := filepath.Join(root, "m")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"), []byte("checked"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(outside, "config.json"), []byte("secret"), 0o644))
	roots := RootsAt(root)
	spec := Default()
	spec.Model.Path = dir
	require.NoError(t, spec.CheckRoots(roots))
	require.NoError(t, spec.CheckFilesIn(roots))
	fsys := roots.FS(dir)
	b, err := fs.ReadFile(fsys, "config.json")
	require.NoError(t, err)
	assert.Equal(t, "checked", string(b))

	require.NoError(t, os.Rename(dir, dir+".old"))
	require.NoError(t, os.Symlink(outside, dir))
	_, err = fs.ReadFile(fsys, "config.json")
	require.ErrorIs(t, err, ErrOutsideRoots)
	assert.Contains(t, err.Error(), dir+" is a symbolic link to "+outside)
}

// TestConnectionRoots: --data-root confines a worker; without it a worker
// on a loopback address (a developer's machine, alignflow dev) may read any
// file, and one on any other address none, saying how to allow them.
func TestConnectionRoots(t *testing.T) {
	load := func(args ...string) Connection {
		fs := pflag.NewFlagSet("worker", pflag.ContinueOnError)
		AddConnectionFlags(fs)
		require.NoError(t, fs.Parse(args))
		c, err := LoadConnection(fs, "")
		require.NoError(t, err)
		return c
	}
	for _, tc := range []struct {
		args []string
		want Roots
	}{
		{nil, AnyFile()},
		{[]string{"--address", "localhost:7233"}, AnyFile()},
		{[]string{"--address", "[::1]:7233"}, AnyFile()},
		{[]string{"--address", "temporal.internal:7233"}, Roots{}},
		{[]string{"--address", "10.0.0.5:7233"}, Roots{}},
		{[]string{"--address", "0.0.0.0:7233"}, Roots{}},
		{[]string{"--address", "my-ns.a1b2c.tmprl.cloud:7233", "--data-root", "/data", "--data-root", "/models"}, RootsAt("/data", "/models")},
		{[]string{"--data-root", "/"}, RootsAt("/")},
	} {
		assert.Equal(t, tc.want, load(tc.args...).Roots(), "%v", tc.args)
	}
	spec := Default()
	spec.Data.Ratings, spec.Data.Preferences = "/data/r.jsonl", "/data/p.jsonl"
	err := spec.CheckRoots(load("--address", "temporal.internal:7233").Roots())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "spec field data.ratings: /data/r.jsonl is outside the worker's data roots (no file (no --data-root)); this worker reads no files: start it with --data-root DIR (or --data-root / to allow any file)")
}
