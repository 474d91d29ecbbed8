package progress

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type counter struct{ n atomic.Int64 }

func (c *counter) Advance(units int) error { c.n.Add(int64(units)); return nil }

// TestReaderCountsAndStops: reads count on the context's Meter, and a
// read after the context ended fails with its error, however much is left.
func TestReaderCountsAndStops(t *testing.T) {
	var c counter
	ctx, cancel := context.WithCancel(NewContext(context.Background(), &c))
	r := Reader(ctx, io.LimitReader(bytes.NewReader(make([]byte, 1<<20)), 1<<20))
	buf := make([]byte, 1<<10)
	_, err := io.ReadFull(r, buf)
	require.NoError(t, err)
	assert.Positive(t, c.n.Load())
	cancel()
	_, err = io.Copy(io.Discard, Reader(ctx, neverEnding{}))
	assert.True(t, errors.Is(err, context.Canceled), "a copy of an endless file stops with its context: %v", err)
	assert.NoError(t, Advance(nil, 1), "no meter: nothing counted, nothing stops")
}

type neverEnding struct{}

func (neverEnding) Read(p []byte) (int, error) { return len(p), nil }
