package workflows

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/alignflow/alignflow/activities"
	"github.com/alignflow/alignflow/pipeline"
)

// TestUnsafeWorkflowIDFailsAtOnce: the workflow ID names the run's folder
// in the store, so "evil/../victim" wrote runs/victim's summary, report and
// metrics, and "a/b" failed the data stage five times over. Both workflows
// refuse such an ID before any activity, non-retryably, naming it and the
// allowed characters; a run recorded before the check runs as it did.
func TestUnsafeWorkflowIDFailsAtOnce(t *testing.T) {
	for _, wf := range []string{AlignmentName, ComparisonName} {
		for _, id := range []string{"evil/../victim", "..", "a/b", "sp ace"} {
			for _, recorded := range []bool{false, true} {
				env := newEnv(t)
				if recorded {
					env.OnGetVersion("checked-inputs", workflow.DefaultVersion, checkedVersion).Return(workflow.DefaultVersion)
				}
				env.SetStartWorkflowOptions(client.StartWorkflowOptions{ID: id})
				a := &activities.Activities{}
				data := 0
				env.OnActivity(a.PrepareData, mock.Anything, mock.Anything).Return(func(context.Context, pipeline.PrepareDataInput) (pipeline.Data, error) {
					data++
					return pipeline.Data{}, temporal.NewNonRetryableApplicationError("enough", "Test", nil)
				})
				env.ExecuteWorkflow(wf, json.RawMessage(`{}`))
				require.True(t, env.IsWorkflowCompleted())
				err := env.GetWorkflowError()
				require.Error(t, err)
				if recorded {
					assert.Equal(t, 1, data, "%s %q: a recorded run goes on", wf, id)
					continue
				}
				var app *temporal.ApplicationError
				require.True(t, errors.As(err, &app), "%v", err)
				assert.Equal(t, pipeline.ErrInvalidSpec, app.Type(), "%s %q", wf, id)
				assert.True(t, app.NonRetryable())
				assert.Contains(t, err.Error(), `run ID "`+id+`"`)
				assert.Contains(t, err.Error(), pipeline.RunIDRule)
				assert.Zero(t, data, "%s %q: no activity ran", wf, id)
			}
		}
	}
}

// TestNewSpecChecksSpareRecordedRuns: a spec naming a plugin file or a
// size past its bound is refused at once by a new run; a run recorded
// before those checks (no checked-inputs marker) goes on to its data stage,
// as it did, so its history replays.
func TestNewSpecChecksSpareRecordedRuns(t *testing.T) {
	for input, field := range map[string]string{
		`{"backend": "xla:/opt/pjrt/xla_cuda_plugin.so"}`: "backend",
		`{"sft": {"steps": 1000000000000}}`:               "sft.steps",
		`{"model": {"hidden": 1000000000}}`:               "model.hidden",
		`{"eval": {"prompts": 1000000000}}`:               "eval.prompts",
		`{"reinforce": {"prompts_per_iteration": 1000000, "samples_per_prompt": 1000, "batch_size": 1, "rollout_shards": 1000000000}}`: "reinforce.rollout_shards",
	} {
		for _, recorded := range []bool{false, true} {
			env := newEnv(t)
			if recorded {
				env.OnGetVersion("checked-inputs", workflow.DefaultVersion, checkedVersion).Return(workflow.DefaultVersion)
			}
			a := &activities.Activities{}
			data := 0
			env.OnActivity(a.PrepareData, mock.Anything, mock.Anything).Return(func(context.Context, pipeline.PrepareDataInput) (pipeline.Data, error) {
				data++
				return pipeline.Data{}, temporal.NewNonRetryableApplicationError("enough", "Test", nil)
			})
			env.ExecuteWorkflow(AlignmentName, json.RawMessage(input))
			err := env.GetWorkflowError()
			require.Error(t, err)
			if recorded {
				assert.Equal(t, 1, data, "%s: a recorded run goes on", input)
				continue
			}
			var app *temporal.ApplicationError
			require.True(t, errors.As(err, &app), "%v", err)
			assert.Equal(t, pipeline.ErrInvalidSpec, app.Type(), input)
			assert.True(t, app.NonRetryable())
			assert.Contains(t, err.Error(), "spec field "+field, input)
			assert.Zero(t, data, "%s: no activity ran", input)
		}
	}
}

// TestContinuedRunsKeepTheirChecks: the checked-inputs choice is made when
// an alignment starts and travels in its Continuation: a run continued from
// one started before the checks keeps validating as it did (it is not
// refused half-way), one continued from a checked run stays checked.
func TestContinuedRunsKeepTheirChecks(t *testing.T) {
	over := json.RawMessage(`{"sft": {"steps": 1000000000000}, "reinforce": {"iterations": 3}}`)
	for _, checked := range []bool{false, true} {
		env := newEnv(t)
		a := &activities.Activities{}
		mockIterations(env, a, 0, func(pipeline.IterationInput) (pipeline.IterationResult, error) {
			return pipeline.IterationResult{}, temporal.NewNonRetryableApplicationError("enough", "Test", nil)
		})
		cont := &Continuation{Iteration: 1, Runs: 1, versions: versions{Sharded: true, Checked: checked}}
		executeContinued(env, over, cont)
		err := env.GetWorkflowError()
		require.Error(t, err)
		var app *temporal.ApplicationError
		require.True(t, errors.As(err, &app), "%v", err)
		if checked {
			assert.Equal(t, pipeline.ErrInvalidSpec, app.Type())
			assert.Contains(t, err.Error(), "sft.steps")
		} else {
			assert.Equal(t, "Test", app.Type(), "the continued run went on to its iteration")
		}
	}

	env, _ := signalEnv(t)
	env.ExecuteWorkflow(AlignmentName, json.RawMessage(`{"reinforce": {"iterations": 3, "continue_as_new_every": 1}}`), (*Continuation)(nil))
	var can *workflow.ContinueAsNewError
	require.True(t, errors.As(env.GetWorkflowError(), &can), "%v", env.GetWorkflowError())
	var spec json.RawMessage
	var next *Continuation
	require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(can.Input, &spec, &next))
	assert.True(t, next.Checked, "a new run's continuation carries its choice")
	b, err := json.Marshal(next)
	require.NoError(t, err)
	assert.Contains(t, string(b), `"checked":true`)
}
