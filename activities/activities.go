// Package activities adapts alignflow's math to Temporal: each activity loads
// its inputs from the artifact store, runs the policy, reward or reinforce
// code, heartbeats its progress, saves its outputs atomically and returns
// references and small metrics.
package activities

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"path"
	"sort"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/data/helpsteer"
	"github.com/alignflow/alignflow/data/matched"
	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/model/hf/hfmodel"
	"github.com/alignflow/alignflow/model/lm"
	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/tokenizer"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/ops/metrics"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/policy"
	"github.com/alignflow/alignflow/reward"
)

// Activities holds what every activity needs: the artifact store and the
// compiled graphs, cached per model shape so iterations do not recompile.
type Activities struct {
	Store *artifact.Store
	// DataRoots confine the files a spec may name (config.Spec.CheckRoots);
	// empty for none.
	DataRoots []string
	// WorkerQueue is this worker's own task queue, which UpdatePolicy
	// reports so that the next update is offered here first ("" for none).
	WorkerQueue string
	// Metrics shows the points activities log on Prometheus (nil: none).
	Metrics *metrics.Recorder
	// History reads workflow histories, for the report's stage timeline
	// (nil: reports have none).
	History HistoryReader

	mu      sync.Mutex
	engines map[string]*engineSet
	last    *held // the last update's policy and optimizer state
}

// New returns activities storing artifacts in store.
func New(store *artifact.Store) *Activities {
	return &Activities{Store: store, engines: map[string]*engineSet{}}
}

type engineSet struct {
	policy     *policy.Engine
	reward     *reward.Engine
	sft        *optim.Trainer
	rl         *optim.Trainer
	rmTrainer  *optim.Trainer
	regTrainer *optim.Trainer
}

// enginesFor returns the cached graphs for the backend and the model.
func (a *Activities) enginesFor(backendName string, m *runModel) (*engineSet, error) {
	cfg := m.cfg
	key := fmt.Sprintf("%s/%+v/%+v", backendName, cfg, cfg.RopeScaling)
	a.mu.Lock()
	defer a.mu.Unlock()
	if e, ok := a.engines[key]; ok {
		return e, nil
	}
	b, err := backend.New(backendName)
	if err != nil {
		return nil, temporal.NewNonRetryableApplicationError(err.Error(), pipeline.ErrInvalidSpec, err)
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
	e := &engineSet{
		policy:     pe,
		reward:     re,
		sft:        optim.NewTrainer(b, pol.Names(), optim.DefaultAdamW, policy.SFTLoss(cfg)),
		rmTrainer:  optim.NewTrainer(b, rm.Names(), optim.DefaultAdamW, reward.BTLoss(cfg)),
		regTrainer: optim.NewTrainer(b, rm.Names(), optim.DefaultAdamW, reward.RegressionTrainingLoss(cfg)),
	}
	a.engines[key] = e
	return e, nil
}

// stageRNG returns the random stream of one stage of a run: the same seed,
// stage and index always give the same stream, whichever worker runs it.
func stageRNG(seed int64, stage string, index int) *rand.Rand {
	return rand.New(stageSource(seed, stage, index))
}

// stageSource is stageRNG's source, for streams whose state is checkpointed.
func stageSource(seed int64, stage string, index int) *rand.PCG {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", stage, index)
	return rand.NewPCG(uint64(seed), h.Sum64())
}

func runPath(runID string, parts ...string) string {
	return path.Join(append([]string{"runs", runID}, parts...)...)
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
	}
	return err
}

func invalidData(err error) error {
	return temporal.NewNonRetryableApplicationError(err.Error(), pipeline.ErrInvalidData, err)
}

// keepAlive heartbeats p every second until stop is called, for work
// without steps of its own to report (a REINFORCE iteration, an evaluation),
// so that a dead worker is noticed within the heartbeat timeout while a slow
// live one is not. Heartbeats with progress sent meanwhile take precedence
// only until the next tick, which is harmless: p names the same stage. stop
// returns once no heartbeat is in flight, so none races the activity's
// completion (the SDK would log that one as an error).
func keepAlive(ctx context.Context, p pipeline.Progress) (stop func()) {
	if !activity.IsActivity(ctx) {
		return func() {}
	}
	activity.RecordHeartbeat(ctx, p) // at once: the stage shows before the first tick
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				select {
				case <-done: // stop and the tick came together
					return
				default:
				}
				activity.RecordHeartbeat(ctx, p)
			}
		}
	}()
	return func() { close(done); <-exited }
}

func heartbeat(ctx context.Context, p pipeline.Progress) {
	if activity.IsActivity(ctx) {
		activity.RecordHeartbeat(ctx, p)
	}
}

// dataset is a run's loaded data.
type dataset struct {
	ratings []helpsteer.Rating
	prefs   []helpsteer.Preference
	task    *matched.Task // nil without a gold rubric
	m       *runModel     // the model the texts are encoded for

	mu      sync.Mutex
	encoded map[string]encodedPrompt
}

type encodedPrompt struct {
	ids []int32
	err error
}

// promptIDs is the model's encoding of a prompt, computed once.
func (ds *dataset) promptIDs(p string) ([]int32, error) {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if e, ok := ds.encoded[p]; ok {
		return e.ids, e.err
	}
	ids, err := ds.m.codec.Prompt(p)
	if ds.encoded == nil {
		ds.encoded = map[string]encodedPrompt{}
	}
	ds.encoded[p] = encodedPrompt{ids, err}
	return ids, err
}

// fits reports whether a prompt leaves room for a response in maxLen (a
// prompt the chat template cannot render does not fit; PrepareData has
// refused the data before any stage meets one).
func (ds *dataset) fits(p string, maxLen int) bool {
	ids, err := ds.promptIDs(p)
	return err == nil && len(ids) < maxLen-4
}

func splitOf(s string) string {
	if s == "" {
		return helpsteer.SplitTrain
	}
	return s
}

// setup returns what every stage after PrepareData starts from: the compiled
// graphs for the spec's model and the run's verified data.
func (a *Activities) setup(spec config.Spec, d pipeline.Data) (*engineSet, *dataset, error) {
	m, err := a.modelOf(spec, d)
	if err != nil {
		return nil, nil, err
	}
	eng, err := a.enginesFor(spec.Backend, m)
	if err != nil {
		return nil, nil, err
	}
	ds, err := a.loadData(spec, d)
	if err != nil {
		return nil, nil, err
	}
	ds.m = m
	return eng, ds, nil
}

func (a *Activities) loadData(spec config.Spec, d pipeline.Data) (*dataset, error) {
	rp, err := a.Store.LocalFile(d.Ratings)
	if err != nil {
		return nil, err
	}
	pp, err := a.Store.LocalFile(d.Preferences)
	if err != nil {
		return nil, err
	}
	ratings, err := helpsteer.ReadRatings(rp)
	if err != nil {
		return nil, invalidData(err)
	}
	prefs, err := helpsteer.ReadPreferences(pp)
	if err != nil {
		return nil, invalidData(err)
	}
	ds := &dataset{ratings: ratings, prefs: prefs}
	if d.Generated {
		_, ds.task = matched.Generate(generatorOptions(spec))
	}
	return ds, nil
}

func generatorOptions(spec config.Spec) matched.Options {
	g := spec.Data.Generate
	noise := func(v float64) float64 {
		if v == 0 {
			return -1 // the generator reads 0 as "default"; the spec means none
		}
		return v
	}
	return matched.Options{Seed: spec.Seed, Prompts: g.Prompts, ValidationFraction: g.ValidationFraction,
		RatingNoise: noise(g.RatingNoise), PreferenceNoise: noise(g.PreferenceNoise)}
}

// pairs returns the tokenised non-tie preference pairs of a split as the
// reward model reads them (reward.PairOf): it leaves out, and counts in
// dropped, the pairs whose responses do not both fit maxLen whole, and
// counts in cut those kept with the end of their prompt only.
func (ds *dataset) pairs(split string, maxLen int) (out []reward.Pair, dropped, cut int) {
	for _, p := range ds.prefs {
		if p.Tie() || splitOf(p.Split) != split {
			continue
		}
		ids, err := ds.promptIDs(p.Prompt)
		if err != nil {
			dropped++
			continue
		}
		c := ds.m.codec
		pair, cut1, ok := reward.PairOf(ids, c.Response(p.Chosen()), c.Response(p.Rejected()), float64(p.Margin()), maxLen)
		switch {
		case !ok:
			dropped++
		case cut1:
			cut++
			fallthrough
		default:
			out = append(out, pair)
		}
	}
	return out, dropped, cut
}

// rated returns the ratings of a split as the reward model reads them,
// fitted like pairs; a rating whose response does not fit maxLen whole is
// left out (its EOS, where the reward is read, would be cut).
func (ds *dataset) rated(split string, maxLen int) []reward.Rated {
	var out []reward.Rated
	for _, r := range ds.ratings {
		if splitOf(r.Split) != split {
			continue
		}
		ids, err := ds.promptIDs(r.Prompt)
		if err != nil {
			continue
		}
		seq, whole, _ := tokenizer.Fit(ids, ds.m.codec.Response(r.Response), maxLen)
		if !whole {
			continue
		}
		x := reward.Rated{Sequence: seq, Ratings: r.Attributes()}
		for i := range x.Present {
			x.Present[i] = true
		}
		out = append(out, x)
	}
	return out
}

// prompts returns the distinct prompts of a split, sorted.
func (ds *dataset) prompts(split string) []string {
	if ds.task != nil {
		return ds.task.Prompts(split)
	}
	seen := map[string]bool{}
	var out []string
	for _, p := range ds.prefs {
		if splitOf(p.Split) == split && !seen[p.Prompt] {
			seen[p.Prompt] = true
			out = append(out, p.Prompt)
		}
	}
	for _, r := range ds.ratings {
		if splitOf(r.Split) == split && !seen[r.Prompt] {
			seen[r.Prompt] = true
			out = append(out, r.Prompt)
		}
	}
	sort.Strings(out)
	return out
}

// PrepareData generates the matched dataset, or validates the user's files,
// and stores both in the run's artifact folder.
func (a *Activities) PrepareData(ctx context.Context, in pipeline.PrepareDataInput) (pipeline.Data, error) {
	// Before reuse: a recorded result must not reveal a file outside the roots either.
	if err := in.Spec.CheckRoots(a.DataRoots); err != nil {
		return pipeline.Data{}, temporal.NewNonRetryableApplicationError(err.Error(), pipeline.ErrInvalidSpec, err)
	}
	d, err := reuse(ctx, a, pipeline.StagePrepareData, in.Spec, in.RunID, in, func() (pipeline.Data, error) { return a.prepareData(ctx, in) })
	return d, classify(err)
}

func (a *Activities) prepareData(ctx context.Context, in pipeline.PrepareDataInput) (pipeline.Data, error) {
	spec := in.Spec
	var ratings []helpsteer.Rating
	var prefs []helpsteer.Preference
	d := pipeline.Data{}
	if err := spec.CheckFiles(); err != nil {
		return d, temporal.NewNonRetryableApplicationError(err.Error(), pipeline.ErrInvalidSpec, err)
	}
	var task *matched.Task
	if spec.Data.Ratings == "" {
		var gen *matched.Dataset
		gen, task = matched.Generate(generatorOptions(spec))
		ratings, prefs = gen.Ratings, gen.Preferences
		d.Generated = true
	} else {
		opts := helpsteer.ReadOptions{SkipInvalid: spec.Data.SkipInvalid}
		var rr, pr helpsteer.ReadReport
		var err error
		if ratings, rr, err = helpsteer.LoadRatings(spec.Data.Ratings, opts); err != nil {
			return d, invalidData(err)
		}
		if prefs, pr, err = helpsteer.LoadPreferences(spec.Data.Preferences, opts); err != nil {
			return d, invalidData(err)
		}
		d.SkippedRows = rr.Skipped + pr.Skipped
		if activity.IsActivity(ctx) {
			for _, e := range append(rr.Errors, pr.Errors...) {
				activity.GetLogger(ctx).Warn("skipped invalid row", "error", e.Error())
			}
		}
	}
	var benchPairs []helpsteer.RewardBenchPair
	if spec.Compare.RewardBench != "" {
		var err error
		if benchPairs, err = helpsteer.ReadRewardBench(spec.Compare.RewardBench); err != nil {
			return d, invalidData(err)
		}
	}
	// Every file and the model are checked, and the data counted, before
	// anything is stored: what a stage cannot use fails the run with
	// nothing left behind.
	var m *runModel
	var hfm *lm.Model
	var hf *hfmodel.Config
	var err error
	if spec.Model.Path != "" {
		hfm, hf, m, err = openModel(spec)
	} else {
		m, err = a.modelOf(spec, pipeline.Data{}) // the bundled model
	}
	if err != nil {
		return d, err
	}
	var rewardBase *weights.Set
	if spec.Reward.Path != "" && hfm != nil {
		if rewardBase, err = openRewardBase(spec, *hfm.Config); err != nil {
			return d, err
		}
	}
	ds := &dataset{ratings: ratings, prefs: prefs, task: task, m: m}
	if err := ds.count(&d, m.cfg.MaxLen); err != nil {
		return d, err
	}
	if hfm != nil {
		if d.Model, err = a.storeModel(in.RunID, spec, hfm, hf, rewardBase); err != nil {
			return d, err
		}
	}
	if spec.Compare.RewardBench != "" {
		b, err := os.ReadFile(spec.Compare.RewardBench)
		if err != nil {
			return d, invalidData(err)
		}
		ref, err := a.Store.Put(runPath(in.RunID, "data", "rewardbench"+path.Ext(spec.Compare.RewardBench)), b)
		if err != nil {
			return d, err
		}
		d.RewardBench, d.RewardBenchPairs = &ref, len(benchPairs)
	}
	dir, err := a.Store.ScratchDir(in.RunID)
	if err != nil {
		return d, err
	}
	defer os.RemoveAll(dir)
	rp, pp := path.Join(dir, "ratings.jsonl.gz"), path.Join(dir, "preferences.jsonl.gz")
	if err := helpsteer.WriteRatings(rp, ratings); err != nil {
		return d, err
	}
	if err := helpsteer.WritePreferences(pp, prefs); err != nil {
		return d, err
	}
	if d.Ratings, err = a.Store.PutFile(runPath(in.RunID, "data", "ratings.jsonl.gz"), rp); err != nil {
		return d, err
	}
	if d.Preferences, err = a.Store.PutFile(runPath(in.RunID, "data", "preferences.jsonl.gz"), pp); err != nil {
		return d, err
	}
	return d, nil
}

// count fills in what the data report says about the dataset, and fails
// when either split has no pair the reward model can use.
func (ds *dataset) count(d *pipeline.Data, maxLen int) error {
	for _, split := range []string{helpsteer.SplitTrain, helpsteer.SplitValidation} {
		for _, p := range ds.prompts(split) {
			if _, err := ds.promptIDs(p); err != nil {
				return invalidData(fmt.Errorf("prompt %q cannot be rendered for the model: %w", shortText(p, 60), err))
			}
		}
	}
	d.RatingRows, d.PreferenceRows = len(ds.ratings), len(ds.prefs)
	for _, p := range ds.prefs {
		if p.Tie() {
			d.TiesExcluded++
		}
	}
	train, droppedTrain, cutTrain := ds.pairs(helpsteer.SplitTrain, maxLen)
	held, droppedHeld, cutHeld := ds.pairs(helpsteer.SplitValidation, maxLen)
	d.TrainPairs, d.ValidationPairs = len(train), len(held)
	d.DroppedTrainPairs, d.DroppedValidationPairs, d.TruncatedPairs = droppedTrain, droppedHeld, cutTrain+cutHeld
	d.TrainPrompts = len(ds.prompts(helpsteer.SplitTrain))
	d.ValidationPrompts = len(ds.prompts(helpsteer.SplitValidation))
	tooLong := func(n int) string {
		if n == 0 {
			return ""
		}
		return fmt.Sprintf("; %d were left out because a response does not fit model.max_len %d whole", n, maxLen)
	}
	if d.TrainPairs == 0 {
		return invalidData(fmt.Errorf("preferences hold no non-tie training pairs%s", tooLong(droppedTrain)))
	}
	if d.ValidationPairs == 0 {
		return invalidData(fmt.Errorf("preferences hold no non-tie validation pairs (rows with split \"val\" or \"validation\")%s", tooLong(droppedHeld)))
	}
	return nil
}

// shortText cuts s to at most n bytes for a message.
func shortText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func corrupt(err error) error {
	return temporal.NewNonRetryableApplicationError(err.Error(), pipeline.ErrCorruptArtifact, err)
}
