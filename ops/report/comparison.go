package report

import (
	"fmt"
	"slices"
	"strings"

	"github.com/alignflow/alignflow/data/helpsteer"
	"github.com/alignflow/alignflow/data/rewardbench"
	"github.com/alignflow/alignflow/pipeline"
)

// ComparisonMarkdown renders the comparison as tables shaped like the paper's:
// held-out preference accuracy overall and per |strength|, RewardBench-style
// category scores, how well the outputs fit the ratings, and training cost.
// The WriteReport activity writes it beside the JSON report; the CLI prints it.
func ComparisonMarkdown(r *pipeline.ComparisonReport) string {
	var b strings.Builder
	d := r.Data
	fmt.Fprintf(&b, "# Reward model comparison: %s\n\n", r.Name)
	fmt.Fprintf(&b, "Workflow `%s`, seed %d, backend %s. Data: %d ratings, %d preferences (%d train / %d held-out pairs; %d ties left out of training and accuracy). ",
		r.WorkflowID, r.Seed, r.Backend, d.RatingRows, d.PreferenceRows, d.TrainPairs, d.ValidationPairs, d.TiesExcluded)
	fmt.Fprintf(&b, "Every variant starts from the same SFT backbone (%d steps).\n\n", r.SFT.Steps)
	accuracySection(&b, r)
	ratingFitSection(&b, r.Variants)
	rewardBenchSection(&b, r.Variants)
	benchSubsetsSection(&b, r.Variants)
	return b.String()
}

// accuracySection is the paper's table: held-out accuracy overall and by
// |strength|, the bench's categories, the correlation with helpfulness and
// each variant's training budget, with what the columns mean.
func accuracySection(b *strings.Builder, r *pipeline.ComparisonReport) {
	strengths := strengthsOf(r.Variants)
	cats := categoryNames(r.Variants, func(e pipeline.RewardEval) *rewardbench.Report { return e.Bench })
	b.WriteString("## Accuracy\n\n")
	head := []string{"variant", "held-out acc"}
	for _, s := range strengths {
		head = append(head, fmt.Sprintf("\\|s\\|=%d", s))
	}
	if len(cats) > 0 {
		head = append(head, "bench overall")
		head = append(head, cats...)
	}
	head = append(head, "helpfulness r", "starts from", "own steps", "total steps", "train s")
	var rows [][]string
	for _, v := range r.Variants {
		rows = append(rows, accuracyRow(r, v, strengths, cats))
	}
	table(b, head, rows)
	if len(r.Variants) == 0 {
		return
	}
	e := r.Variants[0].Eval
	fmt.Fprintf(b, "\nHeld-out accuracy is on %d validation pairs (chosen scored above rejected; ties excluded). ", e.HeldoutPairs)
	if e.Bench != nil {
		fmt.Fprintf(b, "Bench columns score a RewardBench-format pair set built from the held-out prompts (%d pairs), category = weighted mean of its subsets, overall = mean of the categories with data. ", benchPairs(e.Bench))
	}
	b.WriteString("Helpfulness r is the Pearson correlation of the reward with the rated helpfulness of validation responses. ")
	b.WriteString("Own steps are the variant's own training (train s its seconds); total steps add the steps of the models it starts from, the training budget behind it. ")
	b.WriteString("n/a: no pairs of that kind (the opposites task has no safety content, so its bench has no Safety subsets).")
	if slices.ContainsFunc(r.Variants, func(v pipeline.VariantReport) bool { return !v.Requested }) {
		b.WriteString(" * trained only because a requested variant starts from it.")
	}
	b.WriteString("\n")
}

// accuracyRow is one variant's row of the accuracy table.
func accuracyRow(r *pipeline.ComparisonReport, v pipeline.VariantReport, strengths []int, cats []string) []string {
	e := v.Eval
	row := []string{recipeLabel(v), pct(e.HeldoutAccuracy)}
	for _, s := range strengths {
		cell := "n/a"
		for _, g := range e.ByStrength {
			if g.Strength == s {
				cell = pct(g.Accuracy)
			}
		}
		row = append(row, cell)
	}
	if len(cats) > 0 {
		row = append(row, categoryCells(e.Bench, cats)...)
	}
	help := "n/a"
	if len(e.Ratings) > 0 {
		help = fmt.Sprintf("%.3f", e.Ratings[0].Pearson)
	}
	from := "SFT backbone"
	if m := r.Data.Model; m != nil && m.RewardSource != "" {
		from = "reward.path"
	}
	if v.InitFrom != "" {
		from = v.InitFrom
	}
	return append(row, help, from, fmt.Sprint(v.Model.Steps), fmt.Sprint(v.TotalSteps), fmt.Sprintf("%.0f", v.Model.Seconds))
}

// ratingFitSection compares each variant's outputs with the validation
// ratings, where its training makes the comparison meaningful.
func ratingFitSection(b *strings.Builder, variants []pipeline.VariantReport) {
	b.WriteString("\n## Fit to the validation ratings (RMSE / Pearson r)\n\n")
	b.WriteString("Only outputs trained by regression predict ratings on their scale; the BT variants' helpfulness output is a reward, so only its correlation is meaningful.\n\n")
	head := append([]string{"variant"}, helpsteer.AttributeNames[:]...)
	var rows [][]string
	for _, v := range variants {
		if len(v.Eval.Ratings) == 0 {
			continue
		}
		row := []string{recipeLabel(v)}
		for k, f := range v.Eval.Ratings {
			switch {
			case v.Recipe == "regression" || (k == 0 && v.Recipe == "regression-helpfulness"):
				row = append(row, fmt.Sprintf("%.2f / %.3f", f.RMSE, f.Pearson))
			case k == 0:
				row = append(row, fmt.Sprintf("- / %.3f", f.Pearson))
			default:
				row = append(row, "-")
			}
		}
		rows = append(rows, row)
	}
	if len(rows) == 0 {
		b.WriteString("No validation ratings in the data.\n")
		return
	}
	table(b, head, rows)
}

// rewardBenchSection scores compare.rewardbench's file, when given.
func rewardBenchSection(b *strings.Builder, variants []pipeline.VariantReport) {
	cats := categoryNames(variants, func(e pipeline.RewardEval) *rewardbench.Report { return e.RewardBench })
	if len(cats) == 0 {
		return
	}
	b.WriteString("\n## RewardBench file\n\n")
	var rows [][]string
	for _, v := range variants {
		rows = append(rows, append([]string{recipeLabel(v)}, categoryCells(v.Eval.RewardBench, cats)...))
	}
	table(b, append([]string{"variant", "overall"}, cats...), rows)
}

// benchSubsetsSection is each variant's accuracy on every subset of the
// bench built from held-out prompts.
func benchSubsetsSection(b *strings.Builder, variants []pipeline.VariantReport) {
	e := firstBench(variants)
	if e == nil {
		return
	}
	b.WriteString("\n## Bench subsets (accuracy)\n\n")
	head := []string{"variant"}
	for _, s := range e.Subsets {
		head = append(head, s.Subset)
	}
	var rows [][]string
	for _, v := range variants {
		row := []string{recipeLabel(v)}
		for _, s := range e.Subsets {
			cell := "n/a"
			if v.Eval.Bench != nil {
				for _, got := range v.Eval.Bench.Subsets {
					if got.Subset == s.Subset {
						cell = pct(got.Accuracy)
					}
				}
			}
			row = append(row, cell)
		}
		rows = append(rows, row)
	}
	table(b, head, rows)
}

// strengthsOf lists the |strength| values the variants were evaluated on.
func strengthsOf(vs []pipeline.VariantReport) []int {
	var out []int
	for _, v := range vs {
		for _, s := range v.Eval.ByStrength {
			if !slices.Contains(out, s.Strength) {
				out = append(out, s.Strength)
			}
		}
	}
	slices.Sort(out)
	return out
}

func recipeLabel(v pipeline.VariantReport) string {
	s := v.Recipe
	if v.ExPOAlpha != 0 {
		s += fmt.Sprintf(" (alpha %.2f)", v.ExPOAlpha)
	}
	if !v.Requested {
		s += " *"
	}
	return s
}

func pct(v float64) string { return fmt.Sprintf("%.1f", 100*v) }

// categoryNames lists the categories of the first variant with a report.
func categoryNames(vs []pipeline.VariantReport, get func(pipeline.RewardEval) *rewardbench.Report) []string {
	for _, v := range vs {
		if rep := get(v.Eval); rep != nil {
			var names []string
			for _, c := range rep.Categories {
				names = append(names, c.Name)
			}
			return names
		}
	}
	return nil
}

// categoryCells returns the overall score, then each category's.
func categoryCells(rep *rewardbench.Report, cats []string) []string {
	if rep == nil {
		return slices.Repeat([]string{"n/a"}, len(cats)+1)
	}
	cells := []string{rewardbench.Percent(rep.Overall)}
	for _, name := range cats {
		cell := "n/a"
		for _, c := range rep.Categories {
			if c.Name == name {
				cell = rewardbench.Percent(c.Score)
			}
		}
		cells = append(cells, cell)
	}
	return cells
}

func firstBench(vs []pipeline.VariantReport) *rewardbench.Report {
	for _, v := range vs {
		if v.Eval.Bench != nil {
			return v.Eval.Bench
		}
	}
	return nil
}

func benchPairs(rep *rewardbench.Report) int {
	n := 0
	for _, s := range rep.Subsets {
		n += s.Pairs
	}
	return n
}

func table(b *strings.Builder, head []string, rows [][]string) {
	b.WriteString("| " + strings.Join(head, " | ") + " |\n|")
	for range head {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, r := range rows {
		b.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
}
