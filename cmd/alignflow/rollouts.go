package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/pipeline"
)

// rolloutsOptions are `alignflow runs rollouts`' inputs and output.
type rolloutsOptions struct {
	out       io.Writer
	store     *artifact.Store
	runID     string
	iteration int // from 1
	json      bool
}

func rolloutsCmd() *cobra.Command {
	o := rolloutsOptions{}
	cmd := &cobra.Command{
		Use:   "rollouts RUN_ID --iteration N [--json]",
		Short: "Print every sample of one REINFORCE iteration with its rewards, KL penalty, advantage and log-probability",
		Long: `Prints the rollouts an iteration trained on, from the run's store: each prompt's
samples with the reward model's score (reward_model), the verifier's (verifier, where the
run has one), the per-token KL penalty (kl_penalty), the shaped reward the advantage
estimator read (reward: the rewards' weighted sum, less kl_beta x kl_penalty where
reinforce.kl_in is reward), the advantage, and the response's log-probability under the
policy that sampled it (logprob). Iterations count from 1, as runs show does. --json
prints a list of objects with those names and prompt_index, sample_index, tokens, ended,
prompt and response. A run with reinforce.skip_uniform_groups also lists the samples
dynamic sampling left out of the update (dropped, advantage 0), each with the sampling
round (from 1) that drew its prompt; prompt_index then counts within the round.`,
		Args: runIDArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if o.store, err = storeOf(cmd); err != nil {
				return err
			}
			defer o.store.Close()
			o.out, o.runID = cmd.OutOrStdout(), args[0]
			return printRollouts(o)
		},
	}
	cmd.Flags().IntVar(&o.iteration, "iteration", 0, "the iteration, from 1 (required)")
	cmd.Flags().BoolVar(&o.json, "json", false, "print a JSON list")
	return cmd
}

// rolloutJSON is one sample as `runs rollouts --json` prints it.
type rolloutJSON struct {
	Round       int      `json:"round,omitempty"` // from 1; only with dynamic sampling
	Dropped     bool     `json:"dropped,omitempty"`
	PromptIndex int      `json:"prompt_index"`
	SampleIndex int      `json:"sample_index"`
	Prompt      string   `json:"prompt"`
	Response    string   `json:"response"`
	Tokens      []int32  `json:"tokens"`
	Ended       bool     `json:"ended"`
	RewardModel float64  `json:"reward_model"`
	Verifier    *float64 `json:"verifier"`
	KLPenalty   float64  `json:"kl_penalty"`
	Reward      *float64 `json:"reward"` // the shaped reward; null in runs recorded before it
	Advantage   float64  `json:"advantage"`
	LogProb     *float64 `json:"logprob"` // null in runs recorded before it
}

func printRollouts(o rolloutsOptions) error {
	if o.iteration < 1 {
		return fmt.Errorf("--iteration N is required: the iteration, from 1")
	}
	key, err := pipeline.RunKey(o.runID, pipeline.IterationDir(o.iteration-1), pipeline.RolloutsFile)
	if err != nil {
		return err
	}
	ref, err := o.store.Lookup(key)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("run %s has no iteration %d in %s (not reached yet, removed by alignflow gc, or another run ID?)", o.runID, o.iteration, o.store.Where(key))
	}
	if err != nil {
		return err
	}
	var records []pipeline.RolloutRecord
	if err := o.store.GetJSON(ref, &records); err != nil {
		return err
	}
	out := make([]rolloutJSON, len(records))
	dynamic := false
	for i, r := range records {
		dynamic = dynamic || r.Round > 0 || r.Dropped
		out[i] = rolloutJSON{Dropped: r.Dropped, PromptIndex: r.PromptIndex, SampleIndex: r.SampleIndex, Prompt: r.Prompt, Response: r.Response, Tokens: r.Tokens,
			Ended: r.Ended, RewardModel: r.Reward, Verifier: r.Verifier, KLPenalty: r.KL, Reward: r.Shaped, Advantage: r.Advantage, LogProb: r.LogProb}
	}
	if dynamic {
		for i, r := range records {
			out[i].Round = r.Round + 1
		}
	}
	if o.json {
		enc := json.NewEncoder(o.out)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(o.out, 0, 0, 2, ' ', 0)
	if dynamic {
		fmt.Fprint(tw, "ROUND\tTRAINED\t")
	}
	fmt.Fprintln(tw, "PROMPT\tSAMPLE\tENDED\tREWARD MODEL\tVERIFIER\tKL PENALTY\tREWARD\tADVANTAGE\tLOGPROB\tRESPONSE")
	for _, r := range out {
		if dynamic {
			fmt.Fprintf(tw, "%d\t%v\t", r.Round, !r.Dropped)
		}
		fmt.Fprintf(tw, "%d\t%d\t%v\t%.4f\t%s\t%.4f\t%s\t%.4f\t%s\t%s\n", r.PromptIndex+1, r.SampleIndex+1, r.Ended, r.RewardModel, optional(r.Verifier),
			r.KLPenalty, optional(r.Reward), r.Advantage, optional(r.LogProb), oneLine(r.Response, 60))
	}
	return tw.Flush()
}

func optional(x *float64) string {
	if x == nil {
		return "-"
	}
	return fmt.Sprintf("%.4f", *x)
}

// oneLine shows text on one line of at most n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
