package retention_test

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/ops/retention"
	"github.com/alignflow/alignflow/pipeline"
)

// now is the time every collection here measures ages from.
var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fixture is a local store holding
//   - run "done", finished: a summary (keep_iterations as given) naming its
//     data, base model, SFT and reward models, final policy and last curve
//     segment; training checkpoints it does not name; three REINFORCE
//     iterations (8 to 10), each with a policy, optimizer state, merged
//     rollouts and two shards; a metrics log and a report;
//   - run "cmp", a finished comparison: comparison.json naming its variant's
//     model, comparison.md, a report, and a training checkpoint it does not
//     name;
//   - run "pending", unfinished (no summary): checkpoints and a shard;
//   - a reuse record naming run done's iteration-8 policy;
//   - a stale (two days old) and a fresh (an hour old) scratch file.
type fixture struct {
	store   *artifact.Store
	summary pipeline.Summary
	// named are the refs that the summary, the report and the reuse record
	// name: after any collection they must all still load.
	named []artifact.Ref
}

func newFixture(t *testing.T, keep int) *fixture {
	t.Helper()
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	f := &fixture{store: store}
	refs := map[string]artifact.Ref{}
	put := func(key string) artifact.Ref {
		ref, err := store.Put(key, []byte("bytes of "+key))
		require.NoError(t, err)
		refs[key] = ref
		return ref
	}
	record := func(key string, v any) {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		_, err = store.PutRecord(key, b)
		require.NoError(t, err)
	}

	// Run done.
	d := func(rel string) string { return "runs/done/" + rel }
	s := pipeline.Summary{WorkflowID: "done", KeepIterations: keep}
	s.Data.Ratings, s.Data.Preferences = put(d("data/ratings.jsonl.gz")), put(d("data/preferences.jsonl.gz"))
	s.Data.Model = &pipeline.BaseModel{Weights: put(d("model/base.safetensors")),
		Files: map[string]artifact.Ref{"config.json": put(d("model/config.json"))}}
	put(d("sft/step-00100.params.safetensors"))
	put(d("sft/step-00100.optimizer.safetensors"))
	put(d("sft/step-00100.json"))
	s.SFT.Checkpoint = put(d("sft/policy.safetensors"))
	put(d("reward/step-00025.params.safetensors"))
	s.RewardModel.Checkpoint = put(d("reward/model.safetensors"))
	for _, it := range []string{"00008", "00009", "00010"} {
		dir := d("reinforce/iter-" + it + "/")
		s.Policy.Checkpoint = put(dir + "policy.safetensors")
		put(dir + "optimizer.safetensors")
		put(dir + "rollouts.json")
		put(dir + "shard-0-of-2.json")
		put(dir + "shard-1-of-2.json")
	}
	put(d("reinforce/curve-00008-00009.json"))
	ref := put(d("reinforce/curve-00010-00010.json"))
	s.CurveRef = &ref
	f.summary = s
	record(d(pipeline.SummaryFile), s)
	record(d("metrics.jsonl"), map[string]any{"step": 1})
	record(d("metrics/attempt-1.jsonl"), map[string]any{"step": 1})
	record(d("report/report.md"), "# done")
	f.named = append(f.named, s.Data.Ratings, s.Data.Preferences, s.Data.Model.Weights, s.Data.Model.Files["config.json"],
		s.SFT.Checkpoint, s.RewardModel.Checkpoint, s.Policy.Checkpoint, *s.CurveRef)

	// Run cmp.
	c := pipeline.ComparisonReport{WorkflowID: "cmp", SFT: s.SFT} // its SFT reused from done
	put("runs/cmp/reward/bt/step-00010.params.safetensors")
	c.Variants = []pipeline.VariantReport{{Recipe: "bt", Model: pipeline.StageModel{Checkpoint: put("runs/cmp/reward/bt/model.safetensors")}}}
	record("runs/cmp/"+pipeline.ComparisonFile, c)
	record("runs/cmp/comparison.md", "| recipe |")
	record("runs/cmp/report/index.html", "<html>")
	f.named = append(f.named, c.Variants[0].Model.Checkpoint)

	// Run pending.
	put("runs/pending/sft/step-00100.params.safetensors")
	put("runs/pending/reinforce/iter-00000/policy.safetensors")
	put("runs/pending/reinforce/iter-00000/shard-0-of-1.json")
	record("runs/pending/metrics.jsonl", map[string]any{"step": 1})

	// A reuse record naming done's iteration-8 policy.
	reused := refs[d("reinforce/iter-00008/policy.safetensors")]
	record("reuse/reinforce/key.json", map[string]any{"run_id": "done", "result": pipeline.IterationResult{Policy: reused}})
	f.named = append(f.named, reused)

	// Scratch files.
	for name, age := range map[string]time.Duration{"stale": 48 * time.Hour, "fresh": time.Hour} {
		p := filepath.Join(store.Root, "tmp", name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte("scratch "+name), 0o644))
		require.NoError(t, os.Chtimes(p, now.Add(-age), now.Add(-age)))
	}
	return f
}

// setKeep rewrites run done's summary with another keep_iterations.
func (f *fixture) setKeep(t *testing.T, keep int) {
	t.Helper()
	f.summary.KeepIterations = keep
	b, err := json.Marshal(f.summary)
	require.NoError(t, err)
	_, err = f.store.PutRecord("runs/done/"+pipeline.SummaryFile, b)
	require.NoError(t, err)
}

// keys lists the store: every key and its size as the file system has it.
func (f *fixture) keys(t *testing.T) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	require.NoError(t, filepath.WalkDir(f.store.Root, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(f.store.Root, p)
		out[filepath.ToSlash(rel)] = info.Size()
		return nil
	}))
	return out
}

// artifacts are the keys of artifacts: their bytes and their manifests.
func artifacts(keys ...string) []string {
	var out []string
	for _, k := range keys {
		out = append(out, k, artifact.ManifestKey(k))
	}
	return out
}

// iteration is what an iteration directory holds, by name.
func iteration(it string, names ...string) []string {
	var out []string
	for _, n := range names {
		out = append(out, artifacts("runs/done/reinforce/iter-"+it+"/"+n)...)
	}
	return out
}

var (
	// trainingCheckpoints are run done's and cmp's checkpoints that no
	// record names: they go from every finished run.
	trainingCheckpoints = artifacts(
		"runs/done/sft/step-00100.params.safetensors", "runs/done/sft/step-00100.optimizer.safetensors",
		"runs/done/sft/step-00100.json", "runs/done/reward/step-00025.params.safetensors",
		"runs/cmp/reward/bt/step-00010.params.safetensors")
	// shards are merged into their iteration's rollouts: they go from every
	// finished run's iterations, kept or not.
	shards = slices.Concat(
		iteration("00008", "shard-0-of-2.json", "shard-1-of-2.json"),
		iteration("00009", "shard-0-of-2.json", "shard-1-of-2.json"),
		iteration("00010", "shard-0-of-2.json", "shard-1-of-2.json"))
	// iteration8 is what goes of iteration 8 when it is not kept: its
	// policy stays, named by the reuse record.
	iteration8 = iteration("00008", "optimizer.safetensors", "rollouts.json")
	// iteration9 is all of iteration 9's checkpoint.
	iteration9 = iteration("00009", "policy.safetensors", "optimizer.safetensors", "rollouts.json")
)

// TestCollect checks exactly which keys a collection removes, under the
// summary's keep_iterations and the option that overrides it.
func TestCollect(t *testing.T) {
	tests := []struct {
		name        string
		summaryKeep int // the run's retention.keep_iterations
		opts        retention.Options
		want        []string
	}{
		{
			name:        "the summary's last iteration",
			summaryKeep: 1, opts: retention.Options{KeepIterations: -1, Runs: closed},
			want: slices.Concat(trainingCheckpoints, shards, iteration8, iteration9, []string{"tmp/stale"}),
		},
		{
			name:        "the summary's last two iterations",
			summaryKeep: 2, opts: retention.Options{KeepIterations: -1, Runs: closed},
			want: slices.Concat(trainingCheckpoints, shards, iteration8, []string{"tmp/stale"}),
		},
		{
			name:        "keep_iterations 0 keeps every iteration",
			summaryKeep: 0, opts: retention.Options{KeepIterations: -1, Runs: closed},
			want: slices.Concat(trainingCheckpoints, shards, []string{"tmp/stale"}),
		},
		{
			name:        "more than there are keeps every iteration",
			summaryKeep: 5, opts: retention.Options{KeepIterations: -1, Runs: closed},
			want: slices.Concat(trainingCheckpoints, shards, []string{"tmp/stale"}),
		},
		{
			name:        "the option overrides the summary: all",
			summaryKeep: 1, opts: retention.Options{KeepIterations: 0, Runs: closed},
			want: slices.Concat(trainingCheckpoints, shards, []string{"tmp/stale"}),
		},
		{
			name:        "the option overrides the summary: one",
			summaryKeep: 0, opts: retention.Options{KeepIterations: 1, Runs: closed},
			want: slices.Concat(trainingCheckpoints, shards, iteration8, iteration9, []string{"tmp/stale"}),
		},
		{
			name:        "a shorter scratch age takes fresh scratch files too",
			summaryKeep: 1, opts: retention.Options{KeepIterations: -1, ScratchAge: 30 * time.Minute, Runs: closed},
			want: slices.Concat(trainingCheckpoints, shards, iteration8, iteration9, []string{"tmp/fresh", "tmp/stale"}),
		},
	}
	f := newFixture(t, 1) // planning changes nothing: the cases share it
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.setKeep(t, tt.summaryKeep)
			before := f.keys(t)
			tt.opts.Now = now
			plan, err := retention.Collect(f.store, tt.opts)
			require.NoError(t, err)

			var removed []string
			var bytes int64
			for _, o := range plan.Remove {
				removed = append(removed, o.Key)
				require.Contains(t, before, o.Key)
				assert.Equal(t, before[o.Key], o.Bytes, o.Key)
				bytes += before[o.Key]
			}
			want := slices.Clone(tt.want)
			slices.Sort(want)
			assert.Equal(t, want, removed, "removed, in key order")
			assert.Equal(t, bytes, plan.RemoveBytes)
			assert.Equal(t, []string{"pending"}, plan.Unfinished)
			var total int64
			for _, n := range before {
				total += n
			}
			assert.Equal(t, len(before), plan.Kept+len(plan.Remove), "every key is removed or kept")
			assert.Equal(t, total, plan.KeptBytes+plan.RemoveBytes)
			assert.Equal(t, before, f.keys(t), "planning removes nothing (a dry run)")
		})
	}
}

// TestApply collects the store and checks that exactly the planned keys
// went, their bytes freed, that everything a summary, report or reuse
// record names still loads verified, and that a second collection finds
// nothing more.
func TestApply(t *testing.T) {
	f := newFixture(t, 1)
	before := f.keys(t)
	plan, err := retention.Collect(f.store, retention.Options{KeepIterations: -1, Now: now, Runs: closed})
	require.NoError(t, err)
	require.NotEmpty(t, plan.Remove)

	freed, err := plan.Apply(f.store)
	require.NoError(t, err)
	assert.Equal(t, plan.RemoveBytes, freed)

	after := f.keys(t)
	var sizeBefore, sizeAfter int64
	for _, n := range before {
		sizeBefore += n
	}
	for _, n := range after {
		sizeAfter += n
	}
	assert.Equal(t, freed, sizeBefore-sizeAfter, "freed is what left the disk")
	for _, o := range plan.Remove {
		assert.NotContains(t, after, o.Key)
		delete(before, o.Key)
	}
	assert.Equal(t, before, after, "nothing else went")

	for _, ref := range f.named {
		_, err := f.store.Get(ref)
		assert.NoError(t, err, ref.Path)
	}
	for _, key := range []string{"runs/done/" + pipeline.SummaryFile, "runs/cmp/" + pipeline.ComparisonFile,
		"runs/cmp/comparison.md", "runs/done/metrics.jsonl", "runs/done/metrics/attempt-1.jsonl",
		"runs/done/report/report.md", "runs/cmp/report/index.html", "reuse/reinforce/key.json"} {
		_, err := f.store.GetRecord(key)
		assert.NoError(t, err, key)
	}
	for _, key := range []string{"runs/done/reinforce/curve-00008-00009.json", "runs/pending/reinforce/iter-00000/shard-0-of-1.json"} {
		_, err := f.store.Get(artifact.Ref{Path: key, SHA256: sha(t, f.store, key)})
		assert.NoError(t, err, "%s stays whole", key)
	}
	_, err = os.Stat(filepath.Join(f.store.Root, "runs/done/reinforce/iter-00009"))
	assert.ErrorIs(t, err, fs.ErrNotExist, "an emptied iteration folder goes too")

	again, err := retention.Collect(f.store, retention.Options{KeepIterations: -1, Now: now, Runs: closed})
	require.NoError(t, err)
	assert.Empty(t, again.Remove, "a second collection finds nothing")
	assert.Equal(t, plan.Kept, again.Kept)
	assert.Equal(t, plan.KeptBytes, again.KeptBytes)
}

// TestApplyGoesOnPastAFailure removes one planned key behind the plan's
// back: Apply reports it, removes the rest and counts only what it freed.
func TestApplyGoesOnPastAFailure(t *testing.T) {
	f := newFixture(t, 1)
	plan, err := retention.Collect(f.store, retention.Options{KeepIterations: -1, Now: now, Runs: closed})
	require.NoError(t, err)
	gone := plan.Remove[0]
	require.NoError(t, os.Remove(filepath.Join(f.store.Root, gone.Key)))

	freed, err := plan.Apply(f.store)
	require.ErrorIs(t, err, fs.ErrNotExist)
	assert.Contains(t, err.Error(), gone.Key)
	assert.Equal(t, plan.RemoveBytes-gone.Bytes, freed)
	after := f.keys(t)
	for _, o := range plan.Remove {
		assert.NotContains(t, after, o.Key)
	}
}

// TestCollectRefusesAnUnreadableRecord: a reuse record that cannot be read
// makes the collection fail rather than plan without what it names.
func TestCollectRefusesAnUnreadableRecord(t *testing.T) {
	f := newFixture(t, 1)
	rec := filepath.Join(f.store.Root, "reuse", "reinforce", "key.json")
	require.NoError(t, os.Remove(rec))
	require.NoError(t, os.Symlink(filepath.Join(f.store.Root, "nowhere"), rec))
	_, err := retention.Collect(f.store, retention.Options{KeepIterations: -1, Now: now, Runs: closed})
	require.Error(t, err)
	assert.True(t, strings.Contains(err.Error(), "key.json"), err.Error())
}

// sha is the digest a key's manifest records.
func sha(t *testing.T, store *artifact.Store, key string) string {
	t.Helper()
	b, err := store.GetRecord(artifact.ManifestKey(key))
	require.NoError(t, err)
	var m struct {
		SHA256 string `json:"sha256"`
	}
	require.NoError(t, json.Unmarshal(b, &m))
	return m.SHA256
}

// runStates answers Runs from a map: the open workflow IDs, and an error
// for those Temporal cannot be asked about.
type runStates struct {
	open   map[string]bool
	failed map[string]error
	asked  []string
}

func (r *runStates) Open(id string) (bool, error) {
	r.asked = append(r.asked, id)
	if err := r.failed[id]; err != nil {
		return false, err
	}
	return r.open[id], nil
}

// closed says every run is closed.
var closed = &runStates{}

// TestCollectKeepsLiveRuns collects a store where a finished run's
// summary is not the whole story: a live re-run under the finished run's
// workflow ID (its data and checkpoints written beside the old summary), a
// live run a/b inside the folder of a finished run a, and a finished run
// whose state Temporal cannot tell. None of their artifacts goes (on the
// store alone, gc listed them all); the finished run a still loses its
// training checkpoint, and everything of a run Temporal says is closed goes
// as before.
func TestCollectKeepsLiveRuns(t *testing.T) {
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	put := func(key string) artifact.Ref {
		ref, err := store.Put(key, []byte("bytes of "+key))
		require.NoError(t, err)
		return ref
	}
	record := func(key string, v any) {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		_, err = store.PutRecord(key, b)
		require.NoError(t, err)
	}
	for _, id := range []string{"rerun", "a", "unknown"} {
		s := pipeline.Summary{WorkflowID: id}
		s.Policy.Checkpoint = put("runs/" + id + "/reinforce/iter-00000/policy.safetensors")
		record("runs/"+id+"/"+pipeline.SummaryFile, s)
		record("runs/"+id+"/"+pipeline.RunFile, pipeline.RunClaim{WorkflowID: id, FirstRunID: "old-" + id})
		put("runs/" + id + "/sft/checkpoints/sft-000100.params.safetensors")
	}
	// The live re-run of "rerun": data and a checkpoint beside the old summary.
	put("runs/rerun/data/ratings.jsonl.gz")
	put("runs/rerun/sft/checkpoints/sft-000004.params.safetensors")
	// The live run "a/b": its claim, data and checkpoints inside a's folder.
	record("runs/a/b/"+pipeline.RunFile, pipeline.RunClaim{WorkflowID: "a/b", FirstRunID: "b1"})
	put("runs/a/b/data/ratings.jsonl.gz")
	put("runs/a/b/sft/checkpoints/sft-000004.params.safetensors")

	runs := &runStates{open: map[string]bool{"rerun": true, "a/b": true}, failed: map[string]error{"unknown": errors.New("connection refused")}}
	plan, err := retention.Collect(store, retention.Options{KeepIterations: -1, Now: now, Runs: runs})
	require.NoError(t, err)
	var removed []string
	for _, o := range plan.Remove {
		removed = append(removed, o.Key)
	}
	assert.Equal(t, artifacts("runs/a/sft/checkpoints/sft-000100.params.safetensors"), removed, "only the finished run a's checkpoint goes")
	assert.Equal(t, []string{"rerun"}, plan.Open)
	assert.Equal(t, []string{"a/b"}, plan.Unfinished)
	require.Len(t, plan.Unknown, 1)
	assert.Equal(t, "unknown", plan.Unknown[0].Run)
	assert.ErrorContains(t, plan.Unknown[0].Err, "connection refused")

	// Without a way to ask Temporal, no finished run is collected.
	plan, err = retention.Collect(store, retention.Options{KeepIterations: -1, Now: now})
	require.NoError(t, err)
	assert.Empty(t, plan.Remove)
	assert.Len(t, plan.Unknown, 3)

	// Once Temporal says they are closed, the finished runs are collected
	// (run a/b, unfinished, stays whole).
	plan, err = retention.Collect(store, retention.Options{KeepIterations: -1, Now: now, Runs: &runStates{}})
	require.NoError(t, err)
	removed = nil
	for _, o := range plan.Remove {
		removed = append(removed, o.Key)
	}
	assert.Equal(t, slices.Concat(artifacts("runs/a/sft/checkpoints/sft-000100.params.safetensors", "runs/rerun/data/ratings.jsonl.gz",
		"runs/rerun/sft/checkpoints/sft-000004.params.safetensors", "runs/rerun/sft/checkpoints/sft-000100.params.safetensors",
		"runs/unknown/sft/checkpoints/sft-000100.params.safetensors")), sorted(removed))
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }
