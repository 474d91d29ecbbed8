package artifact

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/internal/s3test"
)

// TestS3Store runs the store on a real S3-compatible server (versitygw):
// the guarantees of the local store hold, another worker reads through its
// own cache, the data survives a server restart, and the failures say what
// is wrong: a refused key or a missing bucket is an ErrStore naming the
// URL and never the secret; a server that is down is an ordinary
// (retryable) error.
func TestS3Store(t *testing.T) {
	srv := s3test.Start(t, "artifacts")
	srv.SetEnv(t)
	ctx := context.Background()
	open := func() (*Store, error) {
		return OpenURL(ctx, srv.URL("artifacts"), Options{CacheDir: t.TempDir()})
	}
	s, err := open()
	require.NoError(t, err)
	defer s.Close()
	ref, err := s.Put("runs/r/a.bin", []byte("hello"))
	require.NoError(t, err)
	assert.Equal(t, "s3://artifacts/runs/r/a.bin", s.Where(ref.Path))
	diff, err := s.Put("runs/r/a.bin", []byte("world"))
	require.NoError(t, err)
	assert.NotEqual(t, ref.Path, diff.Path, "never overwritten")

	other, err := open()
	require.NoError(t, err)
	defer other.Close()
	got, err := other.Get(ref)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(got))

	// The object really is in the bucket, as S3 stores it.
	b, err := os.ReadFile(srv.Dir + "/artifacts/runs/r/a.bin")
	require.NoError(t, err)
	assert.Equal(t, "hello", string(b))

	require.NoError(t, srv.Restart())
	third, err := open()
	require.NoError(t, err)
	defer third.Close()
	got, err = third.Get(diff)
	require.NoError(t, err)
	assert.Equal(t, "world", string(got), "the store survives a restart of the server")

	t.Run("guarantees", func(t *testing.T) {
		require.NoError(t, os.MkdirAll(srv.Dir+"/suite", 0o755))
		checkGuarantees(t, bucketKind(t, srv.URL("suite")))
	})
	t.Run("wrong credentials", func(t *testing.T) {
		t.Setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
		_, err := open()
		require.ErrorIs(t, err, ErrStore)
		assert.Contains(t, err.Error(), "s3://artifacts")
		assert.NotContains(t, err.Error(), "not-the-secret")
	})
	t.Run("missing bucket", func(t *testing.T) {
		_, err := OpenURL(ctx, srv.URL("nosuch"), Options{CacheDir: t.TempDir()})
		require.ErrorIs(t, err, ErrStore)
		assert.Contains(t, err.Error(), "s3://nosuch")
		assert.Contains(t, err.Error(), "does not exist")
	})
	t.Run("server down", func(t *testing.T) {
		srv.Stop()
		defer func() { require.NoError(t, srv.Restart()) }()
		short, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		_, err := OpenURL(short, srv.URL("artifacts"), Options{CacheDir: t.TempDir()})
		require.Error(t, err)
		assert.False(t, errors.Is(err, ErrStore), "unreachable is retryable: %v", err)
		// A fresh worker's read of an uncached artifact fails the same way.
		_, err = func() ([]byte, error) {
			fresh, err := open()
			if err != nil {
				return nil, err
			}
			return fresh.Get(ref)
		}()
		require.Error(t, err)
		assert.False(t, errors.Is(err, ErrStore))
	})
}
