package artifact

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRefsMustCarryDigests: a ref's sha256 names a cache file on object
// storage, so one that is not a digest ("../../secret") must never reach a
// path. Every way a ref enters the store refuses it as corrupt, on both
// kinds of store, whatever file the name would reach.
func TestRefsMustCarryDigests(t *testing.T) {
	const good = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" // sha256("hello")
	secret := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(secret, []byte(`{"secret": true}`), 0o600))
	cacheDir := t.TempDir()
	bucket, err := OpenURL(context.Background(), "mem://", Options{CacheDir: cacheDir})
	require.NoError(t, err)
	// The sha256 that would make the cache's path the secret file.
	escape, err := filepath.Rel(filepath.Join(cacheDir, "artifacts"), secret)
	require.NoError(t, err)
	local, err := Open(t.TempDir())
	require.NoError(t, err)

	for _, s := range []*Store{local, bucket} {
		ref, err := s.Put("run/a.bin", []byte("hello"))
		require.NoError(t, err)
		require.Equal(t, good, ref.SHA256)
		for name, digest := range map[string]string{
			"a path out of the cache": escape,
			"an absolute path":        secret,
			"empty":                   "",
			"upper case":              strings.ToUpper(good),
			"too short":               good[:63],
			"too long":                good + "0",
			"not hex":                 "g" + good[1:],
		} {
			bad := Ref{Path: ref.Path, SHA256: digest, Bytes: ref.Bytes}
			reads := map[string]func() error{
				"Get":        func() error { _, err := s.Get(bad); return err },
				"GetJSON":    func() error { var v any; return s.GetJSON(bad, &v) },
				"GetWeights": func() error { _, err := s.GetWeights(bad); return err },
				"LocalFile":  func() error { _, _, err := s.LocalFile(bad); return err },
			}
			for read, fn := range reads {
				if err := fn(); assert.ErrorIs(t, err, ErrCorrupt, "%s: %s of a ref whose sha256 is %s", s.Describe(), read, name) {
					assert.Contains(t, err.Error(), "sha256", "%s: %s: %s", s.Describe(), read, name)
				}
			}
		}
	}
}

// TestManifestsMustCarryDigests: a manifest read back whose sha256 is not a
// digest is corrupt, for a writer as for a verified read.
func TestManifestsMustCarryDigests(t *testing.T) {
	s, err := Open(t.TempDir())
	require.NoError(t, err)
	ref, err := s.Put("run/a.bin", []byte("hello"))
	require.NoError(t, err)
	mb, err := json.Marshal(manifest{SHA256: "../../secret", Bytes: ref.Bytes})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(s.Abs(Ref{Path: ManifestKey(ref.Path)}), mb, 0o644))

	_, err = s.Put("run/a.bin", []byte("world"))
	require.ErrorIs(t, err, ErrCorrupt, "a writer does not take the key for free")
	assert.Contains(t, err.Error(), ManifestKey(ref.Path))
	_, _, err = ReadVerified(s.Abs(ref))
	require.ErrorIs(t, err, ErrCorrupt)
	assert.Contains(t, err.Error(), "not a sha256 digest")
}
