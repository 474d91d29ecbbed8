package main

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/data/helpsteer"
	"github.com/alignflow/alignflow/model/tokenizer"
	"github.com/alignflow/alignflow/reward"
)

// Data file formats `alignflow data check` reads.
var dataFormats = []string{"helpsteer2", "helpsteer2-preference", "rewardbench"}

func dataCmd() *cobra.Command {
	data := &cobra.Command{Use: "data", Short: "Inspect data files in HelpSteer2, HelpSteer2-Preference or RewardBench format"}
	var format string
	var skipInvalid bool
	var maxLen int
	check := &cobra.Command{
		Use:   "check --format FORMAT [--skip-invalid] [--max-len N] FILE",
		Short: "Validate a data file strictly and print its counts",
		Long: "Validate a data file and print its counts. By default the first invalid row is an error naming\n" +
			"file:line, field and reason; with --skip-invalid invalid rows are dropped, counted and the first\n" +
			"ones listed, and the check fails only if the file cannot be read or has no valid row.\n" +
			"For preferences it also counts the non-tie pairs a reward model with model.max_len N would leave out\n" +
			"(a response does not fit whole) and those it keeps with the prompt's start cut.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if maxLen < 8 {
				return fmt.Errorf("--max-len %d: must be at least 8 (model.max_len)", maxLen)
			}
			return checkDataWith(cmd.OutOrStdout(), format, args[0], helpsteer.ReadOptions{SkipInvalid: skipInvalid}, maxLen)
		},
	}
	check.Flags().StringVar(&format, "format", "", "file format: "+strings.Join(dataFormats, ", "))
	check.Flags().BoolVar(&skipInvalid, "skip-invalid", false, "drop invalid rows (reporting how many and the first errors) instead of failing at the first one")
	check.Flags().IntVar(&maxLen, "max-len", config.Default().Model.MaxLen, "model.max_len the preference pairs are fitted to")
	data.AddCommand(check)
	return data
}

// checkData loads path strictly (the first bad row is an error naming
// file:line and field) and prints counts.
func checkData(out io.Writer, format, path string) error {
	return checkDataWith(out, format, path, helpsteer.ReadOptions{}, config.Default().Model.MaxLen)
}

// tieKey labels the count of preference ties.
const tieKey = "ties (left out of Bradley-Terry training)"

// checkDataWith loads path with opts and prints the row count, one sorted
// "  key  count" line per count and, with SkipInvalid, how many rows were
// skipped and the first errors as file:line lines. Preference pairs are
// fitted to maxLen as reward-model training fits them.
func checkDataWith(out io.Writer, format, path string, opts helpsteer.ReadOptions, maxLen int) error {
	counts := map[string]int{}
	var report helpsteer.ReadReport
	var err error
	switch format {
	case "helpsteer2":
		var rs []helpsteer.Rating
		rs, report, err = helpsteer.LoadRatings(path, opts)
		prompts, multiTurn := map[string]bool{}, map[string]bool{}
		for _, r := range rs {
			counts["split "+splitName(r.Split)]++
			counts[fmt.Sprintf("helpfulness %d", r.Helpfulness)]++
			prompts[r.Prompt] = true
			if isMultiTurn(r.Prompt) {
				multiTurn[r.Prompt] = true
			}
		}
		counts["distinct prompts"] = len(prompts)
		counts["distinct multi-turn prompts"] = len(multiTurn)
	case "helpsteer2-preference":
		var ps []helpsteer.Preference
		ps, report, err = helpsteer.LoadPreferences(path, opts)
		counts[tieKey] = 0
		counts["multi-turn prompts"] = 0
		counts[fmt.Sprintf("pairs too long for max_len %d (left out)", maxLen)] = 0
		for _, p := range ps {
			counts["split "+p.Split]++
			counts[fmt.Sprintf("strength %+d", p.PreferenceStrength)]++
			counts[fmt.Sprintf("|strength| %d", p.Margin())]++
			if isMultiTurn(p.Prompt) {
				counts["multi-turn prompts"]++
			}
			if p.Tie() {
				counts[tieKey]++
				continue
			}
			_, cut, ok := reward.PairOf(tokenizer.EncodePrompt(p.Prompt), tokenizer.EncodeResponse(p.Chosen()),
				tokenizer.EncodeResponse(p.Rejected()), float64(p.Margin()), maxLen, 1)
			switch {
			case !ok:
				counts[fmt.Sprintf("pairs too long for max_len %d (left out)", maxLen)]++
			case cut:
				counts[fmt.Sprintf("pairs kept with the prompt's start cut (max_len %d)", maxLen)]++
			}
		}
	case "rewardbench":
		var ps []helpsteer.RewardBenchPair
		ps, report, err = helpsteer.LoadRewardBench(path, opts)
		for _, p := range ps {
			counts["subset "+p.Subset]++
		}
	default:
		return fmt.Errorf("--format %q: unknown format (allowed: %s)", format, strings.Join(dataFormats, ", "))
	}
	if err != nil {
		if opts.SkipInvalid && report.Skipped > 0 {
			printSkipped(out, report)
		}
		return err
	}
	fmt.Fprintf(out, "%s: %d rows, valid %s\n", path, report.Rows, format)
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(out, "  %-44s %d\n", k, counts[k])
	}
	if opts.SkipInvalid {
		printSkipped(out, report)
	}
	return nil
}

// printSkipped reports the rows a skipping load dropped.
func printSkipped(out io.Writer, report helpsteer.ReadReport) {
	fmt.Fprintf(out, "skipped %d invalid rows\n", report.Skipped)
	for _, e := range report.Errors {
		fmt.Fprintf(out, "  %s\n", e)
	}
	if more := report.Skipped - len(report.Errors); more > 0 {
		fmt.Fprintf(out, "  ... and %d more\n", more)
	}
}

// isMultiTurn reports whether a (validated) prompt has more than one turn.
func isMultiTurn(prompt string) bool { return strings.Contains(prompt, tokenizer.TurnMarker) }

func splitName(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
