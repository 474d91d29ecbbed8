package main

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/alignflow/alignflow/ops/devserver"
	"github.com/alignflow/alignflow/ops/report"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/workflows"
)

func rewardCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "reward", Short: "Reward models: compare the paper's training recipes on the same data"}
	var (
		file     string
		embedded bool
		id       string
		port     int
	)
	compare := &cobra.Command{
		Use:   "compare --config FILE",
		Short: "Train reward-model variants side by side (RewardModelComparison workflow) and print the report",
		Long: `Trains the variants listed in the spec's compare.variants (default: all nine recipes) on
the same matched data and SFT backbone, as parallel durable activities, and writes
comparison.json and comparison.md to <data-dir>/runs/<workflow-id>/.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			spec, c, err := loadRun(cmd, file, "examples/reward-compare.yaml")
			if err != nil {
				return err
			}
			if id == "" {
				id = defaultRunID("compare", spec.Name, time.Now())
			}
			out := cmd.OutOrStdout()
			var result pipeline.ComparisonReport
			elapsed, err := execute(cmd.Context(), c, embedded, port, out, workflows.ComparisonName, id, spec, &result)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "\nComparison %s finished in %s\n\n%s\n", id, elapsed.Round(time.Second), report.ComparisonMarkdown(&result))
			abs, _ := filepath.Abs(c.DataDir)
			fmt.Fprintf(out, "Report: %s\n        %s\n", result.MarkdownPath, result.ReportPath)
			if result.HTMLPath != "" {
				fmt.Fprintf(out, "        %s (charts)\n", result.HTMLPath)
			}
			fmt.Fprintf(out, "Artifacts: %s\n", filepath.Join(abs, "runs", id))
			inspectHints(out, c, embedded, id)
			return nil
		},
	}
	compare.Flags().StringVar(&file, "config", "", "spec file (YAML, JSON or TOML); compare.variants picks the recipes")
	compare.Flags().BoolVar(&embedded, "embedded", false, "start an in-process Temporal server and worker for the duration of the run")
	compare.Flags().StringVar(&id, "id", "", "workflow ID, which names the run's folder in the store: "+pipeline.RunIDRule+" (default compare-<name>-<time>)")
	compare.Flags().IntVar(&port, "port", devserver.DefaultPort, "with --embedded: the server's port (a free one is used if it is taken)")
	cmd.AddCommand(compare)
	return cmd
}
