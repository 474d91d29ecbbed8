// Command harness measures alignflow's stages and writes the fixtures the
// PyTorch reference (bench/pytorch/reference.py) replays:
//
//	go run ./bench/harness -out DIR [-quick] [-stages a,b]
//
// For each stage (policy_train_step, reward_train_step, generation_batch1,
// generation_batch16, reinforce_iteration) it builds the model with a fixed
// seed, writes the fixtures to DIR (initial weights as safetensors, token
// batches and prompts as JSON, spec.json with every size and
// hyperparameter, checks/ with recorded outputs to verify against), runs
// warmup and timed steps and writes DIR/alignflow.json. bench/compare.sh
// runs it and the reference and prints them side by side.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/alignflow/alignflow/bench/benchkit"
	"github.com/alignflow/alignflow/model/backend"
)

// Report is alignflow.json.
type Report struct {
	Implementation string `json:"implementation"`
	Backend        string `json:"backend"`
	GoVersion      string `json:"go_version"`
	GOMAXPROCS     int    `json:"gomaxprocs"`
	CPU            string `json:"cpu"`
	Date           string `json:"date"`
	Quick          bool   `json:"quick"`
	Model          string `json:"model,omitempty"` // "" for the bundled model

	FixtureSec float64                     `json:"fixture_s"`
	Stages     map[string]*benchkit.Result `json:"stages"`
}

func main() {
	out := flag.String("out", "", "directory for the fixtures and alignflow.json (required)")
	quick := flag.Bool("quick", false, "few steps per stage (the quick comparison)")
	only := flag.String("stages", "", "comma-separated stages to run (default: all)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the stages' steps (not fixtures) to this file")
	backendName := flag.String("backend", backend.Go, `GoMLX backend: "go" (pure Go, matrix products on alignflow's kernel), "go-stock" (GoMLX's pure-Go backend as it comes), or "xla:/abs/path/plugin.so" in a build with -tags xla`)
	model := flag.String("model", "", `"" for the bundled model's five stages, or "`+benchkit.ScaleModelSmolLM2+`": a randomly initialised model of SmolLM2-135M's shape (train step, prefill, decode)`)
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "harness: -out DIR is required")
		flag.Usage()
		os.Exit(2)
	}
	if *model != "" && *model != benchkit.ScaleModelSmolLM2 {
		fmt.Fprintf(os.Stderr, "harness: -model %q is not known (known: %q)\n", *model, benchkit.ScaleModelSmolLM2)
		os.Exit(2)
	}
	if err := run(*out, *quick, *only, *cpuProfile, *backendName, *model); err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		os.Exit(1)
	}
}

func run(dir string, quick bool, only, cpuProfile, backendName, model string) error {
	be, err := backend.New(backendName)
	if err != nil {
		return err
	}
	t0 := time.Now()
	var counts benchkit.Counts
	var stages []*benchkit.Stage
	var write func(dir string, stages []string) error
	if model == "" {
		counts = benchkit.FullCounts
		if quick {
			counts = benchkit.QuickCounts
		}
		sizes := benchkit.DefaultSizes()
		f, err := benchkit.NewFixtures(be, sizes, counts, benchkit.LoadData(sizes))
		if err != nil {
			return err
		}
		stages, write = benchkit.Stages(be, f), f.Write
	} else {
		counts = benchkit.ScaleFullCounts
		if quick {
			counts = benchkit.ScaleQuickCounts
		}
		f, err := benchkit.NewScaleFixtures(benchkit.SmolLM2Sizes(), counts)
		if err != nil {
			return err
		}
		stages, write = benchkit.ScaleStages(be, f), f.Write
	}
	var names []string
	for _, st := range stages {
		names = append(names, st.Name)
	}
	var want []string
	if only != "" {
		want = strings.Split(only, ",")
		for _, w := range want {
			if !slices.Contains(names, w) {
				return fmt.Errorf("unknown stage %q (stages: %s)", w, strings.Join(names, ", "))
			}
		}
	}
	if want == nil {
		want = names
	}
	if err := write(dir, want); err != nil {
		return err
	}
	rep := &Report{
		Implementation: "alignflow", Backend: describe(backendName),
		GoVersion: runtime.Version(), GOMAXPROCS: runtime.GOMAXPROCS(0), CPU: cpuModel(),
		Date: time.Now().UTC().Format(time.RFC3339), Quick: quick, Model: model,
		FixtureSec: time.Since(t0).Seconds(), Stages: map[string]*benchkit.Result{},
	}
	fmt.Printf("alignflow: fixtures in %s (%.1f s)\n", dir, rep.FixtureSec)
	if cpuProfile != "" {
		pf, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	for _, st := range stages {
		if !slices.Contains(want, st.Name) {
			continue
		}
		warmup, steps := counts.For(st.Name)
		r, err := benchkit.Run(st, warmup, steps)
		if err != nil {
			return fmt.Errorf("%s: %w", st.Name, err)
		}
		if err := benchkit.WriteCheck(dir, st); err != nil {
			return err
		}
		rep.Stages[st.Name] = r
		loss := ""
		if r.InitialLoss != nil {
			loss = fmt.Sprintf("  loss %.6f -> %.6f", *r.InitialLoss, *r.FinalLoss)
		}
		fmt.Printf("alignflow: %-20s %8.4f s/step  %10.1f %-9s  prepare %.1f s  peak %.0f MiB  other CPU %.2f%s\n",
			st.Name, r.SecondsMedian, r.Throughput, r.Unit, r.PrepareSec, r.PeakRSSMB, r.OtherCPUCores, loss)
	}
	return benchkit.WriteJSON(filepath.Join(dir, "alignflow.json"), rep)
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return fmt.Sprintf("%s, %d cores", strings.TrimSpace(v), runtime.NumCPU())
		}
	}
	return runtime.GOARCH
}

// describe names the backend for the report.
func describe(name string) string {
	switch name {
	case backend.Go:
		return "fastgo: GoMLX v0.26.0 simplego (go:parallelism=-1), float32 DotGeneral on model/matmul"
	case backend.GoStock:
		return "GoMLX v0.26.0 simplego (go:parallelism=-1)"
	}
	return "GoMLX v0.26.0 " + name
}
