// Package retention decides what of an artifact store may go (`alignflow
// gc`): of a finished run, everything that neither its summary or report,
// nor a reuse record names, except its last retention.keep_iterations
// REINFORCE iterations (all of them when 0); of an unfinished run,
// nothing, since a resume or a continuation may need any of it; and
// temporary files left by stopped workers.
package retention

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/ops/metrics"
	"github.com/alignflow/alignflow/pipeline"
)

// Options adjust a collection.
type Options struct {
	// KeepIterations, when not negative, replaces every run's own
	// retention.keep_iterations.
	KeepIterations int
	// ScratchAge is how old a temporary file must be to go (default a day:
	// a running activity's are younger).
	ScratchAge time.Duration
	// Now is the time ages are measured from (default time.Now()).
	Now time.Time
}

// Object is a key and its size.
type Object struct {
	Key   string
	Bytes int64
}

// Plan is what a collection removes and keeps.
type Plan struct {
	Remove      []Object
	RemoveBytes int64
	Kept        int
	KeptBytes   int64
	// Unfinished are the runs kept whole (no summary or report yet).
	Unfinished []string
}

var iterationDir = regexp.MustCompile(`^reinforce/iter-(\d+)/`)

// records a finished run has: their presence means it finished.
var finishedRecords = []string{pipeline.SummaryFile, pipeline.ComparisonFile}

// Collect plans a collection of store. Nothing is removed until Apply.
func Collect(store *artifact.Store, opts Options) (*Plan, error) {
	if opts.ScratchAge <= 0 {
		opts.ScratchAge = 24 * time.Hour
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	var all []Object
	if err := store.List("", func(key string, size int64) error {
		all = append(all, Object{key, size})
		return nil
	}); err != nil {
		return nil, err
	}
	live := map[string]bool{}
	name := func(refs []artifact.Ref) {
		for _, r := range refs {
			live[r.Path], live[artifact.ManifestKey(r.Path)] = true, true
		}
	}
	runs := map[string][]Object{} // by run ID
	keep := map[string]int{}      // finished runs' keep_iterations
	for _, o := range all {
		switch {
		case strings.HasPrefix(o.Key, "reuse/"):
			refs, err := refsOf(store, o.Key)
			if err != nil {
				return nil, err
			}
			name(refs)
		case strings.HasPrefix(o.Key, "runs/"):
			parts := strings.SplitN(o.Key, "/", 3)
			if len(parts) == 3 {
				runs[parts[1]] = append(runs[parts[1]], o)
			}
		}
	}
	for id, objs := range runs {
		for _, o := range objs {
			rel := strings.TrimPrefix(o.Key, "runs/"+id+"/")
			if !slices.Contains(finishedRecords, rel) {
				continue
			}
			refs, err := refsOf(store, o.Key)
			if err != nil {
				return nil, err
			}
			name(refs)
			if rel == pipeline.SummaryFile {
				var s pipeline.Summary
				b, _ := store.GetRecord(o.Key)
				if json.Unmarshal(b, &s) == nil {
					keep[id] = s.KeepIterations
				}
			} else if _, ok := keep[id]; !ok {
				keep[id] = 0
			}
		}
	}

	p := &Plan{}
	removeIf := func(o Object, gone bool) {
		if gone {
			p.Remove = append(p.Remove, o)
			p.RemoveBytes += o.Bytes
		} else {
			p.Kept++
			p.KeptBytes += o.Bytes
		}
	}
	for _, o := range all {
		if strings.HasPrefix(o.Key, "tmp/") {
			removeIf(o, old(store, o.Key, opts))
		} else if !strings.HasPrefix(o.Key, "runs/") {
			removeIf(o, false)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(runs)) {
		k, finished := keep[id]
		if !finished {
			p.Unfinished = append(p.Unfinished, id)
			for _, o := range runs[id] {
				removeIf(o, false)
			}
			continue
		}
		if opts.KeepIterations >= 0 {
			k = opts.KeepIterations
		}
		kept := lastIterations(id, runs[id], k)
		for _, o := range runs[id] {
			rel := strings.TrimPrefix(o.Key, "runs/"+id+"/")
			stays := live[o.Key] || slices.Contains(finishedRecords, rel) || rel == "comparison.md" ||
				rel == metrics.File || strings.HasPrefix(rel, "metrics/") || strings.HasPrefix(rel, "report/") || // what people read
				strings.HasPrefix(rel, "reinforce/curve-") // the curve's segments chain back through each other
			if m := iterationDir.FindStringSubmatch(rel); m != nil && (k == 0 || kept[m[1]]) && !strings.Contains(rel, "/shard-") {
				stays = true
			}
			removeIf(o, !stays)
		}
	}
	sort.Slice(p.Remove, func(i, j int) bool { return p.Remove[i].Key < p.Remove[j].Key })
	return p, nil
}

// lastIterations are the numbers (as in the key) of a run's last k
// iteration directories.
func lastIterations(id string, objs []Object, k int) map[string]bool {
	var nums []string
	seen := map[string]bool{}
	for _, o := range objs {
		if m := iterationDir.FindStringSubmatch(strings.TrimPrefix(o.Key, "runs/"+id+"/")); m != nil && !seen[m[1]] {
			seen[m[1]] = true
			nums = append(nums, m[1])
		}
	}
	sort.Slice(nums, func(i, j int) bool {
		a, _ := strconv.Atoi(nums[i])
		b, _ := strconv.Atoi(nums[j])
		return a < b
	})
	out := map[string]bool{}
	for i := max(0, len(nums)-k); i < len(nums); i++ {
		out[nums[i]] = true
	}
	return out
}

// refsOf reads a JSON record and the refs it names.
func refsOf(store *artifact.Store, key string) ([]artifact.Ref, error) {
	b, err := store.GetRecord(key)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", store.Where(key), err)
	}
	var v any
	if json.Unmarshal(b, &v) != nil {
		return nil, nil // not JSON (a manifest's sibling, a report): names nothing
	}
	return artifact.RefsIn(v), nil
}

// old reports whether a scratch file is older than the options allow; on
// object storage (no modification times here) scratch files are local, so
// only a local store's count.
func old(store *artifact.Store, key string, opts Options) bool {
	if store.Root == "" {
		return false
	}
	st, err := os.Stat(path.Join(store.Root, key))
	return err == nil && opts.Now.Sub(st.ModTime()) > opts.ScratchAge
}

// Apply removes the plan's objects and returns what it freed. Manifests
// go first: an artifact without its manifest is incomplete, never taken
// for a complete one, whichever step a failure interrupts.
func (p *Plan) Apply(store *artifact.Store) (int64, error) { return p.apply(store.Delete) }

// apply is Apply with the removal of one key given, so that a test can
// watch the order keys go in.
func (p *Plan) apply(remove func(key string) error) (int64, error) {
	var freed int64
	var errs []error
	manifest := func(o Object) bool { return strings.HasSuffix(o.Key, ".manifest.json") }
	for _, pass := range []bool{true, false} {
		for _, o := range p.Remove {
			if manifest(o) != pass {
				continue
			}
			if err := remove(o.Key); err != nil {
				errs = append(errs, err)
				continue
			}
			freed += o.Bytes
		}
	}
	return freed, errors.Join(errs...)
}
