package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// prefRow is a valid HelpSteer2-Preference line with the given split, prompt
// (already JSON-escaped) and strength.
func prefRow(split, prompt string, strength int) string {
	return fmt.Sprintf(`{"split":%q,"prompt":"%s","response_1":"a","response_2":"b","preference_strength":%d,`+
		`"preference_statement":"","preference_elaboration":"","three_most_similar_preferences":[],`+
		`"all_preferences_unprocessed":[{"justification":"","strength":-100}]}`, split, prompt, strength)
}

func ratingRow(prompt string, helpfulness int) string {
	return fmt.Sprintf(`{"prompt":"%s","response":"r","helpfulness":%d,"correctness":2,"coherence":3,"complexity":1,"verbosity":0}`, prompt, helpfulness)
}

func writeLines(t *testing.T, name string, lines ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
	return path
}

// runDataCheck runs `alignflow data check` through the cobra command tree and
// returns its output and the error main would turn into the exit status.
func runDataCheck(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := rootCmd()
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append([]string{"data", "check"}, args...))
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestDataCheckPreferenceCounts(t *testing.T) {
	const multi = `hi<extra_id_1>Assistant\nhello<extra_id_1>User\nwhy?`
	path := writeLines(t, "prefs.jsonl",
		prefRow("train", "p", -2),
		prefRow("train", multi, 2),
		prefRow("validation", "q", 0),
		prefRow("train", "r", 3),
		prefRow("validation", multi, -2),
		prefRow("val", "a prompt that is too long", 2),
	)
	out, err := runDataCheck(t, "--format", "helpsteer2-preference", "--max-len", "16", path)
	require.NoError(t, err)
	// At max_len 16 the last prompt (28 tokens with BOS and separator) keeps
	// BOS and its last 7; the multi-turn prompts are cut too.
	want := path + ": 6 rows, valid helpsteer2-preference\n" +
		"  multi-turn prompts                           2\n" +
		"  pairs kept with the prompt's start cut (max_len 16) 3\n" +
		"  pairs too long for max_len 16 (left out)     0\n" +
		"  split train                                  3\n" +
		"  split validation                             3\n" +
		"  strength +0                                  1\n" +
		"  strength +2                                  2\n" +
		"  strength +3                                  1\n" +
		"  strength -2                                  2\n" +
		"  ties (left out of Bradley-Terry training)    1\n" +
		"  |strength| 0                                 1\n" +
		"  |strength| 2                                 4\n" +
		"  |strength| 3                                 1\n"
	assert.Equal(t, want, out)
}

func TestDataCheckRatingCounts(t *testing.T) {
	const multi = `hi<extra_id_1>Assistant\nhello<extra_id_1>User\nwhy?`
	path := writeLines(t, "ratings.jsonl",
		ratingRow("p", 4), ratingRow("p", 1),
		ratingRow(multi, 4), ratingRow(multi, 3),
	)
	out, err := runDataCheck(t, "--format", "helpsteer2", path)
	require.NoError(t, err)
	want := path + ": 4 rows, valid helpsteer2\n" +
		"  distinct multi-turn prompts                  1\n" +
		"  distinct prompts                             2\n" +
		"  helpfulness 1                                1\n" +
		"  helpfulness 3                                1\n" +
		"  helpfulness 4                                2\n" +
		"  split (none)                                 4\n"
	assert.Equal(t, want, out)
}

func TestDataCheckStrictFailsOnBadRow(t *testing.T) {
	path := writeLines(t, "prefs.jsonl",
		prefRow("train", "p", -2),
		prefRow("train", "q", 5),
		prefRow("train", `a<extra_id_1>System\nb`, 1),
	)
	out, err := runDataCheck(t, "--format", "helpsteer2-preference", path)
	require.Error(t, err)
	assert.Equal(t, path+":2: preference_strength: 5 is outside -3..3", err.Error())
	assert.Empty(t, out, "nothing is counted for a file that fails")

	rb := writeLines(t, "rb.jsonl", `{"prompt":"p","chosen":"c","rejected":"r","subset":"s","id":1}`, `{"prompt":"p","chosen":"c","rejected":"r","id":2}`)
	_, err = runDataCheck(t, "--format", "rewardbench", rb)
	assert.EqualError(t, err, rb+":2: subset: missing required field")

	_, err = runDataCheck(t, "--format", "csv", rb)
	assert.ErrorContains(t, err, "allowed: helpsteer2, helpsteer2-preference, rewardbench")
}

func TestDataCheckSkipInvalid(t *testing.T) {
	path := writeLines(t, "prefs.jsonl",
		prefRow("train", "p", -2),
		prefRow("train", "q", 5),
		`{"split":"train",`,
		prefRow("validation", "r", 0),
		prefRow("train", `a<extra_id_1>System\nb`, 1),
	)
	out, err := runDataCheck(t, "--format", "helpsteer2-preference", "--skip-invalid", path)
	require.NoError(t, err, "valid rows remain, so the check passes")
	want := path + ": 2 rows, valid helpsteer2-preference\n" +
		"  multi-turn prompts                           0\n" +
		"  pairs too long for max_len 56 (left out)     0\n" +
		"  split train                                  1\n" +
		"  split validation                             1\n" +
		"  strength +0                                  1\n" +
		"  strength -2                                  1\n" +
		"  ties (left out of Bradley-Terry training)    1\n" +
		"  |strength| 0                                 1\n" +
		"  |strength| 2                                 1\n" +
		"skipped 3 invalid rows\n" +
		"  " + path + ":2: preference_strength: 5 is outside -3..3\n" +
		"  " + path + ":3: json: malformed JSON: unexpected end of line\n" +
		"  " + path + `:5: prompt: turn 2 has unknown role marker "<extra_id_1>System" (want "<extra_id_1>User" or "<extra_id_1>Assistant" followed by a newline)` + "\n"
	assert.Equal(t, want, out)
}

func TestDataCheckSkipInvalidListsOnlyTheFirstErrors(t *testing.T) {
	lines := []string{ratingRow("p", 1)}
	for i := 0; i < 12; i++ {
		lines = append(lines, ratingRow("p", 7))
	}
	path := writeLines(t, "ratings.jsonl", lines...)
	out, err := runDataCheck(t, "--format", "helpsteer2", "--skip-invalid", path)
	require.NoError(t, err)
	assert.Contains(t, out, path+": 1 rows, valid helpsteer2\n")
	assert.Contains(t, out, "skipped 12 invalid rows\n")
	assert.Contains(t, out, "  "+path+":2: helpfulness: 7 is outside 0..4\n")
	assert.Contains(t, out, "  "+path+":11: helpfulness: 7 is outside 0..4\n")
	assert.NotContains(t, out, path+":12:")
	assert.Contains(t, out, "  ... and 2 more\n")
}

func TestDataCheckSkipInvalidStillFailsWithoutValidRows(t *testing.T) {
	path := writeLines(t, "prefs.jsonl", prefRow("train", "q", 5), prefRow("test", "p", 1))
	out, err := runDataCheck(t, "--format", "helpsteer2-preference", "--skip-invalid", path)
	require.Error(t, err)
	assert.Equal(t, path+":0: rows: all 2 rows were invalid; the first: "+path+":1: preference_strength: 5 is outside -3..3", err.Error())
	assert.Contains(t, out, "skipped 2 invalid rows\n")
	assert.Contains(t, out, "  "+path+`:2: split: "test" is not a split (allowed: "train", "validation" or "val")`)

	_, err = runDataCheck(t, "--format", "helpsteer2", "--skip-invalid", filepath.Join(t.TempDir(), "missing.jsonl"))
	assert.ErrorContains(t, err, "missing.jsonl:0: file: ")
}
