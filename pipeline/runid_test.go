package pipeline

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRunIDRule: the IDs alignflow makes and people type are keys; what
// path.Join would move elsewhere, or a store or file system could not
// hold as one name, is refused with the rule.
func TestRunIDRule(t *testing.T) {
	for _, id := range []string{"alignment-tiny-20240101-120000", "compare-reward-compare-20240101-120000", "e2e-alignment",
		"default-test-workflow-id", "run.v2_final", "A", "-dash", strings.Repeat("x", MaxRunIDLength)} {
		assert.NoError(t, CheckRunID(id), id)
	}
	for _, tc := range []struct{ id, problem string }{
		{"", "is empty"},
		{".", "starts with '.'"},
		{"..", "starts with '.'"},
		{".hidden", "starts with '.'"},
		{"evil/../victim", `has '/' at byte 4`},
		{"a\\b", `has '\\' at byte 1`},
		{"sp ace", `has ' ' at byte 2`},
		{"naïve", `has 'ï' at byte 2`},
		{"nul\x00", `has '\x00' at byte 3`},
		{strings.Repeat("x", MaxRunIDLength+1), "is 201 bytes long"},
	} {
		err := CheckRunID(tc.id)
		require.Error(t, err, tc.id)
		assert.True(t, errors.Is(err, ErrUnsafeRunID), tc.id)
		assert.Contains(t, err.Error(), tc.problem, tc.id)
		assert.Contains(t, err.Error(), RunIDRule, tc.id)
	}
}

func TestRunKey(t *testing.T) {
	key, err := RunKey("r-1", "reinforce", "iteration-00001", "policy.safetensors")
	require.NoError(t, err)
	assert.Equal(t, "runs/r-1/reinforce/iteration-00001/policy.safetensors", key)
	key, err = RunKey("r-1")
	require.NoError(t, err)
	assert.Equal(t, "runs/r-1", key)

	_, err = RunKey("evil/../victim", SummaryFile)
	assert.ErrorIs(t, err, ErrUnsafeRunID)
	_, err = RunKey("r-1", "..", "victim", SummaryFile)
	assert.ErrorContains(t, err, "leaves the run's folder runs/r-1/")
}

func TestRunIDPart(t *testing.T) {
	for in, want := range map[string]string{
		"tiny":                "tiny",
		"helpsteer2 llama 8b": "helpsteer2-llama-8b",
		"a/../b":              "a-..-b",
		"日本語 run":             "-run",
		"x":                   "x",
	} {
		got := RunIDPart(in, 40)
		assert.Equal(t, want, got, in)
		assert.NoError(t, CheckRunID("alignment-"+got), in)
	}
	assert.Len(t, RunIDPart(strings.Repeat("y", 500), 40), 40)
}
