package activities

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/model/hf/hfmodel"
	"github.com/alignflow/alignflow/model/hf/hftokenizer"
	"github.com/alignflow/alignflow/model/lm"
	"github.com/alignflow/alignflow/model/lora"
	"github.com/alignflow/alignflow/model/tokenizer"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/pipeline"
)

// runModel is what a run's stages compute with: the architecture, the
// codec between texts and ids, and, for a Hugging Face model, the weights
// the policy starts from (nil: the bundled model, initialised fresh).
type runModel struct {
	cfg   transformer.Config
	codec *lm.Codec
	base  *weights.Set
}

// bundledModel is the bundled byte-level model sized by the spec.
func bundledModel(spec config.Spec) *runModel {
	m := spec.Model
	return &runModel{cfg: transformer.Config{Vocab: tokenizer.VocabSize, Dim: m.Dim, Heads: m.Heads, Layers: m.Layers, Hidden: m.Hidden, MaxLen: m.MaxLen},
		codec: lm.Bundled()}
}

// modelOf returns the run's model: the bundled one sized by the spec, or
// the Hugging Face model the data stage stored (read from the store, never
// from model.path, which this worker may not see), with sequences capped
// at model.max_len. A loaded model is kept for later activities (see
// maxModels) and held until the caller calls release.
func (a *Activities) modelOf(spec config.Spec, d pipeline.Data) (m *runModel, release func(), err error) {
	if d.Model == nil {
		return bundledModel(spec), func() {}, nil
	}
	key := d.Model.Weights.SHA256 + fmt.Sprintf("/%d", spec.Model.MaxLen)
	return a.models.get(key, func() (*runModel, error) { return a.loadModel(spec, d) })
}

// loadModel reads the Hugging Face model the data stage stored.
func (a *Activities) loadModel(spec config.Spec, d pipeline.Data) (*runModel, error) {
	base, err := a.Store.GetWeights(d.Model.Weights)
	if err != nil {
		return nil, err
	}
	cfg, err := transformer.ConfigOf(base)
	if err != nil {
		return nil, corrupt(fmt.Errorf("model weights %s: %w", d.Model.Weights.Path, err))
	}
	cfg.MaxLen = min(cfg.MaxLen, spec.Model.MaxLen)
	files := map[string][]byte{}
	for name, ref := range d.Model.Files {
		if files[name], err = a.Store.Get(ref); err != nil {
			return nil, err
		}
	}
	desc, err := hfmodel.ParseDescription(d.Model.Source, files)
	if err != nil {
		return nil, corrupt(fmt.Errorf("the stored description of model.path %s: %w", d.Model.Source, err))
	}
	codec, err := lm.NewCodec(desc, d.Model.EOS)
	if err != nil {
		return nil, invalidSpec(fmt.Errorf("model.path %s: %w", d.Model.Source, err))
	}
	return &runModel{cfg: cfg, codec: codec, base: base}, nil
}

// openedModel is model.path (and reward.path) as the data stage opens
// them: each directory read once, everything checked, nothing stored yet.
type openedModel struct {
	*runModel
	hf     *lm.Model
	reward *weights.Set // reward.path's weights, nil for none
	lora   *weights.Set // lora.path's adapter, nil for none
}

// openModel opens the spec's model: the bundled one, or model.path checked
// whole (architecture, weights, tokenizer, chat template, EOS) with
// reward.path beside it, every file read through roots.
func openModel(spec config.Spec, roots config.Roots) (*openedModel, error) {
	if spec.Model.Path == "" {
		m := bundledModel(spec)
		if _, err := adapterOf(spec, m.cfg); err != nil { // lora.targets the model lacks
			return nil, err
		}
		return &openedModel{runModel: m}, nil
	}
	dir := spec.Model.Path
	m, err := lm.OpenDir(roots.FS(dir), dir, true)
	if err != nil {
		return nil, invalidSpec(fmt.Errorf("model.path: %w", err))
	}
	if m.Kind != lm.KindHF || m.Params == nil {
		return nil, invalidSpec(fmt.Errorf("model.path %s: not a Hugging Face model directory", dir))
	}
	codec, err := m.Codec()
	if err != nil {
		return nil, invalidSpec(fmt.Errorf("model.path: %w", err))
	}
	cfg := *m.Config
	cfg.MaxLen = min(cfg.MaxLen, spec.Model.MaxLen)
	if err := m.HF.Config.CheckLen(cfg.MaxLen); err != nil {
		return nil, invalidSpec(fmt.Errorf("model.max_len %d: model.path %s: %w", spec.Model.MaxLen, dir, err))
	}
	o := &openedModel{runModel: &runModel{cfg: cfg, codec: codec, base: m.Params}, hf: m}
	if spec.Reward.Path != "" {
		if o.reward, err = openRewardBase(roots, spec.Reward.Path, m, cfg.MaxLen); err != nil {
			return nil, err
		}
	}
	if _, err := adapterOf(spec, cfg); err != nil {
		return nil, err
	}
	if spec.LoRA.Path != "" {
		if o.lora, err = openAdapter(roots, spec, cfg); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// openAdapter reads lora.path, a PEFT adapter of the model (CAUSAL_LM),
// and checks that it is the adapter the spec's lora describes.
func openAdapter(roots config.Roots, spec config.Spec, cfg transformer.Config) (*weights.Set, error) {
	dir := spec.LoRA.Path
	ad, pc, err := hfmodel.ReadPEFT(roots.FS(dir), dir, cfg)
	if err != nil {
		return nil, invalidSpec(fmt.Errorf("lora.path: %w", err))
	}
	if pc.TaskType != hfmodel.TaskCausalLM {
		return nil, invalidSpec(fmt.Errorf("lora.path %s: task_type %s: SFT starts from a %s adapter", dir, pc.TaskType, hfmodel.TaskCausalLM))
	}
	want, err := adapterOf(spec, cfg)
	if err != nil {
		return nil, err
	}
	got, _, _ := lora.Of(ad)
	file := path.Join(dir, hfmodel.PEFTConfigFile)
	switch {
	case got.Rank != want.Rank:
		return nil, invalidSpec(fmt.Errorf("lora.rank is %d, but %s has r %d", want.Rank, file, got.Rank))
	case got.Alpha != want.Alpha:
		return nil, invalidSpec(fmt.Errorf("lora.alpha is %v (0 means 2 x rank), but %s has lora_alpha %v", want.Alpha, file, got.Alpha))
	case !slices.Equal(got.Targets, want.Targets):
		return nil, invalidSpec(fmt.Errorf("lora.targets are %s (none: every projection), but %s has target_modules %s", strings.Join(want.Targets, ", "), file, strings.Join(got.Targets, ", ")))
	}
	transformer.SetConfig(ad, cfg)
	b, _ := json.Marshal(want) // the spec's training settings (dropout) over the file's
	ad.Metadata[lora.MetaKey] = string(b)
	return ad, nil
}

// openRewardBase loads reward.path and checks that it is a reward model on
// the policy's architecture and tokenizer whose attention covers sequences
// of maxLen tokens.
func openRewardBase(roots config.Roots, dir string, policy *lm.Model, maxLen int) (*weights.Set, error) {
	hf, err := hfmodel.LoadFS(roots.FS(dir), dir)
	if err != nil {
		return nil, invalidSpec(fmt.Errorf("reward.path: %w", err))
	}
	if err := hf.Config.CheckLen(maxLen); err != nil {
		return nil, invalidSpec(fmt.Errorf("model.max_len: reward.path %s: %w", dir, err))
	}
	if !hf.Config.Classifier {
		return nil, invalidSpec(fmt.Errorf("reward.path %s: a %s, not a reward model (an XForSequenceClassification with %d labels)", dir, hf.Config.Architecture, hfmodel.RewardLabels))
	}
	if !sameArchitecture(hf.Config.Transformer, *policy.Config) {
		return nil, invalidSpec(fmt.Errorf("reward.path %s: its architecture %+v is not model.path's %+v", dir, hf.Config.Transformer, *policy.Config))
	}
	if !bytes.Equal(hf.Files[hftokenizer.File], policy.HF.Files[hftokenizer.File]) {
		return nil, invalidSpec(fmt.Errorf("reward.path %s: its tokenizer.json is not model.path's: the reward model must read the policy's tokens", dir))
	}
	return hf.Params, nil
}

// sameArchitecture compares two configs apart from their sequence limits.
func sameArchitecture(a, b transformer.Config) bool {
	ra, rb := a.RopeScaling, b.RopeScaling
	if (ra == nil) != (rb == nil) || ra != nil && *ra != *rb {
		return false
	}
	a.RopeScaling, b.RopeScaling, a.MaxLen, b.MaxLen = nil, nil, 0, 0
	return a == b
}

// storeModel stores an opened model.path in the run's folder: the weights,
// reward.path's, and the exact bytes of the description files that were
// parsed.
func (a *Activities) storeModel(runID string, spec config.Spec, o *openedModel) (*pipeline.BaseModel, error) {
	hf := o.hf.HF
	bm := &pipeline.BaseModel{Source: spec.Model.Path, Architecture: hf.Config.Architecture, DType: hf.Config.DType, EOS: o.hf.EOS, Files: map[string]artifact.Ref{}}
	dir, err := runPath(runID, "model")
	if err != nil {
		return nil, err
	}
	if bm.Weights, err = a.Store.PutWeights(path.Join(dir, "base.safetensors"), o.base); err != nil {
		return nil, err
	}
	if o.reward != nil {
		ref, err := a.Store.PutWeights(path.Join(dir, "reward-base.safetensors"), o.reward)
		if err != nil {
			return nil, err
		}
		bm.Reward, bm.RewardSource = &ref, spec.Reward.Path
	}
	if o.lora != nil {
		ref, err := a.Store.PutWeights(path.Join(dir, "lora.safetensors"), o.lora)
		if err != nil {
			return nil, err
		}
		bm.LoRA, bm.LoRASource = &ref, spec.LoRA.Path
	}
	for name, b := range hf.Files {
		key, err := runPath(runID, "model", name) // a description file's name: kept in the folder
		if err != nil {
			return nil, err
		}
		if bm.Files[name], err = a.Store.Put(key, b); err != nil {
			return nil, err
		}
	}
	return bm, nil
}
