package weights

import (
	"bytes"
	"math"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSafetensorsRoundTripAndDigest(t *testing.T) {
	s := NewSet()
	s.Put("w", &Tensor{Shape: []int{2, 2}, Data: []float32{1, -2, 3.5, 0}})
	s.Put("b", &Tensor{Shape: []int{1}, Data: []float32{float32(math.Pi)}})
	s.Metadata["step"] = "7"
	var buf bytes.Buffer
	_, err := s.WriteTo(&buf)
	require.NoError(t, err)
	back, err := Read(&buf)
	require.NoError(t, err)
	assert.Equal(t, s.Get("w"), back.Get("w"))
	assert.Equal(t, "7", back.Metadata["step"])
	assert.Equal(t, s.Digest(), back.Digest())
	back.Get("w").Data[0] = math.Nextafter32(1, 2)
	assert.NotEqual(t, s.Digest(), back.Digest(), "one ulp changes the digest")

	s.Get("b").Data[0] = float32(math.NaN())
	assert.ErrorContains(t, s.CheckFinite(), "tensor b")
}

func TestExtrapolate(t *testing.T) {
	weak, strong := NewSet(), NewSet()
	weak.Put("w", &Tensor{Shape: []int{3}, Data: []float32{0, 1, 2}})
	strong.Put("w", &Tensor{Shape: []int{3}, Data: []float32{1, 1, 0}})
	got, err := Extrapolate(weak, strong, 1.5)
	require.NoError(t, err)
	assert.Equal(t, []float32{1.5, 1, -1}, got.Get("w").Data)
	same, err := Extrapolate(weak, strong, 1)
	require.NoError(t, err)
	assert.Equal(t, strong.Get("w").Data, same.Get("w").Data)
	assert.Equal(t, []float32{0, 1, 2}, weak.Get("w").Data, "inputs are not modified")

	bad := NewSet()
	bad.Put("w", &Tensor{Shape: []int{1, 3}, Data: []float32{0, 1, 2}})
	_, err = Extrapolate(bad, strong, 1.5)
	assert.ErrorContains(t, err, "shape")
}

// TestArgsFollowTheNames: a graph's arguments come in the order of the
// names it was built with, not the set's sorted order, as copies (the
// graph may outlive the set's tensors), and a missing name says which.
func TestArgsFollowTheNames(t *testing.T) {
	s := NewSet()
	s.Put("a", &Tensor{Shape: []int{2}, Data: []float32{1, 2}})
	s.Put("b", &Tensor{Shape: []int{1, 1}, Data: []float32{3}})
	args, err := s.Args([]string{"b", "a"})
	require.NoError(t, err)
	require.Len(t, args, 2)
	b, a := args[0].(*tensors.Tensor), args[1].(*tensors.Tensor)
	assert.Equal(t, []int{1, 1}, b.Shape().Dimensions)
	assert.Equal(t, []float32{1, 2}, tensors.MustCopyFlatData[float32](a))
	s.Get("a").Data[0] = 9
	assert.Equal(t, []float32{1, 2}, tensors.MustCopyFlatData[float32](a), "a copy, not the set's slice")

	_, err = s.Args([]string{"a", "c"})
	assert.EqualError(t, err, `tensor "c" missing`)
}

// TestLentSetRefusesReads: a lent set holds no tensors, and reading or
// changing them panics naming the holder; its metadata stays readable;
// reclaimed, it is an empty set to put the tensors back into.
func TestLentSetRefusesReads(t *testing.T) {
	s := NewSet()
	s.Put("w", NewTensor(2))
	s.Metadata["step"] = "3"
	s.Lend("a test session")
	holder, lent := s.Lent()
	assert.True(t, lent)
	assert.Equal(t, "a test session", holder)
	const msg = "weights: the set is lent to a test session, which holds its tensors until it writes them back (Sync or Close it first)"
	for name, read := range map[string]func(){
		"Get": func() { s.Get("w") }, "Put": func() { s.Put("w", NewTensor(2)) }, "Len": func() { s.Len() },
		"Names": func() { s.Names() }, "Args": func() { _, _ = s.Args([]string{"w"}) }, "Clone": func() { s.Clone() },
		"Digest": func() { s.Digest() }, "NumParams": func() { s.NumParams() }, "CheckFinite": func() { _ = s.CheckFinite() },
		"Lend": func() { s.Lend("another") },
	} {
		assert.PanicsWithValue(t, msg, read, name)
	}
	assert.Equal(t, "3", s.Metadata["step"])
	s.Reclaim()
	_, lent = s.Lent()
	assert.False(t, lent)
	assert.Equal(t, 0, s.Len(), "the holder puts the tensors back")
}
