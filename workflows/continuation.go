package workflows

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"reflect"
	"regexp"
	"sort"
	"strings"

	"go.temporal.io/sdk/workflow"

	"github.com/alignflow/alignflow/config"

	"github.com/alignflow/alignflow/activities"
	"github.com/alignflow/alignflow/artifact"
)

// checkContinuation decides whether the run may take st, the continuation
// it was started with, as the state of its alignment, which lets it skip the
// data stage's checks and train from st's references.
//
// Only a run that an alignment continued as new may: one with a
// ContinuedExecutionRunID that is neither a cron run nor a retried attempt
// (Temporal sets that ID on those too, with the input the caller first
// gave). No client can set it: `temporal workflow start --input SPEC
// --input CONT` makes a run without one. Continuing as new is up to the
// workflow code a run executes, which is this code on alignflow's workers
// (a party that runs workers on alignflow's task queues runs workflow code,
// and no workflow-level check could stop it). A retried continued run
// fails here too: start it again, or resume it (`alignflow resume`, which
// resets it and keeps its input).
//
// Every reference st carries is checked as well (so that a continuation
// that slipped through, or a damaged one, loads nothing outside the
// alignment's artifacts): its digest is a sha256 and its key lies in the
// folder of the run that made it, this run's unless the result holding it
// was reused from another run (reused_from_run); the policy and optimizer
// are the last iteration's (or the SFT policy, before any); the spec is the
// one the continued run had; the sampling rounds it counts fit the
// spec's bound; a run that trains no reward model carries none; the
// rollouts sampled ahead are those of the iterations max_staleness allows.
func checkContinuation(info *workflow.Info, id string, input json.RawMessage, spec config.Spec, st *Continuation) error {
	switch {
	case info.ContinuedExecutionRunID == "":
		return errors.New("this run was started with a continuation, which only a run an alignment continued as new takes: start a run with its spec alone")
	case info.CronSchedule != "":
		return errors.New("a run on a cron schedule takes no continuation: start each run with its spec alone")
	case info.Attempt > 1:
		return fmt.Errorf("attempt %d of a continued run: a retried run takes no continuation; start the alignment again, or resume the failed run with `alignflow resume %s`", info.Attempt, id)
	}
	if st.SpecDigest != "" && st.SpecDigest != specDigest(input) {
		return errors.New("spec_sha256: the continuation was made by a run of another spec")
	}
	var errs []error
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode the continuation: %w", err)
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("decode the continuation: %w", err)
	}
	// A run that trained no reward model has none to check, and must have
	// none (an empty reference would not pass the checks).
	if spec.Reward.ModelLeftOut() && st.RewardModel.Checkpoint == (artifact.Ref{}) {
		if !reflect.ValueOf(st.RewardModel).IsZero() {
			errs = append(errs, errors.New("reward_model: a run that trained no reward model has none"))
		}
		delete(v, "reward_model")
	}
	// The policy and optimizer are checked as the iteration's they are.
	delete(v, "policy")
	delete(v, "optimizer")
	delete(v, "policy_sha256")
	walkRefs(v, "", id, func(field string, r artifact.Ref, owner string) {
		if err := checkRef(r, owner); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", field, err))
		}
	})
	policy, optimizer, digest := st.SFT.Checkpoint, artifact.Ref{}, st.SFT.Digest
	if st.Last != nil {
		policy, optimizer, digest = st.Last.Policy, st.Last.Optimizer, st.Last.PolicyDigest
	}
	if st.Policy != policy || st.Optimizer != optimizer || st.PolicyDigest != digest {
		errs = append(errs, errors.New("policy, optimizer, policy_sha256: not the last iteration's (or, before any, the SFT policy's)"))
	}
	if n, left := spec.Reinforce.MaxStaleness, spec.Reinforce.Iterations-st.Iteration; len(st.InFlight) != max(min(n, left), 0) {
		errs = append(errs, fmt.Errorf("in_flight: %d iterations' rollouts, but max_staleness %d leaves %d sampled ahead of iteration %d", len(st.InFlight), n, max(min(n, left), 0), st.Iteration))
	}
	for i, s := range st.InFlight {
		if s.Iteration != st.Iteration+i || s.Rounds < 1 || s.Rounds > spec.Reinforce.SamplingRounds() {
			errs = append(errs, fmt.Errorf("in_flight[%d]: iteration %d of %d rounds, not iteration %d of 1..%d", i, s.Iteration, s.Rounds, st.Iteration+i, spec.Reinforce.SamplingRounds()))
		}
	}
	rounds := spec.Reinforce.SamplingRounds()
	if most := st.Iteration * (rounds - 1); st.ExtraRounds < 0 || st.ExtraRounds > most {
		errs = append(errs, fmt.Errorf("extra_rounds: %d, but %d iterations of at most %d sampling rounds draw 0..%d beyond their first", st.ExtraRounds, st.Iteration, rounds, most))
	}
	return errors.Join(errs...)
}

// walkRefs calls fn for every artifact reference in v, decoded JSON at
// field, with the run whose folder it must lie in: owner, or the
// reused_from_run of the innermost result holding it.
func walkRefs(v any, field, owner string, fn func(field string, r artifact.Ref, owner string)) {
	switch x := v.(type) {
	case map[string]any:
		if artifact.IsRef(x) {
			var r artifact.Ref
			b, _ := json.Marshal(x)
			if err := json.Unmarshal(b, &r); err == nil {
				fn(field, r, owner)
			}
			return
		}
		if from, ok := x["reused_from_run"].(string); ok && from != "" {
			owner = from
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys) // errors in a stable order
		for _, k := range keys {
			walkRefs(x[k], join(field, k), owner, fn)
		}
	case []any:
		for i, e := range x {
			walkRefs(e, fmt.Sprintf("%s[%d]", field, i), owner, fn)
		}
	}
}

func join(field, k string) string {
	if field == "" {
		return k
	}
	return field + "." + k
}

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// checkRef checks that r is none (the zero Ref) or a well-formed
// reference to an artifact of run owner.
func checkRef(r artifact.Ref, owner string) error {
	if r == (artifact.Ref{}) {
		return nil
	}
	if !sha256Hex.MatchString(r.SHA256) {
		return fmt.Errorf("sha256 %q is not a sha256 digest (64 lowercase hex characters)", r.SHA256)
	}
	dir := activities.RunDir(owner) + "/"
	if path.Clean(r.Path) != r.Path || !strings.HasPrefix(r.Path, dir) || r.Bytes < 0 {
		return fmt.Errorf("path %q is not an artifact of run %s (under %s)", r.Path, owner, dir)
	}
	return nil
}

// specDigest is the sha256 of a run's spec input in a canonical form
// (keys sorted, numbers as written, no spacing): continuing as new encodes
// the input again, compacted and HTML-escaped, so the bytes may differ
// while the spec is the same.
func specDigest(input json.RawMessage) string {
	dec := json.NewDecoder(bytes.NewReader(input))
	dec.UseNumber()
	var v any
	b := []byte(input)
	if dec.Decode(&v) == nil {
		if c, err := json.Marshal(v); err == nil {
			b = c
		}
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
