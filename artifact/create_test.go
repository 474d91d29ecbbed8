package artifact

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/internal/s3test"
)

// ignoringProxy serves S3 as a store that ignores If-None-Match does: it
// forwards every request to srv, dropping that header and signing the
// request again (the header is signed: dropping it alone would be refused).
// It returns the proxy's address.
func ignoringProxy(t *testing.T, srv *s3test.Server) string {
	creds := aws.Credentials{AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey}
	signer := v4.NewSigner()
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out := r.Clone(r.Context())
		out.RequestURI, out.URL.Scheme, out.URL.Host = "", "http", srv.Addr() // out.Host stays the one signed
		if out.Header.Get("If-None-Match") != "" {
			out.Header.Del("If-None-Match")
			out.Header.Del("Authorization")
			date, err := time.Parse("20060102T150405Z", out.Header.Get("X-Amz-Date"))
			if err == nil {
				err = signer.SignHTTP(r.Context(), creds, out, out.Header.Get("X-Amz-Content-Sha256"), "s3", s3test.Region, date)
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
		}
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	t.Cleanup(proxy.Close)
	return proxy.Listener.Addr().String()
}

// TestS3StoreMustHonourConditionalCreate: a store that ignores
// If-None-Match would let two racing writers of a key overwrite each
// other silently, so opening one fails, naming the URL and what the store
// did; the same bucket served as S3 serves it opens.
func TestS3StoreMustHonourConditionalCreate(t *testing.T) {
	srv := s3test.Start(t, "artifacts")
	srv.SetEnv(t)
	ctx := context.Background()
	s, err := OpenURL(ctx, srv.URL("artifacts"), Options{CacheDir: t.TempDir()})
	require.NoError(t, err, "versitygw honours If-None-Match")
	require.NoError(t, s.Close())

	url := "s3://artifacts?endpoint=http://" + ignoringProxy(t, srv) + "&region=" + s3test.Region + "&use_path_style=true"
	_, err = OpenURL(ctx, url, Options{CacheDir: t.TempDir()})
	require.ErrorIs(t, err, ErrStore)
	assert.Contains(t, err.Error(), "s3://artifacts")
	assert.Contains(t, err.Error(), "If-None-Match")
	assert.Contains(t, err.Error(), "overwrote")
	assert.NotContains(t, err.Error(), srv.SecretKey)
	s, err = OpenURL(ctx, srv.URL("artifacts"), Options{CacheDir: t.TempDir()})
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.List("", func(key string, _ int64) error {
		t.Errorf("the probes left %s in the bucket", key)
		return nil
	}))
}

// TestLocalStoreWithoutHardLinksHasOneCreator: on a file system without
// hard links, two writers racing for a key cannot both create it: the one
// that comes second, even between the first's claim and its bytes landing,
// finds the key taken, and the first writer's artifact is the one stored.
func TestLocalStoreWithoutHardLinksHasOneCreator(t *testing.T) {
	root := t.TempDir()
	noLinks := func(oldname, newname string) error {
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: errors.ErrUnsupported}
	}
	var second *Store
	var secondRef Ref
	var secondErr error
	first := &Store{Root: root, scratch: filepath.Join(root, "tmp")}
	first.objs = dirObjects{root: root, link: noLinks, claimed: func(string) {
		secondRef, secondErr = second.Put("run/a.bin", []byte("world"))
	}}
	second = &Store{Root: root, scratch: filepath.Join(root, "tmp"), objs: dirObjects{root: root, link: noLinks}}

	ref, err := first.Put("run/a.bin", []byte("hello"))
	require.NoError(t, err)
	require.NoError(t, secondErr)
	assert.Equal(t, "run/a.bin", ref.Path, "the first claim wins the key")
	assert.NotEqual(t, ref.Path, secondRef.Path, "the second writer diverges to a sibling")
	for r, want := range map[Ref]string{ref: "hello", secondRef: "world"} {
		got, err := first.Get(r)
		require.NoError(t, err, r.Path)
		assert.Equal(t, want, string(got), r.Path)
	}
}
