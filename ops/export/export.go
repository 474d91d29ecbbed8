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
	"strings"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/model/hf/hfmodel"
	"github.com/alignflow/alignflow/model/hf/safetensors"
	"github.com/alignflow/alignflow/model/lm"
	"github.com/alignflow/alignflow/model/lora"
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

// Formats of an export.
const (
	// Merged is a whole Hugging Face model directory, with any adapters
	// folded into the weights.
	Merged = "merged"
	// PEFT is PEFT's LoRA adapter directory, relative to model.path's weights.
	PEFT = "peft"
)

// Formats lists the formats, the default first.
var Formats = []string{Merged, PEFT}

// Policy writes the final policy of run runID, found in store, at out
// (which must not exist) in format: Merged, a Hugging Face directory of
// the source model's description files (hfmodel.DescriptionFiles:
// config.json, tokenizer and chat template files, generation_config.json)
// and its weights in the source dtype, checked against their digests
// first; PEFT, the run's adapters as one PEFT adapter of model.path.
func Policy(store *artifact.Store, runID, out, format string) (*pipeline.Summary, error) {
	if format == PEFT {
		return writePEFT(store, runID, out, policyAdapter, hfmodel.TaskCausalLM)
	}
	return write(store, runID, out, format, policyWeights,
		func(out string, files map[string][]byte, t transformer.Config, params *weights.Set, dtype safetensors.DType, _ *pipeline.BaseModel) error {
			return hfmodel.Export(out, files, t, params, dtype)
		})
}

// Reward writes the reward model of run runID at out in format: Merged, an
// XForSequenceClassification directory of the backbone and a score layer
// of the five HelpSteer attributes (helpfulness, the reward, first), with
// a pad_token_id that no scored sequence ends with
// (hfmodel.Description.RewardPad), so that transformers reads each
// sequence's reward where alignflow trained it, at its last token; PEFT,
// a SEQ_CLS adapter of model.path with the score layer in modules_to_save.
func Reward(store *artifact.Store, runID, out, format string) (*pipeline.Summary, error) {
	if format == PEFT {
		return writePEFT(store, runID, out, rewardAdapter, hfmodel.TaskSeqCls)
	}
	return write(store, runID, out, format, func(store *artifact.Store, s *pipeline.Summary) (*weights.Set, error) {
		if err := trainedRewardModel(s); err != nil {
			return nil, err
		}
		return store.GetWeights(s.RewardModel.Checkpoint)
	}, exportReward)
}

// policyWeights is the final policy: its checkpoint, or, in a LoRA run,
// its adapter merged into the reference (the SFT policy) it was trained on.
func policyWeights(store *artifact.Store, s *pipeline.Summary) (*weights.Set, error) {
	pol, err := store.GetWeights(s.Policy.Checkpoint)
	if err != nil {
		return nil, err
	}
	if _, ok, err := lora.Of(pol); err != nil || !ok {
		return pol, err
	}
	ref, err := store.GetWeights(s.SFT.Checkpoint)
	if err != nil {
		return nil, err
	}
	return lora.Merge(ref, pol)
}

// policyAdapter is the final policy as one adapter of model.path: the SFT
// adapter with REINFORCE's stacked on it (lora.Combine), or the SFT
// adapter alone when REINFORCE took no step.
func policyAdapter(store *artifact.Store, s *pipeline.Summary) (*weights.Set, string, error) {
	sft, err := sftAdapter(store, s)
	if err != nil {
		return nil, "", err
	}
	if s.Policy.Digest == s.SFT.Digest {
		return sft, s.Data.Model.Source, nil
	}
	pol, err := store.GetWeights(s.Policy.Checkpoint)
	if err != nil {
		return nil, "", err
	}
	if _, ok, err := lora.Of(pol); err != nil || !ok {
		return nil, "", fmt.Errorf("run %s: REINFORCE trained every weight, which no adapter holds: export --format %s (%v)", s.WorkflowID, Merged, err)
	}
	both, err := lora.Combine(sft, pol)
	if err != nil {
		return nil, "", fmt.Errorf("run %s: %w", s.WorkflowID, err)
	}
	return both, s.Data.Model.Source, nil
}

// trainedRewardModel is an error for a run that trained no reward model.
func trainedRewardModel(s *pipeline.Summary) error {
	if s.RewardModel.LeftOut {
		return fmt.Errorf("run %s trained no reward model (reward.model_weight 0): there is none to export", s.WorkflowID)
	}
	return nil
}

// rewardAdapter is the reward model as one adapter with its head: over
// reward.path's weights when the run started from them, else the SFT
// adapter with the reward model's stacked on it.
func rewardAdapter(store *artifact.Store, s *pipeline.Summary) (*weights.Set, string, error) {
	if err := trainedRewardModel(s); err != nil {
		return nil, "", err
	}
	if s.RewardModel.Adapter == nil {
		return nil, "", fmt.Errorf("run %s: the reward model has no adapter (trained without lora, or extrapolated by ExPO, which no adapter of its rank holds): export --format %s", s.WorkflowID, Merged)
	}
	rm, err := store.GetWeights(*s.RewardModel.Adapter)
	if err != nil {
		return nil, "", err
	}
	if bm := s.Data.Model; bm.Reward != nil {
		return rm, bm.RewardSource, nil
	}
	sft, err := sftAdapter(store, s)
	if err != nil {
		return nil, "", err
	}
	both, err := lora.Combine(sft, rm)
	if err != nil {
		return nil, "", fmt.Errorf("run %s: %w", s.WorkflowID, err)
	}
	return both, s.Data.Model.Source, nil
}

// sftAdapter is the SFT stage's adapter, which every adapter of the run
// relative to model.path starts with.
func sftAdapter(store *artifact.Store, s *pipeline.Summary) (*weights.Set, error) {
	if s.SFT.Adapter == nil {
		return nil, fmt.Errorf("run %s: SFT trained every weight (the run has no lora), so no adapter of model.path holds the model: export --format %s", s.WorkflowID, Merged)
	}
	return store.GetWeights(*s.SFT.Adapter)
}

// writePEFT writes the adapter which gives as a PEFT directory.
func writePEFT(store *artifact.Store, runID, out string, which func(*artifact.Store, *pipeline.Summary) (*weights.Set, string, error), task string) (*pipeline.Summary, error) {
	s, err := hfSummary(store, runID)
	if err != nil {
		return nil, err
	}
	adapter, base, err := which(store, s)
	if err != nil {
		return nil, err
	}
	cfg, err := transformer.ConfigOf(adapter)
	if err != nil {
		return nil, fmt.Errorf("run %s adapter: %w", runID, err)
	}
	return s, hfmodel.ExportPEFT(out, cfg, adapter, task, base)
}

// hfSummary is the summary of a run that started from model.path.
func hfSummary(store *artifact.Store, runID string) (*pipeline.Summary, error) {
	s, err := Summary(store, runID)
	if err != nil {
		return nil, err
	}
	if s.Data.Model == nil {
		return nil, fmt.Errorf("run %s trained the bundled byte-level model, which has no Hugging Face form: export needs a run started from model.path", runID)
	}
	return s, nil
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

func write(store *artifact.Store, runID, out, format string, which func(*artifact.Store, *pipeline.Summary) (*weights.Set, error), export exporter) (*pipeline.Summary, error) {
	if format != Merged {
		return nil, fmt.Errorf("--format %q is not supported (supported: %s)", format, strings.Join(Formats, ", "))
	}
	s, err := hfSummary(store, runID)
	if err != nil {
		return nil, err
	}
	bm := s.Data.Model
	params, err := which(store, s)
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", runID, err)
	}
	cfg, err := transformer.ConfigOf(params)
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", runID, err)
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
