package metrics

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/pipeline"
)

// TestUnsafeRunIDsKeyNoMetrics: a run ID that path.Join would move
// ("evil/../victim" onto runs/victim, ".." onto the store's top level) is
// refused by every function that keys the log by it, and the victim's log
// keeps its points.
func TestUnsafeRunIDsKeyNoMetrics(t *testing.T) {
	root := t.TempDir()
	store, err := artifact.Open(root)
	require.NoError(t, err)
	victim := NewLog(store, nil, "victim", Series{Stage: "sft"})
	victim.Add(1, map[string]float64{"loss": 1})
	require.NoError(t, victim.Flush())
	_, _, err = Assemble(store, "victim")
	require.NoError(t, err)
	before, err := os.ReadFile(filepath.Join(root, "runs", "victim", File))
	require.NoError(t, err)

	for _, id := range []string{"evil/../victim", "..", "a/b"} {
		l := NewLog(store, nil, id, Series{Stage: "sft"})
		l.Add(1, map[string]float64{"loss": 9})
		assert.ErrorIs(t, l.Flush(), pipeline.ErrUnsafeRunID, id)
		_, err := Collect(store, id)
		assert.ErrorIs(t, err, pipeline.ErrUnsafeRunID, id)
		_, _, err = Assemble(store, id)
		assert.ErrorIs(t, err, pipeline.ErrUnsafeRunID, id)
	}
	after, err := os.ReadFile(filepath.Join(root, "runs", "victim", File))
	require.NoError(t, err)
	assert.Equal(t, string(before), string(after))
	pts, err := Collect(store, "victim")
	require.NoError(t, err)
	assert.Len(t, pts, 1, "no segment was added to the victim's log")
	assert.NoFileExists(t, filepath.Join(root, File))
}
