package workflows

import (
	"fmt"

	"go.temporal.io/sdk/workflow"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/pipeline"
)

// Asynchronous rollouts (reinforce.max_staleness N above 0): iteration k
// samples from the policy update k - 1 - N produced, the SFT policy while
// k - 1 - N < 0. The workflow starts iteration j's sampling as soon as that
// policy exists, at the top of iteration j - N, in a coroutine of its own,
// so with N = 1 the shards of iteration k + 1 run on the rollout workers
// while update k runs on the trainer. Which policy each iteration samples
// from follows from the iteration numbers alone, and every shard's input
// with it, so the result never depends on which activity finished first.
// An iteration's sampling starts once the one before it has drawn its
// rounds, since its prompts come after theirs (dynamic sampling's extra
// rounds). A run that continues as new first waits for the samplings in
// flight and hands their results on by reference (Continuation.InFlight).

// Sampled is an iteration's rollouts as its sampling left them: its shards'
// results, round by round, and where its prompts were drawn.
type Sampled struct {
	Iteration int `json:"iteration"`
	// ExtraRounds is the IterationInput's: the extra rounds the iterations
	// before it drew.
	ExtraRounds int                    `json:"extra_rounds,omitempty"`
	Rounds      int                    `json:"rounds"`
	Shards      []pipeline.ShardResult `json:"shards"`
}

// asyncIteration runs iteration st.Iteration with asynchronous rollouts:
// it starts the sampling the iteration's new policy allows (iteration
// st.Iteration + N, from st.Policy), waits for this iteration's own, and
// updates st's policy with it. The update's importance ratio against the
// log-probabilities the shards recorded corrects for the staleness
// (reinforce.Objective.OffPolicy).
func (r *run) asyncIteration(st *Continuation) (pipeline.IterationResult, int, error) {
	r.startSamplings(st)
	if len(r.inFlight) == 0 {
		return pipeline.IterationResult{}, 0, fmt.Errorf("no rollouts of iteration %d were sampled", st.Iteration)
	}
	f := r.inFlight[0]
	r.inFlight = r.inFlight[1:]
	var got Sampled
	if err := f.Get(r.ctx, &got); err != nil {
		return pipeline.IterationResult{}, 1, err
	}
	if got.Iteration != st.Iteration || got.ExtraRounds != st.ExtraRounds {
		return pipeline.IterationResult{}, 1, fmt.Errorf("the rollouts of iteration %d (after %d extra rounds) came for iteration %d (after %d)",
			got.Iteration, got.ExtraRounds, st.Iteration, st.ExtraRounds)
	}
	res, err := r.update(pipeline.UpdateInput{IterationInput: r.iterationInput(st), Shards: got.Shards}, r.pin(st))
	return res, got.Rounds, err
}

// startSamplings starts the samplings st's policy is the one for: those of
// the iterations up to st.Iteration + N not started yet (all of 0..N at
// the first iteration, from the SFT policy; one later, or after a
// continuation's). Each waits for the one before it to know where its
// prompts start.
func (r *run) startSamplings(st *Continuation) {
	n := r.spec.Reinforce.MaxStaleness
	for r.sampledUpTo < min(st.Iteration+n+1, r.spec.Reinforce.Iterations) {
		in := r.iterationInput(st)
		in.Iteration, in.Optimizer = r.sampledUpTo, artifact.Ref{}
		var prev workflow.Future
		if k := len(r.inFlight); k > 0 {
			prev = r.inFlight[k-1]
		} else {
			in.ExtraRounds = st.ExtraRounds
		}
		r.inFlight = append(r.inFlight, r.startSampling(in, prev))
		r.sampledUpTo++
	}
}

// startSampling samples in (in.Policy samples) in a coroutine, once prev
// (the previous iteration's sampling; nil when none is in flight) has
// drawn its rounds, and returns the future of its Sampled.
func (r *run) startSampling(in pipeline.IterationInput, prev workflow.Future) workflow.Future {
	f, set := workflow.NewFuture(r.ctx)
	workflow.Go(r.ctx, func(ctx workflow.Context) {
		if prev != nil {
			var p Sampled
			if err := prev.Get(ctx, &p); err != nil {
				set.Set(nil, fmt.Errorf("iteration %d's rollouts wait for iteration %d's: %w", in.Iteration, in.Iteration-1, err))
				return
			}
			in.ExtraRounds = p.ExtraRounds + p.Rounds - 1
		}
		shards, rounds, err := r.sample(ctx, in)
		set.Set(Sampled{Iteration: in.Iteration, ExtraRounds: in.ExtraRounds, Rounds: rounds, Shards: shards}, err)
	})
	return f
}

// carried makes the futures of the samplings a continuation handed on.
func (r *run) carried(st *Continuation) {
	r.sampledUpTo = st.Iteration
	for _, s := range st.InFlight {
		f, set := workflow.NewFuture(r.ctx)
		set.SetValue(s)
		r.inFlight = append(r.inFlight, f)
		r.sampledUpTo = s.Iteration + 1
	}
	st.InFlight = nil
}

// landInFlight waits for the samplings in flight, for the run that
// continues the alignment: their results go in st.InFlight.
func (r *run) landInFlight(st *Continuation) error {
	for _, f := range r.inFlight {
		var s Sampled
		if err := f.Get(r.ctx, &s); err != nil {
			return err
		}
		st.InFlight = append(st.InFlight, s)
	}
	r.inFlight = nil
	return nil
}
