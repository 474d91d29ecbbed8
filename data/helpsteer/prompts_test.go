package helpsteer

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReadPrompts(t *testing.T) {
	const natalia = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. " +
		"How many clips did Natalia sell altogether in April and May?"
	content := "\xef\xbb\xbf" + `{"prompt":"` + natalia + `","answer":"72"}` + "\r\n" +
		"\n   \n" +
		`{"answer":"#### 1,000","prompt":"hi<extra_id_1>Assistant\nhello<extra_id_1>User\nhow much?"}` + "\n" +
		`{"prompt":"write a haiku"}` + "\n" +
		`{"prompt":"p","answer":""}`
	want := []PromptRow{
		{Prompt: natalia, Answer: "72"},
		{Prompt: "hi<extra_id_1>Assistant\nhello<extra_id_1>User\nhow much?", Answer: "#### 1,000"},
		{Prompt: "write a haiku"},
		{Prompt: "p"},
	}
	dir := t.TempDir()
	plain := filepath.Join(dir, "prompts.jsonl")
	require.NoError(t, os.WriteFile(plain, []byte(content), 0o644))
	got, err := ReadPrompts(plain)
	require.NoError(t, err)
	assert.Equal(t, want, got)

	// gzip is detected from the content, as for the other formats.
	gz := filepath.Join(dir, "prompts.data")
	require.NoError(t, os.WriteFile(gz, gzipped(t, []byte(content)), 0o644))
	got, err = ReadPrompts(gz)
	require.NoError(t, err)
	assert.Equal(t, want, got)
}

func TestReadPromptsMalformed(t *testing.T) {
	const good = `{"prompt":"p","answer":"42"}`
	tests := []struct {
		name    string
		content string
		want    string // expected ":<line>: <field>: <reason prefix>"
	}{
		{"unknown field", good + "\n" + `{"prompt":"p","response":"r"}`, ":2: response: unknown field"},
		{"unknown field beside a valid answer", `{"prompt":"p","answer":"1","id":3}`, ":1: id: unknown field"},
		{"missing prompt", `{"answer":"42"}`, ":1: prompt: missing required field"},
		{"empty prompt after blank lines", good + "\n\n \n" + `{"prompt":"  ","answer":"42"}`, ":4: prompt: is empty"},
		{"null prompt", `{"prompt":null}`, ":1: prompt: is null"},
		{"numeric prompt", `{"prompt":7}`, ":1: prompt: want a string, got number"},
		{"numeric answer", `{"prompt":"p","answer":42}`, ":1: answer: want a string, got number"},
		{"list answer", good + "\n" + `{"prompt":"p","answer":["42"]}`, ":2: answer: want a string, got array"},
		{"null answer", `{"prompt":"p","answer":null}`, ":1: answer: is null"},
		{"unknown role marker", `{"prompt":"p<extra_id_1>System\nq"}`, `:1: prompt: turn 2 has unknown role marker "<extra_id_1>System"`},
		{"truncated JSON", good + "\n" + `{"prompt":"p",`, ":2: json: malformed JSON"},
		{"not an object", `"just a prompt"`, ":1: json: row must be a JSON object"},
		{"rating read as prompts", goodRating, ":1: coherence: unknown field"},
		{"empty file", "", ":0: rows: no rows"},
		{"only blank lines", "\n \r\n\n", ":0: rows: no rows"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "prompts.jsonl")
			require.NoError(t, os.WriteFile(path, []byte(tc.content), 0o644))
			rows, err := ReadPrompts(path)
			require.Error(t, err)
			assert.Nil(t, rows)
			assert.Contains(t, err.Error(), path+tc.want)
			var le *LoadError
			require.ErrorAs(t, err, &le)
			assert.Equal(t, path, le.File)
		})
	}

	_, err := ReadPrompts(filepath.Join(t.TempDir(), "missing.jsonl"))
	require.ErrorIs(t, err, os.ErrNotExist)
	assert.Contains(t, err.Error(), "missing.jsonl:0: file: ")
}

func TestLoadPromptsSkipInvalid(t *testing.T) {
	content := strings.Join([]string{
		`{"prompt":"a","answer":"1"}`,
		`{"prompt":"b","answer":2}`,
		`{"prompt":""}`,
		`{"prompt":"c","extra":true}`,
		`{"prompt":"d"}`,
	}, "\n")
	path := filepath.Join(t.TempDir(), "prompts.jsonl")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))

	rows, report, err := LoadPrompts(path, ReadOptions{SkipInvalid: true})
	require.NoError(t, err)
	assert.Equal(t, []PromptRow{{Prompt: "a", Answer: "1"}, {Prompt: "d"}}, rows)
	assert.Equal(t, 2, report.Rows)
	assert.Equal(t, 3, report.Skipped)
	var got []string
	for _, le := range report.Errors {
		got = append(got, le.Error())
	}
	assert.Equal(t, []string{
		path + ":2: answer: want a string, got number",
		path + ":3: prompt: is empty",
		path + ":4: extra: unknown field",
	}, got)
}

// TestAnswerOnRatingsAndPreferences: the optional answer column loads on both
// label formats, round-trips, is left out of written rows that have none (so
// existing files stay byte-identical); TestMalformedInputs checks that it
// must be a string.
func TestAnswerOnRatingsAndPreferences(t *testing.T) {
	dir := t.TempDir()

	withAnswer := strings.Replace(goodRating, `"verbosity":0`, `"verbosity":0,"answer":"#### 72"`, 1)
	rp := filepath.Join(dir, "ratings.jsonl")
	require.NoError(t, os.WriteFile(rp, []byte(goodRating+"\n"+withAnswer+"\n"), 0o644))
	ratings, err := ReadRatings(rp)
	require.NoError(t, err)
	require.Len(t, ratings, 2)
	assert.Empty(t, ratings[0].Answer)
	assert.Equal(t, "#### 72", ratings[1].Answer)

	prefWithAnswer := strings.Replace(pref("1", goodSimilar, goodAll), `"split":"train",`, `"split":"train","answer":"Paris",`, 1)
	pp := filepath.Join(dir, "prefs.jsonl")
	require.NoError(t, os.WriteFile(pp, []byte(prefWithAnswer+"\n"+pref("-1", goodSimilar, goodAll)+"\n"), 0o644))
	prefs, err := ReadPreferences(pp)
	require.NoError(t, err)
	require.Len(t, prefs, 2)
	assert.Equal(t, "Paris", prefs[0].Answer)
	assert.Empty(t, prefs[1].Answer)

	// Round trip, with and without answers.
	rs := sampleRatings()
	rs[0].Answer = "cold"
	out := filepath.Join(dir, "out-ratings.jsonl")
	require.NoError(t, WriteRatings(out, rs))
	back, err := ReadRatings(out)
	require.NoError(t, err)
	assert.Equal(t, rs, back)
	ps := samplePreferences()
	ps[1].Answer = "down"
	outP := filepath.Join(dir, "out-prefs.jsonl.gz")
	require.NoError(t, WritePreferences(outP, ps))
	backP, err := ReadPreferences(outP)
	require.NoError(t, err)
	assert.Equal(t, ps, backP)

	noAnswers := filepath.Join(dir, "no-answers.jsonl")
	require.NoError(t, WriteRatings(noAnswers, sampleRatings()))
	raw, err := os.ReadFile(noAnswers)
	require.NoError(t, err)
	assert.False(t, bytes.Contains(raw, []byte(`"answer"`)), "an empty answer is not written")

}

// TestPromptsRequireAnswers: with RequireAnswer (a run with a verifier) a
// row without an answer is an error naming its file:line and the field;
// what WritePrompts writes loads back as it was.
func TestPromptsRequireAnswers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "prompts.jsonl")
	require.NoError(t, os.WriteFile(path, []byte("{\"prompt\":\"a\",\"answer\":\"1\"}\n{\"prompt\":\"b\",\"answer\":\" \"}\n"), 0o644))
	_, _, err := LoadPrompts(path, ReadOptions{RequireAnswer: true})
	require.Error(t, err)
	assert.Contains(t, err.Error(), path+":2: answer: is missing or empty")
	rows, _, err := LoadPrompts(path, ReadOptions{})
	require.NoError(t, err)
	assert.Len(t, rows, 2)

	gz := filepath.Join(t.TempDir(), "prompts.jsonl.gz")
	want := []PromptRow{{Prompt: "What is 6 x 7?", Answer: "42"}, {Prompt: "Say hi."}}
	require.NoError(t, WritePrompts(gz, want))
	got, err := ReadPrompts(gz)
	require.NoError(t, err)
	assert.Equal(t, want, got)
}
