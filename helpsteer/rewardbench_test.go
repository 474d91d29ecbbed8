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
