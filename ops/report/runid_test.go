package report

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/pipeline"
)

// TestUnsafeRunIDsLoadAndSaveNothing: "evil/../victim" would read
// runs/victim's summary into evil's report and write the report into
// runs/victim/report/; both refuse the ID instead.
func TestUnsafeRunIDsLoadAndSaveNothing(t *testing.T) {
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	b, err := json.Marshal(pipeline.Summary{WorkflowID: "victim"})
	require.NoError(t, err)
	_, err = store.PutRecord("runs/victim/"+pipeline.SummaryFile, b)
	require.NoError(t, err)
	for _, id := range []string{"evil/../victim", "..", "a/b"} {
		_, err := Load(store, id)
		assert.ErrorIs(t, err, pipeline.ErrUnsafeRunID, id)
		_, _, err = Save(store, id, []File{{Name: HTML, Data: []byte("<p>evil</p>")}})
		assert.ErrorIs(t, err, pipeline.ErrUnsafeRunID, id)
	}
	_, err = store.GetRecord("runs/victim/report/" + HTML)
	assert.Error(t, err, "no report was written into the victim's folder")
}
