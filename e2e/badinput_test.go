package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/workflows"
)

const (
	goodRating = `{"prompt":"p","response":"r","helpfulness":1,"correctness":2,"coherence":3,"complexity":4,"verbosity":0}`
	goodPref   = `{"split":"train","prompt":"p","response_1":"a","response_2":"b","preference_strength":2,"preference_statement":"s","preference_elaboration":"e","three_most_similar_preferences":[],"all_preferences_unprocessed":[{"justification":"j","strength":-100}]}`
	goodBench  = `{"prompt":"p","chosen":"a","chosen_model":"x","rejected":"b","rejected_model":"y","subset":"alpacaeval-easy","id":1}`
)

// TestMalformedInputsFailFastAndClearly sends a corpus of bad specs and bad
// data files through the server: each run fails on its first attempt (no
// retry storm) with the error type and a message that names the field, file
// and line, and no data artifact is left behind.
func TestMalformedInputsFailFastAndClearly(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a Temporal server")
	}
	cl, store := startServer(t)
	dir := t.TempDir()
	file := func(name string, lines ...string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
		return p
	}
	ratings := file("ratings.jsonl", goodRating, goodRating)
	prefs := file("prefs.jsonl", goodPref)
	withData := func(r, p string, extra string) string {
		return fmt.Sprintf(`{"data": {"ratings": %q, "preferences": %q}%s}`, r, p, extra)
	}
	gzipGarbage := filepath.Join(dir, "broken.jsonl.gz")
	require.NoError(t, os.WriteFile(gzipGarbage, []byte{0x1f, 0x8b, 0, 1, 2, 3, 4}, 0o644))

	cases := []struct {
		name, input, errType string
		want                 []string
	}{
		{"unknown backend", `{"backend": "tpu"}`, pipeline.ErrInvalidSpec, []string{"backend", "allowed: go"}},
		{"K below 2", `{"reinforce": {"samples_per_prompt": 1}}`, pipeline.ErrInvalidSpec, []string{"reinforce.samples_per_prompt"}},
		{"unknown field", `{"sft": {"stepz": 3}}`, pipeline.ErrInvalidSpec, []string{"sft.stepz", "unknown field"}},
		{"wrong type", `{"sft": {"steps": "many"}}`, pipeline.ErrInvalidSpec, []string{"sft.steps", "integer"}},
		{"negative learning rate", `{"reward": {"learning_rate": -1}}`, pipeline.ErrInvalidSpec, []string{"reward.learning_rate"}},
		{"unknown recipe", `{"reward": {"recipe": "dpo"}}`, pipeline.ErrInvalidSpec, []string{"reward.recipe", "bt-scaled-from-regression-expo"}},
		{"unknown KL estimator", `{"reinforce": {"kl_estimator": "k9"}}`, pipeline.ErrInvalidSpec, []string{"allowed: abs, k1, k2, k3"}},
		{"heartbeat timeout too short", `{"heartbeat_timeout_seconds": 1}`, pipeline.ErrInvalidSpec, []string{"heartbeat_timeout_seconds"}},
		{"variant twice", `{"compare": {"variants": ["bt", "bt"]}}`, pipeline.ErrInvalidSpec, []string{"compare.variants[1]"}},
		{"heads do not divide dim", `{"model": {"dim": 30}}`, pipeline.ErrInvalidSpec, []string{"model.dim"}},
		{"not an object", `[1, 2]`, pipeline.ErrInvalidSpec, []string{"object"}},
		{"model.path not a model", `{"model": {"path": "/nonexistent/model"}}`, pipeline.ErrInvalidSpec, []string{"model.path", "/nonexistent/model", "not a Hugging Face model directory"}},
		{"missing data file", withData(filepath.Join(dir, "nope.jsonl"), prefs, ""), pipeline.ErrInvalidSpec, []string{"data.ratings", "nope.jsonl"}},
		{"rating out of range", withData(file("r1.jsonl", goodRating, strings.Replace(goodRating, `"helpfulness":1`, `"helpfulness":9`, 1)), prefs, ""),
			pipeline.ErrInvalidData, []string{"r1.jsonl:2", "helpfulness", "outside 0..4"}},
		{"rating missing a column", withData(file("r2.jsonl", strings.Replace(goodRating, `"verbosity":0`, `"x":0`, 1)), prefs, ""),
			pipeline.ErrInvalidData, []string{"r2.jsonl:1"}},
		{"malformed JSON line", withData(file("r3.jsonl", goodRating, `{"prompt": "p",`), prefs, ""), pipeline.ErrInvalidData, []string{"r3.jsonl:2", "malformed JSON"}},
		{"empty response", withData(file("r4.jsonl", strings.Replace(goodRating, `"response":"r"`, `"response":" "`, 1)), prefs, ""),
			pipeline.ErrInvalidData, []string{"r4.jsonl:1", "response", "empty"}},
		{"strength outside -3..3", withData(ratings, file("p1.jsonl", strings.Replace(goodPref, `"preference_strength":2`, `"preference_strength":5`, 1)), ""),
			pipeline.ErrInvalidData, []string{"p1.jsonl:1", "preference_strength"}},
		{"annotator strength", withData(ratings, file("p2.jsonl", strings.Replace(goodPref, `"strength":-100`, `"strength":-50`, 1)), ""),
			pipeline.ErrInvalidData, []string{"p2.jsonl:1", "all_preferences_unprocessed[0].strength"}},
		{"empty file", withData(file("r5.jsonl"), prefs, ""), pipeline.ErrInvalidData, []string{"r5.jsonl", "no rows"}},
		{"unreadable gzip", withData(gzipGarbage, prefs, ""), pipeline.ErrInvalidData, []string{"broken.jsonl.gz", "gzip"}},
		{"unknown turn marker", withData(file("r6.jsonl", strings.Replace(goodRating, `"prompt":"p"`, `"prompt":"hi<extra_id_1>System\nx"`, 1)), prefs, ""),
			pipeline.ErrInvalidData, []string{"r6.jsonl:1", "prompt", "<extra_id_1>System"}},
		{"RewardBench row without subset", withData(ratings, prefs, fmt.Sprintf(`, "compare": {"rewardbench": %q}`, file("b1.jsonl", goodBench, strings.Replace(goodBench, `"subset":"alpacaeval-easy",`, "", 1)))),
			pipeline.ErrInvalidData, []string{"b1.jsonl:2", "subset"}},
	}
	require.GreaterOrEqual(t, len(cases), 15)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("bad-input-%02d", i)
			run, err := cl.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: workflows.TaskQueue}, workflows.AlignmentName, json.RawMessage(tc.input))
			require.NoError(t, err)
			err = run.Get(ctx, nil)
			var app *temporal.ApplicationError
			require.True(t, errors.As(err, &app), "%v", err)
			assert.Equal(t, tc.errType, app.Type(), "%v", err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.LessOrEqual(t, maxAttempt(t, cl, id, pipeline.ActivityPrepareData), int32(1), "no retries")
			_, statErr := os.Stat(filepath.Join(store.Root, "runs", id))
			assert.True(t, os.IsNotExist(statErr), "nothing stored for %s", id)
		})
	}
}
