// Package dataset is a run's data as its stages read it: the rated and
// compared responses, encoded for the run's model and fitted to its
// window, the prompts of each split, and, for generated data, the gold
// rubric. Which rows a stage trains or is measured on is decided here,
// once, for the activities of every stage and for the data stage's counts.
package dataset

import (
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/data/helpsteer"
	"github.com/alignflow/alignflow/data/matched"
	"github.com/alignflow/alignflow/model/lm"
	"github.com/alignflow/alignflow/model/rng"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/reward"
)

// InvalidError is a data error that retrying cannot fix: the data holds
// nothing a stage can use, or a prompt the model cannot render.
type InvalidError struct{ Err error }

func (e *InvalidError) Error() string { return e.Err.Error() }
func (e *InvalidError) Unwrap() error { return e.Err }

func invalid(format string, args ...any) error {
	return &InvalidError{Err: fmt.Errorf(format, args...)}
}

// IsInvalid reports whether err is (or wraps) an InvalidError.
func IsInvalid(err error) bool {
	var e *InvalidError
	return errors.As(err, &e)
}

// Dataset is a run's ratings and preferences as the model reads them.
type Dataset struct {
	Ratings     []helpsteer.Rating
	Preferences []helpsteer.Preference
	// Task is the gold rubric of generated data; nil for a user's data.
	Task  *matched.Task
	Codec *lm.Codec
	// MaxLen is the model's window: prompt and response together.
	MaxLen int
	// RL are data.prompts' rows: REINFORCE's prompts, and answers, when the
	// run has the file (nil: the training split's prompts).
	RL []helpsteer.PromptRow

	mu      sync.Mutex
	encoded map[string]encodedPrompt
	answers map[string]string
}

type encodedPrompt struct {
	ids []int32
	err error
}

// New is the dataset of ratings and preferences for a model with codec and
// window maxLen; task is the gold rubric of generated data (nil for none).
func New(ratings []helpsteer.Rating, prefs []helpsteer.Preference, task *matched.Task, codec *lm.Codec, maxLen int) *Dataset {
	return &Dataset{Ratings: ratings, Preferences: prefs, Task: task, Codec: codec, MaxLen: maxLen}
}

// GeneratorOptions are the bundled generator's options for a spec: a noise
// of 0 in the spec means none, where the generator reads 0 as its default.
func GeneratorOptions(spec config.Spec) matched.Options {
	g := spec.Data.Generate
	noise := func(v float64) float64 {
		if v == 0 {
			return -1
		}
		return v
	}
	return matched.Options{Seed: spec.Seed, Prompts: g.Prompts, ValidationFraction: g.ValidationFraction,
		RatingNoise: noise(g.RatingNoise), PreferenceNoise: noise(g.PreferenceNoise)}
}

// PromptIDs is the model's encoding of a prompt, computed once.
func (d *Dataset) PromptIDs(p string) ([]int32, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.encoded[p]; ok {
		return e.ids, e.err
	}
	ids, err := d.Codec.Prompt(p)
	if d.encoded == nil {
		d.encoded = map[string]encodedPrompt{}
	}
	d.encoded[p] = encodedPrompt{ids, err}
	return ids, err
}

// Fits reports whether a prompt leaves room for a response in the window
// (a prompt the chat template cannot render does not fit; Count refuses
// data with one before any stage meets it).
func (d *Dataset) Fits(p string) bool {
	ids, err := d.PromptIDs(p)
	return err == nil && len(ids) < d.MaxLen-4
}

// splitOf reads a row's split; rows without one are training rows.
func splitOf(s string) string {
	if s == "" {
		return helpsteer.SplitTrain
	}
	return s
}

// Pairs returns the tokenised non-tie preference pairs of a split as the
// reward model reads them (reward.PairOf): it leaves out, and counts in
// dropped, the pairs whose responses do not both fit the window whole (or
// cannot be rendered), and counts in cut those kept with the end of their
// prompt only.
func (d *Dataset) Pairs(split string) (out []reward.Pair, dropped, cut int) {
	for _, p := range d.Preferences {
		if p.Tie() || splitOf(p.Split) != split {
			continue
		}
		ids, err := d.PromptIDs(p.Prompt)
		if err != nil {
			dropped++
			continue
		}
		chosen, err1 := d.Codec.Response(p.Prompt, p.Chosen())
		rejected, err2 := d.Codec.Response(p.Prompt, p.Rejected())
		if err1 != nil || err2 != nil {
			dropped++
			continue
		}
		pair, cut1, ok := reward.PairOf(ids, chosen, rejected, float64(p.Margin()), d.MaxLen, d.Codec.Keep(ids))
		switch {
		case !ok:
			dropped++
		case cut1:
			cut++
			fallthrough
		default:
			out = append(out, pair)
		}
	}
	return out, dropped, cut
}

// Rated returns the ratings of a split as the reward model reads them,
// fitted like Pairs; a rating whose response does not fit the window whole
// is left out (its EOS, where the reward is read, would be cut).
func (d *Dataset) Rated(split string) []reward.Rated {
	var out []reward.Rated
	for _, r := range d.Ratings {
		if splitOf(r.Split) != split {
			continue
		}
		ids, err := d.PromptIDs(r.Prompt)
		if err != nil {
			continue
		}
		resp, err := d.Codec.Response(r.Prompt, r.Response)
		if err != nil {
			continue
		}
		seq, whole, _ := d.Codec.Fit(ids, resp, d.MaxLen)
		if !whole {
			continue
		}
		x := reward.Rated{Sequence: seq, Ratings: r.Attributes()}
		for i := range x.Present {
			x.Present[i] = true
		}
		out = append(out, x)
	}
	return out
}

// Ties counts a split's tied preferences, which no accuracy counts.
func (d *Dataset) Ties(split string) int {
	n := 0
	for _, p := range d.Preferences {
		if p.Tie() && splitOf(p.Split) == split {
			n++
		}
	}
	return n
}

// Prompts returns the distinct prompts of a split, sorted (the gold
// rubric's prompt space for generated data).
func (d *Dataset) Prompts(split string) []string {
	if d.Task != nil {
		return d.Task.Prompts(split)
	}
	seen := map[string]bool{}
	var out []string
	for _, p := range d.Preferences {
		if splitOf(p.Split) == split && !seen[p.Prompt] {
			seen[p.Prompt] = true
			out = append(out, p.Prompt)
		}
	}
	for _, r := range d.Ratings {
		if splitOf(r.Split) == split && !seen[r.Prompt] {
			seen[r.Prompt] = true
			out = append(out, r.Prompt)
		}
	}
	sort.Strings(out)
	return out
}

// SFT returns the supervised examples: the training ratings' prompts and
// responses that fit the window whole (a cut response would not teach its
// end).
func (d *Dataset) SFT() (prompts, responses [][]int32, err error) {
	for _, r := range d.Ratings {
		if splitOf(r.Split) != helpsteer.SplitTrain || !d.Fits(r.Prompt) {
			continue
		}
		p, _ := d.PromptIDs(r.Prompt)
		resp, err := d.Codec.Response(r.Prompt, r.Response)
		if err != nil {
			return nil, nil, &InvalidError{Err: fmt.Errorf("response to %q cannot be rendered for the model: %w", shortText(r.Prompt, 60), err)}
		}
		if len(p)+len(resp) > d.MaxLen {
			continue
		}
		prompts = append(prompts, p)
		responses = append(responses, resp)
	}
	if len(prompts) == 0 {
		return nil, nil, invalid("no training ratings fit model.max_len %d", d.MaxLen)
	}
	return prompts, responses, nil
}

// EvalPrompts are the held-out prompts a policy is measured on: the first
// n of the validation split that fit (of the training split if none do).
func (d *Dataset) EvalPrompts(n int) ([]string, error) {
	var pool []string
	for _, split := range []string{helpsteer.SplitValidation, helpsteer.SplitTrain} {
		for _, p := range d.Prompts(split) {
			if d.Fits(p) {
				pool = append(pool, p)
			}
		}
		if len(pool) > 0 {
			break
		}
	}
	if len(pool) == 0 {
		return nil, invalid("no prompts fit model.max_len %d", d.MaxLen)
	}
	return pool[:min(len(pool), n)], nil
}

// IterationPrompts picks the n prompts at position (from 0) of the run's
// walk through the training split: a seeded shuffle walked in order,
// wrapping around, so every iteration (every sampling round,
// pipeline.IterationInput.PromptPosition) sees the next slice and a
// resumed run sees exactly the prompts it would have.
func (d *Dataset) IterationPrompts(seed int64, position, n int) ([]string, error) {
	pool := d.rlPool()
	if len(pool) == 0 {
		if d.RL != nil {
			return nil, invalid("no prompt of data.prompts fits model.max_len %d", d.MaxLen)
		}
		return nil, invalid("no training prompts fit model.max_len %d", d.MaxLen)
	}
	order := rng.New(seed, "reinforce-prompts", 0).Perm(len(pool))
	out := make([]string, n)
	for j := range out {
		out[j] = pool[order[(position+j)%len(pool)]]
	}
	return out, nil
}

// rlPool is REINFORCE's prompts that fit the window, in the order given:
// data.prompts' (each once) when the run has it, else the training split's.
func (d *Dataset) rlPool() []string {
	var pool []string
	if d.RL != nil {
		seen := map[string]bool{}
		for _, r := range d.RL {
			if !seen[r.Prompt] && d.Fits(r.Prompt) {
				seen[r.Prompt] = true
				pool = append(pool, r.Prompt)
			}
		}
		return pool
	}
	for _, p := range d.Prompts(helpsteer.SplitTrain) {
		if d.Fits(p) {
			pool = append(pool, p)
		}
	}
	return pool
}

// Answer is a prompt's reference answer, as a verifier checks responses
// against it: data.prompts' answer where the run has the file and the row
// one, else the gold rubric's for generated data, else the answer field of
// the ratings and preferences that have the prompt (the first given).
func (d *Dataset) Answer(prompt string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.answers == nil {
		d.answers = map[string]string{}
		add := func(p, a string) {
			if _, seen := d.answers[p]; !seen && a != "" {
				d.answers[p] = a
			}
		}
		for _, r := range d.RL {
			add(r.Prompt, r.Answer)
		}
		if d.Task == nil {
			for _, r := range d.Ratings {
				add(r.Prompt, r.Answer)
			}
			for _, p := range d.Preferences {
				add(p.Prompt, p.Answer)
			}
		}
	}
	if a, ok := d.answers[prompt]; ok {
		return a, true
	}
	if d.Task != nil {
		return d.Task.Answer(prompt)
	}
	return "", false
}

// Verify scores each response (as text) to its prompt with the verifier
// kind against the prompt's Answer: 1 or 0 (reward.Verify). A prompt
// without an answer is a data error naming it.
func (d *Dataset) Verify(kind string, prompts, responses []string) ([]float64, error) {
	out := make([]float64, len(responses))
	for i, r := range responses {
		a, ok := d.Answer(prompts[i])
		if !ok {
			return nil, invalid("reward.verifier %s: prompt %q has no answer (give rows an \"answer\" field)", kind, shortText(prompts[i], 60))
		}
		v, err := reward.Verify(kind, r, a)
		if err != nil {
			return nil, invalid("reward.verifier: prompt %q: %v", shortText(prompts[i], 60), err)
		}
		out[i] = v
	}
	return out, nil
}

// VerifyAnswered is Verify over the rows whose prompts have an Answer:
// the mean score of those rows (1 or 0 each) and how many distinct prompts
// they answer; ok is false when no row's prompt has one. Held-out prompts
// of a user's data need not carry answers, so those without are left out
// rather than refused.
func (d *Dataset) VerifyAnswered(kind string, prompts, responses []string) (mean float64, answered int, ok bool, err error) {
	var ps, rs []string
	seen := map[string]bool{}
	for i, p := range prompts {
		if _, has := d.Answer(p); has {
			ps, rs = append(ps, p), append(rs, responses[i])
			seen[p] = true
		}
	}
	if len(ps) == 0 {
		return 0, 0, false, nil
	}
	scores, err := d.Verify(kind, ps, rs)
	if err != nil {
		return 0, 0, false, err
	}
	for _, s := range scores {
		mean += s / float64(len(scores))
	}
	return mean, len(seen), true, nil
}

// Encode returns the ids of prompts that Fits kept (EvalPrompts and
// IterationPrompts return only those).
func (d *Dataset) Encode(prompts []string) [][]int32 {
	out := make([][]int32, len(prompts))
	for i, p := range prompts {
		out[i], _ = d.PromptIDs(p)
	}
	return out
}

// Gold is the gold rubric's helpfulness of each response to its prompt
// (responses as generated ids); nil for data without a rubric.
func (d *Dataset) Gold(prompts []string, responses [][]int32) []float64 {
	if d.Task == nil {
		return nil
	}
	out := make([]float64, len(responses))
	for i, r := range responses {
		out[i] = d.Task.Gold(prompts[i], d.Codec.Text(r)).Helpfulness
	}
	return out
}

// Count fills in what the data report says about the dataset, and fails
// when a prompt cannot be rendered for the model or either split has no
// pair the reward model can use.
func (d *Dataset) Count(out *pipeline.Data) error {
	for _, split := range []string{helpsteer.SplitTrain, helpsteer.SplitValidation} {
		for _, p := range d.Prompts(split) {
			if _, err := d.PromptIDs(p); err != nil {
				return &InvalidError{Err: fmt.Errorf("prompt %q cannot be rendered for the model: %w", shortText(p, 60), err)}
			}
		}
	}
	for i, r := range d.RL {
		if _, err := d.PromptIDs(r.Prompt); err != nil {
			return &InvalidError{Err: fmt.Errorf("data.prompts row %d: prompt %q cannot be rendered for the model: %w", i+1, shortText(r.Prompt, 60), err)}
		}
	}
	if d.RL != nil {
		if out.RLPrompts = len(d.rlPool()); out.RLPrompts == 0 {
			return invalid("no prompt of data.prompts fits model.max_len %d", d.MaxLen)
		}
	}
	out.RatingRows, out.PreferenceRows = len(d.Ratings), len(d.Preferences)
	out.TiesExcluded = d.Ties(helpsteer.SplitTrain) + d.Ties(helpsteer.SplitValidation)
	train, droppedTrain, cutTrain := d.Pairs(helpsteer.SplitTrain)
	held, droppedHeld, cutHeld := d.Pairs(helpsteer.SplitValidation)
	out.TrainPairs, out.ValidationPairs = len(train), len(held)
	out.DroppedTrainPairs, out.DroppedValidationPairs, out.TruncatedPairs = droppedTrain, droppedHeld, cutTrain+cutHeld
	out.TrainPrompts = len(d.Prompts(helpsteer.SplitTrain))
	out.ValidationPrompts = len(d.Prompts(helpsteer.SplitValidation))
	tooLong := func(n int) string {
		if n == 0 {
			return ""
		}
		return fmt.Sprintf("; %d were left out because a response does not fit model.max_len %d whole", n, d.MaxLen)
	}
	if out.TrainPairs == 0 {
		return invalid("preferences hold no non-tie training pairs%s", tooLong(droppedTrain))
	}
	if out.ValidationPairs == 0 {
		return invalid("preferences hold no non-tie validation pairs (rows with split \"val\" or \"validation\")%s", tooLong(droppedHeld))
	}
	return nil
}

// shortText cuts s to at most n bytes for a message.
func shortText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
