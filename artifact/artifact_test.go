package artifact

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/model/weights"
)

func TestPutGetVerifyAndNeverOverwrite(t *testing.T) {
	s, err := Open(t.TempDir())
	require.NoError(t, err)
	ref, err := s.Put("run/a.bin", []byte("hello"))
	require.NoError(t, err)
	assert.Equal(t, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", ref.SHA256)
	got, err := s.Get(ref)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(got))

	again, err := s.Put("run/a.bin", []byte("hello"))
	require.NoError(t, err)
	assert.Equal(t, ref, again, "a retried identical write is idempotent")

	other, err := s.Put("run/a.bin", []byte("world"))
	require.NoError(t, err)
	assert.NotEqual(t, ref.Path, other.Path, "different content never overwrites a complete artifact")
	got, err = s.Get(ref)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(got))

	require.NoError(t, os.WriteFile(s.Abs(ref), []byte("hellO"), 0o644))
	_, err = s.Get(ref)
	require.True(t, errors.Is(err, ErrCorrupt))
	assert.Contains(t, err.Error(), filepath.Join("run", "a.bin"))

	entries, err := os.ReadDir(filepath.Join(s.Root, "run"))
	require.NoError(t, err)
	for _, e := range entries {
		assert.NotContains(t, e.Name(), ".tmp-", "no temporary files are left behind")
	}
}

func TestWeightsRoundTrip(t *testing.T) {
	s, err := Open(t.TempDir())
	require.NoError(t, err)
	set := weights.NewSet()
	set.Put("b", &weights.Tensor{Shape: []int{2}, Data: []float32{1.5, -2}})
	set.Put("a", &weights.Tensor{Shape: []int{1, 3}, Data: []float32{0, 1e-8, 3}})
	set.Metadata["kind"] = "policy"
	ref, err := s.PutWeights("w.safetensors", set)
	require.NoError(t, err)
	back, err := s.GetWeights(ref)
	require.NoError(t, err)
	assert.Equal(t, set.Names(), back.Names())
	assert.Equal(t, set.Get("a"), back.Get("a"))
	assert.Equal(t, "policy", back.Metadata["kind"])
	assert.Equal(t, set.Digest(), back.Digest())
}

func TestReadVerified(t *testing.T) {
	s, err := Open(t.TempDir())
	require.NoError(t, err)
	ref, err := s.Put("m.bin", []byte("model"))
	require.NoError(t, err)
	data, verified, err := ReadVerified(s.Abs(ref))
	require.NoError(t, err)
	assert.True(t, verified)
	assert.Equal(t, "model", string(data))

	loose := filepath.Join(t.TempDir(), "copied.bin")
	require.NoError(t, os.WriteFile(loose, []byte("x"), 0o644))
	_, verified, err = ReadVerified(loose)
	require.NoError(t, err)
	assert.False(t, verified, "a file without a manifest is read but not verified")

	require.NoError(t, os.WriteFile(s.Abs(ref), []byte("modeL"), 0o644))
	_, _, err = ReadVerified(s.Abs(ref))
	require.ErrorIs(t, err, ErrCorrupt)
	assert.Contains(t, err.Error(), "m.bin")
}
