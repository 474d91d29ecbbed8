package artifact

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// cache is a worker's local copies of artifacts from object storage, one
// file per digest (the content decides the name, so an entry is never
// stale), verified when added and again on every use: a copy damaged on
// disk since is dropped and fetched anew, never served. Above max bytes
// the least recently used entries are removed, except those in use: a
// reader holds a shared lock on the entry's file until it is done (see
// held), which eviction, in this process or another sharing the
// directory, tries to take exclusively before removing it; the lock goes
// with the reader's process, so a crash leaves nothing held. An entry,
// once in place, is removed but never replaced (where the file system has
// hard links), so a path a reader has locked names its file until the
// reader lets go.
type cache struct {
	dir string
	max int64
	mu  sync.Mutex
}

func openCache(dir string, max int64) (*cache, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return &cache{dir: dir, max: max}, nil
}

// path is digest's entry; callers have checked it is a digest (checkRef).
func (c *cache) path(digest string) string { return filepath.Join(c.dir, digest) }

// held is an open, verified artifact: a cache entry held against
// eviction (or a local store's file) until Close. drop is a private copy
// to remove on Close ("" for none).
type held struct {
	*os.File
	path string
	drop string
}

func (h *held) Close() error {
	err := h.File.Close()
	if h.drop != "" {
		os.Remove(h.drop)
	}
	return err
}

// open returns digest's entry verified, held and rewound, or false when
// there is none or it no longer matches its digest (it is then dropped).
func (c *cache) open(digest string) (*held, bool) {
	p := c.path(digest)
	f, err := os.Open(p)
	if err != nil {
		return nil, false
	}
	lockShared(f)
	if !samePath(p, f) { // evicted between the open and the lock
		f.Close()
		return nil, false
	}
	got, err := hashFile(f)
	if err != nil || got != digest {
		if err == nil && samePath(p, f) {
			os.Remove(p) // damaged since it was verified
		}
		f.Close()
		return nil, false
	}
	touch(p)
	return &held{File: f, path: p}, true
}

// hold makes f, a verified temporary file of digest's content, its entry,
// held for the caller. Where another worker placed the entry meanwhile,
// f stays the caller's private copy.
func (c *cache) hold(digest string, f *os.File) *held {
	lockShared(f)
	p, ok := c.place(digest, f.Name())
	if !ok {
		return &held{File: f, path: f.Name(), drop: f.Name()}
	}
	return &held{File: f, path: p}
}

// adopt moves a verified file into the cache as digest's entry (or
// removes it, where the entry is there already) and evicts what exceeds
// the cap.
func (c *cache) adopt(digest, file string) {
	if _, ok := c.place(digest, file); !ok {
		os.Remove(file)
	}
}

// place links file into place as digest's entry and removes its own name,
// failing rather than replace an entry (ok false: file is left as it
// was). A file system without hard links has it renamed into place, which
// at worst replaces an entry with the same verified bytes.
func (c *cache) place(digest, file string) (string, bool) {
	p := c.path(digest)
	err := os.Link(file, p)
	switch {
	case err == nil:
		os.Remove(file)
	case errors.Is(err, fs.ErrExist):
		return "", false
	default:
		if os.Rename(file, p) != nil {
			return "", false
		}
	}
	touch(p)
	c.evict(p)
	return p, true
}

// touch marks an entry used now, for eviction's order.
func touch(p string) {
	now := time.Now()
	_ = os.Chtimes(p, now, now)
}

// samePath reports whether p still names f's file.
func samePath(p string, f *os.File) bool {
	a, err := os.Stat(p)
	if err != nil {
		return false
	}
	b, err := f.Stat()
	return err == nil && os.SameFile(a, b)
}

// evict removes the least recently used entries not in use until the
// cache fits its cap, keeping keep (the entry just added) whatever its
// size.
func (c *cache) evict(keep string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return
	}
	type entry struct {
		path string
		size int64
		used time.Time
	}
	var all []entry
	var total int64
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || checkDigest(e.Name()) != nil {
			continue
		}
		all = append(all, entry{filepath.Join(c.dir, e.Name()), info.Size(), info.ModTime()})
		total += info.Size()
	}
	sort.Slice(all, func(i, j int) bool { return all[i].used.Before(all[j].used) })
	for _, e := range all {
		if total <= c.max {
			return
		}
		if e.path != keep && removeUnused(e.path) {
			total -= e.size
		}
	}
}

// removeUnused removes an entry no reader holds.
func removeUnused(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	if !tryLockExclusive(f) || !samePath(p, f) {
		return false
	}
	return os.Remove(p) == nil
}
