package helpsteer

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReadRewardBench(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "rb.jsonl")
	require.NoError(t, os.WriteFile(good, []byte(
		`{"prompt":"2+2?","chosen":"4","chosen_model":"a","rejected":"5","rejected_model":"b","subset":"math-prm","id":1}`+"\n"+
			`{"prompt":"hi","chosen":"hello","chosen_model":null,"rejected":"go away","rejected_model":null,"subset":"alpacaeval-easy","id":2}`+"\n"), 0o644))
	rows, err := ReadRewardBench(good)
	require.NoError(t, err)
	require.Len(t, rows, 2)
	assert.Equal(t, "math-prm", rows[0].Subset)
	assert.Equal(t, "", rows[1].ChosenModel)

	for name, line := range map[string]string{
		"subset":   `{"prompt":"p","chosen":"c","rejected":"r","id":1}`,
		"chosen":   `{"prompt":"p","chosen":"","rejected":"r","subset":"s","id":1}`,
		"rejected": `{"prompt":"p","chosen":"c","rejected":7,"subset":"s","id":1}`,
		"extra":    `{"prompt":"p","chosen":"c","rejected":"r","subset":"s","id":1,"extra":true}`,
	} {
		bad := filepath.Join(dir, name+".jsonl")
		require.NoError(t, os.WriteFile(bad, []byte(line+"\n"), 0o644))
		_, err := ReadRewardBench(bad)
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), bad+":1:")
		assert.Contains(t, err.Error(), name)
	}
}

func TestLoadRewardBenchSkipInvalid(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rb.jsonl")
	require.NoError(t, os.WriteFile(path, []byte(
		`{"prompt":"2+2?","chosen":"4","rejected":"5","subset":"math-prm","id":1}`+"\n"+
			`{"prompt":"p","chosen":"","rejected":"r","subset":"s","id":2}`+"\n"+
			`{"prompt":"hi","chosen":"hello","rejected":"go away","subset":"alpacaeval-easy","id":3}`+"\n"), 0o644))

	_, err := ReadRewardBench(path)
	assert.EqualError(t, err, path+":2: chosen: is empty")

	rows, report, err := LoadRewardBench(path, ReadOptions{SkipInvalid: true})
	require.NoError(t, err)
	require.Len(t, rows, 2)
	assert.Equal(t, []int{1, 3}, []int{rows[0].ID, rows[1].ID})
	assert.Equal(t, 2, report.Rows)
	assert.Equal(t, 1, report.Skipped)
	require.Len(t, report.Errors, 1)
	assert.Equal(t, path+":2: chosen: is empty", report.Errors[0].Error())
}
