package activities

import (
	"context"
	"fmt"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/rng"
	"github.com/alignflow/alignflow/model/trainloop"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/ops/metrics"
	"github.com/alignflow/alignflow/pipeline"
)

// trainCheckpoint is everything that decides the rest of a training phase:
// weights, optimizer state (moments and step), the data position and the
// losses so far. A retried attempt that loads it ends with exactly the
// weights an uninterrupted attempt would have.
type trainCheckpoint struct {
	Phase     string                 `json:"phase"`
	Step      int                    `json:"step"` // steps done in the phase
	FirstLoss float64                `json:"first_loss"`
	LastLoss  float64                `json:"last_loss"`
	Params    artifact.Ref           `json:"params"`
	Optimizer artifact.Ref           `json:"optimizer"`
	Batcher   trainloop.BatcherState `json:"batcher"`
	Earlier   pipeline.TrainResult   `json:"earlier"`        // phases of the activity finished before this one
	Weak      *artifact.Ref          `json:"weak,omitempty"` // the regression model ExPO extrapolates from
}

// phase is one training loop of an activity.
type phase struct {
	name    string // checkpoint phase: "sft", "regression", "bt-scaled", ...
	stage   string // heartbeat label
	dir     string // run-relative folder of its checkpoints
	steps   int
	every   int // checkpoint interval in steps; 0 for none
	lr      float64
	params  *weights.Set
	st      *optim.State
	batches *trainloop.Batcher
	tokens  []int // each row's tokens, for the throughput
	earlier pipeline.TrainResult
	weak    *artifact.Ref
	series  metrics.Series // where its steps go in the run's metrics log
}

// newPhase is a phase over rows of the given lengths, batched by length
// from the stage's random stream (seed, stream): each row counts its
// length in tokens unless tokens says otherwise.
func newPhase(name, stage, dir string, seed int64, stream string, lengths []int, batchSize int, params *weights.Set) *phase {
	return &phase{name: name, stage: stage, dir: dir, params: params, st: optim.NewState(params),
		batches: trainloop.NewBatcher(rng.Source(seed, stream, 0), lengths, batchSize), tokens: lengths}
}

// batchFn makes the batch of rows, for the phase's next optimizer step.
type batchFn func(rows []int) (optim.Batch, error)

// resumePoint returns the checkpoint the previous attempt of this activity
// last reported in its heartbeat, or nil on a first attempt. A checkpoint
// that fails its digest is an error: resuming from it would be wrong, and
// silently restarting would hide the damage.
func (a *Activities) resumePoint(ctx context.Context) (*trainCheckpoint, error) {
	if !activity.IsActivity(ctx) || !activity.HasHeartbeatDetails(ctx) {
		return nil, nil
	}
	var p pipeline.Progress
	if err := activity.GetHeartbeatDetails(ctx, &p); err != nil || p.Checkpoint == nil {
		return nil, nil
	}
	var ck trainCheckpoint
	if err := a.Store.GetJSON(*p.Checkpoint, &ck); err != nil {
		return nil, fmt.Errorf("resume from checkpoint: %w", err)
	}
	activity.GetLogger(ctx).Info("resuming from checkpoint", "phase", ck.Phase, "step", ck.Step, "checkpoint", p.Checkpoint.Path)
	return &ck, nil
}

// runPhase runs a phase's optimizer steps of tr (trainloop) on the batches
// batch makes, on the learning-rate schedule from step 0, or from resume
// when it is a checkpoint of this phase, saving a checkpoint every
// ph.every steps and heartbeating progress with the latest one. It stops
// when the activity is cancelled.
//
// The steps run in one optimizer session, which keeps the weights and
// moments on the device: ph.params and ph.st are lent to it, written back
// for each checkpoint (Sync) and when runPhase returns, on every path (the
// last good step's state after an error), so the caller reads them after.
//
// Every step is a point of the run's metrics log (loss, gradient norm,
// learning rate, tokens per second, checkpoint age), saved just before each
// checkpoint and at the end: a retried attempt resumes from the checkpoint
// and logs the steps after it again, replacing what the lost attempt saved
// of them, so the log holds every step once.
func (a *Activities) runPhase(ctx context.Context, runID string, ph *phase, resume *trainCheckpoint, tr *optim.Trainer, batch batchFn) (res pipeline.TrainResult, err error) {
	res = pipeline.TrainResult{Steps: ph.steps}
	start := 0
	if resume != nil && resume.Phase == ph.name {
		if err := a.restore(ph, resume); err != nil {
			return res, err
		}
		start, res.FirstLoss, res.FinalLoss, res.ResumedFrom = resume.Step, resume.FirstLoss, resume.LastLoss, resume.Step
	}
	sess, err := tr.Start(ph.params, ph.st)
	if err != nil {
		return res, err
	}
	defer func() {
		if cerr := sess.Close(); err == nil {
			err = cerr
		}
	}()
	log := metrics.NewLog(a.Store, a.Metrics, runID, ph.series)
	saved := time.Now() // of the last checkpoint, or the phase's start
	var last *artifact.Ref
	progress := func(n int, loss float64) pipeline.Progress {
		return pipeline.Progress{Stage: ph.stage, Step: n, Total: ph.steps, Loss: loss, Checkpoint: last}
	}
	err = trainloop.Loop{
		Name: ph.stage, Steps: ph.steps, Start: start, LearningRate: ph.lr,
		Step: func(lr float64) (trainloop.Result, error) {
			rows := ph.batches.Next()
			b, err := batch(rows)
			if err != nil {
				return trainloop.Result{}, err
			}
			r, err := sess.Step(lr, b)
			tokens := 0
			for _, i := range rows {
				tokens += ph.tokens[i]
			}
			return trainloop.Result{Loss: r.Loss, GradNorm: r.GradNorm, Tokens: tokens}, err
		},
		AfterStep: func(n int, lr float64, r trainloop.Result, took time.Duration) {
			if n == 1 {
				res.FirstLoss = r.Loss
			}
			res.FinalLoss = r.Loss
			secs := took.Seconds()
			log.Add(n, map[string]float64{"loss": r.Loss, "grad_norm": r.GradNorm, "learning_rate": lr, "seconds": secs,
				"tokens": float64(r.Tokens), "tokens_per_second": float64(r.Tokens) / max(secs, 1e-9),
				"checkpoint_age_seconds": time.Since(saved).Seconds()})
			show(ctx, progress(n, r.Loss)) // heartbeats carry it on time, not every so many steps
		},
		CheckpointEvery: ph.every,
		Checkpoint: func(n int) error {
			if err := log.Flush(); err != nil { // before the checkpoint that resumes after these steps
				return err
			}
			if err := sess.Sync(); err != nil { // ph.params and ph.st: step n's state
				return err
			}
			ref, err := a.saveCheckpoint(runID, ph, n, res)
			if err != nil {
				return err
			}
			last, saved = &ref, time.Now()
			beat(ctx, progress(n, res.FinalLoss))
			return nil
		},
	}.Run(ctx)
	if err != nil {
		return res, err
	}
	return res, log.Flush()
}

func (a *Activities) saveCheckpoint(runID string, ph *phase, step int, res pipeline.TrainResult) (artifact.Ref, error) {
	base, err := runPath(runID, ph.dir, "checkpoints", fmt.Sprintf("%s-%06d", ph.name, step))
	if err != nil {
		return artifact.Ref{}, err
	}
	ck := trainCheckpoint{Phase: ph.name, Step: step, FirstLoss: res.FirstLoss, LastLoss: res.FinalLoss, Earlier: ph.earlier, Weak: ph.weak}
	if ck.Params, err = a.Store.PutWeights(base+".params.safetensors", ph.params); err != nil {
		return artifact.Ref{}, err
	}
	if ck.Optimizer, err = a.Store.PutWeights(base+".optimizer.safetensors", ph.st.Save()); err != nil {
		return artifact.Ref{}, err
	}
	if ck.Batcher, err = ph.batches.State(); err != nil {
		return artifact.Ref{}, err
	}
	return a.Store.PutJSON(base+".json", ck)
}

// restore loads a checkpoint into the phase's params, optimizer state and
// batcher, in place: the step function holds on to them.
func (a *Activities) restore(ph *phase, ck *trainCheckpoint) error {
	params, err := a.Store.GetWeights(ck.Params)
	if err != nil {
		return err
	}
	if params.Len() != ph.params.Len() {
		return corrupt(fmt.Errorf("checkpoint %s holds %d tensors, the model %d", ck.Params.Path, params.Len(), ph.params.Len()))
	}
	for _, n := range params.Names() {
		ph.params.Put(n, params.Get(n))
	}
	for k, v := range params.Metadata {
		ph.params.Metadata[k] = v
	}
	ost, err := a.Store.GetWeights(ck.Optimizer)
	if err != nil {
		return err
	}
	st, err := optim.LoadState(ost)
	if err != nil {
		return corrupt(fmt.Errorf("checkpoint %s: %w", ck.Optimizer.Path, err))
	}
	*ph.st = *st
	if err := ph.batches.Restore(ck.Batcher); err != nil {
		return corrupt(fmt.Errorf("checkpoint of %s at step %d: %w", ck.Phase, ck.Step, err))
	}
	return nil
}
