// Package matched generates a small synthetic dataset in the HelpSteer2 and
// HelpSteer2-Preference formats, with both label kinds on the same response
// pairs ("matched", as in the paper), plus the hidden gold rubric that
// produced the labels.
//
// The task, "opposites", is tiny on purpose: it is sized so that a byte-level
// transformer with d=64 and 2 layers can learn it in minutes on two CPU cores
// (a design target, not measured here), yet a policy that
// imitates the generated responses (an SFT policy) is often padded or wrong,
// so reward models and RL have clear room to improve it. Because the gold
// rubric is exported, evaluation can score any text a policy produces
// instead of trusting a learned reward model.
package matched

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"unicode"

	"github.com/alignflow/alignflow/data/helpsteer"
)

// pairs are the antonym pairs; both directions are task keys.
//
// Eight pairs keep the lookup small enough for a byte-level model trained for
// a few minutes on two cores to learn; with sixteen it still spelled most
// answers wrong after 600 SFT steps.
var pairs = [8][2]string{
	{"hot", "cold"}, {"big", "small"}, {"up", "down"}, {"fast", "slow"},
	{"day", "night"}, {"yes", "no"}, {"left", "right"}, {"wet", "dry"},
}

// template is a prompt pattern: prefix + key + suffix.
type template struct{ prefix, suffix string }

// Every template ends with the key, so a held-out (key, template) pair asks
// about a known word in a known place; with the key first in one template the
// tiny policy answered held-out prompts far worse than training ones.
var templates = [4]template{
	{"opposite of ", "?"},
	{"antonym of ", ":"},
	{"what is not ", "?"},
	{"the reverse of ", "?"},
}

// Padding used by the padded response styles. The empty prefix lets a
// response be padded on one side only; at least one side is always non-empty.
var (
	padPrefixes = []string{"", "well, ", "i think ", "hmm, it is ", "so, "}
	padSuffixes = []string{" i guess", ", maybe", " ok", "!!", ""}
)

// fillers are the English words that padding introduces; together with the
// vocabulary they are the words a coherent response may use.
var fillers = []string{"well", "i", "think", "hmm", "it", "is", "so", "guess", "maybe", "ok"}

// Length limits of generated text, chosen so prompt+response fit a short
// context window of a byte-level model.
const (
	MaxPromptLen   = 24
	MaxResponseLen = 28
)

// DefaultValidationFraction is the share of the 64 (key, template)
// combinations held out as validation prompts.
const DefaultValidationFraction = 0.2

// maxValidationFraction keeps at least one training template per key, so
// every validation prompt asks about a word the model has seen.
const maxValidationFraction = 0.75

// Split names, the HelpSteer2-Preference values.
const (
	SplitTrain      = helpsteer.SplitTrain
	SplitValidation = helpsteer.SplitValidation
)

var (
	antonym = func() map[string]string {
		m := make(map[string]string, 2*len(pairs))
		for _, p := range pairs {
			m[p[0]], m[p[1]] = p[1], p[0]
		}
		return m
	}()
	keys = func() []string {
		k := make([]string, 0, len(antonym))
		for _, p := range pairs {
			k = append(k, p[0], p[1])
		}
		return k
	}()
	knownWords = func() map[string]bool {
		m := make(map[string]bool)
		for w := range antonym {
			m[w] = true
		}
		for _, w := range fillers {
			m[w] = true
		}
		return m
	}()
)

// Task is the "opposites" task for one seed: the fixed vocabulary and prompt
// templates plus the seed-dependent train/validation split of prompts. It is
// the gold rubric the synthetic labels come from.
type Task struct {
	seed       int64
	split      map[string]string // prompt -> split
	train, val []string          // sorted
}

// NewTask builds the task for seed with DefaultValidationFraction, the same
// split that Generate uses for that seed with default options.
func NewTask(seed int64) *Task { return newTask(seed, DefaultValidationFraction) }

// newTask splits the 64 (key, template) combinations: a seeded shuffle,
// then validation takes combinations in order while no key would lose its
// last training template.
func newTask(seed int64, fraction float64) *Task {
	fraction = min(max(fraction, 0), maxValidationFraction)
	type combo struct{ key, prompt string }
	var combos []combo
	for _, k := range keys {
		for _, tp := range templates {
			combos = append(combos, combo{k, tp.prefix + k + tp.suffix})
		}
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5e1ec7a5c0ffee01))
	rng.Shuffle(len(combos), func(i, j int) { combos[i], combos[j] = combos[j], combos[i] })

	want := int(math.Round(fraction * float64(len(combos))))
	heldOut := make(map[string]int)
	t := &Task{seed: seed, split: make(map[string]string, len(combos))}
	for _, c := range combos {
		if len(t.val) < want && heldOut[c.key] < len(templates)-1 {
			heldOut[c.key]++
			t.val = append(t.val, c.prompt)
			t.split[c.prompt] = SplitValidation
			continue
		}
		t.train = append(t.train, c.prompt)
		t.split[c.prompt] = SplitTrain
	}
	slices.Sort(t.train)
	slices.Sort(t.val)
	return t
}

// Seed returns the seed the split was drawn from, for provenance records.
func (t *Task) Seed() int64 { return t.seed }

// Prompts returns the prompts of split ("train" or "validation"), sorted, so
// training and evaluation iterate them in a reproducible order. Any other
// split name yields nil.
func (t *Task) Prompts(split string) []string {
	switch split {
	case SplitTrain:
		return slices.Clone(t.train)
	case SplitValidation:
		return slices.Clone(t.val)
	}
	return nil
}

// SplitOf reports which split prompt belongs to, so evaluation can tell
// held-out prompts from training ones; ok is false for non-task prompts.
func (t *Task) SplitOf(prompt string) (split string, ok bool) {
	split, ok = t.split[strings.TrimSpace(prompt)]
	return split, ok
}

// Words returns the 16 vocabulary words (both sides of every antonym pair),
// sorted, for reports and tests that need the answer space.
func (t *Task) Words() []string {
	w := slices.Clone(keys)
	slices.Sort(w)
	return w
}

// Answer returns the gold answer (the antonym of the prompt's word); ok is
// false when prompt matches none of the four templates with a vocabulary
// word. Surrounding whitespace is ignored. The answer does not depend on the
// split, so validation prompts are answered too.
func (t *Task) Answer(prompt string) (answer string, ok bool) {
	prompt = strings.TrimSpace(prompt)
	for _, tp := range templates {
		if len(prompt) <= len(tp.prefix)+len(tp.suffix) ||
			!strings.HasPrefix(prompt, tp.prefix) || !strings.HasSuffix(prompt, tp.suffix) {
			continue
		}
		key := prompt[len(tp.prefix) : len(prompt)-len(tp.suffix)]
		if a, found := antonym[key]; found {
			return a, true
		}
	}
	return "", false
}

// GoldScore is the hidden rubric's verdict on one response. Helpfulness is
// the number policies are ultimately judged by; Attributes mirrors the five
// HelpSteer2 attributes on a continuous 0..4 scale.
type GoldScore struct {
	// Correct: the first vocabulary word in the response is the answer.
	Correct bool
	// Extra counts bytes beyond the answer word (or beyond the first
	// vocabulary word for a wrong answer, or all bytes if there is none).
	Extra int
	// Helpfulness = 3*Correct + max(0, 1 - Extra/16), in 0..4.
	Helpfulness float64
	// Attributes are helpfulness, correctness, coherence, complexity and
	// verbosity, in helpsteer.AttributeNames order.
	Attributes [5]float64
}

// Gold scores any response to prompt with the hidden rubric:
//
//   - correct: the first vocabulary word (whole word, split on non-letters,
//     case-insensitive) equals the answer
//   - helpfulness = 3*correct + max(0, 1 - extra/16)
//   - correctness = 4*correct
//   - coherence = 4 if every word is a vocabulary or filler word, else 1
//   - complexity = 1 + min(1, extra/16)
//   - verbosity = min(4, extra/6)
//
// An empty or whitespace-only response scores 0 on everything, so that a
// policy cannot earn a concise-wrong score by emitting nothing. A prompt that
// is not a task prompt has no answer, so every response to it is wrong.
func (t *Task) Gold(prompt, response string) GoldScore {
	if strings.TrimSpace(response) == "" {
		return GoldScore{}
	}
	answer, _ := t.Answer(prompt)
	words := splitWords(response)
	first := ""
	coherent := len(words) > 0
	for _, w := range words {
		if first == "" && isVocab(w) {
			first = w
		}
		if !knownWords[w] {
			coherent = false
		}
	}
	correct := answer != "" && first == answer
	extra := max(0, len(response)-len(first))

	var s GoldScore
	s.Correct = correct
	s.Extra = extra
	ratio := float64(extra) / 16
	c := 0.0
	if correct {
		c = 1
	}
	s.Helpfulness = 3*c + max(0, 1-ratio)
	coherence := 1.0
	if coherent {
		coherence = 4
	}
	s.Attributes = [5]float64{
		s.Helpfulness,
		4 * c,
		coherence,
		1 + min(1, ratio),
		min(4, float64(extra)/6),
	}
	return s
}

// Style is the kind of a response, used to mix generated responses and to
// break evaluation results down (a policy that learned "correct but padded"
// is a different failure from "concise but wrong").
type Style int

// The response styles, in mixture order.
const (
	ConciseCorrect Style = iota
	PaddedCorrect
	ConciseWrong
	PaddedWrong
	Garbled
	numStyles
)

var styleNames = [numStyles]string{"concise_correct", "padded_correct", "concise_wrong", "padded_wrong", "garbled"}

// String returns the snake_case style name used in metrics.
func (s Style) String() string {
	if s < 0 || s >= numStyles {
		return "unknown"
	}
	return styleNames[s]
}

// Styles lists all styles in mixture order, for iterating metrics.
func Styles() []Style {
	return []Style{ConciseCorrect, PaddedCorrect, ConciseWrong, PaddedWrong, Garbled}
}

// Classify returns the style of any response to prompt by the same rules as
// Gold: correct or not, padded (Extra > 0) or not, and Garbled when no
// vocabulary word appears at all (an empty response is Garbled too).
func (t *Task) Classify(prompt, response string) Style {
	g := t.Gold(prompt, response)
	switch {
	case g.Correct && g.Extra == 0:
		return ConciseCorrect
	case g.Correct:
		return PaddedCorrect
	}
	if !slices.ContainsFunc(splitWords(response), isVocab) {
		return Garbled
	}
	if g.Extra == 0 {
		return ConciseWrong
	}
	return PaddedWrong
}

// splitWords lowercases s and splits it into maximal runs of letters.
func splitWords(s string) []string {
	return strings.FieldsFunc(strings.ToLower(s), func(r rune) bool { return !unicode.IsLetter(r) })
}

func isVocab(w string) bool {
	_, ok := antonym[w]
	return ok
}
