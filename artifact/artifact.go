// Package artifact is the store where datasets, checkpoints, rollouts and
// reports live between activities. Activities pass Refs (a path and a sha256),
// never tensors: Temporal payloads are capped at 2 MB. Writes are atomic
// (temporary file, fsync, rename), every artifact has a manifest with its
// digest, loads verify it, and a completed artifact is never overwritten.
package artifact

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/alignflow/alignflow/weights"
)

// Ref identifies a stored artifact.
type Ref struct {
	Path   string `json:"path"` // relative to the store root
	SHA256 string `json:"sha256"`
	Bytes  int64  `json:"bytes"`
}

// Store is a directory of artifacts.
type Store struct {
	Root string
}

// Open creates the store's root if needed.
func Open(root string) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("artifact store %s: %w", root, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("artifact store %s: %w", root, err)
	}
	return &Store{Root: abs}, nil
}

// Abs returns the absolute path of a ref.
func (s *Store) Abs(ref Ref) string { return filepath.Join(s.Root, filepath.FromSlash(ref.Path)) }

// ErrCorrupt marks an artifact whose bytes do not match its digest: retrying
// will not help, the artifact must be recomputed.
var ErrCorrupt = errors.New("artifact corrupt")

type manifest struct {
	SHA256 string `json:"sha256"`
	Bytes  int64  `json:"bytes"`
}

func manifestPath(p string) string { return p + ".manifest.json" }

// Put writes data under rel atomically and returns its ref. If a complete
// artifact already exists there with the same digest (a retried activity), its
// ref is returned; if its content differs, the new bytes go to a sibling named
// by their digest, so nothing complete is ever overwritten.
func (s *Store) Put(rel string, data []byte) (Ref, error) {
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])
	rel = filepath.ToSlash(filepath.Clean(rel))
	if strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
		return Ref{}, fmt.Errorf("artifact path %q escapes the store", rel)
	}
	ref := Ref{Path: rel, SHA256: digest, Bytes: int64(len(data))}
	if m, err := readManifest(s.Abs(ref)); err == nil {
		if m.SHA256 == digest {
			return ref, nil
		}
		ext := filepath.Ext(rel)
		ref.Path = strings.TrimSuffix(rel, ext) + "." + digest[:12] + ext
		if m2, err := readManifest(s.Abs(ref)); err == nil && m2.SHA256 == digest {
			return ref, nil
		}
	}
	path := s.Abs(ref)
	if err := writeAtomic(path, data); err != nil {
		return Ref{}, err
	}
	mb, _ := json.Marshal(manifest{SHA256: digest, Bytes: ref.Bytes})
	if err := writeAtomic(manifestPath(path), mb); err != nil {
		return Ref{}, err
	}
	return ref, nil
}

// ReadVerified reads a file written by a Store, given its path, checking it
// against the manifest beside it; a file without a manifest (copied by hand)
// is read unverified, and verified reports which happened.
func ReadVerified(path string) (data []byte, verified bool, err error) {
	data, err = os.ReadFile(path)
	if err != nil {
		return nil, false, err
	}
	m, err := readManifest(path)
	if errors.Is(err, os.ErrNotExist) {
		return data, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != m.SHA256 {
		return nil, false, fmt.Errorf("%w: %s has sha256 %s, its manifest says %s", ErrCorrupt, path, got, m.SHA256)
	}
	return data, true, nil
}

func readManifest(path string) (manifest, error) {
	var m manifest
	b, err := os.ReadFile(manifestPath(path))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("manifest %s: %w", manifestPath(path), err)
	}
	return m, nil
}

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
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// WriteFileAtomic writes an ordinary file (outside the store's bookkeeping)
// atomically, for user-facing outputs such as run summaries.
func WriteFileAtomic(path string, data []byte) error { return writeAtomic(path, data) }

// Get reads an artifact and verifies its digest.
func (s *Store) Get(ref Ref) ([]byte, error) {
	path := s.Abs(ref)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read artifact %s: %w", path, err)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != ref.SHA256 {
		return nil, fmt.Errorf("%w: %s has sha256 %s, expected %s (delete it and rerun the stage that made it)", ErrCorrupt, path, got, ref.SHA256)
	}
	return data, nil
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
		return fmt.Errorf("%w: decode %s: %v", ErrCorrupt, s.Abs(ref), err)
	}
	return nil
}

// PutWeights stores a tensor set in the safetensors layout.
func (s *Store) PutWeights(rel string, set *weights.Set) (Ref, error) {
	var buf bytes.Buffer
	if _, err := set.WriteTo(&buf); err != nil {
		return Ref{}, fmt.Errorf("encode %s: %w", rel, err)
	}
	return s.Put(rel, buf.Bytes())
}

// GetWeights loads and verifies a tensor set.
func (s *Store) GetWeights(ref Ref) (*weights.Set, error) {
	b, err := s.Get(ref)
	if err != nil {
		return nil, err
	}
	set, err := weights.Read(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%w: decode %s: %v", ErrCorrupt, s.Abs(ref), err)
	}
	return set, nil
}
