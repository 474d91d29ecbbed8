package export

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/pipeline"
)

// TestUnsafeRunIDsExportNothing: "evil/../victim" would export runs/victim's
// model as evil's; the ID is refused before the store is read.
func TestUnsafeRunIDsExportNothing(t *testing.T) {
	dir := t.TempDir()
	store, err := artifact.Open(dir)
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "runs", "victim"), 0o755))
	b, _ := json.Marshal(pipeline.Summary{WorkflowID: "victim"})
	require.NoError(t, os.WriteFile(filepath.Join(dir, "runs", "victim", pipeline.SummaryFile), b, 0o644))
	for _, id := range []string{"evil/../victim", "..", "a/b"} {
		_, err := Summary(store, id)
		assert.ErrorIs(t, err, pipeline.ErrUnsafeRunID, id)
		_, err = Policy(store, id, filepath.Join(dir, "out"), Merged)
		assert.ErrorIs(t, err, pipeline.ErrUnsafeRunID, id)
	}
}
