package reward

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestVerify checks each verifier against cases worked out by hand. The
// numeric cases follow GSM8K's answer format: a solution ends with "#### "
// and the final number (openai/grade-school-math, the gsm8k dataset card).
func TestVerify(t *testing.T) {
	const natalia = "Natalia sold 48/2 = 24 clips in May.\n" +
		"Natalia sold 48+24 = 72 clips altogether in April and May.\n#### 72"
	tests := []struct {
		kind, response, answer string
		want                   float64
	}{
		// exact: only surrounding whitespace is forgiven.
		{VerifierExact, "Paris", "Paris", 1},
		{VerifierExact, "  Paris\n", "\tParis ", 1},
		{VerifierExact, "paris", "Paris", 0},
		{VerifierExact, "Paris.", "Paris", 0},
		{VerifierExact, "New  York", "New York", 0},
		{VerifierExact, "", "", 1},

		// normalized: case, punctuation, symbols and whitespace runs are not.
		{VerifierNormalized, "The Eiffel Tower!", "the eiffel  tower", 1},
		{VerifierNormalized, "  ÉCOLE\tnormale ", "école normale", 1},
		{VerifierNormalized, "don't", "dont", 1},
		{VerifierNormalized, "$5 + 3", "5 3", 1},
		{VerifierNormalized, "e-mail", "e mail", 0}, // punctuation is removed, not spaced
		{VerifierNormalized, "Paris, France", "Paris", 0},

		// numeric, GSM8K's convention.
		{VerifierNumeric, natalia, "#### 72", 1},
		{VerifierNumeric, "The answer is 72.", "#### 72", 1},
		{VerifierNumeric, "I think 71 or 72", "#### 72", 1},     // the last number counts
		{VerifierNumeric, "72 apples, not 71", "#### 72", 0},    // ... even when it is wrong
		{VerifierNumeric, "#### 72 apples, not 71", "72", 1},    // after "####": the first number
		{VerifierNumeric, "71 #### 72 #### 73", "72", 0},        // the last "####" counts
		{VerifierNumeric, "first 7 #### then #### 72", "72", 1}, // ... in the response
		{VerifierNumeric, "It costs $1,000.", "1000", 1},
		{VerifierNumeric, "1000", "#### 1,000", 1},
		{VerifierNumeric, "-3.50", "-3.5", 1},
		{VerifierNumeric, "42", "42.00", 1},
		{VerifierNumeric, "42.0", "#### 42", 1},
		{VerifierNumeric, "0.1", "0.10000000000000001", 0}, // exact, not float64 equality
		{VerifierNumeric, "The range is 10-20", "20", 1},   // a hyphen is not a minus sign
		{VerifierNumeric, "48-24", "-24", 0},
		{VerifierNumeric, "It dropped to -5 degrees", "-5", 1},
		{VerifierNumeric, "no idea", "#### 72", 0},
		{VerifierNumeric, "72 ####", "72", 0}, // nothing after the marker
		{VerifierNumeric, "", "72", 0},

		// regex: the pattern must match the whole trimmed response.
		{VerifierRegex, "  Answer: 42\n", `Answer: \d+`, 1},
		{VerifierRegex, "The Answer: 42", `Answer: \d+`, 0}, // anchored at the start
		{VerifierRegex, "Answer: 42!", `Answer: \d+`, 0},    // ... and at the end
		{VerifierRegex, "no", `yes|no`, 1},                  // alternation is grouped, not "^yes" or "no$"
		{VerifierRegex, "not now", `yes|no`, 0},
		{VerifierRegex, "B", `(?i)a|b`, 1},
		{VerifierRegex, "line one\nline two", `line.*two`, 0}, // "." is not a newline without (?s)
		{VerifierRegex, "line one\nline two", `(?s)line.*two`, 1},
	}
	for _, tc := range tests {
		got, err := Verify(tc.kind, tc.response, tc.answer)
		require.NoError(t, err, "%s %q vs %q", tc.kind, tc.response, tc.answer)
		assert.Equal(t, tc.want, got, "%s %q vs %q", tc.kind, tc.response, tc.answer)
	}
}

func TestVerifyErrors(t *testing.T) {
	tests := []struct {
		name, kind, response, answer string
		want                         []string // substrings of the error
	}{
		{"unknown kind", "fuzzy", "a", "a", []string{`"fuzzy"`, "exact, normalized, numeric, regex"}},
		{"empty kind", "", "a", "a", []string{`""`, "allowed: exact, normalized, numeric, regex"}},
		{"kind is case-sensitive", "Exact", "a", "a", []string{`"Exact"`, "unknown kind"}},
		{"bad regex", VerifierRegex, "a", `a(b`, []string{`"a(b"`, "does not compile", "missing closing )"}},
		{"regex that only compiles once wrapped", VerifierRegex, "b", `a)|(?:b`, []string{`"a)|(?:b"`, "does not compile"}},
		{"numeric answer without a number", VerifierNumeric, "72", "#### seventy-two", []string{`"#### seventy-two"`, "has no number"}},
		{"numeric answer without a number after the marker", VerifierNumeric, "72", "72 ####", []string{`"72 ####"`, "has no number"}},
		{"empty numeric answer", VerifierNumeric, "72", "", []string{`answer ""`, "has no number"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Verify(tc.kind, tc.response, tc.answer)
			require.Error(t, err)
			assert.Zero(t, got)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

// TestVerifiersAreAccepted keeps the Verifiers list and Verify's switch in
// step: every listed kind is accepted.
func TestVerifiersAreAccepted(t *testing.T) {
	assert.Equal(t, []string{"exact", "normalized", "numeric", "regex"}, Verifiers)
	for _, kind := range Verifiers {
		_, err := Verify(kind, "1", "1")
		assert.NoError(t, err, kind)
	}
}

func TestCombineRewards(t *testing.T) {
	tests := []struct {
		modelWeight, rm, verifierWeight, verifier, want float64
	}{
		{1, 0.7, 0, 1, 0.7},        // reward model only
		{0, 0.7, 1, 1, 1},          // verifier only
		{0.5, 2, 1, 1, 2},          // 0.5*2 + 1*1
		{1, -1.5, 2, 0, -1.5},      // a wrong answer adds nothing
		{0.25, -4, 0.75, 1, -0.25}, // 0.25*-4 + 0.75*1
	}
	for _, tc := range tests {
		assert.InDelta(t, tc.want, CombineRewards(tc.modelWeight, tc.rm, tc.verifierWeight, tc.verifier), 1e-12, "%+v", tc)
	}
}
