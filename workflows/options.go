package workflows

import (
	"math"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/model/tokenizer"
	"github.com/alignflow/alignflow/pipeline"
)

// work holds the activity options of each kind of work, defined once (as
// samples-go's pso sample does) so that the Alignment and comparison
// workflows schedule the same activity the same way. Every kind that runs
// long heartbeats while its work advances, so a dead worker or a hung
// attempt is noticed within the spec's heartbeat_timeout_seconds.
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

// workFor is the options of each kind of work of a run of spec: the
// start-to-close timeouts sized by the model and the work (sizedTimeouts)
// when sized, else the ones runs recorded before sizedTimeoutsVersion were
// scheduled with. d is the run's prepared data (nil before the data
// stage), which says how large a Hugging Face model is.
func workFor(ctx workflow.Context, spec config.Spec, sized bool, d *pipeline.Data) work {
	hb := heartbeatTimeout(spec)
	q := spec.Queues
	t := formerTimeouts
	if sized {
		t = sizedTimeouts(spec, d)
	}
	return work{
		bookkeeping: withOptions(ctx, q.Eval, t.bookkeeping, 0),
		training:    withOptions(ctx, q.Train, t.training, hb),
		evaluation:  withOptions(ctx, q.Eval, t.evaluation, hb),
		iteration:   withOptions(ctx, q.Train, t.iteration, hb),
		rollout:     withOptions(ctx, q.Rollout, t.rollout, hb),
		pinned: func(queue string) workflow.Context {
			c := withOptions(ctx, queue, t.iteration, hb)
			o := workflow.GetActivityOptions(c)
			o.ScheduleToStartTimeout = hb
			return workflow.WithActivityOptions(c, o)
		},
	}
}

// timeouts are the start-to-close timeouts of the kinds of work.
type timeouts struct {
	training, evaluation, iteration, rollout, bookkeeping time.Duration
}

// formerTimeouts are the fixed timeouts of runs recorded before
// sizedTimeoutsVersion, and the least a sized one gets.
var formerTimeouts = timeouts{training: 2 * time.Hour, evaluation: 30 * time.Minute, iteration: 30 * time.Minute,
	rollout: 30 * time.Minute, bookkeeping: 10 * time.Minute}

// The estimate behind sizedTimeouts counts work in parameter-token
// passes: one token through one parameter, forward (about 2 FLOPs). A
// training step costs 3 passes a token (forward and backward), generation
// 4 (decoding one token at a time uses the machine poorly), scoring 1 per
// model. A 135M-parameter model trained at 31 s a step on 16 x 512 tokens
// runs about 1e11 passes a second; the estimate assumes a worker 2.5 times
// slower (throughput) and allows twice the time it gives (margin). It only
// bounds an attempt: a hung one is caught by the heartbeat timeout, since
// activities heartbeat only while their work advances.
const (
	throughput = 4e10 // parameter-token passes a second
	margin     = 2
	// modelPathBookkeeping is the data stage's time with model.path: the
	// model is read, hashed and stored, at any size.
	modelPathBookkeeping = time.Hour
)

// sizedTimeouts are the spec's timeouts, each 0 one estimated from the
// model's size and the work the spec gives that kind, never below
// formerTimeouts. d is the prepared data (nil before the data stage): it
// sizes a Hugging Face model (unknown before; its stages run after) and
// the reward model's evaluation.
func sizedTimeouts(spec config.Spec, d *pipeline.Data) timeouts {
	p := modelParams(spec, d)
	tokens := float64(spec.Model.MaxLen) // it caps a Hugging Face model's sequences too
	estimate := func(passes float64, floor time.Duration) time.Duration {
		secs := passes * p * margin / throughput
		return max(floor, time.Duration(min(secs, config.MaxTimeoutSeconds))*time.Second)
	}
	r, e := spec.Reinforce, spec.Eval
	sft := float64(spec.SFT.Steps) * float64(spec.SFT.BatchSize) * tokens * 3
	rm := float64(2*spec.Reward.Steps+spec.Reward.RegressionSteps) * float64(spec.Reward.BatchSize) * tokens * 3
	policyEval := float64(e.Prompts) * float64(e.SamplesPerPrompt) * tokens * (4 + 3)
	rewardEval := 0.0
	if d != nil {
		pairs := d.ValidationPairs + min(d.TrainPairs, 256) + d.RewardBenchPairs + 20*spec.Compare.BenchPairsPerSubset
		rewardEval = float64(2*pairs+d.RatingRows) * tokens
	}
	rows := float64(r.RolloutRows())
	t := timeouts{
		training:    estimate(max(sft, rm), formerTimeouts.training),
		evaluation:  estimate(max(policyEval, rewardEval), formerTimeouts.evaluation),
		iteration:   estimate(rows*tokens*(3+4+3), formerTimeouts.iteration), // an update, or a whole iteration of runs before shards
		rollout:     estimate(math.Ceil(rows/float64(r.Shards()))*tokens*(4+3), formerTimeouts.rollout),
		bookkeeping: formerTimeouts.bookkeeping,
	}
	if spec.Model.Path != "" {
		t.bookkeeping = modelPathBookkeeping
	}
	set := func(d *time.Duration, seconds int) {
		if seconds > 0 {
			*d = time.Duration(seconds) * time.Second
		}
	}
	set(&t.training, spec.Timeouts.Training)
	set(&t.evaluation, spec.Timeouts.Evaluation)
	set(&t.iteration, spec.Timeouts.Iteration)
	set(&t.rollout, spec.Timeouts.Rollout)
	set(&t.bookkeeping, spec.Timeouts.Bookkeeping)
	return t
}

// modelParams estimates the run's parameter count: a Hugging Face model's
// from its stored float32 weights, the bundled model's from its shape
// (embeddings and output head, then per layer the attention's four
// projections and the gated MLP's three). 0 for a Hugging Face model before
// the data stage stored it.
func modelParams(spec config.Spec, d *pipeline.Data) float64 {
	if d != nil && d.Model != nil {
		return float64(d.Model.Weights.Bytes) / 4
	}
	if spec.Model.Path != "" {
		return 0
	}
	m := spec.Model
	dim, hidden := float64(m.Dim), float64(m.Hidden)
	return 2*tokenizer.VocabSize*dim + float64(m.Layers)*(4*dim*dim+3*dim*hidden)
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
