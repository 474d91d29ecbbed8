package export

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/model/hf/hfmodel"
	"github.com/alignflow/alignflow/model/hf/safetensors"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/pipeline"
)

func TestPolicyNeedsAHuggingFaceRun(t *testing.T) {
	dir := t.TempDir()
	store, err := artifact.Open(dir)
	require.NoError(t, err)
	_, err = Policy(store, "nope", filepath.Join(dir, "out"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no "+filepath.Join(dir, "runs", "nope", "summary.json"))

	require.NoError(t, os.MkdirAll(filepath.Join(dir, "runs", "tiny"), 0o755))
	b, _ := json.Marshal(pipeline.Summary{WorkflowID: "tiny"})
	require.NoError(t, os.WriteFile(filepath.Join(dir, "runs", "tiny", "summary.json"), b, 0o644))
	_, err = Policy(store, "tiny", filepath.Join(dir, "out"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "bundled byte-level model")
	_, err = os.Stat(filepath.Join(dir, "out"))
	assert.True(t, os.IsNotExist(err))
}

// TestFailedExportLeavesNothing: an export that fails halfway (here a
// parameter is missing) leaves neither the directory nor a partial one.
func TestFailedExportLeavesNothing(t *testing.T) {
	parent := t.TempDir()
	cfg := transformer.Config{Vocab: 8, Dim: 8, Heads: 2, Layers: 1, Hidden: 8, MaxLen: 8, GatedMLP: true}
	err := hfmodel.Export(filepath.Join(parent, "out"), map[string][]byte{hfmodel.ConfigFile: []byte("{}")}, cfg, weights.NewSet(), safetensors.F32)
	require.Error(t, err)
	entries, err := os.ReadDir(parent)
	require.NoError(t, err)
	assert.Empty(t, entries)
}
