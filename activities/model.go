package activities

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"go.temporal.io/sdk/temporal"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/model/hf/chattemplate"
	"github.com/alignflow/alignflow/model/hf/hfmodel"
	"github.com/alignflow/alignflow/model/hf/hftokenizer"
	"github.com/alignflow/alignflow/model/lm"
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

// models caches the loaded Hugging Face models of a worker by weights
// digest: iterations reuse them instead of reading gigabytes again.
var models sync.Map // digest -> *runModel

// modelOf returns the run's model: the bundled one sized by the spec, or
// the Hugging Face model the data stage stored, with sequences capped at
// model.max_len.
func (a *Activities) modelOf(spec config.Spec, d pipeline.Data) (*runModel, error) {
	if d.Model == nil {
		m := spec.Model
		return &runModel{cfg: transformer.Config{Vocab: tokenizer.VocabSize, Dim: m.Dim, Heads: m.Heads, Layers: m.Layers, Hidden: m.Hidden, MaxLen: m.MaxLen},
			codec: lm.Bundled()}, nil
	}
	key := d.Model.Weights.SHA256 + fmt.Sprintf("/%d", spec.Model.MaxLen)
	if m, ok := models.Load(key); ok {
		return m.(*runModel), nil
	}
	base, err := a.Store.GetWeights(d.Model.Weights)
	if err != nil {
		return nil, err
	}
	cfg, err := transformer.ConfigOf(base)
	if err != nil {
		return nil, corrupt(fmt.Errorf("model weights %s: %w", d.Model.Weights.Path, err))
	}
	cfg.MaxLen = min(cfg.MaxLen, spec.Model.MaxLen)
	file := func(name string) ([]byte, error) {
		ref, ok := d.Model.Files[name]
		if !ok {
			return nil, nil
		}
		return a.Store.Get(ref)
	}
	tok, err := file(hftokenizer.File)
	if err != nil {
		return nil, err
	}
	tc, err := file(chattemplate.ConfigFile)
	if err != nil {
		return nil, err
	}
	codec, err := lm.NewCodec(tok, tc, d.Model.EOS)
	if err != nil {
		return nil, invalidSpec(fmt.Errorf("model.path %s: %w", d.Model.Source, err))
	}
	m := &runModel{cfg: cfg, codec: codec, base: base}
	models.Store(key, m)
	return m, nil
}

// openModel loads model.path, checking all of it (architecture, weights,
// tokenizer, chat template, EOS), without storing anything yet.
func openModel(spec config.Spec) (*lm.Model, *hfmodel.Config, *runModel, error) {
	dir := spec.Model.Path
	m, err := lm.Open(dir, true)
	if err != nil {
		return nil, nil, nil, invalidSpec(fmt.Errorf("model.path: %w", err))
	}
	if m.Kind != lm.KindHF {
		return nil, nil, nil, invalidSpec(fmt.Errorf("model.path %s: not a Hugging Face model directory", dir))
	}
	hf, err := hfmodel.ReadConfig(dir)
	if err != nil {
		return nil, nil, nil, invalidSpec(fmt.Errorf("model.path: %w", err))
	}
	codec, err := m.Codec()
	if err != nil {
		return nil, nil, nil, invalidSpec(fmt.Errorf("model.path: %w", err))
	}
	cfg := *m.Config
	cfg.MaxLen = min(cfg.MaxLen, spec.Model.MaxLen)
	return m, hf, &runModel{cfg: cfg, codec: codec, base: m.Params}, nil
}

// openRewardBase loads reward.path and checks that it is a reward model on
// the policy's architecture and tokenizer.
func openRewardBase(spec config.Spec, policyCfg transformer.Config) (*weights.Set, error) {
	dir := spec.Reward.Path
	hf, err := hfmodel.Load(dir)
	if err != nil {
		return nil, invalidSpec(fmt.Errorf("reward.path: %w", err))
	}
	if !hf.Config.Classifier {
		return nil, invalidSpec(fmt.Errorf("reward.path %s: a %s, not a reward model (an XForSequenceClassification with %d labels)", dir, hf.Config.Architecture, hfmodel.RewardLabels))
	}
	if !sameArchitecture(hf.Config.Transformer, policyCfg) {
		return nil, invalidSpec(fmt.Errorf("reward.path %s: its architecture %+v is not model.path's %+v", dir, hf.Config.Transformer, policyCfg))
	}
	a, errA := os.ReadFile(filepath.Join(dir, hftokenizer.File))
	b, errB := os.ReadFile(filepath.Join(spec.Model.Path, hftokenizer.File))
	if errA != nil || errB != nil || string(a) != string(b) {
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

// storeModel stores an opened model.path in the run's folder.
func (a *Activities) storeModel(runID string, spec config.Spec, m *lm.Model, hf *hfmodel.Config, rm *weights.Set) (*pipeline.BaseModel, error) {
	bm := &pipeline.BaseModel{Source: spec.Model.Path, Architecture: hf.Architecture, DType: hf.DType, EOS: m.EOS, Files: map[string]artifact.Ref{}}
	var err error
	if bm.Weights, err = a.Store.PutWeights(runPath(runID, "model", "base.safetensors"), m.Params); err != nil {
		return nil, err
	}
	if rm != nil {
		ref, err := a.Store.PutWeights(runPath(runID, "model", "reward-base.safetensors"), rm)
		if err != nil {
			return nil, err
		}
		bm.Reward, bm.RewardSource = &ref, spec.Reward.Path
	}
	files, err := hfmodel.ReadDescription(spec.Model.Path)
	if err != nil {
		return nil, err
	}
	for name, b := range files {
		if bm.Files[name], err = a.Store.Put(runPath(runID, "model", name), b); err != nil {
			return nil, err
		}
	}
	return bm, nil
}

func invalidSpec(err error) error {
	return temporal.NewNonRetryableApplicationError(err.Error(), pipeline.ErrInvalidSpec, err)
}
