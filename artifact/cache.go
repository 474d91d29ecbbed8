package artifact

import (
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// cache is a worker's local copies of artifacts from object storage, one
// file per digest (the content decides the name, so an entry is never
// stale), verified when added. Above max bytes the least recently used
// entries are removed; an entry in use stays readable, since removal only
// unlinks it.
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

func (c *cache) path(digest string) string { return filepath.Join(c.dir, digest) }

// get returns the entry's path, marking it used.
func (c *cache) get(digest string) (string, bool) {
	p := c.path(digest)
	if _, err := os.Stat(p); err != nil {
		return "", false
	}
	now := time.Now()
	_ = os.Chtimes(p, now, now)
	return p, true
}

// adopt moves a verified file into the cache as digest's entry, evicts
// what exceeds the cap, and returns the entry's path.
func (c *cache) adopt(digest, file string) string {
	p := c.path(digest)
	if err := os.Rename(file, p); err != nil {
		os.Remove(file)
	}
	now := time.Now()
	_ = os.Chtimes(p, now, now)
	c.evict(p)
	return p
}

// evict removes the least recently used entries until the cache fits its
// cap, keeping keep (the entry just added) whatever its size.
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
		if err != nil || !info.Mode().IsRegular() {
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
		if e.path == keep {
			continue
		}
		if os.Remove(e.path) == nil {
			total -= e.size
		}
	}
}
