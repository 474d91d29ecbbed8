package retention

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestApplyRemovesManifestsFirst watches the order keys go in: every
// manifest before any artifact's bytes, so that a collection interrupted at
// any point leaves incomplete artifacts, never bytes a reader would take
// for a complete artifact of another content. A failed removal stops
// nothing and frees nothing.
func TestApplyRemovesManifestsFirst(t *testing.T) {
	p := &Plan{Remove: []Object{
		{"runs/r/a.safetensors", 100}, {"runs/r/a.safetensors.manifest.json", 10},
		{"runs/r/b.json", 200}, {"runs/r/b.json.manifest.json", 20},
		{"tmp/scratch", 5},
	}}
	p.RemoveBytes = 335
	failing := errors.New("refused")
	var order []string
	freed, err := p.apply(func(key string) error {
		order = append(order, key)
		if key == "runs/r/b.json" {
			return failing
		}
		return nil
	})
	require.ErrorIs(t, err, failing)
	assert.Equal(t, []string{
		"runs/r/a.safetensors.manifest.json", "runs/r/b.json.manifest.json",
		"runs/r/a.safetensors", "runs/r/b.json", "tmp/scratch",
	}, order)
	assert.Equal(t, int64(335-200), freed, "the refused key's bytes are not freed")
}
