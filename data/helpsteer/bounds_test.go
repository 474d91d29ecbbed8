package helpsteer

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestReadOpensThroughOptions: the file is opened with ReadOptions.Open
// (a worker's data roots), whose refusal is the load's error.
func TestReadOpensThroughOptions(t *testing.T) {
	refused := errors.New("outside the roots")
	var asked string
	opts := ReadOptions{Open: func(p string) (io.ReadCloser, error) {
		asked = p
		if p == "in.jsonl" {
			return io.NopCloser(strings.NewReader(goodRating + "\n")), nil
		}
		return nil, refused
	}}
	got, _, err := LoadRatings("in.jsonl", opts)
	require.NoError(t, err)
	assert.Len(t, got, 1)
	_, _, err = LoadRatings("out.jsonl", opts)
	assert.ErrorIs(t, err, refused)
	assert.Equal(t, "out.jsonl", asked)
	assert.Contains(t, err.Error(), "out.jsonl:0: file: outside the roots")
}
