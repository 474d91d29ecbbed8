package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/ops/retention"
	"github.com/alignflow/alignflow/ops/temporalconn"
)

// gcOptions are `alignflow gc`'s inputs and output.
type gcOptions struct {
	out            io.Writer
	store          *artifact.Store
	dryRun         bool
	keepIterations int
	verbose        bool
	// runs tells which runs are open (nil: none can be learned, so no
	// finished run is collected).
	runs retention.Runs
}

func gcCmd() *cobra.Command {
	o := gcOptions{}
	cmd := &cobra.Command{
		Use:   "gc [--dry-run] [--keep-iterations N]",
		Short: "Remove what finished runs no longer need from the artifact store, and say how much it freed",
		Long: `Removes from the artifact store (--data-dir, or --store) what no finished run needs:
of a run with a summary (or a comparison report), every artifact that neither the summary
or report nor a reuse record names, except the last retention.keep_iterations REINFORCE
iterations' checkpoints (all when 0, the default); temporary files older than a day. Runs
without a summary yet are kept whole: a resume or a continuation may need any of it. So
are runs whose workflow ID Temporal (--address) has an open run under, and every run with
a summary when Temporal cannot be asked: a store alone cannot tell a finished run from
one going on again under the same ID.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := connection(cmd)
			if err != nil {
				return err
			}
			if o.store, err = openStore(cmd.Context(), c); err != nil {
				return err
			}
			defer o.store.Close()
			o.out = cmd.OutOrStdout()
			if cl, err := dial(cmd.Context(), c); err != nil {
				fmt.Fprintf(o.out, "cannot ask Temporal which runs are open, so every run with a summary is kept whole: %v\n", err)
			} else {
				defer cl.Close()
				o.runs = temporalconn.OpenRuns{Client: cl, Context: cmd.Context()}
			}
			return gcRun(o)
		},
	}
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "say what would go, remove nothing")
	cmd.Flags().IntVar(&o.keepIterations, "keep-iterations", -1, "keep the last N REINFORCE iterations of every finished run (default: each run's retention.keep_iterations)")
	cmd.Flags().BoolVarP(&o.verbose, "verbose", "v", false, "list every key removed")
	return cmd
}

func gcRun(o gcOptions) error {
	plan, err := retention.Collect(o.store, retention.Options{KeepIterations: o.keepIterations, Runs: o.runs})
	if err != nil {
		return err
	}
	if o.verbose || o.dryRun {
		for _, r := range plan.Remove {
			fmt.Fprintf(o.out, "  %s (%s)\n", r.Key, megabytes(r.Bytes))
		}
	}
	for _, id := range plan.Unfinished {
		fmt.Fprintf(o.out, "kept run %s whole: it has no summary yet\n", id)
	}
	for _, id := range plan.Open {
		fmt.Fprintf(o.out, "kept run %s whole: Temporal has an open run under its workflow ID\n", id)
	}
	for _, u := range plan.Unknown {
		if o.runs != nil {
			fmt.Fprintf(o.out, "kept run %s whole: whether it is open is unknown (%v)\n", u.Run, u.Err)
		}
	}
	if o.dryRun {
		fmt.Fprintf(o.out, "would free %s in %d objects of %s; %d objects (%s) stay\n", megabytes(plan.RemoveBytes), len(plan.Remove), o.store.Describe(), plan.Kept, megabytes(plan.KeptBytes))
		return nil
	}
	freed, err := plan.Apply(o.store)
	fmt.Fprintf(o.out, "freed %s in %d objects of %s; %d objects (%s) stay\n", megabytes(freed), len(plan.Remove), o.store.Describe(), plan.Kept, megabytes(plan.KeptBytes))
	return err
}

func megabytes(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }
