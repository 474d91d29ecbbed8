package activities

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"

	"go.temporal.io/sdk/activity"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/data/dataset"
	"github.com/alignflow/alignflow/data/helpsteer"
	"github.com/alignflow/alignflow/data/matched"
	"github.com/alignflow/alignflow/pipeline"
)

// PrepareData generates the matched dataset, or validates the user's files,
// and stores both in the run's artifact folder, with model.path's model.
func (a *Activities) PrepareData(ctx context.Context, in pipeline.PrepareDataInput) (pipeline.Data, error) {
	// Before reuse: a recorded result must not reveal a file outside the roots either.
	if err := in.Spec.CheckRoots(a.DataRoots); err != nil {
		return pipeline.Data{}, invalidSpec(err)
	}
	if err := a.checkClaim(in.RunID, in.FirstRunID); err != nil { // before anything is written or reused
		return pipeline.Data{}, err
	}
	d, err := reuse(ctx, a, pipeline.StagePrepareData, in.Spec, in.RunID, in, func() (pipeline.Data, error) { return a.prepareData(ctx, in) })
	if err == nil {
		err = a.putClaim(in.RunID, in.FirstRunID)
	}
	return d, classify(err)
}

// prepareData checks every file and the model, and counts the data, before
// anything is stored: what a stage cannot use fails the run with nothing
// left behind.
func (a *Activities) prepareData(ctx context.Context, in pipeline.PrepareDataInput) (pipeline.Data, error) {
	spec := in.Spec
	var d pipeline.Data
	if err := spec.CheckFilesIn(a.DataRoots); err != nil {
		return d, invalidSpec(err)
	}
	src, err := readData(ctx, in, a.DataRoots)
	if err != nil {
		return d, err
	}
	m, err := openModel(spec, a.DataRoots)
	if err != nil {
		return d, err
	}
	ds := dataset.New(src.ratings, src.prefs, src.task, m.codec, m.cfg.MaxLen)
	ds.RL = src.prompts
	if err := ds.Count(&d); err != nil {
		return d, err
	}
	d.Generated, d.SkippedRows = src.task != nil, src.skipped
	if m.hf != nil {
		if d.Model, err = a.storeModel(in.RunID, spec, m); err != nil {
			return d, err
		}
	}
	if src.bench != nil {
		key, err := runPath(in.RunID, "data", "rewardbench"+path.Ext(spec.Compare.RewardBench))
		if err != nil {
			return d, err
		}
		ref, err := a.Store.Put(key, src.bench)
		if err != nil {
			return d, err
		}
		d.RewardBench, d.RewardBenchPairs = &ref, src.benchPairs
	}
	d.Ratings, d.Preferences, d.Prompts, err = a.storeData(in.RunID, src)
	return d, err
}

// sourceData is a run's data as the spec gives it: generated, or read from
// the user's files (with compare.rewardbench's bytes, if named).
type sourceData struct {
	ratings    []helpsteer.Rating
	prefs      []helpsteer.Preference
	prompts    []helpsteer.PromptRow // data.prompts' (nil: none)
	task       *matched.Task         // the gold rubric of generated data
	skipped    int                   // invalid rows left out under data.skip_invalid
	bench      []byte
	benchPairs int
}

// maxRewardBenchBytes bounds compare.rewardbench's file, which is stored
// whole: RewardBench's filtered split is about 10 MB.
const maxRewardBenchBytes = 1 << 30

// readData reads the spec's data through roots: every file is opened
// beneath them (config.Roots.Open) and read from that handle.
func readData(ctx context.Context, in pipeline.PrepareDataInput, roots config.Roots) (*sourceData, error) {
	spec := in.Spec
	src := &sourceData{}
	open := func(p string) (io.ReadCloser, error) { return roots.Open(p) }
	if spec.Data.Ratings == "" {
		var gen *matched.Dataset
		gen, src.task = matched.Generate(dataset.GeneratorOptions(spec))
		src.ratings, src.prefs = gen.Ratings, gen.Preferences
	} else {
		opts := helpsteer.ReadOptions{SkipInvalid: spec.Data.SkipInvalid, Open: open}
		var rr, pr helpsteer.ReadReport
		var err error
		if src.ratings, rr, err = helpsteer.LoadRatings(spec.Data.Ratings, opts); err != nil {
			return nil, inputError(err)
		}
		if src.prefs, pr, err = helpsteer.LoadPreferences(spec.Data.Preferences, opts); err != nil {
			return nil, inputError(err)
		}
		src.skipped = rr.Skipped + pr.Skipped
		if activity.IsActivity(ctx) {
			for _, e := range append(rr.Errors, pr.Errors...) {
				activity.GetLogger(ctx).Warn("skipped invalid row", "error", e.Error())
			}
		}
	}
	if f := spec.Data.Prompts; f != "" {
		opts := helpsteer.ReadOptions{SkipInvalid: spec.Data.SkipInvalid, Open: open, RequireAnswer: spec.Reward.Verifier != ""}
		rows, rep, err := helpsteer.LoadPrompts(f, opts)
		if err != nil {
			return nil, inputError(fmt.Errorf("data.prompts: %w", err))
		}
		src.prompts, src.skipped = rows, src.skipped+rep.Skipped
		if activity.IsActivity(ctx) {
			for _, e := range rep.Errors {
				activity.GetLogger(ctx).Warn("skipped invalid row", "error", e.Error())
			}
		}
	}
	if f := spec.Compare.RewardBench; f != "" {
		// Read once: the bytes stored are the bytes parsed.
		b, err := readBounded(roots, f, maxRewardBenchBytes)
		if err != nil {
			return nil, inputError(fmt.Errorf("compare.rewardbench: %w", err))
		}
		pairs, _, err := helpsteer.LoadRewardBench(f, helpsteer.ReadOptions{Open: func(string) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(b)), nil
		}})
		if err != nil {
			return nil, invalidData(err)
		}
		src.bench, src.benchPairs = b, len(pairs)
	}
	return src, nil
}

// readBounded reads the file at path through roots, refusing more than max bytes.
func readBounded(roots config.Roots, path string, max int64) ([]byte, error) {
	f, err := roots.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: more than %d bytes", path, max)
	}
	return b, nil
}

// inputError is a data file's error: the spec's (ErrInvalidSpec) when the
// file lies outside the worker's roots, the data's otherwise.
func inputError(err error) error {
	if errors.Is(err, config.ErrOutsideRoots) {
		return invalidSpec(err)
	}
	return invalidData(err)
}

// storeData writes the ratings, the preferences and data.prompts' rows
// (prompts is nil without them) to the run's folder.
func (a *Activities) storeData(runID string, src *sourceData) (ratings, prefs artifact.Ref, prompts *artifact.Ref, err error) {
	folder, err := runPath(runID, "data") // before the ID names a scratch folder
	if err != nil {
		return ratings, prefs, nil, err
	}
	dir, err := a.Store.ScratchDir(runID)
	if err != nil {
		return ratings, prefs, nil, err
	}
	defer os.RemoveAll(dir)
	put := func(name string, write func(string) error) (artifact.Ref, error) {
		p := path.Join(dir, name)
		if err := write(p); err != nil {
			return artifact.Ref{}, err
		}
		return a.Store.PutFile(path.Join(folder, name), p)
	}
	if ratings, err = put("ratings.jsonl.gz", func(p string) error { return helpsteer.WriteRatings(p, src.ratings) }); err != nil {
		return ratings, prefs, nil, err
	}
	if prefs, err = put("preferences.jsonl.gz", func(p string) error { return helpsteer.WritePreferences(p, src.prefs) }); err != nil {
		return ratings, prefs, nil, err
	}
	if src.prompts != nil {
		ref, err := put("prompts.jsonl.gz", func(p string) error { return helpsteer.WritePrompts(p, src.prompts) })
		if err != nil {
			return ratings, prefs, nil, err
		}
		prompts = &ref
	}
	return ratings, prefs, prompts, nil
}
