package artifact

import (
	"context"
	"encoding/json"
	"fmt"
)

// IsRef reports whether a decoded JSON object is a Ref: exactly path,
// sha256 and bytes.
func IsRef(m map[string]any) bool {
	_, p := m["path"].(string)
	_, d := m["sha256"].(string)
	return p && d && len(m) == 3
}

// RefsIn returns every Ref in a decoded JSON value (a stage's result, a
// summary, a reuse record), at any depth.
func RefsIn(v any) []Ref {
	var out []Ref
	switch x := v.(type) {
	case map[string]any:
		if IsRef(x) {
			var r Ref
			if b, err := json.Marshal(x); err == nil && json.Unmarshal(b, &r) == nil && r.Path != "" {
				out = append(out, r)
			}
			return out
		}
		for _, e := range x {
			out = append(out, RefsIn(e)...)
		}
	case []any:
		for _, e := range x {
			out = append(out, RefsIn(e)...)
		}
	}
	return out
}

// List calls fn for every key under prefix ("" for all) with its size,
// artifacts, manifests and records alike.
func (s *Store) List(prefix string, fn func(key string, size int64) error) error {
	return s.objs.list(context.Background(), prefix, fn)
}

// Delete removes a key (an artifact's bytes or manifest, a record).
func (s *Store) Delete(key string) error {
	key, err := cleanKey(key)
	if err != nil {
		return err
	}
	if err := s.objs.remove(context.Background(), key); err != nil {
		return fmt.Errorf("delete %s: %w", s.Where(key), err)
	}
	return nil
}

// ManifestKey is the key of an artifact's manifest.
func ManifestKey(key string) string { return manifestPath(key) }
