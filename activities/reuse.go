package activities

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sync"

	"go.temporal.io/sdk/activity"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/model/progress"
	"github.com/alignflow/alignflow/pipeline"
)

// A stage's output is decided by its input: the spec (apart from its name
// and operational settings), the digests of the artifacts it reads and the
// code; for the data stage, also the contents of the files the spec names
// (data files, model.path, reward.path). Every later stage reads the
// store's copies of those, named by digest in its input, never the files:
// a worker that cannot see model.path reuses like any other. A completed
// stage records its result under a key made of those, in
// <data-dir>/reuse/<stage>/<key>.json; a later run with the same key gets
// the recorded result, once every artifact the result names has been
// verified against its digest, instead of recomputing it. A missing or
// damaged artifact means the stage runs again.

type reuseEntry struct {
	RunID  string          `json:"run_id"`
	Result json.RawMessage `json:"result"`
}

// operational are the spec fields that do not change any stage's output.
var operational = []string{"name", "heartbeat_timeout_seconds", "reuse_stage_outputs", "queues", "retention", "timeouts",
	"sft.checkpoint_every", "reward.checkpoint_every", "reinforce.continue_as_new_every", "reinforce.rollout_shards"}

// reuse returns the recorded result of stage for in if there is a verified
// one, and otherwise computes it and records it.
func reuse[In, Out any](ctx context.Context, a *Activities, stage string, spec config.Spec, runID string, in In, compute func() (Out, error)) (Out, error) {
	if !spec.ReuseStageOutputs {
		return compute()
	}
	key, err := reuseKey(ctx, stage, spec, in, a.DataRoots)
	if err != nil {
		logger(ctx).Warn("the stage's output cannot be reused: its inputs could not be identified", "stage", stage, "error", err.Error())
		return compute()
	}
	record := path.Join("reuse", stage, key+".json")
	if out, from, ok := a.recorded(record); ok {
		var zero Out
		if err := json.Unmarshal(out, &zero); err == nil {
			if m, ok := any(&zero).(interface{ MarkReused(string) }); ok {
				m.MarkReused(from)
			}
			logger(ctx).Info("reusing a completed stage output", "stage", stage, "from_run", from)
			return zero, nil
		}
	}
	out, err := compute()
	if err != nil {
		return out, err
	}
	if b, err := json.Marshal(reuseEntry{RunID: runID, Result: mustJSON(out)}); err == nil {
		_, _ = a.Store.PutRecord(record, b) // an unrecorded result is only recomputed later
	}
	return out, nil
}

// recorded reads a recorded result and verifies every artifact it names.
func (a *Activities) recorded(record string) (json.RawMessage, string, bool) {
	b, err := a.Store.GetRecord(record)
	if err != nil {
		return nil, "", false
	}
	var e reuseEntry
	if json.Unmarshal(b, &e) != nil {
		return nil, "", false
	}
	var v any
	if json.Unmarshal(e.Result, &v) != nil {
		return nil, "", false
	}
	for _, ref := range artifact.RefsIn(v) {
		if _, err := a.Store.Get(ref); err != nil {
			return nil, "", false
		}
	}
	return e.Result, e.RunID, true
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

func logger(ctx context.Context) interface {
	Info(string, ...any)
	Warn(string, ...any)
} {
	if activity.IsActivity(ctx) {
		return activity.GetLogger(ctx)
	}
	return discard{}
}

type discard struct{}

func (discard) Info(string, ...any) {}
func (discard) Warn(string, ...any) {}

// reuseKey hashes what decides a stage's output. Artifact references count
// by digest only: the same weights stored by another run are the same input.
// The data stage's files are read through roots, as the stage reads them.
func reuseKey(ctx context.Context, stage string, spec config.Spec, in any, roots config.Roots) (string, error) {
	var input map[string]any
	if err := decodeExact(mustJSON(in), &input); err != nil {
		return "", err
	}
	delete(input, "run_id")
	delete(input, "first_run_id") // the data stage's claim on the run's folder
	var s map[string]any
	if err := decodeExact(mustJSON(spec), &s); err != nil {
		return "", err
	}
	for _, field := range operational {
		deleteField(s, field)
	}
	input["spec"] = s
	files := map[string]string{}
	var paths []string
	if stage == pipeline.StagePrepareData {
		var err error
		if paths, err = specFiles(spec, roots); err != nil {
			return "", err
		}
	}
	for _, p := range paths {
		d, err := fileDigest(ctx, roots, p)
		if errors.Is(err, errNotAFile) {
			continue
		}
		if err != nil {
			return "", err
		}
		files[p] = d
	}
	code, err := codeDigest()
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(map[string]any{"stage": stage, "input": normalise(input), "files": files, "code": code})
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// decodeExact decodes JSON keeping numbers as written (json.Number), so
// that two seeds a float64 cannot tell apart still give different keys.
func decodeExact(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	return dec.Decode(v)
}

// deleteField removes a dotted field ("sft.checkpoint_every") from a decoded object.
func deleteField(m map[string]any, dotted string) {
	for i := 0; i < len(dotted); i++ {
		if dotted[i] == '.' {
			if sub, ok := m[dotted[:i]].(map[string]any); ok {
				deleteField(sub, dotted[i+1:])
			}
			return
		}
	}
	delete(m, dotted)
}

// normalise keeps only the digests of the artifact references in v and
// drops where its parts came from: a result computed by this run or reused
// from another is the same input.
func normalise(v any) any {
	switch x := v.(type) {
	case map[string]any:
		if artifact.IsRef(x) {
			return x["sha256"]
		}
		delete(x, "reused_from_run")
		for k, e := range x {
			x[k] = normalise(e)
		}
	case []any:
		for i, e := range x {
			x[i] = normalise(e)
		}
	}
	return v
}

// errNotAFile is a directory entry that is no input: a link to a directory.
var errNotAFile = errors.New("not a regular file")

// fileDigest is the sha256 of the contents of the file at path, opened
// through roots: a symbolic link counts by what it points to. The read
// ends with ctx (the activity).
func fileDigest(ctx context.Context, roots config.Roots, path string) (string, error) {
	f, err := roots.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%s: %w", path, errNotAFile)
	}
	// Every stage's key reads the spec's files, a model's weights among
	// them: a file is hashed once per worker while it stays the same file
	// (the same inode: a link pointed elsewhere is another file) with the
	// same size and time.
	if d, ok := digests.Load(path); ok {
		c := d.(cachedDigest)
		if os.SameFile(c.info, st) && c.info.Size() == st.Size() && c.info.ModTime().Equal(st.ModTime()) {
			return c.digest, nil
		}
	}
	h := sha256.New()
	if _, err := io.Copy(h, progress.Reader(ctx, f)); err != nil { // ends with the activity
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	d := hex.EncodeToString(h.Sum(nil))
	digests.Store(path, cachedDigest{info: st, digest: d})
	return d, nil
}

type cachedDigest struct {
	info   fs.FileInfo
	digest string
}

var digests sync.Map // path -> cachedDigest

// specFiles lists the files a spec names: data files, and every file of
// the model directories, links included (they count by their targets,
// which must lie in the roots); a dangling link is no file.
func specFiles(spec config.Spec, roots config.Roots) ([]string, error) {
	var out []string
	for _, p := range []string{spec.Data.Ratings, spec.Data.Preferences, spec.Compare.RewardBench} {
		if p != "" {
			out = append(out, p)
		}
	}
	for _, dir := range []string{spec.Model.Path, spec.Reward.Path, spec.LoRA.Path} {
		if dir == "" {
			continue
		}
		d, err := roots.Open(dir)
		if err != nil {
			return nil, err
		}
		entries, err := d.ReadDir(-1)
		d.Close()
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			p := filepath.Join(dir, e.Name())
			switch {
			case e.Type().IsRegular():
				out = append(out, p)
			case e.Type()&fs.ModeSymlink != 0:
				f, err := roots.Open(p)
				if errors.Is(err, fs.ErrNotExist) {
					continue // dangling (a link out of the roots is an error instead)
				}
				if f != nil {
					f.Close()
				}
				out = append(out, p)
			}
		}
	}
	return out, nil
}

var code struct {
	once   sync.Once
	digest string
	err    error
}

// codeDigest is the sha256 of the running executable: results are reused
// only by the build that computed them, so a change to the math never
// returns an outdated output.
func codeDigest() (string, error) {
	code.once.Do(func() {
		exe, err := os.Executable()
		if err != nil {
			code.err = err
			return
		}
		code.digest, code.err = fileDigest(context.Background(), config.AnyFile(), exe) // once per process, for every activity
	})
	if code.err != nil {
		return "", errors.Join(errors.New("identify the running build"), code.err)
	}
	return code.digest, nil
}
