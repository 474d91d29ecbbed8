package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/pipeline"
)

// TestCommandsRefuseUnsafeRunIDs: a run ID names the run's folder in the
// store and the report's default directory, so `alignflow report
// 'a/../../b'` read the store's b/ and wrote report-a/../../b, outside the
// working directory. Every command that takes a run ID refuses one that is
// not a safe key before it opens the store or contacts the server (the
// address points nowhere: getting past the check would fail differently).
func TestCommandsRefuseUnsafeRunIDs(t *testing.T) {
	root := t.TempDir()
	work, data := filepath.Join(root, "work"), filepath.Join(root, "data")
	require.NoError(t, os.MkdirAll(work, 0o755))
	store, err := artifact.Open(data)
	require.NoError(t, err)
	_, err = store.PutRecord("b/"+pipeline.SummaryFile, []byte(`{"workflow_id": "b"}`)) // where path.Join("runs", "a/../../b") lands
	require.NoError(t, err)
	tiny, err := filepath.Abs(filepath.Join("..", "..", "examples", "tiny-run.yaml"))
	require.NoError(t, err)
	compare, err := filepath.Abs(filepath.Join("..", "..", "examples", "reward-compare.yaml"))
	require.NoError(t, err)
	t.Chdir(work)

	for _, id := range []string{"a/../../b", "..", "evil/../victim"} {
		for _, args := range [][]string{
			{"report", id},
			{"export", id, "--out", filepath.Join(root, "out")},
			{"resume", id},
			{"runs", "show", id},
			{"run", "--config", tiny, "--id", id},
			{"reward", "compare", "--config", compare, "--id", id},
		} {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			cmd := rootCmd()
			cmd.SetArgs(append(args, "--address", "127.0.0.1:1", "--data-dir", data))
			err := cmd.ExecuteContext(ctx)
			cancel()
			require.Error(t, err, "%v", args)
			assert.Contains(t, err.Error(), `run ID "`+id+`"`, "%v", args)
			assert.Contains(t, err.Error(), pipeline.RunIDRule, "%v", args)
		}
	}
	for _, outside := range []string{filepath.Join(root, "b"), filepath.Join(root, "out")} {
		assert.NoFileExists(t, filepath.Join(outside, "report.html"))
		assert.NoDirExists(t, outside, "nothing was written outside the working directory")
	}
}

// TestDefaultRunIDsAreSafe: a run started without --id gets an ID made from
// its spec's name, whatever the name holds.
func TestDefaultRunIDsAreSafe(t *testing.T) {
	now := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	assert.Equal(t, "alignment-tiny-20240506-070809", defaultRunID("alignment", "tiny", now))
	for _, name := range []string{"helpsteer2 llama/8b", "../../etc", "", ".hidden", string(make([]byte, 500))} {
		id := defaultRunID("compare", name, now)
		assert.NoError(t, pipeline.CheckRunID(id), "%q gives %q", name, id)
	}
}
