package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/data/rewardbench"
	"github.com/alignflow/alignflow/examples"
	"github.com/alignflow/alignflow/ops/devserver"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/workflows"
)

func runCmd() *cobra.Command {
	var (
		file     string
		embedded bool
		id       string
		port     int
	)
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Submit an alignment run from a YAML/JSON spec and follow it to the end",
		RunE: func(cmd *cobra.Command, _ []string) error {
			spec, c, err := loadRun(cmd, file, "examples/tiny-run.yaml")
			if err != nil {
				return err
			}
			_, err = runAndFollow(cmd.Context(), c, spec, id, embedded, port, os.Stdout)
			return err
		},
	}
	cmd.Flags().StringVar(&file, "config", "", "run spec file (YAML, JSON or TOML)")
	cmd.Flags().BoolVar(&embedded, "embedded", false, "start an in-process Temporal server and worker for the duration of the run")
	cmd.Flags().StringVar(&id, "id", "", "workflow ID, which names the run's folder in the store: "+pipeline.RunIDRule+" (default alignment-<name>-<time>)")
	cmd.Flags().IntVar(&port, "port", devserver.DefaultPort, "with --embedded: the server's port (a free one is used if it is taken)")
	return cmd
}

func demoCmd() *cobra.Command {
	var port int
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the bundled tiny alignment end to end on an embedded Temporal server",
		RunE: func(cmd *cobra.Command, _ []string) error {
			spec, err := config.Parse(examples.TinyRun)
			if err != nil {
				return fmt.Errorf("bundled spec: %w", err)
			}
			if err := spec.Validate(); err != nil {
				return fmt.Errorf("bundled spec: %w", err)
			}
			c, err := connection(cmd)
			if err != nil {
				return err
			}
			fmt.Println("alignflow demo: SFT a tiny byte-level policy, train a reward model (Scaled BT from helpfulness regression) on matched")
			fmt.Println("HelpSteer2-format data, align the policy with REINFORCE, and compare it with the gold rubric.")
			s, err := runAndFollow(cmd.Context(), c, spec, "", true, port, os.Stdout)
			if err != nil {
				return err
			}
			before, after := s.Policy.GoldScoreBefore, s.Policy.GoldScoreAfter
			if before != nil && after != nil && *after <= *before {
				return &exitError{code: 2, err: fmt.Errorf("the gold score did not rise (%.3f -> %.3f)", *before, *after)}
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&port, "port", devserver.DefaultPort, "port of the embedded server (a free one is used if it is taken)")
	return cmd
}

// loadRun reads and checks a --config spec and the connection settings, so a
// bad spec is reported before any server is contacted.
func loadRun(cmd *cobra.Command, file, example string) (config.Spec, config.Connection, error) {
	if file == "" {
		return config.Spec{}, config.Connection{}, fmt.Errorf("--config FILE is required (see %s)", example)
	}
	spec, err := config.LoadFile(file)
	if err != nil {
		return spec, config.Connection{}, err
	}
	if err := checkSpec(spec, file); err != nil {
		return spec, config.Connection{}, err
	}
	c, err := connection(cmd)
	return spec, c, err
}

// checkSpec validates a spec and its files before anything starts.
func checkSpec(spec config.Spec, file string) error {
	err := spec.Validate()
	if err == nil {
		err = spec.CheckFiles()
	}
	if err != nil {
		return fmt.Errorf("config %s:\n  %s", file, strings.ReplaceAll(err.Error(), "\n", "\n  "))
	}
	return nil
}

// runAndFollow submits the run (starting an embedded server and worker first
// when asked), shows progress until it ends and prints the summary.
func runAndFollow(ctx context.Context, c config.Connection, spec config.Spec, id string, embedded bool, port int, out io.Writer) (*pipeline.Summary, error) {
	var s pipeline.Summary
	if id == "" {
		id = defaultRunID("alignment", spec.Name, time.Now())
	}
	elapsed, err := execute(ctx, c, embedded, port, out, workflows.AlignmentName, id, spec, &s)
	if err != nil {
		return nil, err
	}
	printSummary(out, &s, elapsed)
	abs, _ := filepath.Abs(c.DataDir)
	fmt.Fprintf(out, "\nData dir: %s\n  summary:   %s\n", abs, s.SummaryPath)
	if s.ReportPath != "" {
		fmt.Fprintf(out, "  report:    %s (charts, stage timeline, samples; `alignflow report %s` writes it again)\n", s.ReportPath, id)
	}
	fmt.Fprintf(out, "  artifacts: %s\n", filepath.Join(abs, "runs", id))
	inspectHints(out, c, embedded, id)
	return &s, nil
}

// execute starts workflow type wf with input (on an embedded server and
// worker when asked), follows its progress and decodes its result into
// result.
func execute(ctx context.Context, c config.Connection, embedded bool, port int, out io.Writer, wf, id string, input, result any) (time.Duration, error) {
	if err := pipeline.CheckRunID(id); err != nil {
		return 0, fmt.Errorf("--id: %w", err) // the workflow would refuse it too, after starting
	}
	if embedded {
		if err := os.MkdirAll(c.DataDir, 0o755); err != nil {
			return 0, fmt.Errorf("data dir %s: %w", c.DataDir, err)
		}
		srv, err := startEmbedded(ctx, c.DataDir, "127.0.0.1", port, c.Namespace)
		if err != nil && isPortInUse(err) && port != 0 {
			fmt.Fprintf(out, "Port %d is taken; the embedded server uses a free port instead.\n", port)
			srv, err = startEmbedded(ctx, c.DataDir, "127.0.0.1", 0, c.Namespace)
		}
		if err != nil {
			return 0, err
		}
		defer srv.Stop()
		c.Address = srv.FrontendHostPort()
		_, _, stopWorker, err := startWorker(ctx, c, workerFlags{})
		if err != nil {
			return 0, err
		}
		defer stopWorker()
		fmt.Fprintf(out, "Embedded Temporal server on %s, worker on task queue %s.\n", c.Address, c.TaskQueue)
	}
	cl, err := dial(ctx, c)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	// A workflow ID names the run's folder of artifacts: one alignment each
	// (the data stage refuses another; see activities' claimRun). Refusing
	// a used ID here says so before anything runs.
	opts := client.StartWorkflowOptions{ID: id, TaskQueue: c.TaskQueue, WorkflowIDReusePolicy: enums.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE}
	run, err := cl.ExecuteWorkflow(ctx, opts, wf, input)
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &started) {
		return 0, fmt.Errorf("start workflow %s: the ID is taken by another run (running or closed), whose artifacts are under runs/%s: choose another --id, or resume that run if it failed with `alignflow resume %s`: %w", id, id, id, err)
	}
	if err != nil {
		return 0, fmt.Errorf("start workflow %s: %w", id, err)
	}
	fmt.Fprintf(out, "Started workflow %s (run %s).\n", run.GetID(), run.GetRunID())
	start := time.Now()
	if err := follow(ctx, cl, run, out, result); err != nil {
		var app *temporal.ApplicationError
		if errors.As(err, &app) {
			return 0, fmt.Errorf("run %s failed (%s): %s", id, app.Type(), app.Error())
		}
		return 0, fmt.Errorf("run %s failed: %w", id, err)
	}
	elapsed := time.Since(start)
	if h, err := readHistory(ctx, cl, id); err == nil {
		h.printTemporalShare(out)
	}
	return elapsed, nil
}

// defaultRunID is the workflow ID of a run started without --id:
// kind-name-time, the spec's name made a safe fragment (pipeline.RunIDPart),
// so that any name gives an ID the workflow accepts.
func defaultRunID(kind, name string, now time.Time) string {
	return fmt.Sprintf("%s-%s-%s", kind, pipeline.RunIDPart(name, 100), now.UTC().Format("20060102-150405"))
}

// runIDArg is the Args of commands whose one argument is a run's workflow
// ID: one that cannot name a run's folder in the store (pipeline.RunIDRule;
// `report 'a/../../b'` would write outside the working directory) is
// refused before anything runs.
func runIDArg(cmd *cobra.Command, args []string) error {
	if err := cobra.ExactArgs(1)(cmd, args); err != nil {
		return err
	}
	return pipeline.CheckRunID(args[0])
}

// inspectHints prints the temporal CLI commands that show a finished run.
func inspectHints(out io.Writer, c config.Connection, embedded bool, id string) {
	abs, _ := filepath.Abs(c.DataDir)
	fmt.Fprintf(out, "Inspect the run with the temporal CLI (go install github.com/temporalio/cli/cmd/temporal@v1.5.1):\n")
	if embedded {
		fmt.Fprintf(out, "  alignflow dev --data-dir %s        # serves this history on 127.0.0.1:7233\n", abs)
	}
	addr := ""
	if !embedded && c.Address != config.DefaultAddress {
		addr = " --address " + c.Address
	}
	fmt.Fprintf(out, "  temporal workflow show%s --workflow-id %s\n  temporal workflow describe%s --workflow-id %s\n  temporal workflow list%s\n", addr, id, addr, id, addr)
}

// follow polls the run's progress query and its pending activity's heartbeat
// until the run ends, then decodes its result into result.
func follow(ctx context.Context, cl client.Client, run client.WorkflowRun, out io.Writer, result any) error {
	done := make(chan error, 1)
	go func() { done <- run.Get(ctx, result) }()
	tty := isTerminal(out)
	ticker := time.NewTicker(500 * time.Millisecond)
	defer ticker.Stop()
	var lastLine string
	var lastPrint time.Time
	completed := 0
	for {
		select {
		case err := <-done:
			if tty && lastLine != "" {
				fmt.Fprintln(out)
			}
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
		p, hb := poll(ctx, cl, run)
		if p == nil {
			continue
		}
		for ; completed < len(p.Completed); completed++ {
			if tty && lastLine != "" {
				fmt.Fprint(out, "\r\033[K")
				lastLine = ""
			}
			fmt.Fprintf(out, "  done  %s\n", p.Completed[completed])
		}
		line := progressLine(p, hb)
		if line == lastLine {
			continue
		}
		if tty {
			fmt.Fprintf(out, "\r\033[K%s", line)
			lastLine = line
		} else if time.Since(lastPrint) > 5*time.Second {
			fmt.Fprintln(out, line)
			lastLine, lastPrint = line, time.Now()
		}
	}
}

func poll(ctx context.Context, cl client.Client, run client.WorkflowRun) (*workflows.Progress, *pipeline.Progress) {
	qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	v, err := cl.QueryWorkflow(qctx, run.GetID(), run.GetRunID(), workflows.ProgressQuery)
	if err != nil {
		return nil, nil
	}
	var p workflows.Progress
	if v.Get(&p) != nil {
		return nil, nil
	}
	desc, err := cl.DescribeWorkflowExecution(qctx, run.GetID(), run.GetRunID())
	if err != nil {
		return &p, nil
	}
	for _, pa := range desc.GetPendingActivities() {
		if d := pa.GetHeartbeatDetails(); d != nil {
			var hb pipeline.Progress
			if converter.GetDefaultDataConverter().FromPayloads(d, &hb) == nil {
				return &p, &hb
			}
		}
	}
	return &p, nil
}

func progressLine(p *workflows.Progress, hb *pipeline.Progress) string {
	stage := p.Stage
	switch {
	case stage == pipeline.StageReinforce:
		line := fmt.Sprintf("  ....  reinforce  %s %d/%d iterations", bar(p.Iteration, p.Iterations), p.Iteration, p.Iterations)
		if l := p.Last; l != nil {
			if l.VerifierMean != nil { // the verifier's pass rate: with model_weight 0 the reward model's mean is 0
				line += fmt.Sprintf("  verifier %.3f", *l.VerifierMean)
			}
			line += fmt.Sprintf("  reward %.3f  kl penalty %.4f", l.RewardMean, l.KLMean)
			if l.GoldMean != nil {
				line += fmt.Sprintf("  gold %.3f", *l.GoldMean)
			}
		}
		return line
	case hb != nil && strings.HasPrefix(hb.Stage, stage) && hb.Total > 0,
		hb != nil && stage == workflows.StageRewardModels && hb.Total > 0:
		line := fmt.Sprintf("  ....  %s  %s %d/%d", hb.Stage, bar(hb.Step, hb.Total), hb.Step, hb.Total)
		if hb.Loss != 0 {
			line += fmt.Sprintf("  loss %.4f", hb.Loss)
		}
		return line
	}
	return fmt.Sprintf("  ....  %s", stage)
}

func bar(n, total int) string {
	const width = 24
	if total <= 0 {
		return ""
	}
	filled := min(width, n*width/total)
	return "[" + strings.Repeat("#", filled) + strings.Repeat(".", width-filled) + "]"
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// adapterNote says that a stage trained a LoRA adapter.
func adapterNote(m pipeline.StageModel) string {
	if m.Adapter == nil {
		return ""
	}
	return ", a LoRA adapter"
}

func printSummary(out io.Writer, s *pipeline.Summary, elapsed time.Duration) {
	gold := func(v *float64) string {
		if v == nil {
			return "n/a"
		}
		return fmt.Sprintf("%.3f", *v)
	}
	fmt.Fprintf(out, "\nRun %s (%s, seed %d, backend %s) finished in %s\n\n", s.WorkflowID, s.Name, s.Seed, s.Backend, elapsed.Round(time.Second))
	fmt.Fprintf(out, "  %-42s %s\n", "data", dataLine(s.Data))
	fmt.Fprintf(out, "  %-42s loss %.3f -> %.3f in %d steps (%.0fs)%s%s\n", "SFT policy", s.SFT.FirstLoss, s.SFT.FinalLoss, s.SFT.Steps, s.SFT.Seconds, adapterNote(s.SFT), reusedNote(s.SFT.ReusedFrom))
	if s.RewardModel.LeftOut {
		fmt.Fprintf(out, "  %-42s none: reward.model_weight is 0, the verifier's rewards alone\n", "reward model")
	} else {
		fmt.Fprintf(out, "  %-42s loss %.3f -> %.3f in %d steps (%.0fs)%s%s\n", "reward model ("+s.RewardModel.Recipe+")", s.RewardModel.FirstLoss, s.RewardModel.FinalLoss, s.RewardModel.Steps, s.RewardModel.Seconds, adapterNote(s.RewardModel.StageModel), reusedNote(s.RewardModel.ReusedFrom))
		fmt.Fprintf(out, "  %-42s %.3f on %d pairs (train %.3f; chance 0.5)\n", "reward model held-out accuracy", s.RewardModel.HeldoutAccuracy, s.RewardModel.HeldoutPairs, s.RewardModel.TrainAccuracy)
	}
	if len(s.RewardModel.ByStrength) > 0 {
		var parts []string
		for _, g := range s.RewardModel.ByStrength {
			parts = append(parts, fmt.Sprintf("%d: %.3f (%d)", g.Strength, g.Accuracy, g.Pairs))
		}
		fmt.Fprintf(out, "  %-42s %s\n", "  by |strength| (pairs)", strings.Join(parts, ", "))
	}
	if b := s.RewardModel.Bench; b != nil {
		var parts []string
		for _, c := range b.Categories {
			if c.Score != nil {
				parts = append(parts, fmt.Sprintf("%s %s", c.Name, rewardbench.Percent(c.Score)))
			}
		}
		fmt.Fprintf(out, "  %-42s overall %s (%s)\n", "reward model held-out bench", rewardbench.Percent(b.Overall), strings.Join(parts, ", "))
	}
	if s.RewardModel.ExPOAlpha != 0 {
		fmt.Fprintf(out, "  %-42s %.2f (chosen on validation pairs)\n", "ExPO alpha", s.RewardModel.ExPOAlpha)
	}
	fmt.Fprintf(out, "\n  %-22s %12s %12s\n", "policy (held-out)", "SFT", "REINFORCE")
	fmt.Fprintf(out, "  %-22s %12s %12s\n", "gold score (0-4)", gold(s.Policy.GoldScoreBefore), gold(s.Policy.GoldScoreAfter))
	if s.Policy.VerifierBefore != nil || s.Policy.VerifierAfter != nil {
		fmt.Fprintf(out, "  %-22s %12s %12s   (reward.verifier, held-out prompts with an answer)\n", "verifier pass rate", gold(s.Policy.VerifierBefore), gold(s.Policy.VerifierAfter))
	}
	if !s.RewardModel.LeftOut {
		fmt.Fprintf(out, "  %-22s %12.3f %12.3f\n", "reward model score", s.Policy.RewardBefore, s.Policy.RewardAfter)
	}
	fmt.Fprintf(out, "  %-22s %12.3f %12.3f\n", "ended with EOS", s.Policy.EndedBefore, s.Policy.EndedAfter)
	fmt.Fprintf(out, "  %-22s %12.1f %12.1f\n", "mean length (bytes)", s.Policy.LengthBefore, s.Policy.LengthAfter)
	fmt.Fprintf(out, "  %-22s %12.3f %12.3f   (sum of log-ratios over a response, nats)\n", "KL to reference", s.Policy.KLSequenceBefore, s.Policy.KLSequenceAfter)
	fmt.Fprintf(out, "  %-22s %12.3f %12.3f   (per-token mean, what REINFORCE penalises)\n", "KL penalty ("+s.Policy.KLEstimator+")", s.Policy.KLPenaltyBefore, s.Policy.KLPenaltyAfter)
	first, last := s.Policy.FirstIteration, s.Policy.LastIteration
	if n := len(s.Curve); n > 0 {
		first, last = &s.Curve[0], &s.Curve[n-1]
	}
	if first != nil && last != nil && first.GoldMean != nil && last.GoldMean != nil {
		fmt.Fprintf(out, "  %-22s %12.3f %12.3f   (first and last REINFORCE iteration)\n", "rollout gold (train)", *first.GoldMean, *last.GoldMean)
	}
	if sm := s.Policy.Sampling; sm != nil {
		fmt.Fprintf(out, "  dynamic sampling: %d rounds over %d iterations; %d uniform groups dropped, %d trained to fill batches, %d beyond the batch\n",
			sm.Rounds, s.Policy.Iterations, sm.Dropped, sm.Filled, sm.Surplus)
	}
	if len(s.Samples) > 0 {
		fmt.Fprintf(out, "\n  %-20s %-30s %-30s\n", "prompt", "SFT", "REINFORCE")
		for _, sp := range s.Samples {
			fmt.Fprintf(out, "  %-20s %-30s %-30s\n", quote(sp.Prompt, 20), quote(sp.Before.Response, 30), quote(sp.After.Response, 30))
		}
	}
}

// dataLine says what a run's data held and what of it the reward model
// could not use.
func dataLine(d pipeline.Data) string {
	line := fmt.Sprintf("%d ratings, %d preferences (%d train / %d held-out pairs, %d ties excluded",
		d.RatingRows, d.PreferenceRows, d.TrainPairs, d.ValidationPairs, d.TiesExcluded)
	if n := d.DroppedTrainPairs + d.DroppedValidationPairs; n > 0 {
		line += fmt.Sprintf(", %d too long for model.max_len dropped (%d train, %d held-out)", n, d.DroppedTrainPairs, d.DroppedValidationPairs)
	}
	if d.TruncatedPairs > 0 {
		line += fmt.Sprintf(", %d with the prompt's start cut", d.TruncatedPairs)
	}
	if d.SkippedRows > 0 {
		line += fmt.Sprintf(", %d invalid rows skipped", d.SkippedRows)
	}
	return line + ")"
}

func quote(s string, width int) string {
	q := fmt.Sprintf("%q", s)
	if len(q) > width {
		q = q[:width-3] + "..."
	}
	return q
}
