// Package helpsteer reads and writes the HelpSteer2 rating files and the
// HelpSteer2-Preference pair files, the two label kinds the reward models are
// trained on, and the prompts-only files (PromptRow) that RL from verifiable
// rewards samples from. Loading is strict on purpose: a silently defaulted
// field (a missing helpfulness read as 0, a strength of 5) would corrupt
// training without any visible failure, so every problem is reported as
// "<file>:<line>: <field>: <reason>" and the load stops. A caller that
// prefers to drop bad rows asks for it explicitly (ReadOptions.SkipInvalid)
// and gets a ReadReport counting and locating what was dropped.
package helpsteer

import (
	"errors"
	"fmt"
	"strings"

	"github.com/alignflow/alignflow/model/tokenizer"
)

// AttributeNames lists the five HelpSteer2 attributes in the order used by
// Rating.Attributes and by the regression head, so that index i means the same
// attribute everywhere.
var AttributeNames = [5]string{"helpfulness", "correctness", "coherence", "complexity", "verbosity"}

// Likert bounds of the HelpSteer2 attribute ratings.
const (
	MinAttribute = 0
	MaxAttribute = 4
)

// Bounds of a preference strength; CannotJudge marks an individual annotator
// who could not decide, which only appears inside annotator lists.
const (
	MinStrength = -3
	MaxStrength = 3
	CannotJudge = -100
)

// Split names used by HelpSteer2-Preference rows. The released
// preference.jsonl.gz marks its held-out rows "val"; the loaders read that as
// SplitValidation, so the rest of alignflow sees one name.
const (
	SplitTrain      = "train"
	SplitValidation = "validation"
	SplitVal        = "val"
)

// Rating is one HelpSteer2 row: a response to a prompt rated on five Likert
// attributes 0..4. It is the label the regression reward model learns.
type Rating struct {
	Prompt      string `json:"prompt"`
	Response    string `json:"response"`
	Helpfulness int    `json:"helpfulness"`
	Correctness int    `json:"correctness"`
	Coherence   int    `json:"coherence"`
	Complexity  int    `json:"complexity"`
	Verbosity   int    `json:"verbosity"`
	// Split is "train" or "validation". Real HelpSteer2 ships one file per
	// split and leaves it out; the synthetic generator sets it.
	Split string `json:"split,omitempty"`
	// Answer is an optional reference answer to the prompt (a number for
	// GSM8K-style rows), for the verifiers of RL from verifiable rewards;
	// HelpSteer2 itself has none.
	Answer string `json:"answer,omitempty"`
}

// Attributes returns the five ratings in AttributeNames order as float32, the
// form the regression loss consumes.
func (r Rating) Attributes() [5]float32 {
	return [5]float32{
		float32(r.Helpfulness), float32(r.Correctness), float32(r.Coherence),
		float32(r.Complexity), float32(r.Verbosity),
	}
}

// Validate reports the first value that the strict loader would reject, so
// writers and generators never produce a file that cannot be read back.
// The error text is "<field>: <reason>".
func (r Rating) Validate() error {
	if err := checkPrompt(r.Prompt); err != nil {
		return err
	}
	if strings.TrimSpace(r.Response) == "" {
		return fieldErr("response", "is empty")
	}
	attrs := [5]int{r.Helpfulness, r.Correctness, r.Coherence, r.Complexity, r.Verbosity}
	for i, v := range attrs {
		if v < MinAttribute || v > MaxAttribute {
			return fieldErr(AttributeNames[i], fmt.Sprintf("%d is outside %d..%d", v, MinAttribute, MaxAttribute))
		}
	}
	if r.Split != "" {
		if err := checkSplit(r.Split); err != nil {
			return err
		}
	}
	return nil
}

// Preference is one HelpSteer2-Preference row: two responses to the same
// prompt and the aggregated strength with which annotators preferred one.
// It is the label the Bradley-Terry reward models learn.
type Preference struct {
	Split     string `json:"split"`
	Prompt    string `json:"prompt"`
	Response1 string `json:"response_1"`
	Response2 string `json:"response_2"`
	// PreferenceStrength is -3..3: negative prefers response_1, positive
	// response_2, 0 is no preference; the magnitude is the BT margin.
	PreferenceStrength          int                   `json:"preference_strength"`
	PreferenceStatement         string                `json:"preference_statement"`
	PreferenceElaboration       string                `json:"preference_elaboration"`
	ThreeMostSimilarPreferences []AnnotatorPreference `json:"three_most_similar_preferences"`
	AllPreferencesUnprocessed   []AnnotatorJudgement  `json:"all_preferences_unprocessed"`
	// Answer is an optional reference answer to the prompt, as on Rating.
	Answer string `json:"answer,omitempty"`
}

// AnnotatorPreference is one of the three annotations whose strengths agree
// most, kept because the row's strength is aggregated from them.
type AnnotatorPreference struct {
	Statement   string `json:"statement"`
	Elaboration string `json:"elaboration"`
	Strength    int    `json:"strength"`
}

// AnnotatorJudgement is one raw annotation as collected; Strength is -3..3,
// or CannotJudge (-100) when the annotator could not decide.
type AnnotatorJudgement struct {
	Justification string `json:"justification"`
	Strength      int    `json:"strength"`
}

// Margin is |preference_strength|, the preference magnitude m used by the
// margin and scaled Bradley-Terry losses; 0 means a tie.
func (p Preference) Margin() int {
	if p.PreferenceStrength < 0 {
		return -p.PreferenceStrength
	}
	return p.PreferenceStrength
}

// Tie reports whether annotators expressed no preference; such pairs carry
// no Bradley-Terry signal and are left out of training.
func (p Preference) Tie() bool { return p.PreferenceStrength == 0 }

// Chosen returns the preferred response: response_2 when the strength is
// positive, response_1 when it is negative. For a tie it returns response_1,
// so callers must filter ties (Tie) before building BT pairs.
func (p Preference) Chosen() string {
	if p.PreferenceStrength > 0 {
		return p.Response2
	}
	return p.Response1
}

// Rejected returns the response that Chosen does not; for a tie, response_2.
func (p Preference) Rejected() string {
	if p.PreferenceStrength > 0 {
		return p.Response1
	}
	return p.Response2
}

// Validate reports the first value that the strict loader would reject, so
// writers and generators never produce a file that cannot be read back.
// The error text is "<field>: <reason>".
func (p Preference) Validate() error {
	if err := checkSplit(p.Split); err != nil {
		return err
	}
	if err := checkPrompt(p.Prompt); err != nil {
		return err
	}
	if strings.TrimSpace(p.Response1) == "" {
		return fieldErr("response_1", "is empty")
	}
	if strings.TrimSpace(p.Response2) == "" {
		return fieldErr("response_2", "is empty")
	}
	if s := p.PreferenceStrength; s < MinStrength || s > MaxStrength {
		return fieldErr("preference_strength", fmt.Sprintf("%d is outside %d..%d", s, MinStrength, MaxStrength))
	}
	for i, a := range p.ThreeMostSimilarPreferences {
		if err := checkAnnotatorStrength(fmt.Sprintf("three_most_similar_preferences[%d].strength", i), a.Strength); err != nil {
			return err
		}
	}
	for i, a := range p.AllPreferencesUnprocessed {
		if err := checkAnnotatorStrength(fmt.Sprintf("all_preferences_unprocessed[%d].strength", i), a.Strength); err != nil {
			return err
		}
	}
	return nil
}

// PromptRow is one row of a prompts-only file, the input of RL from
// verifiable rewards: the policy samples responses to Prompt and a verifier
// scores them against Answer. There is no response or label, since the
// policy writes the one and the verifier computes the other. Answer may be
// empty for a reward-model-only run; whether a verifier needs it is the
// caller's check, as only the caller knows which verifier is configured.
type PromptRow struct {
	Prompt string `json:"prompt"`
	Answer string `json:"answer,omitempty"`
}

// Validate reports the first value that the strict loader would reject.
// The error text is "<field>: <reason>".
func (p PromptRow) Validate() error {
	return checkPrompt(p.Prompt)
}

// checkPrompt rejects an empty prompt and a multi-turn prompt whose turns do
// not parse (an unknown role after <extra_id_1>), which the model would
// otherwise see as raw markers.
func checkPrompt(prompt string) error {
	if strings.TrimSpace(prompt) == "" {
		return fieldErr("prompt", "is empty")
	}
	if _, err := tokenizer.ParseTurns(prompt); err != nil {
		return fieldErr("prompt", err.Error())
	}
	return nil
}

func checkSplit(s string) error {
	switch s {
	case SplitTrain, SplitValidation, SplitVal:
		return nil
	case "":
		return fieldErr("split", "is empty")
	default:
		return fieldErr("split", fmt.Sprintf("%q is not a split (allowed: %q, %q or %q)", s, SplitTrain, SplitValidation, SplitVal))
	}
}

// normalSplit maps the release's "val" to SplitValidation.
func normalSplit(s string) string {
	if s == SplitVal {
		return SplitValidation
	}
	return s
}

func checkAnnotatorStrength(field string, s int) error {
	if s == CannotJudge || (s >= MinStrength && s <= MaxStrength) {
		return nil
	}
	return fieldErr(field, fmt.Sprintf("%d is outside %d..%d (and is not %d, cannot judge)", s, MinStrength, MaxStrength, CannotJudge))
}

// FieldError names the offending field of a row, so that a LoadError can
// point at it and callers can test for it with errors.As.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

func fieldErr(field, reason string) error { return &FieldError{Field: field, Reason: reason} }

// LoadError locates a problem in an input file as "<file>:<line>: <field>:
// <reason>" so it can be fixed at its source. Line is 1-based; 0 means the
// whole file (unopenable, unreadable gzip header, no valid rows).
type LoadError struct {
	File  string
	Line  int
	Field string
	Err   error
}

func (e *LoadError) Error() string {
	return fmt.Sprintf("%s:%d: %s: %v", e.File, e.Line, e.Field, e.Err)
}

// Unwrap exposes the underlying cause, such as an *fs.PathError or a gzip
// error, for errors.Is/As; row problems carry ErrNoRows or a plain reason.
func (e *LoadError) Unwrap() error { return e.Err }

// ErrNoRows is returned (inside a LoadError) for a file without any row,
// which is always a pipeline mistake rather than a valid empty dataset.
var ErrNoRows = errors.New("no rows")
