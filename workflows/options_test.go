package workflows

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"

	"github.com/alignflow/alignflow/activities"
	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/pipeline"
)

// TestBothWorkflowsScheduleEachActivityAlike runs an alignment and a
// comparison against mocked activities and records the timeouts each
// activity was scheduled with: every activity that heartbeats gets the
// spec's heartbeat timeout (EvaluateRewardModel had none in Alignment), and
// an activity both workflows run gets the same options in both.
func TestBothWorkflowsScheduleEachActivityAlike(t *testing.T) {
	type timeouts struct{ startToClose, heartbeat time.Duration }
	record := func(wf string) map[string]timeouts {
		env := newEnv(t)
		a := &activities.Activities{}
		mockStagesBeforeReinforce(env, a)
		mockIterations(env, a, 0, func(pipeline.IterationInput) (pipeline.IterationResult, error) {
			return pipeline.IterationResult{Policy: ref("pol")}, nil
		})
		env.OnActivity(a.WriteSummary, mock.Anything, mock.Anything).Return("summary.json", nil)
		env.OnActivity(a.WriteReport, mock.Anything, mock.Anything).Return(pipeline.ReportPaths{}, nil)
		(&curveStore{}).mock(env)
		var mu sync.Mutex
		seen := map[string]timeouts{}
		env.SetOnActivityStartedListener(func(info *activity.Info, _ context.Context, _ converter.EncodedValues) {
			mu.Lock()
			defer mu.Unlock()
			got := timeouts{info.Deadline.Sub(info.StartedTime).Round(time.Minute), info.HeartbeatTimeout}
			if prev, ok := seen[info.ActivityType.Name]; ok {
				assert.Equal(t, prev, got, "%s scheduled two ways in %s", info.ActivityType.Name, wf)
			}
			seen[info.ActivityType.Name] = got
		})
		env.ExecuteWorkflow(wf, json.RawMessage(`{"heartbeat_timeout_seconds": 45, "reinforce": {"iterations": 1}}`))
		require.NoError(t, env.GetWorkflowError())
		return seen
	}
	alignment, comparison := record(AlignmentName), record(ComparisonName)
	for name, got := range alignment {
		switch name {
		case pipeline.ActivityPrepareData, pipeline.ActivitySaveCurve, pipeline.ActivityWriteSummary, pipeline.ActivityWriteRunReport:
			assert.Zero(t, got.heartbeat, name)
		default:
			assert.Equal(t, 45*time.Second, got.heartbeat, "%s heartbeats", name)
		}
	}
	require.Contains(t, alignment, pipeline.ActivityEvaluateRewardModel)
	for name, got := range comparison {
		if want, ok := alignment[name]; ok {
			assert.Equal(t, want, got, "%s is scheduled alike in both workflows", name)
		}
	}
	assert.Len(t, comparison, 6, "PrepareData, TrainSFT, TrainRewardModel, EvaluateRewardModel, WriteReport, WriteRunReport")
}

// TestTimeoutsFitTheModel records the start-to-close timeout each stage is
// scheduled with. The bundled default model keeps the former ones; a
// 135M-parameter Hugging Face model (540 MB of float32 weights, as the data
// stage reports it) trained 1000 SFT steps on 16 x 512 tokens, which takes
// 31 s a step on a worker that runs it well, gets a training timeout above
// those 8.6 hours, and every kind is sized likewise; a spec's timeouts
// setting wins.
func TestTimeoutsFitTheModel(t *testing.T) {
	big := `"model": {"path": "/models/smol-135m", "max_len": 512}, "sft": {"steps": 1000, "batch_size": 16},
		"reinforce": {"iterations": 1, "prompts_per_iteration": 64, "samples_per_prompt": 4, "max_tokens": 256, "batch_size": 16},
		"eval": {"prompts": 256, "samples_per_prompt": 4}`
	for name, c := range map[string]struct {
		spec   string
		weight int64 // bytes of the stored Hugging Face model (0: the bundled one)
		check  func(t *testing.T, got map[string]time.Duration)
	}{
		"the bundled model keeps the former timeouts": {spec: `{"reinforce": {"iterations": 1}}`, check: func(t *testing.T, got map[string]time.Duration) {
			assert.Equal(t, 10*time.Minute, got[pipeline.ActivityPrepareData])
			assert.Equal(t, 2*time.Hour, got[pipeline.ActivityTrainSFT])
			assert.Equal(t, 30*time.Minute, got[pipeline.ActivityEvaluatePolicy])
			assert.Equal(t, 30*time.Minute, got[pipeline.ActivityRolloutShard])
			assert.Equal(t, 30*time.Minute, got[pipeline.ActivityUpdatePolicy])
		}},
		"a 135M model's stages get time for its size": {spec: "{" + big + "}", weight: 540e6, check: func(t *testing.T, got map[string]time.Duration) {
			assert.GreaterOrEqual(t, got[pipeline.ActivityTrainSFT], 1000*31*time.Second)
			assert.GreaterOrEqual(t, got[pipeline.ActivityTrainRewardModel], 1000*31*time.Second)
			assert.Equal(t, time.Hour, got[pipeline.ActivityPrepareData], "model.path is read, hashed and stored")
			for _, a := range []string{pipeline.ActivityEvaluatePolicy, pipeline.ActivityEvaluateRewardModel, pipeline.ActivityRolloutShard, pipeline.ActivityUpdatePolicy} {
				assert.Greater(t, got[a], 30*time.Minute, a)
			}
		}},
		"the spec's timeouts win": {spec: "{" + big + `, "timeouts": {"training": 90000, "evaluation": 7200, "iteration": 3000, "rollout": 2000, "bookkeeping": 1000}}`, weight: 540e6,
			check: func(t *testing.T, got map[string]time.Duration) {
				assert.Equal(t, 90000*time.Second, got[pipeline.ActivityTrainSFT])
				assert.Equal(t, 90000*time.Second, got[pipeline.ActivityTrainRewardModel])
				assert.Equal(t, 7200*time.Second, got[pipeline.ActivityEvaluatePolicy])
				assert.Equal(t, 7200*time.Second, got[pipeline.ActivityEvaluateRewardModel])
				assert.Equal(t, 3000*time.Second, got[pipeline.ActivityUpdatePolicy])
				assert.Equal(t, 2000*time.Second, got[pipeline.ActivityRolloutShard])
				assert.Equal(t, 1000*time.Second, got[pipeline.ActivityPrepareData])
				assert.Equal(t, 1000*time.Second, got[pipeline.ActivityWriteSummary])
			}},
	} {
		t.Run(name, func(t *testing.T) {
			env := newEnv(t)
			a := &activities.Activities{}
			var data pipeline.Data
			if c.weight > 0 {
				data.Model = &pipeline.BaseModel{Weights: artifact.Ref{Path: "runs/x/model/base.safetensors", Bytes: c.weight}}
			}
			data.ValidationPairs, data.TrainPairs, data.RatingRows = 400, 1600, 4000
			env.OnActivity(a.PrepareData, mock.Anything, mock.Anything).Return(data, nil)
			mockStagesBeforeReinforce(env, a)
			mockIterations(env, a, 0, func(pipeline.IterationInput) (pipeline.IterationResult, error) {
				return pipeline.IterationResult{Policy: ref("pol")}, nil
			})
			env.OnActivity(a.WriteSummary, mock.Anything, mock.Anything).Return("summary.json", nil)
			(&curveStore{}).mock(env)
			var mu sync.Mutex
			got := map[string]time.Duration{}
			env.SetOnActivityStartedListener(func(info *activity.Info, _ context.Context, _ converter.EncodedValues) {
				mu.Lock()
				defer mu.Unlock()
				got[info.ActivityType.Name] = info.Deadline.Sub(info.StartedTime).Round(time.Second)
			})
			env.ExecuteWorkflow(AlignmentName, json.RawMessage(c.spec))
			require.NoError(t, env.GetWorkflowError())
			c.check(t, got)
		})
	}
}
