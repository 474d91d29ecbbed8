// Package retention decides what of an artifact store may go (`alignflow
// gc`): of a finished run, everything that neither its summary or report,
// nor a reuse record names, except its last retention.keep_iterations
// REINFORCE iterations (all of them when 0); of an unfinished run, of one
// whose workflow ID Temporal has an open run under, and of one whose state
// cannot be learned, nothing, since a resume or a continuation may need any
// of it; and temporary files left by stopped workers.
package retention

import (
	"cmp"
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

// Runs says whether a workflow ID has an open run, which only Temporal
// knows: a summary in the store says an earlier run under the ID finished,
// not that no run under it is going on now (a re-run under a reused ID, a
// reset of a finished run). temporalconn.OpenRuns asks Temporal.
type Runs interface {
	Open(workflowID string) (bool, error)
}

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
	// Runs tells which finished runs' workflow IDs have an open run: those
	// are kept whole. Nil, or an error for an ID, keeps the run whole too:
	// a run whose state cannot be learned is never collected.
	Runs Runs
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
	// Open are the runs with a summary kept whole because Temporal has an
	// open run under their workflow ID.
	Open []string
	// Unknown are the runs with a summary kept whole because whether their
	// workflow ID has an open run could not be learned.
	Unknown []Unknown
}

// Unknown is a run kept whole and why its state is unknown.
type Unknown struct {
	Run string
	Err error
}

var iterationDir = regexp.MustCompile(`^reinforce/iter-(\d+)/`)

// records a finished run has: their presence means it finished.
var finishedRecords = []string{pipeline.SummaryFile, pipeline.ComparisonFile}

// folderRecords mark a run's folder: its claim, its summary or report.
var folderRecords = append([]string{pipeline.RunFile}, finishedRecords...)

// errNoRuns is why runs are kept whole when no Runs was given.
var errNoRuns = errors.New("no Temporal connection to ask whether it is open")

// Collect plans a collection of store. Nothing is removed until Apply.
//
// A key under runs/ belongs to the innermost run folder holding it: a
// folder with a claim, a summary or a comparison report (so that run a/b's
// artifacts are never taken for leftovers of a finished run a), else, for
// folders of runs from before claims that did not finish, the key's first
// folder.
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
	folders := map[string]bool{}
	var runKeys []Object
	for _, o := range all {
		switch {
		case strings.HasPrefix(o.Key, "reuse/"):
			refs, err := refsOf(store, o.Key)
			if err != nil {
				return nil, err
			}
			name(refs)
		case strings.HasPrefix(o.Key, "runs/"):
			runKeys = append(runKeys, o)
			rel := strings.TrimPrefix(o.Key, "runs/")
			for _, f := range folderRecords {
				if dir, ok := strings.CutSuffix(rel, "/"+f); ok && dir != "" {
					folders[dir] = true
				}
			}
		}
	}
	runs := map[string][]Object{} // by run folder, relative to runs/
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
	for _, o := range runKeys {
		if id := folderOf(strings.TrimPrefix(o.Key, "runs/"), folders); id != "" {
			runs[id] = append(runs[id], o)
		} else {
			removeIf(o, false) // directly under runs/: no run's
		}
	}
	keep := map[string]int{}           // finished runs' keep_iterations
	workflowIDs := map[string]string{} // by folder, where a record names it
	for id, objs := range runs {
		for _, o := range objs {
			rel := strings.TrimPrefix(o.Key, "runs/"+id+"/")
			if rel == pipeline.RunFile {
				var c pipeline.RunClaim
				if b, err := store.GetRecord(o.Key); err == nil && json.Unmarshal(b, &c) == nil && c.WorkflowID != "" {
					workflowIDs[id] = c.WorkflowID
				}
				continue
			}
			if !slices.Contains(finishedRecords, rel) {
				continue
			}
			refs, err := refsOf(store, o.Key)
			if err != nil {
				return nil, err
			}
			name(refs)
			var named struct {
				WorkflowID     string `json:"workflow_id"`
				KeepIterations int    `json:"keep_iterations"`
			}
			b, _ := store.GetRecord(o.Key)
			if json.Unmarshal(b, &named) == nil && named.WorkflowID != "" && workflowIDs[id] == "" {
				workflowIDs[id] = named.WorkflowID
			}
			if rel == pipeline.SummaryFile {
				keep[id] = named.KeepIterations
			} else if _, ok := keep[id]; !ok {
				keep[id] = 0
			}
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
		whole := !finished
		if !finished {
			p.Unfinished = append(p.Unfinished, id)
		} else if open, err := isOpen(opts.Runs, cmp.Or(workflowIDs[id], id)); err != nil {
			p.Unknown, whole = append(p.Unknown, Unknown{Run: id, Err: err}), true
		} else if open {
			p.Open, whole = append(p.Open, id), true
		}
		if whole {
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
			stays := live[o.Key] || slices.Contains(folderRecords, rel) || rel == "comparison.md" ||
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

// folderOf is the run folder (relative to runs/) of a key relative to
// runs/: the innermost of folders holding it, else its first folder ("" for
// a key directly under runs/).
func folderOf(rel string, folders map[string]bool) string {
	for i := strings.LastIndexByte(rel, '/'); i > 0; i = strings.LastIndexByte(rel[:i], '/') {
		if folders[rel[:i]] {
			return rel[:i]
		}
	}
	first, _, ok := strings.Cut(rel, "/")
	if !ok {
		return ""
	}
	return first
}

// isOpen asks runs whether workflowID has an open run.
func isOpen(runs Runs, workflowID string) (bool, error) {
	if runs == nil {
		return false, errNoRuns
	}
	return runs.Open(workflowID)
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
