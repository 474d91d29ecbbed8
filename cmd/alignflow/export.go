package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/model/hf/hfmodel"
	"github.com/alignflow/alignflow/ops/export"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/spf13/cobra"
)

// exportOptions are `alignflow export`'s inputs and output.
type exportOptions struct {
	out    io.Writer
	store  *artifact.Store
	runID  string
	what   string
	format string
	dir    string
}

func exportCmd() *cobra.Command {
	o := exportOptions{}
	cmd := &cobra.Command{
		Use:   "export RUN_ID --out DIR [--what policy|reward] [--format merged|peft]",
		Short: "Write a run's aligned policy or its reward model as a Hugging Face model directory",
		Long: `Writes the final policy of a finished run that started from a Hugging Face model
(model.path) as a Hugging Face directory: the source's config.json, tokenizer files and
generation_config.json, and model.safetensors in the source dtype (sharded with an index
above 5 GB). --what reward writes the reward model as an XForSequenceClassification
(score.weight [5, hidden]; labels helpfulness, correctness, coherence, complexity,
verbosity, helpfulness being the reward). The weights are checked against their digests first; the directory is
written beside DIR and renamed into place, so a failed export leaves nothing that looks
complete.

A run with lora (lora.rank > 0) is exported merged by default: its adapters folded into
the weights. --format peft writes PEFT's adapter directory instead: adapter_config.json
(peft_type LORA, task_type CAUSAL_LM, or SEQ_CLS with score in modules_to_save for
--what reward) and adapter_model.safetensors under PEFT's names, relative to model.path's
weights: the SFT adapter and REINFORCE's (or the reward model's) stacked into one adapter
of twice the rank at the same scale.`,
		Args: runIDArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if o.store, err = storeOf(cmd); err != nil {
				return err
			}
			defer o.store.Close()
			o.out, o.runID = cmd.OutOrStdout(), args[0]
			return exportRun(o)
		},
	}
	cmd.Flags().StringVar(&o.dir, "out", "", "directory to create")
	cmd.Flags().StringVar(&o.what, "what", "policy", "what to export: policy, or reward (as XForSequenceClassification)")
	cmd.Flags().StringVar(&o.format, "format", export.Merged, "merged (a whole Hugging Face model) or peft (a LoRA run's adapter of model.path)")
	return cmd
}

func exportRun(o exportOptions) error {
	if o.dir == "" {
		return fmt.Errorf("--out DIR is required")
	}
	if o.format == "" {
		o.format = export.Merged
	}
	if !slices.Contains(export.Formats, o.format) {
		return fmt.Errorf("--format %q is not supported (supported: %s)", o.format, strings.Join(export.Formats, ", "))
	}
	var s *pipeline.Summary
	var err error
	var arch, digest string
	switch o.what {
	case "policy":
		if s, err = export.Policy(o.store, o.runID, o.dir, o.format); err == nil {
			arch, digest = s.Data.Model.Architecture, s.Policy.Digest
		}
	case "reward":
		if s, err = export.Reward(o.store, o.runID, o.dir, o.format); err == nil {
			arch, digest = hfmodel.ClassifierOf(s.Data.Model.Architecture), s.RewardModel.Digest
		}
	default:
		return fmt.Errorf("--what %q is not supported (supported: policy, reward)", o.what)
	}
	if err != nil {
		return err
	}
	if o.format == export.PEFT {
		fmt.Fprintf(o.out, "Exported run %s's %s as a PEFT LoRA adapter of %s to %s\n", o.runID, o.what, s.Data.Model.Source, o.dir)
		return nil
	}
	fmt.Fprintf(o.out, "Exported run %s's %s (%s, %s, sha256 %.12s) to %s\n", o.runID, o.what, arch, s.Data.Model.DType, digest, o.dir)
	return nil
}
