package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/data/helpsteer"
	"github.com/alignflow/alignflow/data/rewardbench"
	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/model/lm"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/reward"
)

func evalCmd() *cobra.Command {
	eval := &cobra.Command{Use: "eval", Short: "Evaluate trained models"}
	var opts rewardBenchOptions
	rb := &cobra.Command{
		Use:   "rewardbench --model CHECKPOINT --data FILE",
		Short: "Score a reward model on RewardBench-format pairs: per-subset accuracy, the four weighted categories and the overall mean",
		Long: `Scores every pair (correct when the chosen response gets the higher reward) and prints
per-subset accuracy, RewardBench's four category scores (subsets weighted by their
official example counts) and the overall mean of the categories. Subsets outside the
official mapping are reported on their own. CHECKPOINT is a reward model written by
alignflow (<data-dir>/runs/<id>/reward/.../model.safetensors); its manifest is checked
when present.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return evalRewardBench(cmd.OutOrStdout(), opts)
		},
	}
	rb.Flags().StringVar(&opts.model, "model", "", "reward model checkpoint (.safetensors)")
	rb.Flags().StringVar(&opts.data, "data", "", "RewardBench-format JSONL file (plain or .gz)")
	rb.Flags().BoolVar(&opts.json, "json", false, "print the report as JSON")
	rb.Flags().BoolVar(&opts.skipInvalid, "skip-invalid", false, "skip malformed rows (reporting how many) instead of stopping at the first")
	rb.Flags().StringVar(&opts.backend, "backend", backend.Go, "graph backend")
	rb.Flags().IntVar(&opts.batch, "batch-size", 64, "sequences scored at once")
	eval.AddCommand(rb)
	return eval
}

type rewardBenchOptions struct {
	model, data, backend string
	json, skipInvalid    bool
	batch                int
}

// rewardBenchOutput is the --json output.
type rewardBenchOutput struct {
	Model       string             `json:"model"`
	Verified    bool               `json:"model_verified"`
	Recipe      string             `json:"recipe,omitempty"`
	Data        string             `json:"data"`
	Pairs       int                `json:"pairs"`
	SkippedRows int                `json:"skipped_rows"`
	Report      rewardbench.Report `json:"report"`
}

func evalRewardBench(out io.Writer, o rewardBenchOptions) error {
	if o.model == "" || o.data == "" {
		return fmt.Errorf("--model CHECKPOINT and --data FILE are both required")
	}
	if o.batch <= 0 {
		return fmt.Errorf("--batch-size must be positive, got %d", o.batch)
	}
	rm, verified, err := loadRewardModel(o.model)
	if err != nil {
		return err
	}
	cfg, err := transformer.ConfigOf(rm)
	if err != nil {
		return fmt.Errorf("--model %s: %w", o.model, err)
	}
	pairs, read, err := helpsteer.LoadRewardBench(o.data, helpsteer.ReadOptions{SkipInvalid: o.skipInvalid})
	if err != nil {
		return err
	}
	b, err := backend.New(o.backend)
	if err != nil {
		return fmt.Errorf("--backend: %w", err)
	}
	eng := reward.NewEngine(b, cfg, rm)
	results, err := rewardbench.Run(pairs, cfg.MaxLen, lm.Bundled(), func(seqs [][]int32) ([]float64, error) {
		return eng.Rewards(rm, seqs, o.batch)
	})
	if err != nil {
		return err
	}
	report := rewardbench.Score(results, rewardbench.Official)
	if o.json {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(rewardBenchOutput{Model: o.model, Verified: verified, Recipe: rm.Metadata["recipe"], Data: o.data,
			Pairs: len(pairs), SkippedRows: read.Skipped, Report: report})
	}
	fmt.Fprintf(out, "Reward model %s", o.model)
	if r := rm.Metadata["recipe"]; r != "" {
		fmt.Fprintf(out, " (recipe %s)", r)
	}
	if !verified {
		fmt.Fprint(out, " (no manifest: digest not checked)")
	}
	fmt.Fprintf(out, "\n%s: %d pairs", o.data, len(pairs))
	if read.Skipped > 0 {
		fmt.Fprintf(out, ", %d invalid rows skipped", read.Skipped)
		for _, e := range read.Errors {
			fmt.Fprintf(out, "\n  skipped %v", e)
		}
	}
	fmt.Fprintf(out, "\n\n%s", report.Markdown())
	return nil
}

// loadRewardModel reads a reward-model checkpoint, verifying it against its
// manifest when it has one.
func loadRewardModel(path string) (*weights.Set, bool, error) {
	data, verified, err := artifact.ReadVerified(path)
	if err != nil {
		return nil, false, fmt.Errorf("--model %s: %w", path, err)
	}
	set, err := weights.Read(bytes.NewReader(data))
	if err != nil {
		return nil, false, fmt.Errorf("--model %s: not a safetensors checkpoint: %w", path, err)
	}
	if kind := set.Metadata["kind"]; kind != "reward" {
		return nil, false, fmt.Errorf("--model %s: a %q checkpoint, not a reward model (look for runs/<id>/reward/.../model.safetensors)", path, kind)
	}
	if set.Get(reward.HeadW) == nil {
		return nil, false, fmt.Errorf("--model %s: reward model has no %s tensor", path, reward.HeadW)
	}
	return set, verified, nil
}
