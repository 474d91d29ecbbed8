package pipeline

import (
	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/data/rewardbench"
)

// SummaryFile is the name of a run's summary in the store, under
// runs/<workflow-id>/ (<data-dir>/runs/<workflow-id>/summary.json in a
// local store).
const SummaryFile = "summary.json"

// ComparisonFile is the name of a comparison's report in the store, beside
// where a summary would be.
const ComparisonFile = "comparison.json"

// RunFile is the claim on a run's folder, beside where its summary goes:
// which alignment (workflow ID and first workflow run ID, which Temporal
// keeps through continue-as-new, retries and resets) the folder's
// artifacts belong to. The data stage writes it before anything else, and
// refuses a folder another alignment under the same workflow ID claimed.
const RunFile = "run.json"

// RunClaim is what RunFile holds.
type RunClaim struct {
	WorkflowID string `json:"workflow_id"`
	FirstRunID string `json:"first_run_id"`
}

// Summary is the result of an Alignment run; it is also written to
// runs/<workflow-id>/summary.json in the store.
type Summary struct {
	WorkflowID  string             `json:"workflow_id"`
	Name        string             `json:"name"`
	Seed        int64              `json:"seed"`
	Backend     string             `json:"backend"`
	Data        Data               `json:"data"`
	SFT         StageModel         `json:"sft"`
	RewardModel RewardModelSummary `json:"reward_model"`
	Policy      PolicySummary      `json:"policy"`
	// Curve is the REINFORCE curve. The workflow's result carries it only
	// for runs recorded before curve segments; later runs keep it in
	// artifact segments (CurveRef, the last one), and WriteSummary puts it
	// whole into summary.json.
	Curve    []IterationMetrics `json:"curve,omitempty"`
	CurveRef *artifact.Ref      `json:"curve_ref,omitempty"`
	// Runs is how many workflow runs the alignment took (it continues as
	// new every reinforce.continue_as_new_every iterations).
	Runs        int          `json:"workflow_runs,omitempty"`
	Samples     []SamplePair `json:"samples"`
	SummaryPath string       `json:"summary_path"`
	// ReportPath is the run's report page with charts (empty for runs
	// recorded before it, or when it could not be written).
	ReportPath string `json:"report_path,omitempty"`
	// KeepIterations is the run's retention.keep_iterations: how many of
	// the last REINFORCE iterations' checkpoints `alignflow gc` keeps (0:
	// all).
	KeepIterations int `json:"keep_iterations,omitempty"`
}

// StageModel describes a trained model.
type StageModel struct {
	Checkpoint artifact.Ref `json:"checkpoint"`
	Digest     string       `json:"checkpoint_sha256"`
	Steps      int          `json:"steps"`
	FirstLoss  float64      `json:"first_loss"`
	FinalLoss  float64      `json:"final_loss"`
	Seconds    float64      `json:"seconds"`
	// ResumedFrom is the step its last attempt resumed from after a failure.
	ResumedFrom int `json:"resumed_from_step,omitempty"`
	// ReusedFrom is the earlier run whose verified output this run reused.
	ReusedFrom string `json:"reused_from_run,omitempty"`
	// Adapter is the LoRA adapter the stage trained (TrainResult.Adapter).
	Adapter *artifact.Ref `json:"adapter,omitempty"`
}

// ModelOf describes the model a training stage produced.
func ModelOf(r TrainResult) StageModel {
	return StageModel{Checkpoint: r.Checkpoint, Digest: r.Digest, Steps: r.Steps, FirstLoss: r.FirstLoss, FinalLoss: r.FinalLoss,
		Seconds: r.TrainSeconds, ResumedFrom: r.ResumedFrom, ReusedFrom: r.ReusedFrom, Adapter: r.Adapter}
}

// RewardModelSummary is the reward model and its held-out quality.
type RewardModelSummary struct {
	StageModel
	// LeftOut: the run trained no reward model (reward.model_weight 0, the
	// verifier's rewards alone); the other fields are empty.
	LeftOut         bool    `json:"left_out,omitempty"`
	Recipe          string  `json:"recipe"`
	ExPOAlpha       float64 `json:"expo_alpha,omitempty"`
	HeldoutAccuracy float64 `json:"heldout_accuracy"`
	HeldoutPairs    int     `json:"heldout_pairs"`
	TrainAccuracy   float64 `json:"train_accuracy"`
	// ByStrength and Bench are the validation scores the comparison reports,
	// so runs with different recipes can be set side by side.
	ByStrength []StrengthAccuracy  `json:"by_strength,omitempty"`
	Bench      *rewardbench.Report `json:"bench,omitempty"`
}

// PolicySummary compares the SFT policy with the aligned one on the same
// held-out prompts and sampling seed.
type PolicySummary struct {
	Checkpoint artifact.Ref `json:"checkpoint"`
	// Digest is the sha256 of the final policy's weights: a resumed run
	// that ends where an uninterrupted one does has the same.
	Digest          string   `json:"checkpoint_sha256"`
	Iterations      int      `json:"iterations"` // run; fewer than planned after a stop signal
	StoppedEarly    bool     `json:"stopped_early,omitempty"`
	GoldScoreBefore *float64 `json:"gold_score_before"`
	GoldScoreAfter  *float64 `json:"gold_score_after"`
	RewardBefore    float64  `json:"reward_before"`
	RewardAfter     float64  `json:"reward_after"`
	// KLSequenceBefore and KLSequenceAfter are PolicyEval.KLSequence: the
	// KL to the reference of whole responses, in nats.
	KLSequenceBefore float64 `json:"kl_sequence_before"`
	KLSequenceAfter  float64 `json:"kl_sequence_after"`
	// KLPenaltyBefore and KLPenaltyAfter are PolicyEval.KLPenalty: the
	// per-token mean of KLEstimator that REINFORCE trains against.
	KLEstimator     string  `json:"kl_estimator"`
	KLPenaltyBefore float64 `json:"kl_penalty_before"`
	KLPenaltyAfter  float64 `json:"kl_penalty_after"`
	EndedBefore     float64 `json:"ended_fraction_before"`
	EndedAfter      float64 `json:"ended_fraction_after"`
	LengthBefore    float64 `json:"mean_length_before"`
	LengthAfter     float64 `json:"mean_length_after"`
	EvalPrompts     int     `json:"eval_prompts"`
	// VerifierBefore and VerifierAfter are PolicyEval.Verifier: the
	// verifier's held-out pass rates (nil without one).
	VerifierBefore *float64 `json:"verifier_before,omitempty"`
	VerifierAfter  *float64 `json:"verifier_after,omitempty"`
	// Sampling sums dynamic sampling's counts over the iterations
	// (reinforce.skip_uniform_groups; nil without it).
	Sampling *Sampling `json:"sampling,omitempty"`
	// FirstIteration and LastIteration are the ends of the REINFORCE curve.
	FirstIteration *IterationMetrics `json:"first_iteration,omitempty"`
	LastIteration  *IterationMetrics `json:"last_iteration,omitempty"`
}

// SamplePair shows one held-out prompt answered before and after alignment.
type SamplePair struct {
	Prompt string     `json:"prompt"`
	Before SampleText `json:"before"`
	After  SampleText `json:"after"`
}

// ComparisonReport is the result of a RewardModelComparison; it is also
// written to <data-dir>/runs/<workflow-id>/comparison.json and, as tables
// shaped like the paper's, comparison.md.
type ComparisonReport struct {
	WorkflowID   string          `json:"workflow_id"`
	Name         string          `json:"name"`
	Seed         int64           `json:"seed"`
	Backend      string          `json:"backend"`
	Data         Data            `json:"data"`
	SFT          StageModel      `json:"sft"`
	Variants     []VariantReport `json:"variants"`
	ReportPath   string          `json:"report_path"`
	MarkdownPath string          `json:"markdown_path"`
	// HTMLPath is the run's report page with charts (empty for runs
	// recorded before it, or when it could not be written).
	HTMLPath string `json:"html_path,omitempty"`
}

// VariantReport is one trained reward model and its evaluation.
type VariantReport struct {
	Recipe string `json:"recipe"`
	// InitFrom names the variant whose model this one starts from ("" for
	// the SFT backbone); Model.Steps and Model.Seconds count this variant's
	// own training.
	InitFrom string `json:"init_from,omitempty"`
	// TotalSteps counts every training step behind the model: its own and
	// those of the models it starts from (the regression phase of a
	// *-from-regression recipe; for ExPO, both models it extrapolates
	// between). It is what budget-matched comparisons compare.
	TotalSteps int `json:"total_steps"`
	// Requested is false for a variant trained only because a requested
	// one starts from it.
	Requested bool       `json:"requested"`
	Model     StageModel `json:"model"`
	ExPOAlpha float64    `json:"expo_alpha,omitempty"`
	Eval      RewardEval `json:"eval"`
}
