// Package artifact is the store where datasets, checkpoints, rollouts and
// reports live between activities. Activities pass Refs (a key and a
// sha256), never tensors: Temporal payloads are capped at 2 MB.
//
// A store is a local directory (the default) or a bucket of object storage
// (S3 or any S3-compatible server, GCS, Azure, through gocloud.dev/blob),
// with the same guarantees on both: every artifact has a manifest with its
// digest, written after the artifact itself, so an artifact without one is
// incomplete; a ref's digest must be one (64 hex characters) and loads
// verify it; a complete artifact is never overwritten (new content for a
// taken key goes to a key named by its digest, and a bucket that ignores
// conditional creates is refused when opened); and reads and writes
// stream through files, never holding a whole artifact in memory. On
// object storage each worker keeps the artifacts it wrote or read in a
// local cache keyed by digest, with a size cap, verified again on every
// use and never evicting a file in use.
package artifact

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/alignflow/alignflow/model/weights"
)

// Ref identifies a stored artifact.
type Ref struct {
	Path   string `json:"path"` // key relative to the store's root
	SHA256 string `json:"sha256"`
	Bytes  int64  `json:"bytes"`
}

// ErrCorrupt marks an artifact whose bytes do not match its digest: retrying
// will not help, the artifact must be recomputed.
var ErrCorrupt = errors.New("artifact corrupt")

// ErrStore marks a store that cannot work as configured: wrong
// credentials, a bucket that does not exist. Retrying will not help.
var ErrStore = errors.New("artifact store unusable")

// Store holds artifacts in a local directory or a bucket.
type Store struct {
	// Root is a local store's directory ("" for object storage).
	Root string

	objs    objects
	cache   *cache // object storage only
	scratch string // temporary files, on the same file system as the cache or Root
	counter func(read bool, n int64)
}

// CountBytes has count called with the size of every artifact or record
// read (read true: from the store or this worker's cache) and written,
// e.g. to export them as metrics.
func (s *Store) CountBytes(count func(read bool, n int64)) { s.counter = count }

func (s *Store) count(read bool, n int64) {
	if s.counter != nil {
		s.counter(read, n)
	}
}

// Open opens (creating if needed) a store in a local directory.
func Open(root string) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("artifact store %s: %w", root, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("artifact store %s: %w", root, err)
	}
	return &Store{Root: abs, objs: dirObjects{root: abs}, scratch: filepath.Join(abs, "tmp")}, nil
}

// Where names a key for people: a local path, or the bucket URL and key.
func (s *Store) Where(key string) string { return s.objs.where(key) }

// Describe names the store (its directory or bucket URL, never a secret).
func (s *Store) Describe() string { return s.objs.where("") }

// Abs returns the absolute path of a ref in a local store.
func (s *Store) Abs(ref Ref) string { return filepath.Join(s.Root, filepath.FromSlash(ref.Path)) }

type manifest struct {
	SHA256 string `json:"sha256"`
	Bytes  int64  `json:"bytes"`
}

func manifestPath(p string) string { return p + ".manifest.json" }

// checkDigest refuses a sha256 that is not 64 lowercase hex characters, as
// corrupt. A ref's digest names its cached copy on object storage, so one
// that is not a digest ("../../secret") would name any file: every ref and
// manifest entering the store passes here first.
func checkDigest(digest string) error {
	if len(digest) != 2*sha256.Size || strings.Trim(digest, "0123456789abcdef") != "" {
		return fmt.Errorf("%w: sha256 %q is not a sha256 digest (64 lowercase hex characters)", ErrCorrupt, digest)
	}
	return nil
}

// checkRef is where a ref enters the store (LocalFile, Get, GetJSON,
// GetWeights): its digest must be one and its path stay inside the store,
// or the ref is corrupt; it returns the normalised key.
func checkRef(ref Ref) (string, error) {
	if err := checkDigest(ref.SHA256); err != nil {
		return "", fmt.Errorf("artifact %s: %w", ref.Path, err)
	}
	key, err := cleanKey(ref.Path)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return key, nil
}

// cleanKey checks that rel stays inside the store and normalises it.
func cleanKey(rel string) (string, error) {
	key := path.Clean(filepath.ToSlash(rel))
	if key == "." || key == ".." || strings.HasPrefix(key, "../") || strings.HasPrefix(key, "/") || filepath.IsAbs(rel) {
		return "", fmt.Errorf("artifact path %q escapes the store", rel)
	}
	return key, nil
}

// ScratchDir makes a fresh temporary directory for writers that need a
// path, on the file system the store moves finished files from.
func (s *Store) ScratchDir(prefix string) (string, error) {
	if err := os.MkdirAll(s.scratch, 0o755); err != nil {
		return "", fmt.Errorf("scratch folder: %w", err)
	}
	return os.MkdirTemp(s.scratch, prefix+"-*")
}

// Writer streams an artifact into the store: written to a temporary file
// while hashed, stored by Commit. Abort (or a failed Commit) leaves nothing.
type Writer struct {
	s    *Store
	key  string
	f    *os.File
	h    hash.Hash
	n    int64
	done bool
}

// Create starts writing the artifact rel.
func (s *Store) Create(rel string) (*Writer, error) {
	key, err := cleanKey(rel)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(s.scratch, 0o755); err != nil {
		return nil, fmt.Errorf("write %s: %w", s.Where(key), err)
	}
	f, err := os.CreateTemp(s.scratch, "."+path.Base(key)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", s.Where(key), err)
	}
	return &Writer{s: s, key: key, f: f, h: sha256.New()}, nil
}

func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	return n, err
}

// Abort discards what was written.
func (w *Writer) Abort() {
	if !w.done {
		w.done = true
		w.f.Close()
		os.Remove(w.f.Name())
	}
}

// Commit stores the artifact and returns its ref. If a complete artifact
// with the same digest is already under the key (a retried activity), its
// ref is returned; if its content differs, the new bytes go to a sibling
// key named by their digest, so nothing complete is ever overwritten.
func (w *Writer) Commit() (Ref, error) {
	defer w.Abort()
	if err := w.f.Sync(); err != nil {
		return Ref{}, fmt.Errorf("sync %s: %w", w.f.Name(), err)
	}
	if err := w.f.Close(); err != nil {
		return Ref{}, fmt.Errorf("close %s: %w", w.f.Name(), err)
	}
	s, tmp := w.s, w.f.Name()
	digest := hex.EncodeToString(w.h.Sum(nil))
	ref := Ref{Path: w.key, SHA256: digest, Bytes: w.n}
	ext := path.Ext(w.key)
	for _, key := range []string{w.key, strings.TrimSuffix(w.key, ext) + "." + digest[:12] + ext} {
		ref.Path = key
		m, err := s.readManifest(key)
		switch {
		case err == nil && m.SHA256 == digest:
			s.keep(digest, tmp)
			return ref, nil
		case err == nil:
			continue // taken by other content
		case !errors.Is(err, os.ErrNotExist):
			return Ref{}, err
		}
		existed, err := s.objs.upload(context.Background(), key, tmp)
		if err != nil {
			return Ref{}, err
		}
		if existed {
			// Data without a manifest: an earlier write that stopped before
			// its manifest. Keep it if it is this content; never replace it.
			got, err := s.digestOf(key)
			if err != nil || got != digest {
				continue
			}
		}
		mb, _ := json.Marshal(manifest{SHA256: digest, Bytes: w.n})
		if err := s.objs.overwrite(context.Background(), manifestPath(key), mb); err != nil {
			return Ref{}, err
		}
		s.count(false, w.n)
		s.keep(digest, tmp)
		return ref, nil
	}
	return Ref{}, fmt.Errorf("write %s: the key and its digest-named sibling both hold other content", s.Where(w.key))
}

// keep moves a committed temporary file into the cache (object storage),
// or removes it (a local store linked it into place).
func (s *Store) keep(digest, tmp string) {
	if s.cache != nil {
		s.cache.adopt(digest, tmp)
		return
	}
	os.Remove(tmp)
}

func (s *Store) readManifest(key string) (manifest, error) {
	var m manifest
	r, err := s.objs.open(context.Background(), manifestPath(key))
	if err != nil {
		return m, err
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, 1<<16))
	if err != nil {
		return m, fmt.Errorf("read manifest %s: %w", s.Where(manifestPath(key)), err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%w: manifest %s: %v", ErrCorrupt, s.Where(manifestPath(key)), err)
	}
	if err := checkDigest(m.SHA256); err != nil {
		return m, fmt.Errorf("manifest %s: %w", s.Where(manifestPath(key)), err)
	}
	return m, nil
}

// digestOf hashes the object under key as stored.
func (s *Store) digestOf(key string) (string, error) {
	r, err := s.objs.open(context.Background(), key)
	if err != nil {
		return "", err
	}
	defer r.Close()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", fmt.Errorf("read %s: %w", s.Where(key), err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Put writes data under rel (see Writer.Commit).
func (s *Store) Put(rel string, data []byte) (Ref, error) {
	return s.PutFrom(rel, bytes.NewReader(data))
}

// PutFrom streams r under rel.
func (s *Store) PutFrom(rel string, r io.Reader) (Ref, error) {
	w, err := s.Create(rel)
	if err != nil {
		return Ref{}, err
	}
	defer w.Abort()
	if _, err := io.Copy(w, r); err != nil {
		return Ref{}, fmt.Errorf("write %s: %w", s.Where(rel), err)
	}
	return w.Commit()
}

// PutFile moves a finished file into the store under rel.
func (s *Store) PutFile(rel, file string) (Ref, error) {
	defer os.Remove(file)
	f, err := os.Open(file)
	if err != nil {
		return Ref{}, fmt.Errorf("read %s: %w", file, err)
	}
	defer f.Close()
	return s.PutFrom(rel, f)
}

// LocalFile returns a local file holding the artifact, verified against
// its digest: a local store's own file, or the worker's cached copy of an
// object (fetched, streamed to disk and verified on first use, verified
// again on every later use). The file stays in place until release is
// called: the cache evicts no file in use, in this process or another.
func (s *Store) LocalFile(ref Ref) (path string, release func(), err error) {
	h, err := s.open(ref)
	if err != nil {
		return "", nil, err
	}
	return h.path, func() { h.Close() }, nil
}

// open opens the artifact and verifies it through the descriptor it
// returns, rewound: what the caller reads is what was hashed. On object
// storage it is the cache entry, held until closed (see cache).
func (s *Store) open(ref Ref) (*held, error) {
	key, err := checkRef(ref)
	if err != nil {
		return nil, err
	}
	if s.cache != nil {
		h, ok := s.cache.open(ref.SHA256)
		if !ok {
			h, err = s.fetch(ref, key)
		}
		if err == nil {
			s.count(true, ref.Bytes)
		}
		return h, err
	}
	path := s.Abs(Ref{Path: key})
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read artifact %s: %w", path, err)
	}
	got, err := hashFile(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read artifact %s: %w", path, err)
	}
	if got != ref.SHA256 {
		f.Close()
		return nil, fmt.Errorf("%w: %s has sha256 %s, expected %s (delete it and rerun the stage that made it)", ErrCorrupt, path, got, ref.SHA256)
	}
	s.count(true, ref.Bytes)
	return &held{File: f, path: path}, nil
}

// hashFile returns the sha256 of f's content and rewinds it.
func hashFile(f *os.File) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// fetch downloads an object into the cache, verifying it on the way, and
// returns it held (see cache.hold).
func (s *Store) fetch(ref Ref, key string) (*held, error) {
	r, err := s.objs.open(context.Background(), key)
	if err != nil {
		return nil, fmt.Errorf("read artifact %s: %w", s.Where(key), err)
	}
	defer r.Close()
	if err := os.MkdirAll(s.scratch, 0o755); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(s.scratch, ".fetch-*")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*held, error) {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, h), r); err != nil {
		return fail(fmt.Errorf("read artifact %s: %w", s.Where(key), err))
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != ref.SHA256 {
		return fail(fmt.Errorf("%w: %s has sha256 %s, expected %s (delete it and rerun the stage that made it)", ErrCorrupt, s.Where(key), got, ref.SHA256))
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fail(fmt.Errorf("read artifact %s: %w", s.Where(key), err))
	}
	return s.cache.hold(ref.SHA256, f), nil
}

// Get reads a (small) artifact whole, verified.
func (s *Store) Get(ref Ref) ([]byte, error) {
	h, err := s.open(ref)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	b, err := io.ReadAll(h)
	if err != nil {
		return nil, fmt.Errorf("read artifact %s: %w", h.path, err)
	}
	return b, nil
}

// Lookup is the reference of the artifact stored under rel, from its
// manifest: reading it (Get, GetJSON) then verifies its bytes. A missing
// artifact is an error satisfying errors.Is(err, os.ErrNotExist).
func (s *Store) Lookup(rel string) (Ref, error) {
	key, err := cleanKey(rel)
	if err != nil {
		return Ref{}, err
	}
	m, err := s.readManifest(key)
	if err != nil {
		return Ref{}, err
	}
	return Ref{Path: key, SHA256: m.SHA256, Bytes: m.Bytes}, nil
}

// PutJSON stores v as indented JSON.
func (s *Store) PutJSON(rel string, v any) (Ref, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return Ref{}, fmt.Errorf("encode %s: %w", rel, err)
	}
	return s.Put(rel, append(b, '\n'))
}

// GetJSON loads and verifies a JSON artifact into v.
func (s *Store) GetJSON(ref Ref, v any) error {
	b, err := s.Get(ref)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: decode %s: %v", ErrCorrupt, s.Where(ref.Path), err)
	}
	return nil
}

// PutWeights streams a tensor set into the store in the safetensors layout.
func (s *Store) PutWeights(rel string, set *weights.Set) (Ref, error) {
	w, err := s.Create(rel)
	if err != nil {
		return Ref{}, err
	}
	defer w.Abort()
	if _, err := set.WriteTo(w); err != nil {
		return Ref{}, fmt.Errorf("encode %s: %w", rel, err)
	}
	return w.Commit()
}

// GetWeights loads and verifies a tensor set.
func (s *Store) GetWeights(ref Ref) (*weights.Set, error) {
	h, err := s.open(ref)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	set, err := weights.Read(h)
	if err != nil {
		return nil, fmt.Errorf("%w: decode %s: %v", ErrCorrupt, s.Where(ref.Path), err)
	}
	return set, nil
}

// PutRecord writes a small mutable record (a reuse record, a run's
// summary), replacing any earlier one, and says where it is.
func (s *Store) PutRecord(key string, data []byte) (string, error) {
	key, err := cleanKey(key)
	if err != nil {
		return "", err
	}
	if err := s.objs.overwrite(context.Background(), key, data); err != nil {
		return "", err
	}
	s.count(false, int64(len(data)))
	return s.Where(key), nil
}

// GetRecord reads a record; a missing one is an error satisfying
// errors.Is(err, os.ErrNotExist).
func (s *Store) GetRecord(key string) ([]byte, error) {
	key, err := cleanKey(key)
	if err != nil {
		return nil, err
	}
	r, err := s.objs.open(context.Background(), key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	s.count(true, int64(len(b)))
	return b, err
}

// ReadVerified reads a file written by a local Store, given its path,
// checking it against the manifest beside it; a file without a manifest
// (copied by hand) is read unverified, and verified reports which happened.
func ReadVerified(path string) (data []byte, verified bool, err error) {
	data, err = os.ReadFile(path)
	if err != nil {
		return nil, false, err
	}
	b, err := os.ReadFile(manifestPath(path))
	if errors.Is(err, os.ErrNotExist) {
		return data, false, nil
	}
	var m manifest
	if err == nil {
		err = json.Unmarshal(b, &m)
	}
	if err != nil {
		return nil, false, fmt.Errorf("%w: manifest %s: %v", ErrCorrupt, manifestPath(path), err)
	}
	if err := checkDigest(m.SHA256); err != nil {
		return nil, false, fmt.Errorf("manifest %s: %w", manifestPath(path), err)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != m.SHA256 {
		return nil, false, fmt.Errorf("%w: %s has sha256 %s, its manifest says %s", ErrCorrupt, path, got, m.SHA256)
	}
	return data, true, nil
}

// WriteFileAtomic writes an ordinary file (outside any store) atomically.
func WriteFileAtomic(path string, data []byte) error { return writeAtomic(path, data) }

// writeAtomic writes a temporary file in the target's directory, syncs it and
// renames it into place, so readers see either nothing or the whole file.
func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename into %s: %w", path, err)
	}
	syncDir(dir)
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
