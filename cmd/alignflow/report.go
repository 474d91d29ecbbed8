package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/spf13/cobra"
	"go.temporal.io/api/serviceerror"

	"github.com/alignflow/alignflow/activities"
	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/ops/metrics"
	"github.com/alignflow/alignflow/ops/report"
	"github.com/alignflow/alignflow/ops/temporalconn"
)

// reportOptions are `alignflow report`'s inputs and outputs.
type reportOptions struct {
	out, errOut io.Writer
	store       *artifact.Store
	// history reads the run's workflow history; nil, or failing with
	// histErr, means the report has no timeline, and says why.
	history activities.HistoryReader
	histErr error
	runID   string
	dir     string
}

func reportCmd() *cobra.Command {
	o := reportOptions{}
	cmd := &cobra.Command{
		Use:   "report RUN_ID [--out DIR]",
		Short: "Write a run's report: report.md and report.html with charts, and its metrics.jsonl",
		Long: `Writes a run's report into DIR (default report-RUN_ID): report.md and report.html
with PNG charts drawn by gonum/plot (SVG beside each): SFT and reward-model loss, REINFORCE
reward, gold score, KL, mean length and EOS fraction per iteration, reward-model accuracy by
|strength| (for a comparison: every variant's held-out accuracy and bench categories), the
stage timeline from the workflow history with its retries, and the before/after samples; and
the run's metrics log, metrics.jsonl. It reads the artifact store (--data-dir or --store) and
the Temporal server (--address, --namespace); an unfinished run gets the charts of what it
logged so far. Runs write the same report at their end, under runs/RUN_ID/report/.`,
		Args: runIDArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connection(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if o.store, err = openStore(ctx, c); err != nil {
				return err
			}
			defer o.store.Close()
			if cl, err := dial(ctx, c); err != nil {
				o.histErr = err
			} else {
				defer cl.Close()
				o.history = temporalconn.Histories{Client: cl}
			}
			o.out, o.errOut, o.runID = cmd.OutOrStdout(), cmd.ErrOrStderr(), args[0]
			return reportRun(ctx, o)
		},
	}
	cmd.Flags().StringVar(&o.dir, "out", "", "directory to write the report into (default report-RUN_ID)")
	return cmd
}

func reportRun(ctx context.Context, o reportOptions) error {
	if o.dir == "" {
		o.dir = "report-" + o.runID
	}
	r, err := report.Load(o.store, o.runID)
	if err != nil {
		return err
	}
	if o.history != nil {
		r.Histories, o.histErr = o.history.History(ctx, o.runID)
	}
	var notFound *serviceerror.NotFound
	switch {
	case errors.As(o.histErr, &notFound):
		r.HistoryNote = "the server no longer has this workflow's history (past the namespace's retention?)"
	case o.histErr != nil:
		r.HistoryNote = "the workflow history could not be read"
		fmt.Fprintf(o.errOut, "alignflow report: no stage timeline: %v\n", o.histErr)
	}
	files, err := report.Render(r)
	if err != nil {
		return err
	}
	var log bytes.Buffer
	if err := metrics.WriteJSONL(&log, r.Points); err != nil {
		return err
	}
	files = append(files, report.File{Name: metrics.File, Data: log.Bytes()})
	if err := report.WriteDir(o.dir, files); err != nil {
		return err
	}
	abs, _ := filepath.Abs(o.dir)
	fmt.Fprintf(o.out, "Report of run %s (%d files, %d metric points): %s\n", o.runID, len(files), len(r.Points), filepath.Join(abs, report.HTML))
	return nil
}
