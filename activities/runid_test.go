package activities

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/pipeline"
)

// TestUnsafeRunIDsWriteNothing: a run ID is joined into store keys, so
// "evil/../victim" would write runs/victim's summary, curve and report,
// ".." the store's top level, and "a/b" fails the data stage's scratch
// folder five times over. Every activity that keys by the run ID refuses
// such an ID at once, non-retryably (InvalidSpec), naming it and the
// allowed characters, and the victim's records stay as they were.
func TestUnsafeRunIDsWriteNothing(t *testing.T) {
	var env testsuite.WorkflowTestSuite
	for _, id := range []string{"evil/../victim", "..", "a/b", ".hidden", "sp ace", ""} {
		t.Run(id, func(t *testing.T) {
			root := t.TempDir()
			store, err := artifact.Open(root)
			require.NoError(t, err)
			a := New(store)
			victim := filepath.Join(root, "runs", "victim", pipeline.SummaryFile)
			_, err = a.WriteSummary(context.Background(), pipeline.SummaryInput{RunID: "victim", Summary: &pipeline.Summary{WorkflowID: "victim", Name: "victim"}})
			require.NoError(t, err)
			before, err := os.ReadFile(victim)
			require.NoError(t, err)

			spec := config.Default()
			spec.Data.Generate.Prompts = 40
			ae := env.NewTestActivityEnvironment()
			ae.RegisterActivity(a)
			calls := map[string]func() error{
				"PrepareData": func() error {
					_, err := ae.ExecuteActivity(a.PrepareData, pipeline.PrepareDataInput{RunID: id, Spec: spec})
					return err
				},
				"SaveCurve": func() error {
					_, err := ae.ExecuteActivity(a.SaveCurve, pipeline.CurveInput{RunID: id, Points: []pipeline.IterationMetrics{{Iteration: 0}}})
					return err
				},
				"WriteSummary": func() error {
					_, err := ae.ExecuteActivity(a.WriteSummary, pipeline.SummaryInput{RunID: id, Summary: &pipeline.Summary{WorkflowID: id, Name: "evil"}})
					return err
				},
				"WriteReport": func() error {
					_, err := ae.ExecuteActivity(a.WriteReport, pipeline.ReportInput{RunID: id, Report: &pipeline.ComparisonReport{WorkflowID: id}})
					return err
				},
				"WriteRunReport": func() error {
					_, err := ae.ExecuteActivity(a.WriteRunReport, pipeline.RunReportInput{RunID: id})
					return err
				},
			}
			for name, call := range calls {
				err := call()
				require.Error(t, err, name)
				var app *temporal.ApplicationError
				require.True(t, errors.As(err, &app), "%s: %v", name, err)
				assert.Equal(t, pipeline.ErrInvalidSpec, app.Type(), "%s: %v", name, err)
				assert.True(t, app.NonRetryable(), name)
				assert.Contains(t, err.Error(), `run ID "`+id+`"`, name)
				assert.Contains(t, err.Error(), pipeline.RunIDRule, name)
			}
			after, err := os.ReadFile(victim)
			require.NoError(t, err)
			assert.Equal(t, string(before), string(after), "the victim's summary is untouched")
			top, err := os.ReadDir(root)
			require.NoError(t, err)
			for _, e := range top {
				assert.NotEqual(t, pipeline.SummaryFile, e.Name(), "nothing lands at the store's top level")
				assert.NotEqual(t, "reinforce", e.Name(), "nothing lands at the store's top level")
			}
		})
	}
}
