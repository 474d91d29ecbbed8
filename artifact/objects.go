package artifact

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/azureblob" // azblob:// URLs
	_ "gocloud.dev/blob/gcsblob"   // gs:// URLs
	_ "gocloud.dev/blob/s3blob"    // s3:// URLs
	"gocloud.dev/gcerrors"
)

// objects is where a store's bytes live: a local directory or a bucket.
// Keys are slash-separated paths relative to the root.
type objects interface {
	// upload stores the local file src under key unless key exists, in
	// which case existed is true and nothing changes.
	upload(ctx context.Context, key, src string) (existed bool, err error)
	// open reads key; a missing key is an error satisfying
	// errors.Is(err, os.ErrNotExist).
	open(ctx context.Context, key string) (io.ReadCloser, error)
	// overwrite replaces key with data, atomically.
	overwrite(ctx context.Context, key string, data []byte) error
	// list calls fn for every key under prefix, with its size.
	list(ctx context.Context, prefix string, fn func(key string, size int64) error) error
	remove(ctx context.Context, key string) error
	// where names key for people ("" names the root).
	where(key string) string
}

// dirObjects are files under a directory. upload hard-links the finished
// temporary file into place, which fails rather than replace an existing
// file, so a complete artifact is never overwritten even by a racing
// writer; overwrite renames a synced temporary file over the target.
type dirObjects struct {
	root string
	// link is os.Link, or (in tests) a file system without hard links.
	link func(oldname, newname string) error
	// claimed, when set, is called between the claim of a key and its bytes
	// moving in, where there are no hard links: tests race a writer there.
	claimed func(key string)
}

func (d dirObjects) path(key string) string { return filepath.Join(d.root, filepath.FromSlash(key)) }

func (d dirObjects) where(key string) string {
	if key == "" {
		return d.root
	}
	return d.path(key)
}

func (d dirObjects) upload(_ context.Context, key, src string) (bool, error) {
	dst := d.path(key)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return false, fmt.Errorf("write %s: %w", dst, err)
	}
	link := d.link
	if link == nil {
		link = os.Link
	}
	err := link(src, dst)
	switch {
	case errors.Is(err, fs.ErrExist):
		return true, nil
	case err != nil:
		// A file system without hard links: claim the key with an
		// exclusive create, which only one writer's succeeds at, then move
		// the bytes over the claim. A crash in between leaves an empty
		// file without a manifest, which later writers never replace.
		f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("write %s: %w", dst, err)
		}
		f.Close()
		if d.claimed != nil {
			d.claimed(key)
		}
		if err := os.Rename(src, dst); err != nil {
			os.Remove(dst)
			return false, fmt.Errorf("write %s: %w", dst, err)
		}
	}
	syncDir(filepath.Dir(dst))
	return false, nil
}

func (d dirObjects) open(_ context.Context, key string) (io.ReadCloser, error) {
	return os.Open(d.path(key))
}

func (d dirObjects) overwrite(_ context.Context, key string, data []byte) error {
	return writeAtomic(d.path(key), data)
}

func (d dirObjects) list(_ context.Context, prefix string, fn func(string, int64) error) error {
	base := d.path(prefix)
	err := filepath.WalkDir(base, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(d.root, p)
		if err != nil {
			return err
		}
		return fn(filepath.ToSlash(rel), info.Size())
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// remove deletes the file and the directories it leaves empty.
func (d dirObjects) remove(_ context.Context, key string) error {
	p := d.path(key)
	if err := os.Remove(p); err != nil {
		return err
	}
	for dir := filepath.Dir(p); dir != d.root && strings.HasPrefix(dir, d.root); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			break
		}
	}
	return nil
}

// bucketObjects are objects in a gocloud.dev bucket. upload writes with
// IfNotExist (S3's If-None-Match: *), so the store does not replace an
// existing object: OpenURL refuses a bucket that ignores it.
type bucketObjects struct {
	b    *blob.Bucket
	name string // the URL without its query
}

func (o bucketObjects) where(key string) string {
	if key == "" {
		return o.name
	}
	return strings.TrimSuffix(o.name, "/") + "/" + key
}

// fail describes a bucket error, marking those retrying cannot mend
// (credentials, permissions, a missing bucket) with ErrStore.
func (o bucketObjects) fail(op, key string, err error) error {
	switch {
	case gcerrors.Code(err) == gcerrors.PermissionDenied || refused(err):
		return fmt.Errorf("%w: %s %s: access denied (check the store's credentials): %v", ErrStore, op, o.where(key), err)
	case gcerrors.Code(err) == gcerrors.NotFound:
		return fmt.Errorf("%s %s: %w", op, o.where(key), os.ErrNotExist)
	}
	return fmt.Errorf("%s %s (store unreachable or failing; retried): %w", op, o.where(key), err)
}

// refused reports an HTTP 401 or 403 from the service, which gocloud
// passes on as code Unknown for some S3 errors (SignatureDoesNotMatch).
func refused(err error) bool {
	var status interface{ HTTPStatusCode() int }
	if errors.As(err, &status) {
		return status.HTTPStatusCode() == 401 || status.HTTPStatusCode() == 403
	}
	return false
}

func (o bucketObjects) upload(ctx context.Context, key, src string) (bool, error) {
	f, err := os.Open(src)
	if err != nil {
		return false, err
	}
	defer f.Close()
	w, err := o.b.NewWriter(ctx, key, &blob.WriterOptions{IfNotExist: true})
	if err != nil {
		return false, o.fail("write", key, err)
	}
	if _, err := io.Copy(w, f); err != nil {
		w.Close()
		return false, o.fail("write", key, err)
	}
	if err := w.Close(); err != nil {
		if gcerrors.Code(err) == gcerrors.FailedPrecondition {
			return true, nil
		}
		return false, o.fail("write", key, err)
	}
	return false, nil
}

// create writes data under key unless key exists (FailedPrecondition).
func (o bucketObjects) create(ctx context.Context, key string, data []byte) error {
	w, err := o.b.NewWriter(ctx, key, &blob.WriterOptions{IfNotExist: true})
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

// checkConditionalCreate creates a fresh key twice, as upload does: a
// store that lets the second create overwrite the first (an S3-compatible
// server that ignores If-None-Match) would let racing writers overwrite
// each other's artifacts silently, so it is refused. Credentials that may
// not write pass: they cannot overwrite anything either.
func (o bucketObjects) checkConditionalCreate(ctx context.Context) error {
	key := "alignflow-store-check/create-" + rand.Text()
	switch err := o.create(ctx, key, []byte("first")); {
	case gcerrors.Code(err) == gcerrors.PermissionDenied || refused(err):
		return nil
	case err != nil:
		return o.fail("check conditional create", key, err)
	}
	defer func() { _ = o.b.Delete(ctx, key) }() // a probe left behind is a few bytes no one reads
	switch err := o.create(ctx, key, []byte("second")); {
	case gcerrors.Code(err) == gcerrors.FailedPrecondition:
		return nil
	case err == nil:
		return fmt.Errorf("%w: store %s ignores conditional creates: a second create of %s (S3's If-None-Match: *) overwrote the first instead of failing with 412 Precondition Failed, so racing writers would overwrite each other's artifacts silently; use a store that supports conditional writes", ErrStore, o.name, key)
	default:
		return o.fail("check conditional create", key, err)
	}
}

func (o bucketObjects) open(ctx context.Context, key string) (io.ReadCloser, error) {
	r, err := o.b.NewReader(ctx, key, nil)
	if err != nil {
		return nil, o.fail("read", key, err)
	}
	return r, nil
}

func (o bucketObjects) overwrite(ctx context.Context, key string, data []byte) error {
	if err := o.b.WriteAll(ctx, key, data, nil); err != nil {
		return o.fail("write", key, err)
	}
	return nil
}

func (o bucketObjects) list(ctx context.Context, prefix string, fn func(string, int64) error) error {
	it := o.b.List(&blob.ListOptions{Prefix: prefix})
	for {
		obj, err := it.Next(ctx)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return o.fail("list", prefix, err)
		}
		if err := fn(obj.Key, obj.Size); err != nil {
			return err
		}
	}
}

func (o bucketObjects) remove(ctx context.Context, key string) error {
	if err := o.b.Delete(ctx, key); err != nil {
		return o.fail("delete", key, err)
	}
	return nil
}

// Options configure a store on object storage.
type Options struct {
	// CacheDir holds the worker's cached copies of artifacts, by digest, and
	// its temporary files. Default: the user's cache directory/alignflow.
	CacheDir string
	// CacheMaxBytes caps the cache; the least recently used artifacts go
	// first. Default 20 GiB.
	CacheMaxBytes int64
}

// DefaultCacheMaxBytes is the cache's default size cap.
const DefaultCacheMaxBytes = 20 << 30

// OpenURL opens the store a URL names: a local directory (a path, or
// file:///path), or a bucket: s3://bucket?region=R (with endpoint=URL and
// use_path_style=true for S3-compatible servers), gs://bucket,
// azblob://container. Credentials come from each cloud's usual sources
// (for S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ~/.aws), never from
// the URL. A bucket that does not exist or refuses the credentials is an
// ErrStore, and so is one that ignores conditional creates (opening
// writes, overwrites and deletes a probe under alignflow-store-check/);
// one that cannot be reached is an ordinary error.
func OpenURL(ctx context.Context, rawURL string, opts Options) (*Store, error) {
	if rawURL == "" {
		return nil, fmt.Errorf("%w: empty store URL", ErrStore)
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme == "" || len(u.Scheme) == 1 { // a Windows drive letter is no scheme
		return Open(rawURL)
	}
	if u.Scheme == "file" {
		return Open(u.Path)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w: store URL %s://%s carries credentials; give them through the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) instead", ErrStore, u.Scheme, u.Host)
	}
	name := u.Scheme + "://" + u.Host + u.Path
	b, err := blob.OpenBucket(ctx, rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: open store %s: %v", ErrStore, name, err)
	}
	o := bucketObjects{b: b, name: name}
	ok, err := b.IsAccessible(ctx)
	switch {
	case err != nil:
		b.Close()
		return nil, o.fail("open store", "", err)
	case !ok:
		b.Close()
		return nil, fmt.Errorf("%w: store %s: the bucket does not exist", ErrStore, name)
	}
	// A missing bucket can also show only on use: try a read.
	if _, err := o.open(ctx, "alignflow-store-check"); err != nil && !errors.Is(err, os.ErrNotExist) {
		b.Close()
		return nil, err
	}
	if err := o.checkConditionalCreate(ctx); err != nil {
		b.Close()
		return nil, err
	}
	dir := opts.CacheDir
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		dir = filepath.Join(base, "alignflow")
	}
	max := opts.CacheMaxBytes
	if max <= 0 {
		max = DefaultCacheMaxBytes
	}
	c, err := openCache(filepath.Join(dir, "artifacts"), max)
	if err != nil {
		b.Close()
		return nil, err
	}
	return &Store{objs: o, cache: c, scratch: filepath.Join(dir, "tmp")}, nil
}

// Close releases a bucket's connections.
func (s *Store) Close() error {
	if o, ok := s.objs.(bucketObjects); ok {
		return o.b.Close()
	}
	return nil
}
