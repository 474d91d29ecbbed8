package report

import (
	"bytes"
	"fmt"
	"html/template"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/extension"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"

	"github.com/alignflow/alignflow/data/rewardbench"
	"github.com/alignflow/alignflow/ops/metrics"
	"github.com/alignflow/alignflow/ops/temporalconn"
	"github.com/alignflow/alignflow/pipeline"
)

// Names of the report's pages.
const (
	Markdown = "report.md"
	HTML     = "report.html"
)

// Run is what a run's report shows. Summary or Comparison is nil until
// the run finishes; the report then shows what the metrics log has so far.
type Run struct {
	WorkflowID string
	Summary    *pipeline.Summary
	Comparison *pipeline.ComparisonReport
	Points     []metrics.Point
	// Histories are the workflow's runs (oldest first) for the timeline;
	// HistoryNote says why there are none.
	Histories   []*historypb.History
	HistoryNote string
}

// File is one file of a report.
type File struct {
	Name string
	Data []byte
}

// Render draws the charts and writes report.md and report.html, which
// show them (PNG, with the SVG linked) beside the tables.
func Render(r Run) ([]File, error) {
	var b strings.Builder
	var charts []chart
	add := func(c chart, err error) error {
		if err != nil {
			return err
		}
		charts = append(charts, c)
		fmt.Fprintf(&b, "![%s](%s.png)\n\n[SVG](%s.svg)\n\n", c.title, c.name, c.name)
		return nil
	}
	name, status := r.WorkflowID, unfinished(r.Histories)
	switch {
	case r.Summary != nil:
		name, status = r.Summary.Name, "finished"
	case r.Comparison != nil:
		name, status = r.Comparison.Name, "finished"
	}
	fmt.Fprintf(&b, "# Run report: %s\n\nWorkflow `%s`, %s. Metrics log: %d points (`%s`).\n\n", esc(name), r.WorkflowID, status, len(r.Points), metrics.File)
	if s := r.Summary; s != nil {
		outcome(&b, s)
	}

	if err := trainingCurves(&b, r, add); err != nil {
		return nil, err
	}
	if r.Comparison == nil {
		if err := reinforceCurves(&b, r, add); err != nil {
			return nil, err
		}
	}
	if s := r.Summary; s != nil && len(s.RewardModel.ByStrength) > 0 {
		b.WriteString("## Reward model accuracy by |strength|\n\n")
		fmt.Fprintf(&b, "Held-out accuracy %s%% on %d pairs (recipe %s).\n\n", pct(s.RewardModel.HeldoutAccuracy), s.RewardModel.HeldoutPairs, s.RewardModel.Recipe)
		var cats []string
		var acc []float64
		for _, g := range s.RewardModel.ByStrength {
			cats, acc = append(cats, fmt.Sprintf("|s|=%d (%d pairs)", g.Strength, g.Pairs)), append(acc, 100*g.Accuracy)
		}
		if err := add(groupedBars("reward-accuracy", "Reward-model held-out accuracy by |strength|", percent, cats, []barGroup{{name: s.RewardModel.Recipe, values: acc}})); err != nil {
			return nil, err
		}
	}
	if c := r.Comparison; c != nil {
		if err := comparisonCharts(&b, c, add); err != nil {
			return nil, err
		}
	}
	if err := timeline(&b, r, add); err != nil {
		return nil, err
	}
	if s := r.Summary; s != nil && len(s.Samples) > 0 {
		samples(&b, s)
	}
	if c := r.Comparison; c != nil {
		// The paper-shaped tables, a level down.
		md := ComparisonMarkdown(c)
		md = strings.Replace(md, "# Reward model comparison: ", "## Reward model comparison: ", 1)
		b.WriteString(strings.ReplaceAll(md, "\n## ", "\n### "))
	}

	md := b.String()
	files := []File{{Name: Markdown, Data: []byte(md)}}
	page, err := htmlPage(name, md)
	if err != nil {
		return nil, err
	}
	files = append(files, File{Name: HTML, Data: page})
	for _, c := range charts {
		for _, format := range []string{"png", "svg"} {
			data, err := c.encode(format)
			if err != nil {
				return nil, err
			}
			files = append(files, File{Name: c.name + "." + format, Data: data})
		}
	}
	return files, nil
}

// unfinished says how a run without a summary stands, from how its
// latest workflow run closed.
func unfinished(runs []*historypb.History) string {
	const going, logged = "in progress (the charts show the metrics logged so far)", " (the charts show what it logged)"
	if len(runs) == 0 {
		return going
	}
	switch last := temporalconn.ParseRun(runs[len(runs)-1]); last.Status {
	case enumspb.WORKFLOW_EXECUTION_STATUS_FAILED:
		return "failed: " + esc(short(last.Failure, 300)) + logged
	case enumspb.WORKFLOW_EXECUTION_STATUS_TERMINATED:
		return "terminated" + logged
	case enumspb.WORKFLOW_EXECUTION_STATUS_CANCELED:
		return "canceled" + logged
	case enumspb.WORKFLOW_EXECUTION_STATUS_TIMED_OUT:
		return "timed out" + logged
	}
	return going
}

func outcome(b *strings.Builder, s *pipeline.Summary) {
	p := s.Policy
	fmt.Fprintf(b, "Seed %d, backend %s, %d REINFORCE iterations", s.Seed, s.Backend, p.Iterations)
	if p.StoppedEarly {
		b.WriteString(" (stopped early)")
	}
	if s.RewardModel.LeftOut {
		fmt.Fprintf(b, ", %d workflow run(s). No reward model: reward.model_weight is 0, the verifier's rewards alone.\n\n", max(s.Runs, 1))
	} else {
		fmt.Fprintf(b, ", %d workflow run(s). Reward model: %s, held-out accuracy %s%%.\n\n", max(s.Runs, 1), s.RewardModel.Recipe, pct(s.RewardModel.HeldoutAccuracy))
	}
	b.WriteString("## Before and after alignment\n\n")
	rows := [][]string{{"gold score", optional(p.GoldScoreBefore), optional(p.GoldScoreAfter)}}
	if p.VerifierBefore != nil || p.VerifierAfter != nil {
		rows = append(rows, []string{"verifier pass rate", optional(p.VerifierBefore), optional(p.VerifierAfter)})
	}
	if !s.RewardModel.LeftOut {
		rows = append(rows, []string{"reward", num(p.RewardBefore), num(p.RewardAfter)})
	}
	rows = append(rows, [][]string{
		{"KL of whole responses, nats", num(p.KLSequenceBefore), num(p.KLSequenceAfter)},
		{"KL penalty (" + p.KLEstimator + ")", num(p.KLPenaltyBefore), num(p.KLPenaltyAfter)},
		{"mean length, tokens", num(p.LengthBefore), num(p.LengthAfter)},
		{"EOS fraction", num(p.EndedBefore), num(p.EndedAfter)},
	}...)
	mdTable(b, []string{fmt.Sprintf("on %d held-out prompts", p.EvalPrompts), "SFT policy", "aligned policy"}, rows)
	b.WriteString("\n")
	if sm := p.Sampling; sm != nil {
		fmt.Fprintf(b, "Dynamic sampling drew %d rounds of prompts over %d iterations: %d uniform groups were left out, %d were trained on to fill a batch, %d groups beyond a full batch were left out.\n\n",
			sm.Rounds, p.Iterations, sm.Dropped, sm.Filled, sm.Surplus)
	}
}

func trainingCurves(b *strings.Builder, r Run, add func(chart, error) error) error {
	sft := metrics.Of(r.Points, metrics.Series{Stage: pipeline.StageSFT})
	rm := metrics.SeriesOf(r.Points, pipeline.StageRewardModel)
	if len(sft) == 0 && len(rm) == 0 {
		return nil
	}
	b.WriteString("## Training loss\n\n")
	if len(sft) > 0 {
		xs, ys := curve(sft, "loss")
		if err := add(lineChart("sft-loss", "SFT loss", "step", "loss (nats per token)", []line{{name: "sft", xs: xs, ys: ys}})); err != nil {
			return err
		}
	} else if s := r.Summary; s != nil && s.SFT.ReusedFrom != "" {
		fmt.Fprintf(b, "SFT was reused from run `%s`; its loss curve is in that run's report.\n\n", s.SFT.ReusedFrom)
	}
	if len(rm) > 0 {
		var lines []line
		for _, s := range rm {
			xs, ys := curve(metrics.Of(r.Points, s), "loss")
			lines = append(lines, line{name: strings.TrimPrefix(s.String(), pipeline.StageRewardModel+" "), xs: xs, ys: ys})
		}
		if err := add(lineChart("reward-model-loss", "Reward-model loss", "step of the phase", "loss", lines)); err != nil {
			return err
		}
	}
	return nil
}

// reinforceCurves draws the REINFORCE curve from the metrics log, or from
// the summary's curve for runs that logged none.
func reinforceCurves(b *strings.Builder, r Run, add func(chart, error) error) error {
	var it, reward, gold, kl, length, eos []float64
	var pts []metrics.Point
	for _, s := range metrics.SeriesOf(r.Points, pipeline.StageReinforce) {
		pts = append(pts, metrics.Of(r.Points, s)...)
	}
	get := func(m map[string]float64, k string) float64 {
		if v, ok := m[k]; ok {
			return v
		}
		return math.NaN()
	}
	for _, p := range pts {
		it = append(it, float64(p.Step))
		reward, gold, kl = append(reward, get(p.Metrics, "reward_mean")), append(gold, get(p.Metrics, "gold_mean")), append(kl, get(p.Metrics, "kl"))
		length, eos = append(length, get(p.Metrics, "mean_length")), append(eos, get(p.Metrics, "eos_fraction"))
	}
	if len(pts) == 0 && r.Summary != nil {
		for _, c := range r.Summary.Curve {
			it, reward, kl, eos = append(it, float64(c.Iteration+1)), append(reward, c.RewardMean), append(kl, c.KLMean), append(eos, c.EndedFraction)
			g := math.NaN()
			if c.GoldMean != nil {
				g = *c.GoldMean
			}
			gold = append(gold, g)
			l := math.NaN()
			if c.MeanLength > 0 {
				l = c.MeanLength
			}
			length = append(length, l)
		}
	}
	if len(it) == 0 {
		return nil
	}
	b.WriteString("## REINFORCE, per iteration\n\n")
	b.WriteString("Means over each iteration's rollouts: the reward model's score, the gold rubric's score (generated data only), the per-token KL penalty the update trained against, the response length and the fraction of responses that ended with EOS.\n\n")
	lines := []line{{name: "reward (reward model)", xs: it, ys: reward}}
	if slices.ContainsFunc(gold, func(v float64) bool { return !math.IsNaN(v) }) {
		lines = append(lines, line{name: "gold score", xs: it, ys: gold})
	}
	for _, c := range []struct {
		name, title, y string
		lines          []line
	}{
		{"reinforce-reward", "Reward and gold score", "mean score", lines},
		{"reinforce-kl", "KL penalty to the reference", "per-token KL", []line{{name: "kl", xs: it, ys: kl}}},
		{"reinforce-length", "Mean response length", "tokens", []line{{name: "mean length", xs: it, ys: length}}},
		{"reinforce-eos", "Responses ended with EOS", "fraction", []line{{name: "EOS fraction", xs: it, ys: eos}}},
	} {
		if err := add(lineChart(c.name, c.title, "iteration", c.y, c.lines)); err != nil {
			return err
		}
	}
	return nil
}

func comparisonCharts(b *strings.Builder, c *pipeline.ComparisonReport, add func(chart, error) error) error {
	b.WriteString("## Reward-model variants\n\n")
	strengths := strengthsOf(c.Variants)
	cats := []string{"held-out"}
	for _, s := range strengths {
		cats = append(cats, fmt.Sprintf("|s|=%d", s))
	}
	var groups []barGroup
	for _, v := range c.Variants {
		vals := []float64{100 * v.Eval.HeldoutAccuracy}
		for _, s := range strengths {
			x := math.NaN()
			for _, g := range v.Eval.ByStrength {
				if g.Strength == s {
					x = 100 * g.Accuracy
				}
			}
			vals = append(vals, x)
		}
		groups = append(groups, barGroup{name: v.Recipe, values: vals})
	}
	if err := add(groupedBars("comparison-accuracy", "Held-out accuracy by variant", percent, cats, groups)); err != nil {
		return err
	}
	bench := categoryNames(c.Variants, func(e pipeline.RewardEval) *rewardbench.Report { return e.Bench })
	if len(bench) == 0 {
		return nil
	}
	groups = nil
	for _, v := range c.Variants {
		vals := []float64{math.NaN()}
		if e := v.Eval.Bench; e != nil && e.Overall != nil {
			vals[0] = 100 * *e.Overall
		}
		for _, name := range bench {
			x := math.NaN()
			if e := v.Eval.Bench; e != nil {
				for _, cat := range e.Categories {
					if cat.Name == name && cat.Score != nil {
						x = 100 * *cat.Score
					}
				}
			}
			vals = append(vals, x)
		}
		groups = append(groups, barGroup{name: v.Recipe, values: vals})
	}
	return add(groupedBars("comparison-bench", "Bench categories by variant", percent, append([]string{"overall"}, bench...), groups))
}

func timeline(b *strings.Builder, r Run, add func(chart, error) error) error {
	b.WriteString("## Stage timeline\n\n")
	acts := Timeline(r.Histories)
	if len(acts) == 0 {
		note := r.HistoryNote
		if note == "" {
			note = "the workflow history has no activities yet"
		}
		fmt.Fprintf(b, "No timeline: %s.\n\n", note)
		return nil
	}
	stages := Stages(acts)
	b.WriteString("From the workflow history: each stage from its first activity's scheduling to its last one's end. Temporal records only an activity's last attempt, with the failure before it, so a retried activity's earlier attempts and the waits between them show together (red in the chart, \"lost\" below).\n\n")
	if err := add(timelineChart(stages, acts)); err != nil {
		return err
	}
	t0 := stages[0].Start
	var rows [][]string
	for _, s := range stages {
		rows = append(rows, []string{esc(s.Stage), seconds(s.Start.Sub(t0)), seconds(s.End.Sub(s.Start)), fmt.Sprint(s.Activities), fmt.Sprint(s.Attempts), fmt.Sprint(s.Retried), seconds(s.Lost)})
	}
	mdTable(b, []string{"stage", "starts at", "took", "activities", "attempts", "retried", "lost to retries"}, rows)
	if busy := BusyOf(acts); busy.Rollouts > 0 && busy.Updates > 0 {
		fmt.Fprintf(b, "\nREINFORCE: rollout shards ran %s, updates %s, both at once %s (asynchronous rollouts, `reinforce.max_staleness`, overlap them; the chart's last two rows show each activity).\n",
			seconds(busy.Rollouts), seconds(busy.Updates), seconds(busy.Both))
	}
	rows = nil
	for _, a := range acts {
		if a.Retried() || a.Outcome != temporalconn.Completed {
			rows = append(rows, []string{esc(a.Stage), a.Type, fmt.Sprint(a.Attempts), string(a.Outcome), seconds(a.Lost()), esc(short(a.LastFailure, 160))})
		}
	}
	if len(rows) > 0 {
		b.WriteString("\nActivities that were retried or did not complete:\n\n")
		mdTable(b, []string{"stage", "activity", "attempts", "outcome", "before the last attempt", "last failure"}, rows)
	}
	b.WriteString("\n")
	return nil
}

func samples(b *strings.Builder, s *pipeline.Summary) {
	b.WriteString("## Samples before and after alignment\n\n")
	b.WriteString("The same held-out prompts and sampling seed; gold is the rubric's score, reward the reward model's.\n\n")
	var rows [][]string
	for _, p := range s.Samples {
		rows = append(rows, []string{esc(short(p.Prompt, 200)), esc(short(p.Before.Response, 300)), fmt.Sprintf("%.2f / %.2f", p.Before.Gold, p.Before.Reward),
			esc(short(p.After.Response, 300)), fmt.Sprintf("%.2f / %.2f", p.After.Gold, p.After.Reward)})
	}
	mdTable(b, []string{"prompt", "SFT policy", "gold / reward", "aligned policy", "gold / reward"}, rows)
	b.WriteString("\n")
}

// curve is a metric of points, by step.
func curve(pts []metrics.Point, key string) (xs, ys []float64) {
	for _, p := range pts {
		if v, ok := p.Metrics[key]; ok {
			xs, ys = append(xs, float64(p.Step)), append(ys, v)
		}
	}
	return xs, ys
}

func mdTable(b *strings.Builder, head []string, rows [][]string) {
	var sb strings.Builder
	table(&sb, head, rows)
	b.WriteString(sb.String())
}

func num(v float64) string { return fmt.Sprintf("%.3f", v) }

func optional(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return num(*v)
}

func short(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}

// esc makes text safe inside a Markdown table cell: Markdown's punctuation
// escaped, line breaks shown as ↵.
func esc(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n':
			b.WriteString(" ↵ ")
		case r == '\r' || r == '\t':
			b.WriteRune(' ')
		case strings.ContainsRune("\\`*_[]<>|", r):
			b.WriteRune('\\')
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

var page = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>alignflow report: {{.Title}}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #eee; }
code { background: #f5f5f5; padding: 0 0.2em; }
</style></head>
<body>
{{.Body}}
<footer><p><small>Written by alignflow at {{.When}}.</small></p></footer>
</body></html>
`))

// htmlPage renders the Markdown (GitHub tables) into a page that needs no
// network: the charts are files beside it.
func htmlPage(title, md string) ([]byte, error) {
	var body bytes.Buffer
	if err := goldmark.New(goldmark.WithExtensions(extension.Table)).Convert([]byte(md), &body); err != nil {
		return nil, fmt.Errorf("render report.html: %w", err)
	}
	var out bytes.Buffer
	err := page.Execute(&out, struct {
		Title string
		Body  template.HTML
		When  string
	}{title, template.HTML(body.String()), time.Now().UTC().Format(time.RFC3339)})
	if err != nil {
		return nil, fmt.Errorf("render report.html: %w", err)
	}
	return out.Bytes(), nil
}
