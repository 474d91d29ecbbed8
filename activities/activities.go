// Package activities adapts alignflow's math to Temporal, as thin adapters:
// each activity loads its inputs from the artifact store (the run's model
// and data as a job, see setup), calls the library that does the work
// (data/dataset for which rows a stage reads, policy, reward and reinforce
// for the math, model/trainloop for training phases), heartbeats, saves its
// outputs and returns references and small typed results (pipeline). What
// stays here is Temporal's and the store's part: reuse of completed stages,
// resuming from checkpoints, classifying errors as retryable or not, the
// metrics log, and the worker's memory of its last update.
package activities

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.temporal.io/sdk/temporal"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/data/dataset"
	"github.com/alignflow/alignflow/data/helpsteer"
	"github.com/alignflow/alignflow/data/matched"
	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/model/hf/chattemplate"
	"github.com/alignflow/alignflow/model/hf/hftokenizer"
	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/progress"
	"github.com/alignflow/alignflow/ops/metrics"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/policy"
	"github.com/alignflow/alignflow/reinforce"
	"github.com/alignflow/alignflow/reward"
)

// Activities holds what every activity needs: the artifact store and the
// compiled graphs, cached per model shape so iterations do not recompile.
type Activities struct {
	Store *artifact.Store
	// DataRoots are the files a spec may make the worker read: the data
	// stage reads every file through them (config.Roots.Open). The zero
	// Roots allow none.
	DataRoots config.Roots
	// XLAPlugins are the XLA plugins a spec's backend may name
	// ("xla:NAME"): the worker's allow-list (nil: plain "xla" only).
	XLAPlugins backend.Plugins
	// WorkerQueue is this worker's own task queue, which UpdatePolicy
	// reports so that the next update is offered here first ("" for none).
	WorkerQueue string
	// Metrics shows the points activities log on Prometheus (nil: none).
	Metrics *metrics.Recorder
	// History reads workflow histories, for the report's stage timeline
	// (nil: reports have none).
	History HistoryReader

	models  lru[*runModel]  // loaded Hugging Face models, by weights and max_len
	engines lru[*engineSet] // compiled graphs, by backend and architecture
	mu      sync.Mutex
	last    *held // the last update's policy and optimizer state
}

// New returns activities storing artifacts in store.
func New(store *artifact.Store) *Activities {
	return &Activities{Store: store, models: lru[*runModel]{max: maxModels}, engines: lru[*engineSet]{max: maxEngineSets}}
}

type engineSet struct {
	policy     *policy.Engine
	reward     *reward.Engine
	sft        *optim.Trainer
	rl         map[reinforce.Objective]*optim.Trainer // REINFORCE's, by objective
	rmTrainer  *optim.Trainer
	regTrainer *optim.Trainer
	// adapters are the trainers of LoRA adapters (adapterTrainer), by kind,
	// scale and the names they train and read.
	adapters map[string]*optim.Trainer

	// shared is the worker's set a metered one views (nil: this is it),
	// and meter what the view reports to.
	shared *engineSet
	meter  progress.Meter
}

// metered is a view of the shared set e whose engines and trainers report
// every graph they run to m and stop with its error.
func (e *engineSet) metered(m progress.Meter) *engineSet {
	return &engineSet{policy: e.policy.WithProgress(m), reward: e.reward.WithProgress(m), sft: e.sft.WithProgress(m),
		rmTrainer: e.rmTrainer.WithProgress(m), regTrainer: e.regTrainer.WithProgress(m), shared: e, meter: m}
}

// enginesFor returns the graphs for the backend and the model, compiled
// once and kept for later activities (see maxEngineSets), held until the
// caller calls release.
func (a *Activities) enginesFor(backendName string, m *runModel) (e *engineSet, release func(), err error) {
	cfg := m.cfg
	key := fmt.Sprintf("%s/%+v/%+v", backendName, cfg, cfg.RopeScaling)
	return a.engines.get(key, func() (*engineSet, error) {
		b, err := backend.Open(backendName, a.XLAPlugins)
		if err != nil {
			return nil, invalidSpec(err)
		}
		// The graphs need only the parameters' names: a loaded model has them.
		pol := m.base
		if pol == nil {
			pol = policy.Init(cfg, 0)
		}
		rm, err := reward.InitFromBackbone(pol, 0)
		if err != nil {
			return nil, err
		}
		pe := policy.NewEngine(b, cfg, pol)
		re := reward.NewEngine(b, cfg, rm)
		return &engineSet{
			policy:     pe,
			reward:     re,
			sft:        optim.NewTrainer(b, pol.Names(), optim.DefaultAdamW, policy.SFTLoss(cfg)),
			rmTrainer:  optim.NewTrainer(b, rm.Names(), optim.DefaultAdamW, reward.BTLoss(cfg)),
			regTrainer: optim.NewTrainer(b, rm.Names(), optim.DefaultAdamW, reward.RegressionTrainingLoss(cfg)),
		}, nil
	})
}

// runPath is the store key of parts under the run's folder, runs/<runID>/
// (pipeline.RunKey): the one place activities make a key from a run ID. An
// ID that is not a safe key fails the activity non-retryably (InvalidSpec):
// the workflow refuses such IDs first, so only a run started before it did,
// or an activity scheduled by hand, gets here with one.
func runPath(runID string, parts ...string) (string, error) {
	key, err := pipeline.RunKey(runID, parts...)
	if err != nil {
		return "", invalidSpec(err)
	}
	return key, nil
}

// RunDir is the key of the folder of run runID's artifacts, for workflow
// code that checks where a reference points (pipeline.RunKey, as runPath
// makes it); "" for an ID that is not a safe key, which a run refuses at
// its start (pipeline.CheckRunID) before it checks any reference.
func RunDir(runID string) string {
	key, err := pipeline.RunKey(runID)
	if err != nil {
		return ""
	}
	return key
}

// classify turns errors that retrying cannot fix into non-retryable
// application errors with a type the workflow and users can act on.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		if error(app) == err || !app.NonRetryable() {
			return err
		}
		// Keep the type and non-retryability when context was wrapped around it.
		return temporal.NewNonRetryableApplicationError(err.Error(), app.Type(), err)
	}
	var nf *optim.NonFiniteError
	switch {
	case errors.As(err, &nf):
		return temporal.NewNonRetryableApplicationError(err.Error(), pipeline.ErrDiverged, err)
	case errors.Is(err, artifact.ErrCorrupt):
		return temporal.NewNonRetryableApplicationError(err.Error(), pipeline.ErrCorruptArtifact, err)
	case errors.Is(err, artifact.ErrStore):
		return temporal.NewNonRetryableApplicationError(err.Error(), pipeline.ErrStoreUnusable, err)
	case errors.Is(err, pipeline.ErrUnsafeRunID), modelBound(err):
		return invalidSpec(err)
	case dataset.IsInvalid(err):
		return invalidData(err)
	}
	return err
}

// modelBound reports whether err is a bound that model.path's own files
// ran past: its chat template (chattemplate.ErrLimit) or a tokenizer.json
// regex (hftokenizer.RegexError). The model is at fault, not the data.
func modelBound(err error) bool {
	var re *hftokenizer.RegexError
	return errors.Is(err, chattemplate.ErrLimit) || errors.As(err, &re)
}

// job is what a stage after PrepareData computes with: the compiled
// graphs, the run's model and its verified data. The stage calls release
// when it is done, so that the worker may evict the model and graphs.
type job struct {
	eng     *engineSet
	m       *runModel
	ds      *dataset.Dataset
	release func()
}

// setup loads a stage's job: the model and data as the data stage stored
// them, and the graphs compiled for them, reporting to ctx's meter (the
// activity's liveness): each load is a unit of progress, and so is every
// graph the job's engines run.
func (a *Activities) setup(ctx context.Context, spec config.Spec, d pipeline.Data) (*job, error) {
	meter := progress.FromContext(ctx)
	if meter == nil {
		meter = stopper{ctx} // no liveness: the work still ends with its context
	}
	m, releaseModel, err := a.modelOf(spec, d)
	if err != nil {
		return nil, err
	}
	if err := progress.Advance(meter, 1); err != nil {
		releaseModel()
		return nil, err
	}
	eng, releaseEngines, err := a.enginesFor(spec.Backend, m)
	if err != nil {
		releaseModel()
		return nil, err
	}
	j := &job{eng: eng, m: m, release: func() { releaseEngines(); releaseModel() }}
	ratings, prefs, prompts, err := a.readData(d)
	if err != nil {
		j.release()
		return nil, err
	}
	if err := progress.Advance(meter, 1); err != nil {
		j.release()
		return nil, err
	}
	var task *matched.Task
	if d.Generated {
		_, task = matched.Generate(dataset.GeneratorOptions(spec))
	}
	j.eng = eng.metered(meter)
	j.ds = dataset.New(ratings, prefs, task, m.codec, m.cfg.MaxLen)
	j.ds.RL = prompts
	return j, nil
}

// readData reads the data stage's ratings, preferences and (where the run
// has data.prompts) REINFORCE's prompts, verified.
func (a *Activities) readData(d pipeline.Data) ([]helpsteer.Rating, []helpsteer.Preference, []helpsteer.PromptRow, error) {
	ratings, err := readStored(a, d.Ratings, helpsteer.LoadRatings)
	if err != nil {
		return nil, nil, nil, err
	}
	prefs, err := readStored(a, d.Preferences, helpsteer.LoadPreferences)
	if err != nil {
		return nil, nil, nil, err
	}
	var prompts []helpsteer.PromptRow
	if d.Prompts != nil {
		if prompts, err = readStored(a, *d.Prompts, helpsteer.LoadPrompts); err != nil {
			return nil, nil, nil, err
		}
	}
	return ratings, prefs, prompts, nil
}

// readStored reads the rows of a file the data stage stored, verified,
// with load.
func readStored[T any](a *Activities, ref artifact.Ref, load func(string, helpsteer.ReadOptions) ([]T, helpsteer.ReadReport, error)) ([]T, error) {
	p, release, err := a.Store.LocalFile(ref)
	if err != nil {
		return nil, err
	}
	defer release()
	rows, _, err := load(p, storedData)
	if err != nil {
		return nil, invalidData(err)
	}
	return rows, nil
}

// storedData reads the data the data stage wrote: rows of lines within
// DefaultMaxLineBytes as read, which writing them again can lengthen (an
// invalid byte read as U+FFFD is written as its three bytes).
var storedData = helpsteer.ReadOptions{MaxLineBytes: 4 * helpsteer.DefaultMaxLineBytes}

// sampleOptions are the spec's sampling settings at a temperature, stopping
// at the model's EOS and its chat template's end of turn.
func (j *job) sampleOptions(spec config.Spec, temperature float64) policy.SampleOptions {
	end, trailer := j.m.codec.Trailer()
	return policy.SampleOptions{Temperature: temperature, TopP: spec.Reinforce.TopP, MaxTokens: spec.Reinforce.MaxTokens, Stop: j.m.codec.Stop(),
		Turn: policy.Turn{End: end, Trailer: trailer}}
}

func invalidData(err error) error {
	return temporal.NewNonRetryableApplicationError(err.Error(), pipeline.ErrInvalidData, err)
}

func invalidSpec(err error) error {
	return temporal.NewNonRetryableApplicationError(err.Error(), pipeline.ErrInvalidSpec, err)
}

func corrupt(err error) error {
	return temporal.NewNonRetryableApplicationError(err.Error(), pipeline.ErrCorruptArtifact, err)
}
