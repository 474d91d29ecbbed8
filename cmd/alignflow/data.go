package main

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/alignflow/alignflow/helpsteer"
)

// Data file formats `alignflow data check` reads.
var dataFormats = []string{"helpsteer2", "helpsteer2-preference", "rewardbench"}

func dataCmd() *cobra.Command {
	data := &cobra.Command{Use: "data", Short: "Inspect data files in HelpSteer2, HelpSteer2-Preference or RewardBench format"}
	var format string
	check := &cobra.Command{
		Use:   "check --format FORMAT FILE",
		Short: "Validate a data file strictly and print its counts",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return checkData(cmd.OutOrStdout(), format, args[0])
		},
	}
	check.Flags().StringVar(&format, "format", "", "file format: "+strings.Join(dataFormats, ", "))
	data.AddCommand(check)
	return data
}

// checkData loads path strictly (the first bad row is an error naming
// file:line and field) and prints counts.
func checkData(out io.Writer, format, path string) error {
	counts := map[string]int{}
	var rows int
	switch format {
	case "helpsteer2":
		rs, err := helpsteer.ReadRatings(path)
		if err != nil {
			return err
		}
		rows = len(rs)
		prompts := map[string]bool{}
		for _, r := range rs {
			counts["split "+splitName(r.Split)]++
			counts[fmt.Sprintf("helpfulness %d", r.Helpfulness)]++
			prompts[r.Prompt] = true
		}
		counts["distinct prompts"] = len(prompts)
	case "helpsteer2-preference":
		ps, err := helpsteer.ReadPreferences(path)
		if err != nil {
			return err
		}
		rows = len(ps)
		for _, p := range ps {
			counts["split "+p.Split]++
			counts[fmt.Sprintf("strength %+d", p.PreferenceStrength)]++
			if p.Tie() {
				counts["ties (left out of Bradley-Terry training)"]++
			}
		}
	case "rewardbench":
		ps, err := helpsteer.ReadRewardBench(path)
		if err != nil {
			return err
		}
		rows = len(ps)
		for _, p := range ps {
			counts["subset "+p.Subset]++
		}
	default:
		return fmt.Errorf("--format %q: unknown format (allowed: %s)", format, strings.Join(dataFormats, ", "))
	}
	fmt.Fprintf(out, "%s: %d rows, valid %s\n", path, rows, format)
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(out, "  %-44s %d\n", k, counts[k])
	}
	return nil
}

func splitName(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
