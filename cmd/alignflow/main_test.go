package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/examples"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/workflows"
)

// TestRunRejectsBadConfigBeforeStarting checks that `alignflow run` reports
// every invalid field of a spec (and a missing data file) without contacting a
// server: the address points nowhere, so getting past validation would fail
// differently.
func TestRunRejectsBadConfigBeforeStarting(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"bad values", "backend: tpu\nreinforce:\n  samples_per_prompt: 1\nsft:\n  learning_rate: 0\n",
			[]string{"backend", "allowed: go", "reinforce.samples_per_prompt", "sft.learning_rate"}},
		{"unknown field", "reinforce:\n  iterationz: 3\n", []string{"reinforce.iterationz", "unknown field"}},
		{"missing data file", "data:\n  ratings: /nonexistent/r.jsonl\n  preferences: /nonexistent/p.jsonl\n",
			[]string{"data.ratings", "/nonexistent/r.jsonl"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(dir, tc.name+".yaml")
			require.NoError(t, os.WriteFile(file, []byte(tc.yaml), 0o644))
			cmd := rootCmd()
			cmd.SetArgs([]string{"run", "--config", file, "--address", "127.0.0.1:1", "--data-dir", dir})
			err := cmd.ExecuteContext(context.Background())
			require.Error(t, err)
			assert.Contains(t, err.Error(), file)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestBundledSpecsAreValid(t *testing.T) {
	spec, err := config.Parse(examples.TinyRun)
	require.NoError(t, err)
	require.NoError(t, spec.Validate())
	fromYAML, err := config.LoadFile(filepath.Join("..", "..", "examples", "tiny-run.yaml"))
	require.NoError(t, err)
	assert.Equal(t, spec, fromYAML, "the YAML and JSON examples describe the same run")

	cmp, err := config.LoadFile(filepath.Join("..", "..", "examples", "reward-compare.yaml"))
	require.NoError(t, err)
	want := config.Default()
	want.Name = "reward-compare"
	assert.Equal(t, want, cmp, `the bundled comparison is the defaults, so --input '{"name": "reward-compare"}' starts the same one`)
}

func TestProgressLine(t *testing.T) {
	assert.Equal(t, "[############............]", bar(5, 10))
	line := progressLine(&workflows.Progress{Stage: pipeline.StageSFT}, &pipeline.Progress{Stage: pipeline.StageSFT, Step: 30, Total: 120, Loss: 1.5})
	assert.Contains(t, line, "sft")
	assert.Contains(t, line, "30/120")
	assert.Contains(t, line, "loss 1.5000")
	gold := 2.5
	line = progressLine(&workflows.Progress{Stage: pipeline.StageReinforce, Iteration: 3, Iterations: 40,
		Last: &pipeline.IterationResult{RewardMean: 0.4, GoldMean: &gold}}, nil)
	assert.Contains(t, line, "3/40 iterations")
	assert.Contains(t, line, "gold 2.500")
	assert.NotContains(t, line, "verifier")
	passed := 0.75
	line = progressLine(&workflows.Progress{Stage: pipeline.StageReinforce, Iteration: 3, Iterations: 40,
		Last: &pipeline.IterationResult{VerifierMean: &passed}}, nil)
	assert.Contains(t, line, "verifier 0.750")
}

func TestDataCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "prefs.jsonl")
	row := `{"split":"%s","prompt":"p","response_1":"a","response_2":"b","preference_strength":%d,"preference_statement":"","preference_elaboration":"","three_most_similar_preferences":[],"all_preferences_unprocessed":[{"justification":"","strength":-100}]}`
	content := fmt.Sprintf(row, "train", -2) + "\n" + fmt.Sprintf(row, "validation", 0) + "\n"
	require.NoError(t, os.WriteFile(good, []byte(content), 0o644))
	var out bytes.Buffer
	require.NoError(t, checkData(&out, "helpsteer2-preference", good))
	assert.Contains(t, out.String(), "2 rows")
	assert.Contains(t, out.String(), "strength -2")
	assert.Regexp(t, `ties \(left out of Bradley-Terry training\)\s+1`, out.String())

	bad := filepath.Join(dir, "bad.jsonl")
	require.NoError(t, os.WriteFile(bad, []byte(content+fmt.Sprintf(row, "train", 5)+"\n"), 0o644))
	err := checkData(&out, "helpsteer2-preference", bad)
	require.Error(t, err)
	assert.Contains(t, err.Error(), bad+":3:")
	assert.Contains(t, err.Error(), "preference_strength")

	err = checkData(&out, "csv", good)
	assert.ErrorContains(t, err, "allowed: helpsteer2, helpsteer2-preference, rewardbench")
}

func TestQueueLinesSayWhatEachQueueGets(t *testing.T) {
	lines := queueLines([]string{"alignflow", "gpu"}, "alignflow")
	require.Len(t, lines, 2)
	assert.Contains(t, lines[0], "workflows started on it")
	assert.Contains(t, lines[1], "no stage uses it unless a run's spec routes work to it")
	assert.Contains(t, lines[1], `"gpu"`)
}
