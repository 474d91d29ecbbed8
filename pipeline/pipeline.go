// Package pipeline holds what alignflow's workflows and activities exchange:
// each stage's input and result, the run's summary and the comparison
// report, the stage names, the activity type names and the error types.
// Both layers import it, so results cross the activity boundary typed (as
// samples-go's shared.go does): no map[string]any, no field order or
// integer precision lost.
package pipeline

import (
	"fmt"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/data/rewardbench"
	"github.com/alignflow/alignflow/reinforce"
	"github.com/alignflow/alignflow/reward"
)

// Error types of non-retryable failures: retrying cannot fix them.
const (
	ErrInvalidSpec     = "InvalidSpec"     // the run specification is wrong
	ErrInvalidData     = "InvalidData"     // a data file is missing or malformed
	ErrDiverged        = "Diverged"        // a loss or gradient became NaN or Inf
	ErrCorruptArtifact = "CorruptArtifact" // a stored artifact fails its digest
	// ErrStoreUnusable: the artifact store refuses the worker's credentials
	// or its bucket does not exist. Activities fail with it non-retryably
	// (it is not in NonRetryable, which recorded workflows schedule with).
	ErrStoreUnusable = "StoreUnusable"
	// ErrRunExists: the workflow ID names the artifacts of an earlier
	// alignment (its RunFile or its summary); a new one under that ID
	// would mix its artifacts with them. Non-retryable, like StoreUnusable.
	ErrRunExists = "RunExists"
)

// NonRetryable lists the error types activities fail with that must not be retried.
var NonRetryable = []string{ErrInvalidSpec, ErrInvalidData, ErrDiverged, ErrCorruptArtifact}

// Stage names, as they appear in progress reports and the summary.
const (
	StagePrepareData    = "prepare-data"
	StageSFT            = "sft"
	StageRewardModel    = "reward-model"
	StageRewardEval     = "reward-eval"
	StageEvalBefore     = "eval-before"
	StageReinforce      = "reinforce"
	StageEvalAfter      = "eval-after"
	StageSummary        = "summary"
	StageReport         = "report"
	StageDone           = "done"
	StageFailed         = "failed"
	StageValidatingSpec = "validating-spec"
)

// Reused marks a result that an earlier run computed.
type Reused struct {
	// ReusedFrom is the workflow ID of the run that computed it.
	ReusedFrom string `json:"reused_from_run,omitempty"`
}

// MarkReused records the run whose result this is.
func (r *Reused) MarkReused(runID string) { r.ReusedFrom = runID }

// Data is the prepared dataset of a run.
type Data struct {
	Reused
	Ratings     artifact.Ref `json:"ratings"`
	Preferences artifact.Ref `json:"preferences"`
	// Generated is true when the bundled matched generator made the data, so
	// the gold rubric can score any response.
	Generated      bool `json:"generated"`
	RatingRows     int  `json:"rating_rows"`
	PreferenceRows int  `json:"preference_rows"`
	// TrainPairs and ValidationPairs count the non-tie pairs the reward
	// model trains and is evaluated on: those whose responses both fit
	// model.max_len whole (see reward.PairOf).
	TrainPairs      int `json:"train_pairs"`
	ValidationPairs int `json:"validation_pairs"`
	TiesExcluded    int `json:"ties_excluded"`
	// DroppedTrainPairs and DroppedValidationPairs count the non-tie pairs
	// left out because a response, with its EOS, does not fit model.max_len
	// next to BOS and the prompt's last tokens; TruncatedPairs counts the
	// kept pairs whose prompt lost its start to fit.
	DroppedTrainPairs      int `json:"dropped_train_pairs"`
	DroppedValidationPairs int `json:"dropped_validation_pairs"`
	TruncatedPairs         int `json:"truncated_pairs"`
	TrainPrompts           int `json:"train_prompts"`
	ValidationPrompts      int `json:"validation_prompts"`
	// SkippedRows counts invalid rows left out under data.skip_invalid.
	SkippedRows int `json:"skipped_rows,omitempty"`
	// Prompts is the stored copy of data.prompts, REINFORCE's prompts, and
	// RLPrompts counts those that fit model.max_len (nil and 0 without
	// the file: REINFORCE samples the training split's prompts).
	Prompts   *artifact.Ref `json:"prompts,omitempty"`
	RLPrompts int           `json:"rl_prompts,omitempty"`
	// Model is the Hugging Face model of model.path, imported into the
	// store (nil for the bundled byte-level model).
	Model *BaseModel `json:"model,omitempty"`
	// RewardBench is the verified copy of compare.rewardbench, if given.
	RewardBench      *artifact.Ref `json:"rewardbench,omitempty"`
	RewardBenchPairs int           `json:"rewardbench_pairs,omitempty"`
}

// BaseModel is a Hugging Face model a run starts from, as the data stage
// stored it: the policy's weights in float32, and the files that describe
// it, so every worker loads the same model from the store.
type BaseModel struct {
	Source       string `json:"source"` // model.path
	Architecture string `json:"architecture"`
	DType        string `json:"torch_dtype"` // what an export writes back
	// Weights are the policy's parameters in alignflow's layout, the
	// transformer config in their metadata.
	Weights artifact.Ref `json:"weights"`
	// Files are config.json, tokenizer.json and, where the model has them,
	// the other hfmodel.DescriptionFiles (tokenizer_config.json, the chat
	// templates, generation_config.json), by name.
	Files map[string]artifact.Ref `json:"files"`
	// EOS are the tokens a response ends with.
	EOS []int32 `json:"eos"`
	// Reward is the reward model of reward.path (nil: reward models start
	// from the SFT backbone), with RewardSource its directory.
	Reward       *artifact.Ref `json:"reward,omitempty"`
	RewardSource string        `json:"reward_source,omitempty"`
	// LoRA is the adapter of lora.path that SFT starts from (nil: a fresh
	// one), with LoRASource its directory.
	LoRA       *artifact.Ref `json:"lora,omitempty"`
	LoRASource string        `json:"lora_source,omitempty"`
}

// PrepareDataInput starts a run's data stage.
type PrepareDataInput struct {
	RunID string      `json:"run_id"`
	Spec  config.Spec `json:"spec"`
	// FirstRunID is the alignment's first workflow run ID: the data stage
	// claims the run's folder for it (RunFile). Empty when a workflow
	// recorded before claims scheduled the stage: no claim.
	FirstRunID string `json:"first_run_id,omitempty"`
}

// TrainInput is the input of the training stages.
type TrainInput struct {
	RunID string       `json:"run_id"`
	Spec  config.Spec  `json:"spec"`
	Data  Data         `json:"data"`
	Base  artifact.Ref `json:"base"` // SFT: unused; reward model: the SFT policy
	// Recipe overrides spec.reward.recipe: the comparison trains several
	// reward models in one run, each in its own folder.
	Recipe string `json:"recipe,omitempty"`
	// From is a trained helpfulness-regression model: a recipe that starts
	// with that regression starts from it instead of training it again.
	From *artifact.Ref `json:"from,omitempty"`
	// Strong is a trained scaled-BT model: an ExPO recipe given From and
	// Strong only chooses the extrapolation between them.
	Strong *artifact.Ref `json:"strong,omitempty"`
}

// TrainResult reports a finished training stage.
type TrainResult struct {
	Reused
	Checkpoint   artifact.Ref `json:"checkpoint"`
	Digest       string       `json:"digest"` // sha256 of the weights
	Steps        int          `json:"steps"`
	FirstLoss    float64      `json:"first_loss"`
	FinalLoss    float64      `json:"final_loss"`
	TrainSeconds float64      `json:"train_seconds"`
	// ResumedFrom is the step the last attempt resumed from (counted over
	// all phases); 0 when it ran from the start.
	ResumedFrom int `json:"resumed_from_step,omitempty"`
	// ExPOAlpha is the extrapolation chosen on validation pairs (ExPO recipes only).
	ExPOAlpha float64 `json:"expo_alpha,omitempty"`
	// Adapter is the LoRA adapter the stage trained (lora.rank > 0), whose
	// merge into the stage's base is Checkpoint; nil when it trained
	// every weight.
	Adapter *artifact.Ref `json:"adapter,omitempty"`
}

// RewardEvalInput evaluates a reward model on held-out pairs.
type RewardEvalInput struct {
	RunID       string       `json:"run_id"`
	Spec        config.Spec  `json:"spec"`
	Data        Data         `json:"data"`
	RewardModel artifact.Ref `json:"reward_model"`
}

// RewardEval is the reward model's held-out quality.
type RewardEval struct {
	Reused
	HeldoutAccuracy float64 `json:"heldout_accuracy"`
	HeldoutPairs    int     `json:"heldout_pairs"`
	TrainAccuracy   float64 `json:"train_accuracy"`
	// HeldoutTies counts validation pairs with strength 0: left out of the
	// accuracy, since neither response is preferred.
	HeldoutTies int `json:"heldout_ties"`
	// ByStrength breaks the held-out accuracy down by |preference_strength|:
	// strong preferences should be easy, slight ones hard.
	ByStrength []StrengthAccuracy `json:"by_strength"`
	// Ratings compares the model's five outputs with the validation ratings.
	Ratings []AttributeFit `json:"ratings,omitempty"`
	// Bench is RewardBench-style scoring on pairs built from the generated
	// data's held-out prompts (generated data only).
	Bench *rewardbench.Report `json:"bench,omitempty"`
	// RewardBench scores the file given as compare.rewardbench.
	RewardBench *rewardbench.Report `json:"rewardbench,omitempty"`
}

// StrengthAccuracy and AttributeFit are the reward model's measures
// (reward.AccuracyByStrength, reward.Engine.RatingFit).
type (
	StrengthAccuracy = reward.StrengthAccuracy
	AttributeFit     = reward.AttributeFit
)

// PolicyEvalInput evaluates a policy on held-out prompts.
type PolicyEvalInput struct {
	RunID       string       `json:"run_id"`
	Spec        config.Spec  `json:"spec"`
	Data        Data         `json:"data"`
	Policy      artifact.Ref `json:"policy"`
	Reference   artifact.Ref `json:"reference"`
	RewardModel artifact.Ref `json:"reward_model"`
	Label       string       `json:"label"`
}

// SampleText is one generated response with its scores.
type SampleText struct {
	Prompt   string  `json:"prompt"`
	Response string  `json:"response"`
	Gold     float64 `json:"gold"`
	Reward   float64 `json:"reward"`
}

// PolicyEval is a policy's quality on held-out prompts, sampled with the
// eval seed so that before and after see the same random stream.
type PolicyEval struct {
	Reused
	GoldScore *float64 `json:"gold_score"` // nil when the data has no gold rubric
	Reward    float64  `json:"reward"`
	// KLSequence is the mean over samples of sum_t (log pi - log pi_ref)
	// over the response tokens: the Monte Carlo estimate of KL(pi || pi_ref)
	// of whole responses, in nats (signed per sample, non-negative in
	// expectation).
	KLSequence float64 `json:"kl_sequence"`
	// KLPenalty is the mean over samples of the per-token mean of
	// reinforce.kl_estimator: what REINFORCE subtracts, times kl_beta, from
	// each reward (IterationResult.KLMean is the same on the rollouts).
	KLPenalty     float64      `json:"kl_penalty"`
	EndedFraction float64      `json:"ended_fraction"`
	MeanLength    float64      `json:"mean_length"`
	Prompts       int          `json:"prompts"`
	Samples       []SampleText `json:"samples"`
	// Verifier is reward.verifier's pass rate over the samples of the
	// held-out prompts that have a reference answer (VerifiedPrompts of
	// them): the held-out score of RL from verifiable rewards. Nil without
	// a verifier, or when no held-out prompt has an answer.
	Verifier        *float64 `json:"verifier,omitempty"`
	VerifiedPrompts int      `json:"verified_prompts,omitempty"`
}

// IterationInput is one REINFORCE iteration.
type IterationInput struct {
	RunID       string       `json:"run_id"`
	Spec        config.Spec  `json:"spec"`
	Data        Data         `json:"data"`
	Iteration   int          `json:"iteration"` // 0-based
	Policy      artifact.Ref `json:"policy"`
	Optimizer   artifact.Ref `json:"optimizer"` // empty on the first iteration
	Reference   artifact.Ref `json:"reference"`
	RewardModel artifact.Ref `json:"reward_model"`
	// ExtraRounds counts the sampling rounds earlier iterations drew
	// beyond their first (reinforce.skip_uniform_groups): the prompts
	// they took are not drawn again.
	ExtraRounds int `json:"extra_rounds,omitempty"`
}

// PromptPosition is where round (from 0) of the iteration starts in the
// run's walk through the training prompts (dataset.IterationPrompts):
// every round takes the next prompts_per_iteration, so no prompt is
// skipped or drawn twice before the walk wraps around.
func (in IterationInput) PromptPosition(round int) int {
	return (in.Iteration + in.ExtraRounds + round) * in.Spec.Reinforce.PromptsPerIteration
}

// RowStream is the index of row (from 0 in its round) of round among the
// iteration's random streams (rng.Row): round 0's rows keep their
// indexes, each further round's come after the rows of those before it.
func (in IterationInput) RowStream(round, row int) int {
	return round*in.Spec.Reinforce.RolloutRows() + row
}

// ShardInput asks for one shard of an iteration's rollouts: the
// generation batches [Shard*B/Shards, (Shard+1)*B/Shards) of the B an
// iteration has (config.Reinforce.RolloutBatches), sampled, scored and
// compared with the reference. IterationInput.Policy is the policy that
// samples: the one the iteration updates, or with reinforce.max_staleness
// an earlier one (and no optimizer state).
type ShardInput struct {
	IterationInput
	Shard  int `json:"shard"`
	Shards int `json:"shards"`
	// Round is the iteration's sampling round (from 0; above 0 only with
	// reinforce.skip_uniform_groups).
	Round int `json:"round,omitempty"`
}

// ShardResult says where a shard's rollouts are: rows First to
// First+Rows-1 of the iteration's prompt x sample rows.
type ShardResult struct {
	Reused
	Shard    int          `json:"shard"`
	First    int          `json:"first"`
	Rows     int          `json:"rows"`
	Rollouts artifact.Ref `json:"rollouts"`
	Seconds  float64      `json:"seconds"`
	Round    int          `json:"round,omitempty"`
	// Groups says which of the round's groups the shard's rows show to be
	// uniform (reinforce.GroupsOf); nil without skip_uniform_groups.
	Groups *reinforce.ShardGroups `json:"groups,omitempty"`
}

// Uniform is whether each of a round's groups has rewards all equal,
// joined from the round's shards (reinforce.UniformGroups).
func Uniform(round []ShardResult, groups int) []bool {
	parts := make([]reinforce.ShardGroups, 0, len(round))
	for _, sh := range round {
		if sh.Groups != nil {
			parts = append(parts, *sh.Groups)
		}
	}
	return reinforce.UniformGroups(groups, parts)
}

// Sampling counts what dynamic sampling (reinforce.skip_uniform_groups)
// drew and left out: of an iteration, or summed over a run.
type Sampling struct {
	Rounds int `json:"rounds"` // sampling rounds, the first included
	// Dropped counts the uniform groups left out of the update, Filled the
	// uniform groups it trained on because the rounds held too few others
	// (max_sampling_rounds), Surplus the groups beyond the batch.
	Dropped int `json:"dropped_groups"`
	Filled  int `json:"filled_groups"`
	Surplus int `json:"surplus_groups"`
}

// SamplingOf is an iteration's Sampling: rounds rounds and selection sel.
func SamplingOf(rounds int, sel reinforce.Selection) Sampling {
	return Sampling{Rounds: rounds, Dropped: sel.Dropped, Filled: sel.Filled, Surplus: sel.Surplus}
}

// Add adds an iteration's counts to a run's.
func (s *Sampling) Add(o Sampling) {
	s.Rounds, s.Dropped, s.Filled, s.Surplus = s.Rounds+o.Rounds, s.Dropped+o.Dropped, s.Filled+o.Filled, s.Surplus+o.Surplus
}

// UpdateInput asks for the policy update of an iteration from its
// shards' rollouts, in shard order (round by round with
// skip_uniform_groups).
type UpdateInput struct {
	IterationInput
	Shards []ShardResult `json:"shards"`
}

// IterationResult reports an iteration and where its outputs are. KLMean
// is the per-token mean of reinforce.kl_estimator, averaged over the
// rollouts: the KL the update trained against.
type IterationResult struct {
	Reused
	Iteration    int          `json:"iteration"`
	Policy       artifact.Ref `json:"policy"`
	PolicyDigest string       `json:"policy_sha256"` // of the weights, as StageModel's checkpoint_sha256
	Optimizer    artifact.Ref `json:"optimizer"`
	Rollouts     artifact.Ref `json:"rollouts"`
	RewardMean   float64      `json:"reward_mean"`
	// VerifierMean is the fraction of rollouts reward.verifier passed;
	// nil without one.
	VerifierMean  *float64 `json:"verifier_mean,omitempty"`
	KLMean        float64  `json:"kl_mean"`
	GoldMean      *float64 `json:"gold_mean"`
	EndedFraction float64  `json:"ended_fraction"`
	// MeanLength is the rollouts' mean response length in tokens (0 in
	// results recorded before it was reported).
	MeanLength float64 `json:"mean_length,omitempty"`
	Loss       float64 `json:"loss"`
	// RatioMean and ClipFraction are a clipped update's (update_epochs
	// above 1) mean importance ratio and fraction of tokens clipped, over
	// its optimizer steps; nil for an on-policy update.
	RatioMean    *float64 `json:"ratio_mean,omitempty"`
	ClipFraction *float64 `json:"clip_fraction,omitempty"`
	// Sampling is what dynamic sampling drew and left out; nil without
	// skip_uniform_groups. The other numbers are of the rows trained on.
	Sampling *Sampling `json:"sampling,omitempty"`
	Seconds  float64   `json:"seconds"`
	// WorkerQueue is the task queue of the worker that made the update, and
	// only it: the next update is offered there first.
	WorkerQueue string `json:"worker_queue,omitempty"`
}

// IterationDir is the folder of iteration's (from 0) artifacts under a
// run's folder (RunKey): its policy, optimizer state, rollouts and shards.
func IterationDir(iteration int) string { return fmt.Sprintf("reinforce/iter-%05d", iteration) }

// RolloutsFile is the name of an iteration's rollouts artifact in its
// IterationDir: a JSON list of RolloutRecord.
const RolloutsFile = "rollouts.json"

// RolloutRecord is one rollout of an iteration as its rollouts artifact
// stores it (IterationResult.Rollouts, a JSON list) and `alignflow runs
// rollouts` reads it. Fields added after the first runs are pointers or
// omitted when empty, so that older artifacts read as what they hold.
type RolloutRecord struct {
	// Round is the sampling round (skip_uniform_groups) that drew the
	// prompt; PromptIndex is the prompt's index in the round (in the
	// iteration, without dynamic sampling).
	Round       int `json:"round,omitempty"`
	PromptIndex int `json:"prompt_index"`
	SampleIndex int `json:"sample_index"` // the sample's index among the prompt's
	// Dropped marks the rollouts of a group dynamic sampling left out of
	// the update (uniform, or beyond the batch): their advantage is 0.
	Dropped  bool    `json:"dropped,omitempty"`
	Prompt   string  `json:"prompt"`
	Response string  `json:"response"`
	Tokens   []int32 `json:"tokens,omitempty"`
	Ended    bool    `json:"ended"`
	// Reward is the reward model's score (0 without a reward model).
	Reward float64 `json:"reward"`
	// Verifier is the verifier's score, nil without a verifier.
	Verifier *float64 `json:"verifier,omitempty"`
	KL       float64  `json:"kl"` // the per-token KL penalty
	// Shaped is the reward the advantage estimator read: the rewards'
	// weighted sum, less the KL penalty where it is in the reward.
	Shaped    *float64 `json:"shaped,omitempty"`
	Advantage float64  `json:"advantage"`
	// LogProb is the response's log-probability under the policy that
	// sampled it.
	LogProb *float64 `json:"logprob,omitempty"`
	Gold    *float64 `json:"gold,omitempty"`
}

// Progress is what long activities heartbeat: the client shows it as a bar.
type Progress struct {
	Stage string  `json:"stage"`
	Step  int     `json:"step"`
	Total int     `json:"total"`
	Loss  float64 `json:"loss"`
	// Work counts the units of work the attempt finished (generation and
	// scoring batches, decode and training steps, stored and hashed
	// chunks): heartbeats are sent only while it rises.
	Work int64 `json:"work,omitempty"`
	// Checkpoint is the latest saved training state: a retried attempt
	// resumes from it.
	Checkpoint *artifact.Ref `json:"checkpoint,omitempty"`
}

// SummaryInput asks for the run summary to be written where users look for it.
type SummaryInput struct {
	RunID   string   `json:"run_id"`
	Summary *Summary `json:"summary"`
	// Curve is the last segment of the REINFORCE curve; the whole curve is
	// written into the summary file as "curve". Empty when the summary
	// carries its curve itself (runs recorded before curve segments).
	Curve *artifact.Ref `json:"curve,omitempty"`
}

// CurveInput is one segment of the REINFORCE curve: the iterations one
// workflow run executed, linked to the segment before it, so that a run
// that continues as new carries a single reference however long it is.
type CurveInput struct {
	RunID    string             `json:"run_id"`
	Previous *artifact.Ref      `json:"previous,omitempty"` // nil for the first segment
	Points   []IterationMetrics `json:"points"`
}

// ReportInput asks for a comparison's report to be written next to the
// run's artifacts, as JSON and as Markdown tables.
type ReportInput struct {
	RunID  string            `json:"run_id"`
	Report *ComparisonReport `json:"report"`
}

// ReportPaths are where a report was written.
type ReportPaths struct {
	JSON     string `json:"json"`
	Markdown string `json:"markdown,omitempty"`
}

// RunReportInput asks for a run's report (report.md, report.html and
// their charts, under runs/<run>/report/) and its assembled metrics log
// (runs/<run>/metrics.jsonl). The activity reads the run's summary or
// comparison report, metrics and workflow history itself.
type RunReportInput struct {
	RunID string `json:"run_id"`
}

// RunReport says where a run's report was written.
type RunReport struct {
	HTML     string `json:"html"`
	Markdown string `json:"markdown"`
	Metrics  string `json:"metrics"`
	Charts   int    `json:"charts"`
}

// IterationMetrics is one point of the REINFORCE training curve.
type IterationMetrics struct {
	Iteration     int      `json:"iteration"`
	RewardMean    float64  `json:"reward_mean"`
	KLMean        float64  `json:"kl_mean"`
	GoldMean      *float64 `json:"gold_mean,omitempty"`
	EndedFraction float64  `json:"ended_fraction"`
	MeanLength    float64  `json:"mean_length,omitempty"`
	Loss          float64  `json:"loss"`
	// RatioMean and ClipFraction are a clipped update's (IterationResult's):
	// with asynchronous rollouts, the off-policy correction's.
	RatioMean    *float64 `json:"ratio_mean,omitempty"`
	ClipFraction *float64 `json:"clip_fraction,omitempty"`
	Seconds      float64  `json:"seconds"`
}

// Metrics drops the references, keeping the numbers.
func (r IterationResult) Metrics() IterationMetrics {
	return IterationMetrics{Iteration: r.Iteration, RewardMean: r.RewardMean, KLMean: r.KLMean, GoldMean: r.GoldMean,
		EndedFraction: r.EndedFraction, MeanLength: r.MeanLength, Loss: r.Loss, RatioMean: r.RatioMean, ClipFraction: r.ClipFraction, Seconds: r.Seconds}
}
