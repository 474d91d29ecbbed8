// Package export writes what a finished run trained as Hugging Face model
// directories: its aligned policy, in the source model's architecture,
// files and dtype.
package export

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/model/hf/hfmodel"
	"github.com/alignflow/alignflow/model/hf/safetensors"
	"github.com/alignflow/alignflow/model/lm"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/pipeline"
)

// Summary reads a run's summary.json from the store.
func Summary(store *artifact.Store, runID string) (*pipeline.Summary, error) {
	key, err := pipeline.RunKey(runID, pipeline.SummaryFile)
	if err != nil {
		return nil, err
	}
	b, err := store.GetRecord(key)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("run %s: no %s (is the run finished, and %s its store?)", runID, store.Where(key), store.Describe())
	}
	if err != nil {
		return nil, err
	}
	var s pipeline.Summary
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", store.Where(key), err)
	}
	return &s, nil
}

// Policy writes the final policy of run runID, found in store, as a
// Hugging Face directory at out (which must not exist): the source model's
// description files (hfmodel.DescriptionFiles: config.json, tokenizer and
// chat template files, generation_config.json), and its weights in the
// source dtype, checked against their digests first.
func Policy(store *artifact.Store, runID, out string) (*pipeline.Summary, error) {
	return write(store, runID, out, func(s *pipeline.Summary) artifact.Ref { return s.Policy.Checkpoint },
		func(out string, files map[string][]byte, t transformer.Config, params *weights.Set, dtype safetensors.DType, _ *pipeline.BaseModel) error {
			return hfmodel.Export(out, files, t, params, dtype)
		})
}

// Reward writes the reward model of run runID as an
// XForSequenceClassification directory at out: the backbone and a score
// layer of the five HelpSteer attributes (helpfulness, the reward, first),
// with a pad_token_id that no scored sequence ends with
// (hfmodel.Description.RewardPad), so that transformers reads each
// sequence's reward where alignflow trained it, at its last token.
func Reward(store *artifact.Store, runID, out string) (*pipeline.Summary, error) {
	return write(store, runID, out, func(s *pipeline.Summary) artifact.Ref { return s.RewardModel.Checkpoint }, exportReward)
}

// exportReward exports a reward model with its pad_token_id.
func exportReward(out string, files map[string][]byte, t transformer.Config, params *weights.Set, dtype safetensors.DType, bm *pipeline.BaseModel) error {
	desc, err := hfmodel.ParseDescription(bm.Source, files)
	if err != nil {
		return err
	}
	codec, err := lm.NewCodec(desc, bm.EOS)
	if err != nil {
		return err
	}
	end, trailer := codec.Trailer()
	ending := codec.Stop()
	if end >= 0 && len(trailer) > 0 {
		ending = append(ending, trailer[len(trailer)-1])
	}
	pad, err := desc.RewardPad(ending)
	if err != nil {
		return fmt.Errorf("export reward model: %w", err)
	}
	withPad := maps.Clone(files)
	if withPad[hfmodel.ConfigFile], err = hfmodel.WithPad(files[hfmodel.ConfigFile], pad); err != nil {
		return err
	}
	return hfmodel.ExportReward(out, withPad, t, params, dtype)
}

type exporter func(out string, files map[string][]byte, t transformer.Config, params *weights.Set, dtype safetensors.DType, bm *pipeline.BaseModel) error

func write(store *artifact.Store, runID, out string, which func(*pipeline.Summary) artifact.Ref, export exporter) (*pipeline.Summary, error) {
	s, err := Summary(store, runID)
	if err != nil {
		return nil, err
	}
	bm := s.Data.Model
	if bm == nil {
		return nil, fmt.Errorf("run %s trained the bundled byte-level model, which has no Hugging Face form: export needs a run started from model.path", runID)
	}
	ref := which(s)
	params, err := store.GetWeights(ref)
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", runID, err)
	}
	cfg, err := transformer.ConfigOf(params)
	if err != nil {
		return nil, fmt.Errorf("run %s %s: %w", runID, ref.Path, err)
	}
	files := map[string][]byte{}
	for name, ref := range bm.Files {
		if files[name], err = store.Get(ref); err != nil {
			return nil, fmt.Errorf("run %s model file %s: %w", runID, name, err)
		}
	}
	dtype, err := hfmodel.DTypeOf(bm.DType)
	if err != nil {
		return nil, err
	}
	if err := export(out, files, cfg, params, dtype, bm); err != nil {
		return nil, err
	}
	return s, nil
}
