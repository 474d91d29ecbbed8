package reward

// This file holds the verifiers of RL from verifiable rewards: checks that
// score a policy's response 1 or 0 against a reference answer, with no model
// involved. They are pure functions of their strings so that a training step,
// an evaluation and a test all score a response the same way, and so that a
// reward can be recomputed from a run's stored rollouts.

import (
	"fmt"
	"math/big"
	"regexp"
	"strings"
	"unicode"
)

// The verifier kinds Verify accepts.
const (
	// VerifierExact: the response equals the answer once both are trimmed.
	VerifierExact = "exact"
	// VerifierNormalized: equal after case folding, punctuation and symbol
	// removal and whitespace collapsing, for short free-text answers.
	VerifierNormalized = "normalized"
	// VerifierNumeric: the final number of the response equals the answer's,
	// GSM8K's convention.
	VerifierNumeric = "numeric"
	// VerifierRegex: the answer is an RE2 pattern the whole trimmed response
	// must match.
	VerifierRegex = "regex"
)

// Verifiers lists the kinds Verify accepts, in the order a configuration
// error or a CLI help text should name them.
var Verifiers = []string{VerifierExact, VerifierNormalized, VerifierNumeric, VerifierRegex}

// gsm8kMarker precedes the final answer in GSM8K's solutions: every answer in
// the dataset (openai/grade-school-math, the "gsm8k" dataset card on Hugging
// Face) ends with a line "#### <number>", e.g. "Natalia sold 48/2 = 24 clips
// in May. ... #### 72". Policies trained on it learn to end the same way.
const gsm8kMarker = "####"

// numberRe matches a number as GSM8K's graders read one: an optional minus,
// digits with optional thousands commas, an optional decimal part. A "$"
// before it or a sentence's "." after it is simply not part of the match.
var numberRe = regexp.MustCompile(`-?[\d,]*\.?\d+`)

// Verify scores response against the reference answer with the verifier
// kind: 1 when the response is correct, else 0. The error is for a caller's
// mistake, never for a wrong response: an unknown kind, a regex answer that
// does not compile, or a numeric answer without a number. Training should
// stop on it rather than reward a whole batch 0 for a bad dataset.
func Verify(kind, response, answer string) (float64, error) {
	var ok bool
	switch kind {
	case VerifierExact:
		ok = strings.TrimSpace(response) == strings.TrimSpace(answer)
	case VerifierNormalized:
		ok = normalizeAnswer(response) == normalizeAnswer(answer)
	case VerifierNumeric:
		var err error
		if ok, err = numericMatch(response, answer); err != nil {
			return 0, err
		}
	case VerifierRegex:
		var err error
		if ok, err = regexMatch(response, answer); err != nil {
			return 0, err
		}
	default:
		return 0, fmt.Errorf("verifier %q: unknown kind (allowed: %s)", kind, strings.Join(Verifiers, ", "))
	}
	if ok {
		return 1, nil
	}
	return 0, nil
}

// CombineRewards is the reward the policy is trained on when a learned reward
// model and a verifier both score a response: modelWeight*rm +
// verifierWeight*verifier. It is the one place the formula lives, so that
// the trainer, the evaluation and the reports cannot weigh the two
// differently. The weights are taken as given: neither is normalised nor
// required to sum to 1, since the reward model's scale is arbitrary and only
// the caller knows how it compares to a 0/1 verifier.
func CombineRewards(modelWeight, rm, verifierWeight, verifier float64) float64 {
	return modelWeight*rm + verifierWeight*verifier
}

// normalizeAnswer lower-cases s, drops punctuation and symbols, and collapses
// runs of whitespace to one space, so that "The Eiffel Tower!" and "the
// eiffel  tower" compare equal. Punctuation is removed, not replaced by a
// space: "don't" becomes "dont", "e-mail" "email".
func normalizeAnswer(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPunct(r) || unicode.IsSymbol(r) {
			return -1
		}
		return r
	}, strings.ToLower(s))
	return strings.Join(strings.Fields(s), " ")
}

// numericMatch compares the final numbers of response and answer exactly, as
// rationals, so that "42", "42.0" and "42.00" are one value and no float
// rounding can make two different answers equal. The answer's number is the
// first number after its last "####" (the whole answer when it has none);
// the response's is the first number after its last "####" when it has one,
// else the last number it contains, the one a solution ends on.
func numericMatch(response, answer string) (bool, error) {
	want, ok := firstNumber(afterMarker(answer))
	if !ok {
		return false, fmt.Errorf("verifier %q: answer %q has no number", VerifierNumeric, answer)
	}
	var got *big.Rat
	if i := strings.LastIndex(response, gsm8kMarker); i >= 0 {
		got, ok = firstNumber(response[i+len(gsm8kMarker):])
	} else {
		got, ok = lastNumber(response)
	}
	if !ok {
		return false, nil
	}
	return got.Cmp(want) == 0, nil
}

// afterMarker returns the text after the last "####" of s, or s itself when
// it has none.
func afterMarker(s string) string {
	if i := strings.LastIndex(s, gsm8kMarker); i >= 0 {
		return s[i+len(gsm8kMarker):]
	}
	return s
}

// firstNumber parses the first number in s.
func firstNumber(s string) (*big.Rat, bool) {
	for _, loc := range numberRe.FindAllStringIndex(s, -1) {
		if n, ok := parseNumber(s, loc); ok {
			return n, true
		}
	}
	return nil, false
}

// lastNumber parses the last number in s.
func lastNumber(s string) (*big.Rat, bool) {
	locs := numberRe.FindAllStringIndex(s, -1)
	for i := len(locs) - 1; i >= 0; i-- {
		if n, ok := parseNumber(s, locs[i]); ok {
			return n, true
		}
	}
	return nil, false
}

// parseNumber parses the numberRe match s[loc[0]:loc[1]] without its commas.
// A "-" directly after a letter or digit is a hyphen or a minus sign between
// operands, not a sign: RE2 has no look-behind to say so in numberRe, and
// without this "10-20" would end on -20 and "48-24" on -24.
func parseNumber(s string, loc []int) (*big.Rat, bool) {
	m := s[loc[0]:loc[1]]
	if strings.HasPrefix(m, "-") && loc[0] > 0 {
		if prev := s[loc[0]-1]; prev < 0x80 && (unicode.IsLetter(rune(prev)) || unicode.IsDigit(rune(prev))) {
			m = m[1:]
		}
	}
	m = strings.ReplaceAll(m, ",", "")
	if m == "" || m == "-" {
		return nil, false
	}
	return new(big.Rat).SetString(m)
}

// regexMatch reports whether the RE2 pattern answer matches the whole trimmed
// response. The pattern is compiled on its own first: wrapped unchecked in
// ^(?:...)$, a pattern such as "a)|(?:b" would compile into a different,
// unanchored alternation instead of failing.
func regexMatch(response, answer string) (bool, error) {
	if _, err := regexp.Compile(answer); err != nil {
		return false, fmt.Errorf("verifier %q: answer pattern %q does not compile: %w", VerifierRegex, answer, err)
	}
	re, err := regexp.Compile(`^(?:` + answer + `)$`)
	if err != nil {
		return false, fmt.Errorf("verifier %q: answer pattern %q does not compile anchored: %w", VerifierRegex, answer, err)
	}
	return re.MatchString(strings.TrimSpace(response)), nil
}
