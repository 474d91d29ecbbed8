package artifact

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCacheHitsAreVerified: a worker's cached copy that was damaged after
// it was verified (a flipped byte, a truncation) is not served: the hit is
// verified again, the damaged copy dropped and the object fetched anew; an
// object damaged in the bucket as well is corrupt.
func TestCacheHitsAreVerified(t *testing.T) {
	for name, damage := range map[string][]byte{"a flipped byte": []byte("hellO"), "truncated": []byte("hel"), "empty": nil} {
		t.Run(name, func(t *testing.T) {
			s, err := OpenURL(context.Background(), "mem://", Options{CacheDir: t.TempDir()})
			require.NoError(t, err)
			ref, err := s.Put("run/a.bin", []byte("hello"))
			require.NoError(t, err)
			entry := s.cache.path(ref.SHA256)
			require.FileExists(t, entry, "the writer's copy is cached")

			require.NoError(t, os.WriteFile(entry, damage, 0o644))
			got, err := s.Get(ref)
			require.NoError(t, err)
			assert.Equal(t, "hello", string(got), "the object is fetched again")
			b, err := os.ReadFile(entry)
			require.NoError(t, err)
			assert.Equal(t, "hello", string(b), "the entry is mended")

			require.NoError(t, os.WriteFile(entry, damage, 0o644))
			require.NoError(t, s.objs.overwrite(context.Background(), ref.Path, damage))
			_, err = s.Get(ref)
			require.ErrorIs(t, err, ErrCorrupt)
			assert.Contains(t, err.Error(), "run/a.bin")
		})
	}
}

// TestCacheEvictionSparesFilesInUse: the file LocalFile returns stays
// readable, with its content, until it is released, however much other
// artifacts push the cache over its cap, in this worker or in another
// process sharing the cache directory; once released, it can go.
func TestCacheEvictionSparesFilesInUse(t *testing.T) {
	dir := t.TempDir()
	open := func() *Store {
		s, err := OpenURL(context.Background(), "mem://", Options{CacheDir: dir, CacheMaxBytes: 250})
		require.NoError(t, err)
		return s
	}
	for name, other := range map[string]func(*Store) *Store{
		"this worker":               func(s *Store) *Store { return s },
		"another on the same cache": func(*Store) *Store { return open() },
	} {
		t.Run(name, func(t *testing.T) {
			s := open()
			held := bytes.Repeat([]byte("h"), 100)
			ref, err := s.Put("held/"+name, held)
			require.NoError(t, err)
			p, release, err := s.LocalFile(ref)
			require.NoError(t, err)
			w := other(s)
			push := func(round string) {
				for i := range 4 {
					_, err := w.Put("other/"+name+round+string(rune('a'+i)), bytes.Repeat([]byte(round), 100))
					require.NoError(t, err)
				}
			}
			push("1")
			got, err := os.ReadFile(p)
			require.NoError(t, err, "the file in use is still there")
			assert.Equal(t, held, got)

			release()
			push("2")
			assert.NoFileExists(t, p, "released, it is evicted like any other")
		})
	}
}
