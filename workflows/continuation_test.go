package workflows

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/alignflow/alignflow/activities"
	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/pipeline"
)

// goodContinuation is what a run hands on after two iterations, its data
// and SFT policy reused from run "earlier".
func goodContinuation() *Continuation {
	earlier := func(p string) artifact.Ref {
		r := ref(p)
		r.Path = "runs/earlier/" + p
		return r
	}
	last := &pipeline.IterationResult{Iteration: 1, Policy: ref("reinforce/iter-00001/policy.safetensors"),
		Optimizer: ref("reinforce/iter-00001/optimizer.safetensors"), PolicyDigest: "d1"}
	return &Continuation{
		Data: pipeline.Data{Reused: pipeline.Reused{ReusedFrom: "earlier"}, Ratings: earlier("data/ratings.jsonl.gz"), Preferences: earlier("data/preferences.jsonl.gz"),
			Model: &pipeline.BaseModel{Weights: earlier("model/base.safetensors"), Files: map[string]artifact.Ref{"config.json": earlier("model/config.json")}}},
		SFT:         pipeline.TrainResult{Reused: pipeline.Reused{ReusedFrom: "earlier"}, Checkpoint: earlier("sft/policy.safetensors")},
		RewardModel: pipeline.TrainResult{Checkpoint: ref("reward/model.safetensors")},
		Iteration:   2, Policy: last.Policy, Optimizer: last.Optimizer, PolicyDigest: last.PolicyDigest, Last: last,
		Curve: refTo("reinforce/curve-00000.json"), Runs: 1, versions: versions{Sharded: true},
	}
}

// TestAForgedContinuationIsRefused starts Alignment as `temporal workflow
// start --input SPEC --input CONT` does, with a continuation the caller
// made, and as continued runs whose continuation points outside the
// alignment's artifacts: each fails at once, non-retryably, naming what is
// wrong, and schedules nothing (no training from the caller's references).
// A genuine continuation (continued as new, references in the run's folder
// or the folder of the run its results were reused from) goes on.
func TestAForgedContinuationIsRefused(t *testing.T) {
	spec := json.RawMessage(`{"reinforce": {"iterations": 3}}`)
	for name, c := range map[string]struct {
		continued bool
		edit      func(*Continuation)
		input     json.RawMessage
		want      string // "" accepted
	}{
		"a genuine continuation":         {continued: true, want: ""},
		"started with one by the caller": {want: "only a run an alignment continued as new takes"},
		"a reference to another run's artifacts": {continued: true, want: `reward_model.checkpoint: path "runs/victim/reward/model.safetensors" is not an artifact of run default-test-workflow-id`,
			edit: func(c *Continuation) { c.RewardModel.Checkpoint.Path = "runs/victim/reward/model.safetensors" }},
		"a digest that is a path": {continued: true, want: `data.model.weights: sha256 "../../secret" is not a sha256 digest`,
			edit: func(c *Continuation) { c.Data.Model.Weights.SHA256 = "../../secret" }},
		"a key that climbs out of the folder": {continued: true, want: `is not an artifact of run earlier`,
			edit: func(c *Continuation) { c.SFT.Checkpoint.Path = "runs/earlier/../victim/sft/policy.safetensors" }},
		"a policy that is not the last iteration's": {continued: true, want: "policy, optimizer, policy_sha256: not the last iteration's",
			edit: func(c *Continuation) { c.Policy = ref("elsewhere.safetensors") }},
		"extra sampling rounds without dynamic sampling": {continued: true, want: "extra_rounds: 5, but 2 iterations of at most 1 sampling rounds draw 0..0",
			edit: func(c *Continuation) { c.ExtraRounds = 5 }},
		"another spec than the continued run's": {continued: true, input: json.RawMessage(`{"reinforce": {"iterations": 30}}`),
			want: "spec_sha256: the continuation was made by a run of another spec"},
	} {
		t.Run(name, func(t *testing.T) {
			env := newEnv(t)
			a := &activities.Activities{}
			mockStagesBeforeReinforce(env, a)
			iterations := 0
			mockIterations(env, a, 0, func(in pipeline.IterationInput) (pipeline.IterationResult, error) {
				iterations++
				return pipeline.IterationResult{Iteration: in.Iteration, Policy: ref("pol")}, nil
			})
			env.OnActivity(a.WriteSummary, mock.Anything, mock.Anything).Return("summary.json", nil)
			(&curveStore{}).mock(env)
			cont := goodContinuation()
			cont.SpecDigest = specDigest(spec)
			if c.edit != nil {
				c.edit(cont)
			}
			input := spec
			if c.input != nil {
				input = c.input
			}
			if c.continued {
				env.SetContinuedExecutionRunID("the-run-it-continues")
			}
			env.ExecuteWorkflow(AlignmentName, input, cont)
			require.True(t, env.IsWorkflowCompleted())
			err := env.GetWorkflowError()
			if c.want == "" {
				require.NoError(t, err)
				assert.Equal(t, 1, iterations, "the continued run runs the last iteration")
				return
			}
			require.Error(t, err)
			var app *temporal.ApplicationError
			require.True(t, errors.As(err, &app), "%v", err)
			assert.Equal(t, pipeline.ErrInvalidSpec, app.Type())
			assert.True(t, app.NonRetryable())
			assert.Contains(t, err.Error(), c.want)
			assert.Zero(t, iterations, "nothing trains from a refused continuation")
		})
	}
}

// TestSpecDigestIgnoresHowTheSpecIsEncoded: continuing as new encodes the
// input again (compacted, HTML-escaped), and seeds above 2^53 must still
// tell specs apart.
func TestSpecDigestIgnoresHowTheSpecIsEncoded(t *testing.T) {
	a := specDigest(json.RawMessage("{\n  \"name\": \"<a>\",  \"seed\": 9007199254740993\n}"))
	assert.Equal(t, a, specDigest(json.RawMessage(`{"seed":9007199254740993,"name":"\u003ca\u003e"}`)))
	assert.NotEqual(t, a, specDigest(json.RawMessage(`{"name":"<a>","seed":9007199254740992}`)))
}
