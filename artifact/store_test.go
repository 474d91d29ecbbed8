package artifact

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	_ "gocloud.dev/blob/memblob"

	"github.com/alignflow/alignflow/model/weights"
)

// storeKind opens fresh stores of one kind: each call is another worker
// (its own cache) on the same storage.
type storeKind struct {
	name string
	open func(t *testing.T) *Store
	// tamper replaces the stored bytes of key behind the store's back.
	tamper func(t *testing.T, s *Store, key string, data []byte)
}

func localKind(t *testing.T) storeKind {
	root := t.TempDir()
	return storeKind{name: "local",
		open: func(t *testing.T) *Store {
			s, err := Open(root)
			require.NoError(t, err)
			return s
		},
		tamper: func(t *testing.T, s *Store, key string, data []byte) {
			require.NoError(t, os.WriteFile(s.Abs(Ref{Path: key}), data, 0o644))
		}}
}

// bucketKind is object storage in memory (gocloud's memblob), each worker
// with its own cache directory.
func bucketKind(t *testing.T, url string) storeKind {
	var shared *Store
	return storeKind{name: "bucket",
		open: func(t *testing.T) *Store {
			if shared == nil {
				s, err := OpenURL(context.Background(), url, Options{CacheDir: t.TempDir()})
				require.NoError(t, err)
				shared = s
				return s
			}
			// Another worker: the same bucket, another cache.
			c, err := openCache(filepath.Join(t.TempDir(), "artifacts"), DefaultCacheMaxBytes)
			require.NoError(t, err)
			return &Store{objs: shared.objs, cache: c, scratch: filepath.Join(filepath.Dir(c.dir), "tmp")}
		},
		tamper: func(t *testing.T, s *Store, key string, data []byte) {
			require.NoError(t, s.objs.overwrite(context.Background(), key, data))
		}}
}

func TestStoreKindsKeepTheSameGuarantees(t *testing.T) {
	for _, kind := range []storeKind{localKind(t), bucketKind(t, "mem://")} {
		t.Run(kind.name, func(t *testing.T) { checkGuarantees(t, kind) })
	}
}

// checkGuarantees is what every kind of store promises.
func checkGuarantees(t *testing.T, kind storeKind) {
	s := kind.open(t)
	ref, err := s.Put("run/a.bin", []byte("hello"))
	require.NoError(t, err)
	assert.Equal(t, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", ref.SHA256)
	assert.Equal(t, int64(5), ref.Bytes)

	// Another worker reads it, verified, through its own cache.
	other := kind.open(t)
	got, err := other.Get(ref)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(got))

	again, err := other.Put("run/a.bin", []byte("hello"))
	require.NoError(t, err)
	assert.Equal(t, ref, again, "a retried identical write is idempotent")
	diff, err := other.Put("run/a.bin", []byte("world"))
	require.NoError(t, err)
	assert.Equal(t, "run/a.486ea46224d1.bin", diff.Path, "other content goes to a digest-named sibling")
	got, err = kind.open(t).Get(ref)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(got), "the complete artifact is untouched")

	// Data without its manifest (a write that stopped before it) is
	// never replaced by other content, and adopted when it is the same.
	kind.tamper(t, s, "run/half.bin", []byte("partial"))
	h, err := s.Put("run/half.bin", []byte("whole"))
	require.NoError(t, err)
	assert.NotEqual(t, "run/half.bin", h.Path)
	kind.tamper(t, s, "run/same.bin", []byte("same"))
	same, err := s.Put("run/same.bin", []byte("same"))
	require.NoError(t, err)
	assert.Equal(t, "run/same.bin", same.Path)

	// Streamed weights round-trip.
	set := weights.NewSet()
	set.Put("w", &weights.Tensor{Shape: []int{2, 2}, Data: []float32{1, 2, 3, 4}})
	wref, err := s.PutWeights("run/w.safetensors", set)
	require.NoError(t, err)
	back, err := kind.open(t).GetWeights(wref)
	require.NoError(t, err)
	assert.Equal(t, set.Digest(), back.Digest())

	// A corrupted object fails its digest, naming its key, on a
	// worker that has not cached it.
	kind.tamper(t, s, "run/a.bin", []byte("hellO"))
	_, err = kind.open(t).Get(ref)
	require.ErrorIs(t, err, ErrCorrupt)
	assert.Contains(t, err.Error(), "run/a.bin")

	// An aborted write leaves nothing behind.
	w, err := s.Create("run/aborted.bin")
	require.NoError(t, err)
	_, err = w.Write([]byte("x"))
	require.NoError(t, err)
	w.Abort()
	_, err = s.GetRecord("run/aborted.bin")
	require.ErrorIs(t, err, os.ErrNotExist)
	scratch, _ := os.ReadDir(s.scratch)
	assert.Empty(t, scratch, "no temporary files are left")

	// Records are mutable and say where they are.
	where, err := s.PutRecord("runs/r/summary.json", []byte("1"))
	require.NoError(t, err)
	assert.True(t, strings.HasSuffix(where, "runs/r/summary.json"), where)
	_, err = s.PutRecord("runs/r/summary.json", []byte("2"))
	require.NoError(t, err)
	b, err := kind.open(t).GetRecord("runs/r/summary.json")
	require.NoError(t, err)
	assert.Equal(t, "2", string(b))
	_, err = s.GetRecord("runs/none.json")
	require.ErrorIs(t, err, os.ErrNotExist)

	_, err = s.Put("../escape", []byte("x"))
	require.ErrorContains(t, err, "escapes the store")
}

// TestCacheKeepsToItsCap: the worker's cache holds recently used
// artifacts by digest and drops the least recently used above its cap.
func TestCacheKeepsToItsCap(t *testing.T) {
	s, err := OpenURL(context.Background(), "mem://", Options{CacheDir: t.TempDir(), CacheMaxBytes: 250})
	require.NoError(t, err)
	var refs []Ref
	for i := 0; i < 4; i++ {
		ref, err := s.Put("a/"+string(rune('a'+i)), bytes.Repeat([]byte{byte(i)}, 100))
		require.NoError(t, err)
		refs = append(refs, ref)
	}
	entries, err := os.ReadDir(s.cache.dir)
	require.NoError(t, err)
	require.Len(t, entries, 2, "two 100-byte artifacts fit a 250-byte cap")
	assert.FileExists(t, s.cache.path(refs[3].SHA256), "the newest stays")
	assert.NoFileExists(t, s.cache.path(refs[0].SHA256), "the oldest went")
	// An evicted artifact is fetched again, verified.
	got, err := s.Get(refs[0])
	require.NoError(t, err)
	assert.Equal(t, bytes.Repeat([]byte{0}, 100), got)
}

func TestOpenURL(t *testing.T) {
	dir := t.TempDir()
	for _, u := range []string{dir, "file://" + dir} {
		s, err := OpenURL(context.Background(), u, Options{})
		require.NoError(t, err)
		assert.Equal(t, dir, s.Root, "a path or file:// is a local store")
	}
	_, err := OpenURL(context.Background(), "s3://key:secret@bucket", Options{})
	require.ErrorIs(t, err, ErrStore)
	assert.NotContains(t, err.Error(), "secret")
	_, err = OpenURL(context.Background(), "nosuch://bucket", Options{})
	require.True(t, errors.Is(err, ErrStore), "%v", err)
}
