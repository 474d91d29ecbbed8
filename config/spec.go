// Package config is the specification of an alignment run: its types, defaults,
// strict parsing (unknown fields are errors that name the field) and
// validation (each error names the field and the allowed values). The same spec
// reaches the workflow whether it came from `alignflow run --config` or from the
// temporal CLI's --input-file, so the workflow validates it again.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/reinforce"
	"github.com/alignflow/alignflow/reward"
)

// Spec is one alignment run.
type Spec struct {
	// Name labels the run in summaries and listings.
	Name string `json:"name"`
	// Seed makes the run reproducible: data, initialisation, batches and sampling.
	Seed int64 `json:"seed"`
	// Backend executes the graphs: "go" (pure Go); others where built in.
	Backend string `json:"backend"`
	// HeartbeatTimeoutSeconds is how long a running activity may go without
	// a heartbeat before Temporal retries it elsewhere: how fast a dead
	// worker is noticed.
	HeartbeatTimeoutSeconds int `json:"heartbeat_timeout_seconds"`
	// ReuseStageOutputs lets a run take a stage's output from an earlier run
	// in the same data dir whose inputs were the same (spec apart from name
	// and operational settings, data, code), after verifying its artifacts.
	ReuseStageOutputs bool  `json:"reuse_stage_outputs"`
	Data              Data  `json:"data"`
	Model             Model `json:"model"`
	// LoRA trains low-rank adapters instead of every weight (off by default).
	LoRA      LoRA      `json:"lora,omitzero"`
	SFT       SFT       `json:"sft"`
	Reward    Reward    `json:"reward"`
	Reinforce Reinforce `json:"reinforce"`
	Eval      Eval      `json:"eval"`
	Compare   Compare   `json:"compare"`
	Queues    Queues    `json:"queues"`
	Retention Retention `json:"retention"`
	Timeouts  Timeouts  `json:"timeouts,omitzero"` // omitted when all 0, as specs before it
}

// Timeouts bound one attempt of each kind of work, start to close, in
// seconds; 0 (the default) takes an estimate from the model's size and the
// work the spec asks for (workflows' sizedTimeouts), never below what runs
// had before such settings existed. They are operational: they change when
// an attempt gives up, never what it computes. A hung attempt is caught
// sooner, by heartbeat_timeout_seconds: activities heartbeat only while
// their work advances.
type Timeouts struct {
	// Training: SFT and reward-model training.
	Training int `json:"training"`
	// Evaluation: of a reward model or a policy.
	Evaluation int `json:"evaluation"`
	// Iteration: a REINFORCE update (a whole iteration, for runs started
	// before rollout shards).
	Iteration int `json:"iteration"`
	// Rollout: a shard of an iteration's rollouts.
	Rollout int `json:"rollout"`
	// Bookkeeping: preparing data (and storing model.path's model), saving
	// curve segments, writing summaries and reports.
	Bookkeeping int `json:"bookkeeping"`
}

// MaxTimeoutSeconds bounds every timeouts field: a year, so that no
// setting overflows a duration or means "never".
const MaxTimeoutSeconds = 365 * 24 * 3600

// Retention says what `alignflow gc` may remove of a finished run.
type Retention struct {
	// KeepIterations keeps the last N REINFORCE iterations' checkpoints
	// (policy, optimizer state, rollouts) besides everything the summary,
	// reuse records or a continuation names; 0 keeps all of them.
	KeepIterations int `json:"keep_iterations"`
}

// Queues route each kind of work to the workers that should do it (GPU
// workers train, CPU workers prepare data and evaluate). Empty means the
// task queue the workflow runs on, so that one worker does everything.
type Queues struct {
	// Train: SFT, reward-model training and REINFORCE updates (and whole
	// iterations of runs started before rollout shards).
	Train string `json:"train"`
	// Rollout: sampling, scoring and log-probabilities of REINFORCE shards.
	Rollout string `json:"rollout"`
	// Eval: data preparation, evaluations, summaries and reports.
	Eval string `json:"eval"`
}

// Data says where ratings and preferences come from: files in HelpSteer2's
// formats, or the bundled matched generator when no files are given.
type Data struct {
	Ratings     string `json:"ratings"`     // HelpSteer2 ratings JSONL (plain or .gz)
	Preferences string `json:"preferences"` // HelpSteer2-Preference JSONL (plain or .gz)
	// SkipInvalid leaves malformed rows out (the run reports how many)
	// instead of failing on the first; whole-file problems still fail.
	SkipInvalid bool     `json:"skip_invalid"`
	Generate    Generate `json:"generate"`
	// Prompts is a prompts-only JSONL file (plain or .gz; "prompt" and an
	// optional "answer" a line) REINFORCE samples from instead of the
	// training split's prompts; reward.verifier checks responses against
	// its answers, so with a verifier every row needs one.
	Prompts string `json:"prompts,omitempty"`
}

// Generate configures the matched generator.
type Generate struct {
	Prompts            int     `json:"prompts"`
	ValidationFraction float64 `json:"validation_fraction"`
	RatingNoise        float64 `json:"rating_noise"`
	PreferenceNoise    float64 `json:"preference_noise"`
}

// Model is the transformer shared by the policy and the reward model: the
// bundled byte-level one sized by these fields, or the Hugging Face model
// in Path (whose config.json then gives the architecture; MaxLen still caps
// the sequences the run uses).
type Model struct {
	// Path is a Hugging Face model directory (Llama, Mistral, Qwen2) the
	// policy starts from, with its tokenizer, chat template and EOS.
	Path   string `json:"path"`
	Dim    int    `json:"dim"`
	Heads  int    `json:"heads"`
	Layers int    `json:"layers"`
	Hidden int    `json:"hidden"`
	MaxLen int    `json:"max_len"`
}

// LoRA trains SFT, the reward model and REINFORCE as low-rank adapters
// (model/lora), PEFT's LoRA: each targeted projection W computes
// W x + (alpha / rank) B A x with A and B trained and W frozen; a reward
// model's head is trained in full beside them. Rank 0, the default, trains
// every weight.
type LoRA struct {
	Rank int `json:"rank"`
	// Alpha scales the adapters' product by alpha / rank; 0 means 2 x rank.
	Alpha float64 `json:"alpha"`
	// Dropout is PEFT's lora_dropout: the probability that an adapter's
	// input value is zeroed in training (the rest scaled by 1/(1-p)).
	Dropout float64 `json:"dropout"`
	// Targets are the adapted projections by their Hugging Face names
	// (LoRATargets); empty means every projection the model has.
	Targets []string `json:"targets,omitempty"`
	// Path is a PEFT LoRA adapter directory of model.path (CAUSAL_LM) that
	// SFT starts from instead of a fresh adapter; its r, lora_alpha and
	// target_modules must be rank, alpha and targets.
	Path string `json:"path,omitempty"`
}

// LoRATargets are the projection names lora.targets may list; a model
// without a gated MLP (the bundled one) has no gate_proj.
var LoRATargets = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

// On reports whether the run trains adapters.
func (l LoRA) On() bool { return l.Rank > 0 }

// AlphaOrDefault is Alpha, or 2 x Rank where it is 0.
func (l LoRA) AlphaOrDefault() float64 {
	if l.Alpha == 0 {
		return 2 * float64(l.Rank)
	}
	return l.Alpha
}

// SFT trains the initial policy on the rated responses.
type SFT struct {
	Steps        int     `json:"steps"`
	BatchSize    int     `json:"batch_size"`
	LearningRate float64 `json:"learning_rate"`
	// CheckpointEvery saves weights, optimizer state and data position
	// every so many steps, so a retried attempt resumes there (0: never).
	CheckpointEvery int `json:"checkpoint_every"`
}

// Reward trains the reward model on preferences.
type Reward struct {
	// Recipe is how the reward model is trained: bt, bt-margin, bt-scaled,
	// regression, regression-helpfulness, bt-from-regression,
	// bt-margin-from-regression, bt-scaled-from-regression or
	// bt-scaled-from-regression-expo (see reward.Recipes).
	Recipe string `json:"recipe"`
	// Path is a reward model to start from instead of the SFT backbone: an
	// XForSequenceClassification directory with five labels (as alignflow
	// export --what reward writes) on model.path's architecture and
	// tokenizer.
	Path string `json:"path"`
	// Steps and LearningRate are the Bradley-Terry phase's.
	Steps        int     `json:"steps"`
	BatchSize    int     `json:"batch_size"`
	LearningRate float64 `json:"learning_rate"`
	// RegressionSteps and RegressionLearningRate are the regression
	// phase's: of the regression recipes, and the first phase of the
	// *-from-regression ones. The defaults keep NeMo-Aligner's
	// HelpSteer2-Preference proportions: regression about 3x the steps of
	// the scaled-BT phase at twice its learning rate.
	RegressionSteps        int     `json:"regression_steps"`
	RegressionLearningRate float64 `json:"regression_learning_rate"`
	// CheckpointEvery is sft.checkpoint_every for each training phase.
	CheckpointEvery int `json:"checkpoint_every"`
	// Verifier checks each REINFORCE response against its prompt's
	// reference answer (the data's answer field; the bundled task's gold
	// answer): exact, normalized, numeric or regex (reward.Verifiers);
	// empty for none. The reward REINFORCE reads is then model_weight x
	// the reward model's score + verifier_weight x the verifier's (1 or 0).
	Verifier string `json:"verifier,omitempty"`
	// ModelWeight and VerifierWeight weigh the two rewards; unset, 1 and
	// (with a verifier) 1. model_weight 0 leaves the reward model out: RL
	// from verifiable rewards, with no reward model trained.
	ModelWeight    *float64 `json:"model_weight,omitempty"`
	VerifierWeight *float64 `json:"verifier_weight,omitempty"`
}

// ModelLeftOut reports whether the reward model is left out of the reward
// (model_weight 0, with a verifier): then no reward model is trained.
func (r Reward) ModelLeftOut() bool { return r.ModelWeight != nil && *r.ModelWeight == 0 }

// Weights are the reward model's and the verifier's weights in the
// reward REINFORCE reads (reward.CombineRewards).
func (r Reward) Weights() (model, verifier float64) {
	model = 1
	if r.ModelWeight != nil {
		model = *r.ModelWeight
	}
	if r.Verifier != "" {
		verifier = 1
		if r.VerifierWeight != nil {
			verifier = *r.VerifierWeight
		}
	}
	return model, verifier
}

// Reinforce aligns the policy with the reward model.
type Reinforce struct {
	Iterations          int     `json:"iterations"`
	PromptsPerIteration int     `json:"prompts_per_iteration"`
	SamplesPerPrompt    int     `json:"samples_per_prompt"`
	KLBeta              float64 `json:"kl_beta"`
	KLEstimator         string  `json:"kl_estimator"`
	LearningRate        float64 `json:"learning_rate"`
	Temperature         float64 `json:"temperature"`
	TopP                float64 `json:"top_p"`
	MaxTokens           int     `json:"max_tokens"`
	BatchSize           int     `json:"batch_size"`
	// ContinueAsNewEvery is how many iterations one workflow run executes
	// before it continues as new, carrying only references, so that the
	// history of a long run stays small (Temporal also suggests it earlier
	// when a history grows large).
	ContinueAsNewEvery int `json:"continue_as_new_every"`
	// RolloutShards splits each iteration's rollouts, their scores and
	// log-probabilities into this many activities over slices of the
	// batches, which workers on queues.rollout run in parallel; one update
	// then merges them. Every row samples from its own random stream, so
	// the result is bit-identical for any number of shards. 0 (runs
	// recorded before shards) means 1.
	RolloutShards int `json:"rollout_shards"`

	// The policy-gradient family (reinforce.Objective); each left empty
	// (or 0) is today's REINFORCE, so specs written before them mean what
	// they meant.
	//
	// Advantage is the estimator: rloo (default), grpo, dr-grpo, reinforce++.
	Advantage string `json:"advantage,omitempty"`
	// LossAggregation averages the per-token losses: token-mean (default,
	// DAPO's), seq-mean-token-mean (GRPO's), seq-mean-token-sum-norm (Dr.
	// GRPO's, over max_tokens).
	LossAggregation string `json:"loss_aggregation,omitempty"`
	// KLIn places the KL penalty: reward (default), loss, none.
	KLIn string `json:"kl_in,omitempty"`
	// UpdateEpochs reuses each rollout batch for this many passes with
	// PPO's clipped ratio against the rollouts' own log-probabilities
	// (default 1: one on-policy pass, no ratio).
	UpdateEpochs int `json:"update_epochs,omitempty"`
	// Minibatches is the optimizer steps per pass, over consecutive
	// generation batches (default 0: one per batch_size rows).
	Minibatches int `json:"minibatches,omitempty"`
	// ClipLow and ClipHigh bound the ratio to [1 - clip_low, 1 +
	// clip_high] (0: 0.2 each, PPO's; DAPO sets clip_high 0.28).
	ClipLow  float64 `json:"clip_low,omitempty"`
	ClipHigh float64 `json:"clip_high,omitempty"`
	// Ratio is the importance ratio's level: token (default) or sequence
	// (GSPO's).
	Ratio string `json:"ratio,omitempty"`
	// SkipUniformGroups is DAPO's dynamic sampling: a group whose rewards
	// (the reward model's and the verifier's, weighed, before any KL
	// penalty) are all equal has zero advantage, so the update leaves it
	// out and the iteration samples further prompts, prompts_per_iteration
	// a round, until prompts_per_iteration groups are not uniform or
	// max_sampling_rounds rounds were sampled; then uniform groups, in the
	// order drawn, fill what is missing.
	SkipUniformGroups bool `json:"skip_uniform_groups,omitempty"`
	// MaxSamplingRounds bounds the rounds of an iteration, its first
	// included (0: DefaultSamplingRounds).
	MaxSamplingRounds int `json:"max_sampling_rounds,omitempty"`
	// MaxStaleness makes rollouts asynchronous: iteration k samples from
	// the policy update k - 1 - max_staleness produced (the SFT policy
	// before), so the rollouts of the next iterations run while an update
	// does. The update then corrects for the staleness with the clipped
	// importance ratio. 0 (the default): synchronous, each iteration
	// samples from the policy it updates.
	MaxStaleness int `json:"max_staleness,omitempty"`
}

// MaxStaleness bounds reinforce.max_staleness.
const MaxStaleness = 8

// DefaultSamplingRounds is max_sampling_rounds' value when left 0, and
// MaxSamplingRounds its bound.
const (
	DefaultSamplingRounds = 3
	MaxSamplingRounds     = 16
)

// SamplingRounds is the most rounds an iteration samples: 1 without
// skip_uniform_groups.
func (r Reinforce) SamplingRounds() int {
	switch {
	case !r.SkipUniformGroups:
		return 1
	case r.MaxSamplingRounds == 0:
		return DefaultSamplingRounds
	}
	return r.MaxSamplingRounds
}

// DefaultClip is clip_low's and clip_high's value when left 0.
const DefaultClip = 0.2

// MaxUpdateEpochs bounds reinforce.update_epochs.
const MaxUpdateEpochs = 64

// Objective is the run's reinforce.Objective.
func (r Reinforce) Objective() reinforce.Objective {
	o := reinforce.Objective{Advantage: r.Advantage, Aggregation: r.LossAggregation, KLIn: r.KLIn, KLEstimator: r.KLEstimator,
		KLBeta: r.KLBeta, Epochs: r.UpdateEpochs, Minibatches: r.Minibatches, ClipLow: r.ClipLow, ClipHigh: r.ClipHigh,
		Ratio: r.Ratio, MaxTokens: r.MaxTokens, OffPolicy: r.MaxStaleness > 0}
	if o.ClipLow == 0 {
		o.ClipLow = DefaultClip
	}
	if o.ClipHigh == 0 {
		o.ClipHigh = DefaultClip
	}
	return o.WithDefaults()
}

// Shards is the number of rollout shards (at least 1).
func (r Reinforce) Shards() int { return max(r.RolloutShards, 1) }

// RolloutRows is how many rollouts an iteration samples: every prompt
// samples_per_prompt times; math.MaxInt where the product overflows (which
// Validate refuses: the two fields' product is bounded by MaxRolloutRows).
func (r Reinforce) RolloutRows() int {
	p, k := r.PromptsPerIteration, r.SamplesPerPrompt
	if p > 0 && k > 0 && p > math.MaxInt/k {
		return math.MaxInt
	}
	return p * k
}

// RolloutBatches is how many generation batches an iteration's rollouts
// take: the most shards it can be split into.
func (r Reinforce) RolloutBatches() int {
	rows := r.RolloutRows()
	if r.BatchSize <= 0 || rows <= 0 {
		return 0
	}
	n := rows / r.BatchSize // rounded up without rows + batch_size - 1, which could overflow
	if rows%r.BatchSize != 0 {
		n++
	}
	return n
}

// ShardRows are the rollout rows [first, last) of shard of shards: whole
// generation batches, split as evenly as batches allow, so every row is
// generated in the batch it would have in one shard. An iteration of more
// than MaxRolloutRows rows is refused, so that the arithmetic fits.
func (r Reinforce) ShardRows(shard, shards int) (first, last int, err error) {
	if rows := r.RolloutRows(); rows > MaxRolloutRows {
		return 0, 0, &FieldError{Field: "reinforce.prompts_per_iteration", Problem: rolloutRowsProblem(r)}
	}
	batches := r.RolloutBatches()
	if shards < 1 || shards > batches || shard < 0 || shard >= shards {
		return 0, 0, &FieldError{Field: "reinforce.rollout_shards", Problem: fmt.Sprintf("shard %d of %d does not fit the %d rollout batches of an iteration", shard, shards, batches)}
	}
	first = shard * batches / shards * r.BatchSize
	last = min((shard+1)*batches/shards*r.BatchSize, r.RolloutRows())
	return first, last, nil
}

// Eval measures the policy before and after REINFORCE on held-out prompts.
type Eval struct {
	Prompts          int     `json:"prompts"`
	SamplesPerPrompt int     `json:"samples_per_prompt"`
	Temperature      float64 `json:"temperature"`
	ShowSamples      int     `json:"show_samples"`
}

// Compare configures the reward-model comparison (`alignflow reward compare`):
// the variants trained side by side on the same data and SFT backbone.
type Compare struct {
	// Variants are recipe names (see reward.Recipes); variants that start
	// from another one's model (the *-from-regression recipes and ExPO) bring
	// it along.
	Variants []string `json:"variants"`
	// BenchPairsPerSubset sizes the RewardBench-format pair set built from the
	// generated data's held-out prompts (generated data only).
	BenchPairsPerSubset int `json:"bench_pairs_per_subset"`
	// RewardBench is an optional RewardBench-format file every reward model
	// is also scored on.
	RewardBench string `json:"rewardbench"`
}

// DefaultRecipe is the paper's best single reward model: Scaled BT
// initialised from helpfulness-only regression.
const DefaultRecipe = "bt-scaled-from-regression"

// Default returns the spec every run starts from; a file or JSON input only
// needs the fields it changes.
func Default() Spec {
	return Spec{
		Name:                    "alignment",
		Seed:                    1,
		Backend:                 backend.Go,
		HeartbeatTimeoutSeconds: 120,
		ReuseStageOutputs:       true,
		Data: Data{Generate: Generate{
			Prompts: 2000, ValidationFraction: 0.2, RatingNoise: 0.6, PreferenceNoise: 0.5,
		}},
		Model: Model{Dim: 64, Heads: 4, Layers: 2, Hidden: 192, MaxLen: 56},
		SFT:   SFT{Steps: 800, BatchSize: 16, LearningRate: 4e-3, CheckpointEvery: 100},
		Reward: Reward{Recipe: DefaultRecipe, Steps: 100, BatchSize: 16, LearningRate: 5e-4,
			RegressionSteps: 300, RegressionLearningRate: 1e-3, CheckpointEvery: 25},
		Reinforce: Reinforce{
			Iterations: 40, PromptsPerIteration: 16, SamplesPerPrompt: 4, KLBeta: 0.01, KLEstimator: reinforce.KLAbs,
			LearningRate: 3e-4, Temperature: 1, TopP: 1, MaxTokens: 32, BatchSize: 64, ContinueAsNewEvery: 100, RolloutShards: 1,
		},
		Eval:    Eval{Prompts: 64, SamplesPerPrompt: 16, Temperature: 1, ShowSamples: 6},
		Compare: Compare{Variants: reward.RecipeNames(), BenchPairsPerSubset: 40},
	}
}

// Parse decodes a JSON spec over the defaults. Unknown fields are errors that
// name the field's path and the fields allowed there.
func Parse(data []byte) (Spec, error) {
	spec := Default()
	data = bytes.TrimSpace(data)
	if len(data) == 0 || string(data) == "null" {
		return spec, nil
	}
	var raw any
	if err := json.Unmarshal(data, &raw); err != nil {
		return spec, fmt.Errorf("spec is not valid JSON: %w", err)
	}
	if err := checkFields(raw, reflect.TypeOf(spec), ""); err != nil {
		return spec, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return spec, &FieldError{Field: te.Field, Problem: fmt.Sprintf("must be %s, got %s", kindName(te.Type), te.Value)}
		}
		return spec, fmt.Errorf("decode spec: %w", err)
	}
	return spec, nil
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "an integer"
	case reflect.Float64, reflect.Float32:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Struct:
		return "an object"
	}
	return t.String()
}

// checkFields walks decoded JSON against the struct's json tags.
func checkFields(raw any, t reflect.Type, path string) error {
	obj, ok := raw.(map[string]any)
	if !ok || t.Kind() != reflect.Struct {
		return nil
	}
	fields := map[string]reflect.Type{}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		tag := strings.Split(t.Field(i).Tag.Get("json"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		fields[tag] = t.Field(i).Type
		names = append(names, tag)
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ft, ok := fields[k]
		if !ok {
			return &FieldError{Field: join(path, k), Problem: "unknown field", Allowed: names}
		}
		if err := checkFields(obj[k], ft, join(path, k)); err != nil {
			return err
		}
	}
	return nil
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// FieldError names the spec field at fault, what is wrong and what is allowed.
type FieldError struct {
	Field   string
	Problem string
	Allowed []string
}

func (e *FieldError) Error() string {
	msg := fmt.Sprintf("spec field %s: %s", e.Field, e.Problem)
	if len(e.Allowed) > 0 {
		msg += fmt.Sprintf(" (allowed: %s)", strings.Join(e.Allowed, ", "))
	}
	return msg
}

// Upper bounds of a spec's sizes. A size past them cannot be a real run:
// 1e12 SFT steps or a 1e9-wide hidden layer end in an out-of-memory or an
// activity that runs for days, and 1e9 rollout shards make the workflow
// allocate a future for each on every replay. Validate refuses them before
// anything runs, naming the field. They admit every real use and the
// defaults: a 7B model's shape (dim 4096, 32 heads, 32 layers, hidden
// 11008) and much larger ones, millions of steps, thousands of prompts an
// iteration.
const (
	MaxSteps         = 10_000_000 // sft.steps, reward.steps, reward.regression_steps and the checkpoint_every fields
	MaxBatchSize     = 65_536     // sft, reward and reinforce batch_size
	MaxDim           = 32_768     // model.dim
	MaxHidden        = 131_072    // model.hidden
	MaxHeads         = 512        // model.heads
	MaxLayers        = 512        // model.layers
	MaxSeqLen        = 4096       // model.max_len and reinforce.max_tokens
	MaxDataPrompts   = 1_000_000  // data.generate.prompts
	MaxIterations    = 1_000_000  // reinforce.iterations, continue_as_new_every, retention.keep_iterations
	MaxPrompts       = 65_536     // reinforce.prompts_per_iteration and eval.prompts
	MaxSamples       = 1024       // reinforce.samples_per_prompt and eval.samples_per_prompt
	MaxRolloutRows   = 1 << 20    // reinforce.prompts_per_iteration x samples_per_prompt
	MaxRolloutShards = 1024       // reinforce.rollout_shards
	MaxShowSamples   = 100        // eval.show_samples (they travel in the summary, a workflow result)
	MaxBenchPairs    = 100_000    // compare.bench_pairs_per_subset
)

// Validate checks every field that has limits: each size between its lower
// and upper bounds (the Max constants), the backend's spelling, and the
// relations between fields. It does no I/O; CheckFiles checks that data
// files exist.
func (s Spec) Validate() error { return s.validate(true) }

// ValidateRecorded is Validate as runs started before the upper bounds and
// plain XLA plugin names checked their spec (workflows' checkedVersion):
// replaying such a run, its workflow accepts what it accepted then.
func (s Spec) ValidateRecorded() error { return s.validate(false) }

// validate is Validate, or ValidateRecorded when not current.
func (s Spec) validate(current bool) error {
	var errs []error
	bad := func(field, problem string, allowed ...string) {
		errs = append(errs, &FieldError{Field: field, Problem: problem, Allowed: allowed})
	}
	positive := func(field string, v int) {
		if v <= 0 {
			bad(field, fmt.Sprintf("must be a positive integer, got %d", v))
		}
	}
	positiveF := func(field string, v float64) {
		if !(v > 0) {
			bad(field, fmt.Sprintf("must be positive, got %v", v))
		}
	}
	if s.HeartbeatTimeoutSeconds < 5 {
		bad("heartbeat_timeout_seconds", fmt.Sprintf("must be at least 5 (activities heartbeat every 2 s), got %d", s.HeartbeatTimeoutSeconds))
	}
	// Only the name is checked: Validate runs in workflow code, whose
	// answers must not depend on how the worker was built. A worker without
	// the backend, or without the plugin the name gives, fails the first
	// activity that needs it, non-retryably.
	checkName := backend.CheckName
	if !current {
		checkName = backend.CheckRecordedName
	}
	if err := checkName(s.Backend); err != nil {
		bad("backend", err.Error(), backend.Spellings...)
	}
	if s.Data.Ratings == "" && s.Data.Preferences == "" {
		positive("data.generate.prompts", s.Data.Generate.Prompts)
		if !(s.Data.Generate.ValidationFraction > 0 && s.Data.Generate.ValidationFraction < 1) {
			bad("data.generate.validation_fraction", fmt.Sprintf("must be in (0, 1), got %v", s.Data.Generate.ValidationFraction))
		}
		if s.Data.Generate.RatingNoise < 0 || s.Data.Generate.PreferenceNoise < 0 {
			bad("data.generate", "noise levels must not be negative")
		}
	} else if s.Data.Ratings == "" || s.Data.Preferences == "" {
		bad("data", "give both data.ratings and data.preferences, or neither to generate the bundled matched data")
	}
	m := s.Model
	positive("model.dim", m.Dim)
	positive("model.heads", m.Heads)
	positive("model.layers", m.Layers)
	positive("model.hidden", m.Hidden)
	if m.Dim > 0 && m.Heads > 0 && (m.Dim%m.Heads != 0 || (m.Dim/m.Heads)%2 != 0) {
		bad("model.dim", fmt.Sprintf("must be a multiple of model.heads (%d) with an even quotient, got %d", m.Heads, m.Dim))
	}
	if m.MaxLen < 8 || m.MaxLen > MaxSeqLen {
		bad("model.max_len", fmt.Sprintf("must be in 8..%d, got %d", MaxSeqLen, m.MaxLen))
	}
	s.LoRA.validate(bad)
	if s.LoRA.Path != "" && s.Model.Path == "" {
		bad("lora.path", "needs model.path: a PEFT adapter adapts a Hugging Face model's weights")
	}
	positive("sft.steps", s.SFT.Steps)
	positive("sft.batch_size", s.SFT.BatchSize)
	positiveF("sft.learning_rate", s.SFT.LearningRate)
	if s.SFT.CheckpointEvery < 0 {
		bad("sft.checkpoint_every", fmt.Sprintf("must not be negative (0 disables checkpoints), got %d", s.SFT.CheckpointEvery))
	}
	if s.Reward.CheckpointEvery < 0 {
		bad("reward.checkpoint_every", fmt.Sprintf("must not be negative (0 disables checkpoints), got %d", s.Reward.CheckpointEvery))
	}
	if s.Reward.Path != "" && s.Model.Path == "" {
		bad("reward.path", "needs model.path: the reward model reads the policy's tokens, so both come from Hugging Face directories")
	}
	if !contains(reward.RecipeNames(), s.Reward.Recipe) {
		bad("reward.recipe", fmt.Sprintf("unknown recipe %q", s.Reward.Recipe), reward.RecipeNames()...)
	}
	positive("reward.steps", s.Reward.Steps)
	positive("reward.batch_size", s.Reward.BatchSize)
	positiveF("reward.learning_rate", s.Reward.LearningRate)
	positive("reward.regression_steps", s.Reward.RegressionSteps)
	positiveF("reward.regression_learning_rate", s.Reward.RegressionLearningRate)
	if v := s.Reward.Verifier; v != "" && !contains(reward.Verifiers, v) {
		bad("reward.verifier", fmt.Sprintf("unknown verifier %q", v), reward.Verifiers...)
	}
	for _, w := range []struct {
		field string
		v     *float64
	}{{"reward.model_weight", s.Reward.ModelWeight}, {"reward.verifier_weight", s.Reward.VerifierWeight}} {
		if w.v != nil && (math.IsNaN(*w.v) || math.IsInf(*w.v, 0) || math.Abs(*w.v) > 1e6) {
			bad(w.field, fmt.Sprintf("must be a finite number of magnitude at most 1e6, got %v", *w.v))
		}
	}
	if s.Reward.Verifier == "" && s.Reward.VerifierWeight != nil {
		bad("reward.verifier_weight", "needs reward.verifier: there is no verifier to weigh", reward.Verifiers...)
	}
	if mw, vw := s.Reward.Weights(); mw == 0 && vw == 0 {
		bad("reward.model_weight", "is 0 with no verifier (or verifier_weight 0): REINFORCE would read a reward of 0 for every response")
	}
	r := s.Reinforce
	if r.Iterations < 0 {
		bad("reinforce.iterations", fmt.Sprintf("must not be negative, got %d", r.Iterations))
	}
	positive("reinforce.prompts_per_iteration", r.PromptsPerIteration)
	if r.SamplesPerPrompt < 2 {
		bad("reinforce.samples_per_prompt", fmt.Sprintf("must be at least 2 for a group's baseline, got %d", r.SamplesPerPrompt))
	}
	for _, c := range []struct {
		field, v string
		allowed  []string
	}{{"reinforce.advantage", r.Advantage, reinforce.AdvantageEstimators}, {"reinforce.loss_aggregation", r.LossAggregation, reinforce.LossAggregations},
		{"reinforce.kl_in", r.KLIn, reinforce.KLPlacements}, {"reinforce.ratio", r.Ratio, reinforce.RatioLevels}} {
		if c.v != "" && !contains(c.allowed, c.v) {
			bad(c.field, fmt.Sprintf("unknown value %q", c.v), c.allowed...)
		}
	}
	if r.UpdateEpochs < 0 || r.UpdateEpochs > MaxUpdateEpochs {
		bad("reinforce.update_epochs", fmt.Sprintf("must be in 0..%d (0 and 1: one on-policy pass), got %d", MaxUpdateEpochs, r.UpdateEpochs))
	}
	if n := r.RolloutBatches(); r.Minibatches < 0 || (n > 0 && r.Minibatches > n) {
		bad("reinforce.minibatches", fmt.Sprintf("must be between 0 (one optimizer step per batch) and the %d rollout batches of an iteration, got %d", n, r.Minibatches))
	}
	if r.MaxSamplingRounds < 0 || r.MaxSamplingRounds > MaxSamplingRounds {
		bad("reinforce.max_sampling_rounds", fmt.Sprintf("must be in 0..%d (0: %d), got %d", MaxSamplingRounds, DefaultSamplingRounds, r.MaxSamplingRounds))
	} else if r.MaxSamplingRounds > 0 && !r.SkipUniformGroups {
		bad("reinforce.max_sampling_rounds", "needs reinforce.skip_uniform_groups: only dynamic sampling samples more than one round")
	}
	if r.MaxStaleness < 0 || r.MaxStaleness > MaxStaleness {
		bad("reinforce.max_staleness", fmt.Sprintf("must be in 0..%d (0: synchronous rollouts), got %d", MaxStaleness, r.MaxStaleness))
	}
	if !(r.ClipLow >= 0 && r.ClipLow < 1) {
		bad("reinforce.clip_low", fmt.Sprintf("must be in [0, 1) (0: %v), got %v", DefaultClip, r.ClipLow))
	}
	if !(r.ClipHigh >= 0 && r.ClipHigh <= 10) {
		bad("reinforce.clip_high", fmt.Sprintf("must be in [0, 10] (0: %v), got %v", DefaultClip, r.ClipHigh))
	}
	if r.KLBeta < 0 {
		bad("reinforce.kl_beta", fmt.Sprintf("must not be negative, got %v", r.KLBeta))
	}
	if !contains(reinforce.KLEstimators, r.KLEstimator) {
		bad("reinforce.kl_estimator", fmt.Sprintf("unknown estimator %q", r.KLEstimator), reinforce.KLEstimators...)
	}
	positiveF("reinforce.learning_rate", r.LearningRate)
	if !(r.Temperature > 0) {
		bad("reinforce.temperature", fmt.Sprintf("must be positive for sampling, got %v", r.Temperature))
	}
	if !(r.TopP > 0 && r.TopP <= 1) {
		bad("reinforce.top_p", fmt.Sprintf("must be in (0, 1], got %v", r.TopP))
	}
	positive("reinforce.max_tokens", r.MaxTokens)
	positive("reinforce.batch_size", r.BatchSize)
	positive("reinforce.continue_as_new_every", r.ContinueAsNewEvery)
	for _, t := range []struct {
		field string
		v     int
	}{{"timeouts.training", s.Timeouts.Training}, {"timeouts.evaluation", s.Timeouts.Evaluation}, {"timeouts.iteration", s.Timeouts.Iteration},
		{"timeouts.rollout", s.Timeouts.Rollout}, {"timeouts.bookkeeping", s.Timeouts.Bookkeeping}} {
		if t.v < 0 || t.v > MaxTimeoutSeconds {
			bad(t.field, fmt.Sprintf("must be in 0..%d seconds (0: sized by the model and the work), got %d", MaxTimeoutSeconds, t.v))
		}
	}
	if s.Retention.KeepIterations < 0 {
		bad("retention.keep_iterations", fmt.Sprintf("must not be negative (0 keeps every iteration), got %d", s.Retention.KeepIterations))
	}
	if n := r.RolloutBatches(); r.RolloutShards < 0 || (n > 0 && r.RolloutShards > n) {
		bad("reinforce.rollout_shards", fmt.Sprintf("must be between 1 and the %d rollout batches of an iteration (prompts_per_iteration x samples_per_prompt / batch_size, rounded up), got %d", n, r.RolloutShards))
	}
	positive("eval.prompts", s.Eval.Prompts)
	positive("eval.samples_per_prompt", s.Eval.SamplesPerPrompt)
	if s.Eval.Temperature < 0 {
		bad("eval.temperature", fmt.Sprintf("must not be negative, got %v", s.Eval.Temperature))
	}
	if s.Eval.ShowSamples < 0 {
		bad("eval.show_samples", fmt.Sprintf("must not be negative, got %d", s.Eval.ShowSamples))
	}
	if len(s.Compare.Variants) == 0 {
		bad("compare.variants", "must name at least one recipe", reward.RecipeNames()...)
	}
	seen := map[string]bool{}
	for i, v := range s.Compare.Variants {
		field := fmt.Sprintf("compare.variants[%d]", i)
		switch {
		case !contains(reward.RecipeNames(), v):
			bad(field, fmt.Sprintf("unknown recipe %q", v), reward.RecipeNames()...)
		case seen[v]:
			bad(field, fmt.Sprintf("%q is listed twice", v))
		}
		seen[v] = true
	}
	if s.Compare.BenchPairsPerSubset < 0 {
		bad("compare.bench_pairs_per_subset", fmt.Sprintf("must not be negative, got %d", s.Compare.BenchPairsPerSubset))
	}
	if current {
		errs = append(errs, s.upperBounds()...)
	}
	return errors.Join(errs...)
}

// upperBounds reports each size above its bound (the Max constants), and
// an iteration whose rollouts, prompts_per_iteration x samples_per_prompt,
// are more than MaxRolloutRows (the product is checked for overflow).
func (s Spec) upperBounds() []error {
	var errs []error
	atMost := func(field string, v, max int) {
		if v > max {
			errs = append(errs, &FieldError{Field: field, Problem: fmt.Sprintf("must be at most %d, got %d", max, v)})
		}
	}
	if s.Data.Ratings == "" && s.Data.Preferences == "" {
		atMost("data.generate.prompts", s.Data.Generate.Prompts, MaxDataPrompts)
	}
	m := s.Model
	atMost("model.dim", m.Dim, MaxDim)
	atMost("model.heads", m.Heads, MaxHeads)
	atMost("model.layers", m.Layers, MaxLayers)
	atMost("model.hidden", m.Hidden, MaxHidden)
	atMost("sft.steps", s.SFT.Steps, MaxSteps)
	atMost("sft.batch_size", s.SFT.BatchSize, MaxBatchSize)
	atMost("sft.checkpoint_every", s.SFT.CheckpointEvery, MaxSteps)
	atMost("reward.steps", s.Reward.Steps, MaxSteps)
	atMost("reward.batch_size", s.Reward.BatchSize, MaxBatchSize)
	atMost("reward.regression_steps", s.Reward.RegressionSteps, MaxSteps)
	atMost("reward.checkpoint_every", s.Reward.CheckpointEvery, MaxSteps)
	r := s.Reinforce
	atMost("reinforce.iterations", r.Iterations, MaxIterations)
	atMost("reinforce.prompts_per_iteration", r.PromptsPerIteration, MaxPrompts)
	atMost("reinforce.samples_per_prompt", r.SamplesPerPrompt, MaxSamples)
	if r.PromptsPerIteration <= MaxPrompts && r.SamplesPerPrompt <= MaxSamples && r.RolloutRows() > MaxRolloutRows {
		errs = append(errs, &FieldError{Field: "reinforce.prompts_per_iteration", Problem: rolloutRowsProblem(r)})
	}
	atMost("reinforce.max_tokens", r.MaxTokens, MaxSeqLen)
	atMost("reinforce.batch_size", r.BatchSize, MaxBatchSize)
	atMost("reinforce.continue_as_new_every", r.ContinueAsNewEvery, MaxIterations)
	atMost("reinforce.rollout_shards", r.RolloutShards, MaxRolloutShards)
	atMost("retention.keep_iterations", s.Retention.KeepIterations, MaxIterations)
	atMost("eval.prompts", s.Eval.Prompts, MaxPrompts)
	atMost("eval.samples_per_prompt", s.Eval.SamplesPerPrompt, MaxSamples)
	atMost("eval.show_samples", s.Eval.ShowSamples, MaxShowSamples)
	atMost("compare.bench_pairs_per_subset", s.Compare.BenchPairsPerSubset, MaxBenchPairs)
	return errs
}

// validate reports lora's fields that no run can have; whether the targets
// are the model's own projections is checked where the model is opened.
func (l LoRA) validate(bad func(field, problem string, allowed ...string)) {
	if l.Rank < 0 || l.Rank > MaxDim {
		bad("lora.rank", fmt.Sprintf("must be in 0..%d (0: train every weight), got %d", MaxDim, l.Rank))
	}
	if !l.On() {
		if l.Alpha != 0 || l.Dropout != 0 || len(l.Targets) > 0 || l.Path != "" {
			bad("lora.rank", "is 0, which trains every weight, but other lora fields are set: give a positive rank")
		}
		return
	}
	if l.Alpha < 0 || math.IsNaN(l.Alpha) || math.IsInf(l.Alpha, 0) {
		bad("lora.alpha", fmt.Sprintf("must be positive and finite (0: 2 x rank), got %v", l.Alpha))
	}
	if !(l.Dropout >= 0 && l.Dropout < 1) {
		bad("lora.dropout", fmt.Sprintf("must be in [0, 1), got %v", l.Dropout))
	}
	for i, t := range l.Targets {
		field := fmt.Sprintf("lora.targets[%d]", i)
		switch {
		case !contains(LoRATargets, t):
			bad(field, fmt.Sprintf("unknown module %q", t), LoRATargets...)
		case contains(l.Targets[:i], t):
			bad(field, fmt.Sprintf("%q is listed twice", t))
		}
	}
}

// rolloutRowsProblem says that an iteration has too many rollouts.
func rolloutRowsProblem(r Reinforce) string {
	rows := fmt.Sprint(r.RolloutRows())
	if r.RolloutRows() == math.MaxInt {
		rows = "more than the integers hold"
	}
	return fmt.Sprintf("x reinforce.samples_per_prompt (%d x %d) is the rollouts of an iteration: must be at most %d, got %s",
		r.PromptsPerIteration, r.SamplesPerPrompt, MaxRolloutRows, rows)
}

// DataFile is a file or directory a spec names, which a worker reads.
type DataFile struct {
	Field, Path string
	// Holds is the file a directory must hold (config.json for a Hugging
	// Face model directory, adapter_config.json for a PEFT adapter's); ""
	// for a file.
	Holds string
}

// DataFiles lists the files and directories the spec names (set ones only).
func (s Spec) DataFiles() []DataFile {
	var out []DataFile
	for _, f := range []DataFile{{"model.path", s.Model.Path, "config.json"}, {"reward.path", s.Reward.Path, "config.json"},
		{"lora.path", s.LoRA.Path, "adapter_config.json"},
		{"data.ratings", s.Data.Ratings, ""}, {"data.preferences", s.Data.Preferences, ""}, {"data.prompts", s.Data.Prompts, ""},
		{"compare.rewardbench", s.Compare.RewardBench, ""}} {
		if f.Path != "" {
			out = append(out, f)
		}
	}
	return out
}

// CheckRoots reports every file the spec names that lies outside roots,
// as written and with its symbolic links resolved (a link inside a root
// that points out of it is outside; a missing file is judged by where it
// would be). It answers early, before any stage reads: what a worker reads
// goes through roots.Open, which confines the read itself.
func (s Spec) CheckRoots(roots Roots) error {
	var errs []error
	for _, f := range s.DataFiles() {
		if err := roots.Check(f.Path); err != nil {
			errs = append(errs, &FieldError{Field: f.Field, Problem: err.Error()})
		}
	}
	return errors.Join(errs...)
}

// resolvePath is p made absolute with its symbolic links resolved, as far
// as it exists (a missing file is checked by where it would be).
func resolvePath(p string) string {
	abs, err := filepath.Abs(p)
	if err != nil {
		return filepath.Clean(p)
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		return r
	}
	if dir, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
		return filepath.Join(dir, filepath.Base(abs))
	}
	return abs
}

// CheckFiles reports data files that are missing or unreadable, and model
// directories without config.json, reading any file (CheckFilesIn for a
// worker's roots).
func (s Spec) CheckFiles() error { return s.CheckFilesIn(AnyFile()) }

// CheckFilesIn is CheckFiles with every file opened through roots.
func (s Spec) CheckFilesIn(roots Roots) error {
	var errs []error
	for _, f := range s.DataFiles() {
		if f.Holds != "" {
			if st, err := roots.Stat(filepath.Join(f.Path, f.Holds)); err != nil || st.IsDir() {
				kind := "a Hugging Face model directory"
				if f.Holds != "config.json" {
					kind = "a PEFT adapter directory"
				}
				problem := fmt.Sprintf("%s is not %s (no %s)", f.Path, kind, f.Holds)
				if errors.Is(err, ErrOutsideRoots) {
					problem = err.Error()
				}
				errs = append(errs, &FieldError{Field: f.Field, Problem: problem})
			}
			continue
		}
		file, err := roots.Open(f.Path)
		if err != nil {
			errs = append(errs, &FieldError{Field: f.Field, Problem: fmt.Sprintf("cannot read data file: %v", err)})
			continue
		}
		file.Close()
	}
	return errors.Join(errs...)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
