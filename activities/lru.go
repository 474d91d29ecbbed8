package activities

import (
	"fmt"
	"sync"
)

// How many loaded models and engine sets a worker keeps between
// activities. A run computes with one model (its weights, max_len) and one
// engine set (backend and architecture), so two of each let a worker
// alternate between two runs without loading again, while a worker that
// serves many runs holds no more than that: a 135M-parameter model is 540
// MB of float32 weights, and an engine set its compiled graphs (device
// memory with XLA, freed when the set is collected). Entries an activity
// is using never count as evictable, so the bound is these plus those.
const (
	maxModels     = 2
	maxEngineSets = 2
)

// lru keeps at most max values a worker loads or compiles once for many
// activities, the least recently used idle one going first; a value is
// made once however many activities ask for it at the same time, and one
// an activity holds is never evicted, so it is never made twice while in
// use. The zero value (with max 0) keeps only values in use.
type lru[V any] struct {
	max     int
	mu      sync.Mutex
	entries map[string]*lruEntry[V]
	clock   uint64
}

type lruEntry[V any] struct {
	ready chan struct{} // closed once v or err is set
	v     V
	err   error
	refs  int
	used  uint64
}

// get returns key's value, made by load if it is not kept, and holds it
// until release is called (once; further calls do nothing). A failed load
// is not kept: the next get tries again.
func (c *lru[V]) get(key string, load func() (V, error)) (v V, release func(), err error) {
	c.mu.Lock()
	if c.entries == nil {
		c.entries = map[string]*lruEntry[V]{}
	}
	e, kept := c.entries[key]
	if !kept {
		e = &lruEntry[V]{ready: make(chan struct{})}
		c.entries[key] = e
	}
	e.refs++
	c.clock++
	e.used = c.clock
	c.mu.Unlock()
	var once sync.Once
	release = func() { once.Do(func() { c.release(key, e) }) }
	if kept {
		<-e.ready
	} else {
		c.fill(e, load, release)
	}
	if e.err != nil {
		release()
		return v, nil, e.err
	}
	return e.v, release, nil
}

// fill loads e's value. A panic fails those waiting for it and lets go of
// the entry before it goes on up.
func (c *lru[V]) fill(e *lruEntry[V], load func() (V, error), release func()) {
	done := false
	defer func() {
		if !done {
			r := recover()
			e.err = fmt.Errorf("loading failed: %v", r)
			close(e.ready)
			release()
			panic(r)
		}
	}()
	e.v, e.err = load()
	done = true
	close(e.ready)
}

// release lets go of e; a failed entry goes, and idle ones beyond max,
// the least recently used first.
func (c *lru[V]) release(key string, e *lruEntry[V]) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	if e.err != nil && c.entries[key] == e {
		delete(c.entries, key)
	}
	for len(c.entries) > c.max {
		var oldest string
		var found bool
		for k, x := range c.entries {
			if x.refs == 0 && (!found || x.used < c.entries[oldest].used) {
				oldest, found = k, true
			}
		}
		if !found {
			return // all in use
		}
		delete(c.entries, oldest)
	}
}

// len is the number of values kept, in use or not.
func (c *lru[V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
