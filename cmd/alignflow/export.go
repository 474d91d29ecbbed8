package main

import (
	"fmt"
	"io"

	"github.com/alignflow/alignflow/export"
	"github.com/spf13/cobra"
)

// exportOptions are `alignflow export`'s inputs and output.
type exportOptions struct {
	out     io.Writer
	dataDir string
	runID   string
	what    string
	dir     string
}

func exportCmd() *cobra.Command {
	o := exportOptions{}
	cmd := &cobra.Command{
		Use:   "export RUN_ID --out DIR [--what policy]",
		Short: "Write a run's aligned policy as a Hugging Face model directory",
		Long: `Writes the final policy of a finished run that started from a Hugging Face model
(model.path) as a Hugging Face directory: the source's config.json, tokenizer files and
generation_config.json, and model.safetensors in the source dtype (sharded with an index
above 5 GB). The weights are checked against their digests first; the directory is
written beside DIR and renamed into place, so a failed export leaves nothing that looks
complete.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connection(cmd)
			if err != nil {
				return err
			}
			o.out, o.dataDir, o.runID = cmd.OutOrStdout(), c.DataDir, args[0]
			return exportRun(o)
		},
	}
	cmd.Flags().StringVar(&o.dir, "out", "", "directory to create")
	cmd.Flags().StringVar(&o.what, "what", "policy", "what to export (supported: policy)")
	return cmd
}

func exportRun(o exportOptions) error {
	if o.dir == "" {
		return fmt.Errorf("--out DIR is required")
	}
	if o.what != "policy" {
		return fmt.Errorf("--what %q is not supported (supported: policy)", o.what)
	}
	s, err := export.Policy(o.dataDir, o.runID, o.dir)
	if err != nil {
		return err
	}
	fmt.Fprintf(o.out, "Exported run %s's policy (%s, %s, sha256 %.12s) to %s\n", o.runID, s.Data.Model.Architecture, s.Data.Model.DType, s.Policy.Digest, o.dir)
	return nil
}
