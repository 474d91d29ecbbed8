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
