package activities

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/model/progress"
	"github.com/alignflow/alignflow/pipeline"
)

// TestHeartbeatsFollowProgressNotTheClock drives an activity's liveness
// with a clock of its own: a heartbeat goes out while the work advances
// (units done, a training step shown) and for the stall limit after, never
// once the work has not moved for longer, so the server's heartbeat
// timeout catches an attempt whose work hangs (the former keep-alive
// heartbeated every second whatever the work did); work that moves again
// heartbeats again, carrying how much it has done.
func TestHeartbeatsFollowProgressNotTheClock(t *testing.T) {
	var sent []pipeline.Progress
	t0 := time.Unix(0, 0)
	stall := 2 * time.Minute
	l := newLiveness(context.Background(), func(p pipeline.Progress) { sent = append(sent, p) }, stall, pipeline.Progress{Stage: "eval-before"}, t0)
	at := func(d time.Duration) bool { return l.tick(t0.Add(d)) }

	assert.True(t, at(0), "the stage shows at once")
	assert.True(t, at(time.Minute), "setup (loads, compiling) has the stall limit to make progress")
	assert.False(t, at(stall+time.Second), "no progress for longer than the stall limit: silent")
	assert.False(t, at(time.Hour), "and silent it stays: the attempt is hung")

	require.NoError(t, l.Advance(3))
	assert.True(t, at(time.Hour+time.Second), "a finished batch is progress")
	assert.Equal(t, int64(3), sent[len(sent)-1].Work, "the heartbeat carries the work done")
	assert.True(t, at(time.Hour+time.Minute), "a slow batch has the stall limit")
	assert.False(t, at(time.Hour+stall+2*time.Second))

	l.Show(pipeline.Progress{Stage: "sft", Step: 7, Total: 10, Loss: 0.5})
	assert.True(t, at(2*time.Hour), "a training step shown is progress")
	assert.Equal(t, pipeline.Progress{Stage: "sft", Step: 7, Total: 10, Loss: 0.5, Work: 3}, sent[len(sent)-1])

	ctx, cancel := context.WithCancel(context.Background())
	l = newLiveness(ctx, func(pipeline.Progress) {}, stall, pipeline.Progress{}, t0)
	require.NoError(t, l.Advance(1))
	cancel()
	assert.ErrorIs(t, l.Advance(1), context.Canceled, "the work is told to stop once the activity ended")
}

// cancelAfter is a meter that ends its context after n units and counts
// the units reported after that.
type cancelAfter struct {
	mu            sync.Mutex
	n, done, late int
	cancel        context.CancelFunc
	ctx           context.Context
}

func (c *cancelAfter) Advance(units int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx.Err() != nil {
		c.late += units
		return c.ctx.Err()
	}
	c.done += units
	if c.done >= c.n {
		c.cancel()
	}
	return c.ctx.Err()
}

// TestWorkStopsWhenItsContextEnds ends an evaluation's, a rollout shard's
// and SFT's context a few graphs into their work, with inputs that would
// take far longer (eight thousand samples a prompt, thousands of steps):
// each returns the context's error at its next graph instead of running on
// after its attempt, as timed-out attempts did. A hash of a file stops
// likewise.
func TestWorkStopsWhenItsContextEnds(t *testing.T) {
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	a := New(store)
	spec := tinySpec()
	data, err := a.PrepareData(context.Background(), pipeline.PrepareDataInput{RunID: "stop", Spec: spec})
	require.NoError(t, err)
	sft, err := a.TrainSFT(context.Background(), pipeline.TrainInput{RunID: "stop", Spec: spec, Data: data})
	require.NoError(t, err)
	long := spec
	long.Eval.SamplesPerPrompt, long.SFT.Steps = 8192, 100000
	long.Reinforce.PromptsPerIteration, long.Reinforce.SamplesPerPrompt = 40, 4096

	for name, work := range map[string]func(ctx context.Context) error{
		"a policy evaluation": func(ctx context.Context) error {
			_, err := a.evaluatePolicy(ctx, pipeline.PolicyEvalInput{RunID: "stop", Spec: long, Data: data, Policy: sft.Checkpoint,
				Reference: sft.Checkpoint, RewardModel: sft.Checkpoint, Label: pipeline.StageEvalBefore})
			return err
		},
		"a rollout shard": func(ctx context.Context) error {
			_, err := a.rolloutShard(ctx, pipeline.ShardInput{IterationInput: pipeline.IterationInput{RunID: "stop", Spec: long, Data: data,
				Policy: sft.Checkpoint, Reference: sft.Checkpoint, RewardModel: sft.Checkpoint}, Shard: 0, Shards: 1})
			return err
		},
		"SFT": func(ctx context.Context) error {
			_, err := a.trainSFT(ctx, pipeline.TrainInput{RunID: "stop-sft", Spec: long, Data: data})
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			m := &cancelAfter{n: 20, cancel: cancel}
			m.ctx = progress.NewContext(ctx, m)
			err := work(m.ctx)
			require.Error(t, err)
			assert.True(t, errors.Is(err, context.Canceled), "%v", err)
			assert.LessOrEqual(t, m.late, 2, "at most the graphs already running finish")
		})
	}

	file := filepath.Join(t.TempDir(), "weights.bin")
	require.NoError(t, os.WriteFile(file, make([]byte, 1<<20), 0o644))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = fileDigest(ctx, config.AnyFile(), file)
	assert.ErrorIs(t, err, context.Canceled)
}

// TestTrainingShowsEveryStep: a training phase shows every step (and the
// setup's loads count as progress), so heartbeats go out on time however
// long a step takes, where they went every ten steps.
func TestTrainingShowsEveryStep(t *testing.T) {
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	a := New(store)
	spec := tinySpec()
	data, err := a.PrepareData(context.Background(), pipeline.PrepareDataInput{RunID: "steps", Spec: spec})
	require.NoError(t, err)
	var sent []pipeline.Progress
	l := newLiveness(context.Background(), func(p pipeline.Progress) { sent = append(sent, p) }, time.Minute, pipeline.Progress{Stage: pipeline.StageSFT}, time.Now())
	ctx := progress.NewContext(context.Background(), l)
	_, err = a.trainSFT(ctx, pipeline.TrainInput{RunID: "steps", Spec: spec, Data: data})
	require.NoError(t, err)
	assert.GreaterOrEqual(t, l.shows-1, int64(spec.SFT.Steps), "every step shown")
	assert.Equal(t, spec.SFT.Steps, l.shown.Step)
	assert.GreaterOrEqual(t, l.work.Load(), int64(spec.SFT.Steps+2), "setup's loads and every optimizer step count")
	require.NotEmpty(t, sent, "each checkpoint heartbeats at once")
	assert.NotNil(t, sent[len(sent)-1].Checkpoint)
}
