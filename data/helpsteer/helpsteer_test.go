package helpsteer

import (
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func sampleRatings() []Rating {
	return []Rating{
		{Prompt: "opposite of hot?", Response: "cold", Helpfulness: 4, Correctness: 4, Coherence: 4, Complexity: 1, Verbosity: 0, Split: SplitTrain},
		{Prompt: "hot -> opposite", Response: "well, cold i guess", Helpfulness: 3, Correctness: 4, Coherence: 4, Complexity: 2, Verbosity: 2, Split: SplitValidation},
		{Prompt: "hi<extra_id_1>Assistant\nhello<extra_id_1>User\nwhy \"é\" & <b>?", Response: "because\tünïcode", Helpfulness: 0, Correctness: 1, Coherence: 2, Complexity: 3, Verbosity: 4},
	}
}

func samplePreferences() []Preference {
	return []Preference{
		{
			Split: SplitTrain, Prompt: "opposite of hot?", Response1: "cold", Response2: "well, cold i guess",
			PreferenceStrength:    -2,
			PreferenceStatement:   "@Response 1 is better than @Response 2.",
			PreferenceElaboration: "@Response 1 gives the right word without padding.",
			ThreeMostSimilarPreferences: []AnnotatorPreference{
				{Statement: "@Response 1 is better", Elaboration: "shorter", Strength: -2},
				{Statement: "@Response 1 is slightly better", Elaboration: "shorter", Strength: -1},
				{Statement: "@Response 1 is much better", Elaboration: "shorter", Strength: -3},
			},
			AllPreferencesUnprocessed: []AnnotatorJudgement{
				{Justification: "@Response 1 is better", Strength: -2},
				{Justification: "cannot tell", Strength: CannotJudge},
				{Justification: "@Response 1 is slightly better", Strength: -1},
			},
		},
		{
			Split: SplitValidation, Prompt: "antonym of up:", Response1: "up", Response2: "down",
			PreferenceStrength: 3, ThreeMostSimilarPreferences: []AnnotatorPreference{}, AllPreferencesUnprocessed: []AnnotatorJudgement{},
		},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, name := range []string{"data.jsonl", "data.jsonl.gz"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			rp := filepath.Join(dir, "ratings-"+name)
			pp := filepath.Join(dir, "prefs-"+name)
			require.NoError(t, WriteRatings(rp, sampleRatings()))
			require.NoError(t, WritePreferences(pp, samplePreferences()))

			raw, err := os.ReadFile(rp)
			require.NoError(t, err)
			assert.Equal(t, strings.HasSuffix(name, ".gz"), bytes.HasPrefix(raw, gzipMagic), "compression follows the extension")

			gotR, err := ReadRatings(rp)
			require.NoError(t, err)
			assert.Equal(t, sampleRatings(), gotR)
			gotP, err := ReadPreferences(pp)
			require.NoError(t, err)
			assert.Equal(t, samplePreferences(), gotP)

			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			assert.Len(t, entries, 2, "no temp files are left behind")

			// Rewriting replaces the file and stays byte-identical.
			require.NoError(t, WriteRatings(rp, sampleRatings()))
			again, err := os.ReadFile(rp)
			require.NoError(t, err)
			assert.Equal(t, raw, again)
		})
	}
}

func TestGzipDetectedByContent(t *testing.T) {
	dir := t.TempDir()
	gz := filepath.Join(dir, "a.jsonl.gz")
	require.NoError(t, WriteRatings(gz, sampleRatings()))
	misnamed := filepath.Join(dir, "a.jsonl")
	require.NoError(t, os.Rename(gz, misnamed))
	got, err := ReadRatings(misnamed)
	require.NoError(t, err)
	assert.Equal(t, sampleRatings(), got)

	plain := filepath.Join(dir, "b.jsonl")
	require.NoError(t, WriteRatings(plain, sampleRatings()))
	plainAsGz := filepath.Join(dir, "b.jsonl.gz")
	require.NoError(t, os.Rename(plain, plainAsGz))
	got, err = ReadRatings(plainAsGz)
	require.NoError(t, err)
	assert.Equal(t, sampleRatings(), got)
}

func TestLongLinesBlankLinesAndCRLF(t *testing.T) {
	long := strings.Repeat("x", 300<<10) // well past bufio.Scanner's 64 KiB default
	content := "\n\r\n" +
		`{"prompt":"p","response":"` + long + `","helpfulness":1,"correctness":2,"coherence":3,"complexity":4,"verbosity":0}` + "\r\n" +
		"   \n" +
		`{"prompt":"q","response":"r","helpfulness":0,"correctness":0,"coherence":0,"complexity":0,"verbosity":0,"split":null}`
	path := filepath.Join(t.TempDir(), "long.jsonl")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	got, err := ReadRatings(path)
	require.NoError(t, err)
	require.Len(t, got, 2)
	assert.Len(t, got[0].Response, len(long))
	assert.Equal(t, [5]float32{1, 2, 3, 4, 0}, got[0].Attributes())
	assert.Equal(t, "r", got[1].Response)
}

func TestPreferenceHelpers(t *testing.T) {
	tests := []struct {
		strength         int
		chosen, rejected string
		margin           int
		tie              bool
	}{
		{strength: -3, chosen: "one", rejected: "two", margin: 3},
		{strength: -1, chosen: "one", rejected: "two", margin: 1},
		{strength: 0, chosen: "one", rejected: "two", margin: 0, tie: true},
		{strength: 2, chosen: "two", rejected: "one", margin: 2},
	}
	for _, tc := range tests {
		p := Preference{Response1: "one", Response2: "two", PreferenceStrength: tc.strength}
		assert.Equal(t, tc.chosen, p.Chosen(), "strength %d", tc.strength)
		assert.Equal(t, tc.rejected, p.Rejected(), "strength %d", tc.strength)
		assert.Equal(t, tc.margin, p.Margin(), "strength %d", tc.strength)
		assert.Equal(t, tc.tie, p.Tie(), "strength %d", tc.strength)
	}
}

const goodRating = `{"prompt":"p","response":"r","helpfulness":1,"correctness":2,"coherence":3,"complexity":4,"verbosity":0}`

// pref builds a preference line with the given strength and annotator lists.
func pref(strength, similar, all string) string {
	return `{"split":"train","prompt":"p","response_1":"a","response_2":"b","preference_strength":` + strength +
		`,"preference_statement":"@Response 2 is better","preference_elaboration":"because",` +
		`"three_most_similar_preferences":` + similar + `,"all_preferences_unprocessed":` + all + `}`
}

const (
	goodSimilar = `[{"statement":"s","elaboration":"e","strength":1},{"statement":"s","elaboration":"e","strength":2},{"statement":null,"elaboration":null,"strength":1}]`
	goodAll     = `[{"justification":"j","strength":1},{"justification":"j","strength":-100},{"justification":"j","strength":2}]`
)

func TestAcceptsRealPreferenceColumns(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.jsonl")
	require.NoError(t, os.WriteFile(path, []byte(pref("1", goodSimilar, goodAll)+"\n"), 0o644))
	got, err := ReadPreferences(path)
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, CannotJudge, got[0].AllPreferencesUnprocessed[1].Strength)
	assert.Equal(t, "b", got[0].Chosen())
}

// TestReleaseSplitValIsValidation reads rows the way the released
// preference.jsonl.gz marks them: "val" (and "validation") load as the
// validation split, "train" as train, and anything else names the allowed
// values.
func TestReleaseSplitValIsValidation(t *testing.T) {
	dir := t.TempDir()
	lines := []string{pref("1", goodSimilar, goodAll), strings.Replace(pref("-2", goodSimilar, goodAll), `"split":"train"`, `"split":"val"`, 1),
		strings.Replace(pref("3", goodSimilar, goodAll), `"split":"train"`, `"split":"validation"`, 1)}
	path := filepath.Join(dir, "preference.jsonl")
	require.NoError(t, os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
	got, err := ReadPreferences(path)
	require.NoError(t, err)
	var splits []string
	for _, p := range got {
		splits = append(splits, p.Split)
	}
	assert.Equal(t, []string{SplitTrain, SplitValidation, SplitValidation}, splits)

	ratings := filepath.Join(dir, "ratings.jsonl")
	require.NoError(t, os.WriteFile(ratings, []byte(strings.Replace(goodRating, `"verbosity":0`, `"verbosity":0,"split":"val"`, 1)+"\n"), 0o644))
	rs, err := ReadRatings(ratings)
	require.NoError(t, err)
	assert.Equal(t, SplitValidation, rs[0].Split)

	bad := filepath.Join(dir, "bad.jsonl")
	require.NoError(t, os.WriteFile(bad, []byte(strings.Replace(pref("1", goodSimilar, goodAll), `"split":"train"`, `"split":"dev"`, 1)+"\n"), 0o644))
	_, err = ReadPreferences(bad)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `bad.jsonl:1: split: "dev" is not a split (allowed: "train", "validation" or "val")`)
}

func TestMalformedInputs(t *testing.T) {
	replace := func(old, repl string) string { return strings.Replace(goodRating, old, repl, 1) }
	tests := []struct {
		name    string
		prefs   bool   // read as preferences instead of ratings
		content string // file content; line numbers below are 1-based
		want    string // expected ":<line>: <field>: <reason prefix>"
	}{
		{"missing attribute", false, replace(`"helpfulness":1,`, ""), ":1: helpfulness: missing required field"},
		{"attribute out of range", false, goodRating + "\n" + replace(`"helpfulness":1`, `"helpfulness":5`), ":2: helpfulness: 5 is outside 0..4"},
		{"negative attribute", false, replace(`"verbosity":0`, `"verbosity":-1`), ":1: verbosity: -1 is outside 0..4"},
		{"empty prompt after blank line", false, goodRating + "\n\n" + replace(`"prompt":"p"`, `"prompt":""`), ":3: prompt: is empty"},
		{"empty response", false, replace(`"response":"r"`, `"response":"  "`), ":1: response: is empty"},
		{"string attribute", false, replace(`"coherence":3`, `"coherence":"3"`), ":1: coherence: want an integer, got string"},
		{"fractional attribute", false, replace(`"coherence":3`, `"coherence":2.5`), ":1: coherence: want an integer, got 2.5"},
		{"null attribute", false, replace(`"coherence":3`, `"coherence":null`), ":1: coherence: is null"},
		{"numeric prompt", false, replace(`"prompt":"p"`, `"prompt":7`), ":1: prompt: want a string, got number"},
		{"unknown field", false, replace(`"verbosity":0`, `"verbosity":0,"score":3`), ":1: score: unknown field"},
		{"bad split", false, replace(`"verbosity":0`, `"verbosity":0,"split":"test"`), `:1: split: "test" is not a split (allowed: "train", "validation" or "val")`},
		{"truncated JSON", false, goodRating + "\n" + `{"prompt":"p",`, ":2: json: malformed JSON"},
		{"syntax error", false, `{"prompt" "p"}`, ":1: json: malformed JSON at byte"},
		{"not an object", false, `[1,2,3]`, ":1: json: row must be a JSON object"},
		{"null row", false, `null`, ":1: json: row is null"},
		{"trailing data", false, goodRating + ` {}`, ":1: json: unexpected data after the object"},
		{"empty file", false, "", ":0: rows: no rows"},
		{"only blank lines", false, "\n  \n\n", ":0: rows: no rows"},
		{"preference strength", true, pref("5", goodSimilar, goodAll), ":1: preference_strength: 5 is outside -3..3"},
		{"preference strength -100 not allowed on the row", true, pref("-100", goodSimilar, goodAll), ":1: preference_strength: -100 is outside -3..3"},
		{"annotator strength", true, pref("1", goodSimilar, `[{"justification":"j","strength":1},{"justification":"j","strength":-50}]`), ":1: all_preferences_unprocessed[1].strength: -50 is outside -3..3"},
		{"similar strength", true, pref("1", `[{"statement":"s","elaboration":"e","strength":4}]`, goodAll), ":1: three_most_similar_preferences[0].strength: 4 is outside"},
		{"nested missing key", true, pref("1", `[{"statement":"s","strength":1}]`, goodAll), ":1: three_most_similar_preferences[0].elaboration: missing required field"},
		{"nested unknown key", true, pref("1", goodSimilar, `[{"justification":"j","strength":1,"annotator":"x"}]`), ":1: all_preferences_unprocessed[0].annotator: unknown field"},
		{"list is not a list", true, pref("1", `"none"`, goodAll), ":1: three_most_similar_preferences: want an array, got string"},
		{"missing list", true, strings.Replace(pref("1", goodSimilar, goodAll), `,"all_preferences_unprocessed":`+goodAll, "", 1), ":1: all_preferences_unprocessed: missing required field"},
		{"missing split", true, strings.Replace(pref("1", goodSimilar, goodAll), `"split":"train",`, "", 1), ":1: split: missing required field"},
		{"empty response_2", true, strings.Replace(pref("1", goodSimilar, goodAll), `"response_2":"b"`, `"response_2":""`, 1), ":1: response_2: is empty"},
		{"rating read as preference", true, goodRating, ":1: coherence: unknown field"},
		{"numeric answer on a rating", false, strings.Replace(goodRating, `"verbosity":0`, `"verbosity":0,"answer":72`, 1), ":1: answer: want a string, got number"},
		{"null answer on a rating", false, goodRating + "\n" + strings.Replace(goodRating, `"verbosity":0`, `"verbosity":0,"answer":null`, 1), ":2: answer: is null"},
		{"object answer on a preference", true, strings.Replace(pref("1", goodSimilar, goodAll), `"split":"train",`, `"split":"train","answer":{"n":1},`, 1), ":1: answer: want a string, got object"},
		{"misspelt answer on a preference", true, strings.Replace(pref("1", goodSimilar, goodAll), `"split":"train",`, `"split":"train","answers":"x",`, 1), ":1: answers: unknown field"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "data.jsonl")
			require.NoError(t, os.WriteFile(path, []byte(tc.content), 0o644))
			var err error
			if tc.prefs {
				_, err = ReadPreferences(path)
			} else {
				_, err = ReadRatings(path)
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), path+tc.want)
			var le *LoadError
			require.ErrorAs(t, err, &le)
			assert.Equal(t, path, le.File)
		})
	}
}

func TestUnreadableFiles(t *testing.T) {
	dir := t.TempDir()

	var good bytes.Buffer
	zw := gzip.NewWriter(&good)
	_, err := zw.Write([]byte(strings.Repeat(goodRating+"\n", 200)))
	require.NoError(t, err)
	require.NoError(t, zw.Close())

	truncated := good.Bytes()[:good.Len()-12]
	corrupt := append([]byte{}, good.Bytes()...)
	corrupt[len(corrupt)-5] ^= 0xff // damage the CRC/size trailer

	tests := []struct {
		name    string
		content []byte
		want    string
	}{
		{"bad gzip header", []byte{0x1f, 0x8b, 0x00, 0x01, 0x02}, ":0: gzip: "},
		{"truncated gzip", truncated, ": gzip: unexpected EOF"},
		{"corrupt gzip trailer", corrupt, ": gzip: gzip: invalid checksum"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".jsonl.gz")
			require.NoError(t, os.WriteFile(path, tc.content, 0o644))
			_, err := ReadRatings(path)
			require.Error(t, err)
			assert.Contains(t, err.Error(), path+":")
			assert.Contains(t, err.Error(), tc.want)
		})
	}

	_, err = ReadPreferences(filepath.Join(dir, "missing.jsonl"))
	require.Error(t, err)
	assert.True(t, errors.Is(err, os.ErrNotExist))
	assert.Contains(t, err.Error(), "missing.jsonl:0: file: ")
}

func TestWriteRejectsInvalidRows(t *testing.T) {
	dir := t.TempDir()
	bad := sampleRatings()
	bad[1].Verbosity = 7
	err := WriteRatings(filepath.Join(dir, "r.jsonl"), bad)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "row 1: verbosity: 7 is outside 0..4")

	badP := samplePreferences()
	badP[0].AllPreferencesUnprocessed[0].Strength = 9
	err = WritePreferences(filepath.Join(dir, "p.jsonl.gz"), badP)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "row 0: all_preferences_unprocessed[0].strength: 9")

	require.ErrorIs(t, WriteRatings(filepath.Join(dir, "e.jsonl"), nil), ErrNoRows)
	require.Error(t, WriteRatings(filepath.Join(dir, "no", "such", "dir.jsonl"), sampleRatings()))

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "failed writes leave nothing behind")
}

func TestValidateChecksPromptTurns(t *testing.T) {
	tests := []struct {
		name, prompt string
		want         string // "" means valid
	}{
		{"single turn", "opposite of hot?", ""},
		{"multi-turn", "hi<extra_id_1>Assistant\nhello<extra_id_1>User\nwhy?", ""},
		{"system role", "hi<extra_id_1>System\nbe nice", `prompt: turn 2 has unknown role marker "<extra_id_1>System"`},
		{"lower-case role", "hi<extra_id_1>Assistant\nhello<extra_id_1>user\nwhy?", `prompt: turn 3 has unknown role marker "<extra_id_1>user"`},
		{"empty", " \n", "prompt: is empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := sampleRatings()[0]
			r.Prompt = tc.prompt
			p := samplePreferences()[0]
			p.Prompt = tc.prompt
			for kind, err := range map[string]error{"rating": r.Validate(), "preference": p.Validate()} {
				if tc.want == "" {
					assert.NoError(t, err, kind)
					continue
				}
				require.Error(t, err, kind)
				assert.Contains(t, err.Error(), tc.want, kind)
				var fe *FieldError
				require.ErrorAs(t, err, &fe, kind)
				assert.Equal(t, "prompt", fe.Field, kind)
			}
		})
	}
}

func TestReadRejectsUnknownRoleMarker(t *testing.T) {
	dir := t.TempDir()
	rp := filepath.Join(dir, "r.jsonl")
	require.NoError(t, os.WriteFile(rp, []byte(goodRating+"\n"+strings.Replace(goodRating, `"prompt":"p"`, `"prompt":"p<extra_id_1>System\nq"`, 1)+"\n"), 0o644))
	_, err := ReadRatings(rp)
	require.Error(t, err)
	assert.Contains(t, err.Error(), rp+`:2: prompt: turn 2 has unknown role marker "<extra_id_1>System"`)

	pp := filepath.Join(dir, "p.jsonl")
	require.NoError(t, os.WriteFile(pp, []byte(strings.Replace(pref("1", goodSimilar, goodAll), `"prompt":"p"`, `"prompt":"p<extra_id_1>Bot\nq"`, 1)+"\n"), 0o644))
	_, err = ReadPreferences(pp)
	require.Error(t, err)
	assert.Contains(t, err.Error(), pp+`:1: prompt: turn 2 has unknown role marker "<extra_id_1>Bot"`)
}

func TestSkipInvalidRows(t *testing.T) {
	dir := t.TempDir()
	replace := func(old, repl string) string { return strings.Replace(goodRating, old, repl, 1) }
	content := strings.Join([]string{
		goodRating,
		replace(`"helpfulness":1`, `"helpfulness":5`),
		"",
		`{"prompt":"p",`,
		replace(`"prompt":"p"`, `"prompt":"q"`),
		replace(`"prompt":"p"`, `"prompt":"p<extra_id_1>System\nq"`),
	}, "\n") + "\n"
	path := filepath.Join(dir, "r.jsonl")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))

	// Strict: the first bad row stops the load, exactly as ReadRatings does.
	_, strictErr := ReadRatings(path)
	require.Error(t, strictErr)
	assert.Equal(t, path+":2: helpfulness: 5 is outside 0..4", strictErr.Error())
	rows, report, err := LoadRatings(path, ReadOptions{})
	require.Error(t, err)
	assert.Equal(t, strictErr.Error(), err.Error())
	assert.Nil(t, rows)
	assert.Zero(t, report.Skipped)

	rows, report, err = LoadRatings(path, ReadOptions{SkipInvalid: true})
	require.NoError(t, err)
	require.Len(t, rows, 2)
	assert.Equal(t, "p", rows[0].Prompt)
	assert.Equal(t, "q", rows[1].Prompt)
	assert.Equal(t, 2, report.Rows)
	assert.Equal(t, 3, report.Skipped)
	var got []string
	for _, le := range report.Errors {
		assert.Equal(t, path, le.File)
		got = append(got, le.Error())
	}
	assert.Equal(t, []string{
		path + ":2: helpfulness: 5 is outside 0..4",
		path + ":4: json: malformed JSON: unexpected end of line",
		path + `:6: prompt: turn 2 has unknown role marker "<extra_id_1>System" (want "<extra_id_1>User" or "<extra_id_1>Assistant" followed by a newline)`,
	}, got)

	// A valid file reads the same with or without the option.
	good := filepath.Join(dir, "good.jsonl.gz")
	require.NoError(t, WritePreferences(good, samplePreferences()))
	prefs, report, err := LoadPreferences(good, ReadOptions{SkipInvalid: true})
	require.NoError(t, err)
	assert.Equal(t, samplePreferences(), prefs)
	assert.Equal(t, ReadReport{Rows: 2}, report)
}

func TestSkipInvalidKeepsOnlyTheFirstErrors(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 25; i++ {
		if i%5 == 0 {
			b.WriteString(pref("1", goodSimilar, goodAll) + "\n")
		} else {
			b.WriteString(pref("9", goodSimilar, goodAll) + "\n")
		}
	}
	path := filepath.Join(t.TempDir(), "p.jsonl")
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o644))
	rows, report, err := LoadPreferences(path, ReadOptions{SkipInvalid: true})
	require.NoError(t, err)
	assert.Len(t, rows, 5)
	assert.Equal(t, 5, report.Rows)
	assert.Equal(t, 20, report.Skipped)
	require.Len(t, report.Errors, 10)
	assert.Equal(t, 2, report.Errors[0].Line)
	assert.Equal(t, 13, report.Errors[9].Line) // lines 1, 6, 11 are valid
	assert.Equal(t, "preference_strength", report.Errors[9].Field)
}

func TestSkipInvalidFileLevelErrors(t *testing.T) {
	dir := t.TempDir()
	skip := ReadOptions{SkipInvalid: true}

	allBad := filepath.Join(dir, "all-bad.jsonl")
	require.NoError(t, os.WriteFile(allBad, []byte(`{"prompt":""}`+"\n\n"+strings.Replace(goodRating, `"verbosity":0`, `"verbosity":9`, 1)+"\n"), 0o644))
	rows, report, err := LoadRatings(allBad, skip)
	require.Error(t, err)
	assert.Nil(t, rows)
	assert.Equal(t, allBad+":0: rows: all 2 rows were invalid; the first: "+allBad+":1: response: missing required field", err.Error())
	assert.Equal(t, 2, report.Skipped)
	assert.Len(t, report.Errors, 2)
	var first *LoadError
	require.ErrorAs(t, errors.Unwrap(err), &first)
	assert.Equal(t, 1, first.Line)

	empty := filepath.Join(dir, "empty.jsonl")
	require.NoError(t, os.WriteFile(empty, []byte("\n \n"), 0o644))
	_, _, err = LoadRatings(empty, skip)
	require.ErrorIs(t, err, ErrNoRows)
	assert.Contains(t, err.Error(), empty+":0: rows: no rows")

	_, _, err = LoadPreferences(filepath.Join(dir, "missing.jsonl"), skip)
	require.ErrorIs(t, err, os.ErrNotExist)

	badHeader := filepath.Join(dir, "bad.jsonl.gz")
	require.NoError(t, os.WriteFile(badHeader, []byte{0x1f, 0x8b, 0x00, 0x01, 0x02}, 0o644))
	_, _, err = LoadRatings(badHeader, skip)
	require.Error(t, err)
	assert.Contains(t, err.Error(), badHeader+":0: gzip: ")

	// An I/O error mid-stream fails the load even though earlier rows were good.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, err = zw.Write([]byte(strings.Repeat(goodRating+"\n", 200)))
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	truncated := filepath.Join(dir, "truncated.jsonl.gz")
	require.NoError(t, os.WriteFile(truncated, gz.Bytes()[:gz.Len()-12], 0o644))
	rows, _, err = LoadRatings(truncated, skip)
	require.Error(t, err)
	assert.Nil(t, rows)
	assert.Contains(t, err.Error(), ": gzip: unexpected EOF")
}
