package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/pipeline"
)

// work holds the activity options of each kind of work, defined once (as
// samples-go's pso sample does) so that the Alignment and comparison
// workflows schedule the same activity the same way. Every kind that runs
// long heartbeats, so a dead worker is noticed within the spec's
// heartbeat_timeout_seconds.
type work struct {
	// bookkeeping: preparing data, saving curve segments, writing reports.
	bookkeeping workflow.Context
	// training: SFT and reward-model training, which checkpoint and resume.
	training workflow.Context
	// evaluation: of a reward model or a policy.
	evaluation workflow.Context
	// iteration: one REINFORCE iteration, or its update.
	iteration workflow.Context
	// rollout: a shard of a REINFORCE iteration's rollouts.
	rollout workflow.Context
	// pinned are the iteration's options on one worker's own queue: if no
	// worker takes the task within the heartbeat timeout, it is gone.
	pinned func(queue string) workflow.Context
}

func workFor(ctx workflow.Context, spec config.Spec) work {
	hb := heartbeatTimeout(spec)
	q := spec.Queues
	return work{
		bookkeeping: withOptions(ctx, q.Eval, 10*time.Minute, 0),
		training:    withOptions(ctx, q.Train, 2*time.Hour, hb),
		evaluation:  withOptions(ctx, q.Eval, 30*time.Minute, hb),
		iteration:   withOptions(ctx, q.Train, 30*time.Minute, hb),
		rollout:     withOptions(ctx, q.Rollout, 30*time.Minute, hb),
		pinned: func(queue string) workflow.Context {
			c := withOptions(ctx, queue, 30*time.Minute, hb)
			o := workflow.GetActivityOptions(c)
			o.ScheduleToStartTimeout = hb
			return workflow.WithActivityOptions(c, o)
		},
	}
}

// heartbeatTimeout is the spec's; a run recorded before the field existed
// decodes it as 0 and gets the former two minutes.
func heartbeatTimeout(spec config.Spec) time.Duration {
	if spec.HeartbeatTimeoutSeconds <= 0 {
		return 2 * time.Minute
	}
	return time.Duration(spec.HeartbeatTimeoutSeconds) * time.Second
}

// withOptions are one kind's activity options; queue "" is the workflow's
// own task queue (what runs recorded before queues existed used).
func withOptions(ctx workflow.Context, queue string, startToClose, heartbeat time.Duration) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:           queue,
		StartToCloseTimeout: startToClose,
		HeartbeatTimeout:    heartbeat,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        30 * time.Second,
			MaximumAttempts:        5,
			NonRetryableErrorTypes: pipeline.NonRetryable,
		},
	})
}
