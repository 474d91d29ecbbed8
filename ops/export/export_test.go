package export

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/internal/fixtures"
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
	_, err = Policy(store, "nope", filepath.Join(dir, "out"), Merged)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no "+filepath.Join(dir, "runs", "nope", "summary.json"))

	require.NoError(t, os.MkdirAll(filepath.Join(dir, "runs", "tiny"), 0o755))
	b, _ := json.Marshal(pipeline.Summary{WorkflowID: "tiny"})
	require.NoError(t, os.WriteFile(filepath.Join(dir, "runs", "tiny", "summary.json"), b, 0o644))
	_, err = Policy(store, "tiny", filepath.Join(dir, "out"), Merged)
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

// TestPolicyWritesTheChatTemplateFiles: a run stores every description
// file of model.path (activities.storeModel stores the Files ReadDescription
// read), and the exported policy has them back: a chat_template.jinja, the
// template transformers reads first, and a chat_template.json are not lost.
func TestPolicyWritesTheChatTemplateFiles(t *testing.T) {
	src := t.TempDir()
	fixture := fixtures.Path(t, "models", "stories260K")
	for _, name := range []string{hfmodel.ConfigFile, "tokenizer.json", safetensors.Single} {
		b, err := os.ReadFile(filepath.Join(fixture, name))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(src, name), b, 0o644))
	}
	sidecars := map[string]string{"chat_template.jinja": "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}\n", "chat_template.json": `{"chat_template": "x"}`}
	for name, text := range sidecars {
		require.NoError(t, os.WriteFile(filepath.Join(src, name), []byte(text), 0o644))
	}
	m, err := hfmodel.Load(src)
	require.NoError(t, err)

	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	bm := &pipeline.BaseModel{Source: src, Architecture: m.Config.Architecture, DType: m.Config.DType, Files: map[string]artifact.Ref{}}
	for name, b := range m.Files {
		bm.Files[name], err = store.Put("runs/r/model/"+name, b)
		require.NoError(t, err)
	}
	policy, err := store.PutWeights("runs/r/reinforce/policy.safetensors", m.Params)
	require.NoError(t, err)
	summary, err := json.Marshal(pipeline.Summary{WorkflowID: "r", Data: pipeline.Data{Model: bm}, Policy: pipeline.PolicySummary{Checkpoint: policy}})
	require.NoError(t, err)
	_, err = store.PutRecord("runs/r/summary.json", summary)
	require.NoError(t, err)

	out := filepath.Join(t.TempDir(), "aligned")
	_, err = Policy(store, "r", out, Merged)
	require.NoError(t, err)
	for name, text := range sidecars {
		b, err := os.ReadFile(filepath.Join(out, name))
		require.NoError(t, err, "the export writes %s", name)
		assert.Equal(t, text, string(b))
	}
}
