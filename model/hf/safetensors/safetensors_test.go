package safetensors

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func writeFile(t *testing.T, path string, tensors []Tensor) {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, Write(&b, tensors, map[string]string{"format": "pt"}))
	require.NoError(t, os.WriteFile(path, b.Bytes(), 0o644))
}

// TestRoundTripDTypes writes F32, BF16 and F16 tensors and reads them back:
// F32 exactly, BF16 and F16 to the nearest representable value; writing
// what was read gives the same bytes.
func TestRoundTripDTypes(t *testing.T) {
	vals := []float32{0, 1, -2.5, 3.14159, 1e-3, 65504, float32(math.Inf(1))}
	path := filepath.Join(t.TempDir(), "m.safetensors")
	in := []Tensor{{Name: "a", DType: F32, Shape: []int{7}, Values: vals}, {Name: "b", DType: BF16, Shape: []int{7}, Values: vals}, {Name: "c", DType: F16, Shape: []int{1, 7}, Values: vals}, {Name: "scalar", DType: F32, Shape: nil, Values: []float32{42}}}
	writeFile(t, path, in)
	f, err := Open(path)
	require.NoError(t, err)
	defer f.Close()
	assert.Equal(t, map[string]string{"format": "pt"}, f.Metadata)
	assert.Equal(t, []string{"a", "b", "c", "scalar"}, f.Names())
	a, err := f.Float32("a")
	require.NoError(t, err)
	assert.Equal(t, vals, a)
	b, err := f.Float32("b")
	require.NoError(t, err)
	assert.Equal(t, []float32{0, 1, -2.5, 3.140625, 0.0009994507, 65536, float32(math.Inf(1))}, b) // 1e-3 is 0x3A83126F: its low half rounds down
	c, err := f.Float32("c")
	require.NoError(t, err)
	assert.Equal(t, []float32{0, 1, -2.5, 3.140625, 0.0010004044, 65504, float32(math.Inf(1))}, c)
	info, _ := f.Info("c")
	assert.Equal(t, []int{1, 7}, info.Shape)

	again := filepath.Join(t.TempDir(), "again.safetensors")
	writeFile(t, again, []Tensor{{Name: "a", DType: F32, Shape: []int{7}, Values: a}, {Name: "b", DType: BF16, Shape: []int{7}, Values: b}, {Name: "c", DType: F16, Shape: []int{1, 7}, Values: c}, {Name: "scalar", DType: F32, Shape: nil, Values: []float32{42}}})
	x, _ := os.ReadFile(path)
	y, _ := os.ReadFile(again)
	assert.Equal(t, x, y, "read then written: the same bytes")
}

func TestBF16RoundsToNearestEven(t *testing.T) {
	// 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even one, 1.
	assert.Equal(t, uint16(0x3F80), bf16(1+1.0/256))
	assert.Equal(t, uint16(0x3F81), bf16(1+3.0/512)) // above halfway: up
	assert.Equal(t, uint16(0x3F82), bf16(1+3.0/256)) // halfway from an odd one: up to even
	assert.True(t, math.IsNaN(float64(Decode(Encode([]float32{float32(math.NaN())}, BF16), BF16)[0])))
}

// TestBadHeaders: a truncated or inconsistent file, or one safetensors'
// own reader refuses (safetensors/src/tensor.rs: SafeTensors::read_metadata
// and Metadata::validate: a header longer than MAX_HEADER_SIZE,
// 100,000,000 bytes, or not UTF-8; a tensor that does not begin where the
// one before it in offset order ends; bytes after the last tensor), is
// refused naming the file and the tensor.
func TestBadHeaders(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.safetensors")
	writeFile(t, good, []Tensor{{Name: "w", DType: F32, Shape: []int{2, 2}, Values: []float32{1, 2, 3, 4}}})
	raw, _ := os.ReadFile(good)
	// header is a file of header h and n data bytes.
	header := func(h string, n int) []byte {
		b := make([]byte, 8, 8+len(h)+n)
		binary.LittleEndian.PutUint64(b, uint64(len(h)))
		return append(append(b, h...), make([]byte, n)...)
	}
	length := func(n uint64) []byte { return binary.LittleEndian.AppendUint64(nil, n) }
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"truncated data", raw[:len(raw)-4], "tensor w: data_offsets [0, 16] lie outside the 12 data bytes"},
		{"truncated header", raw[:12], "does not fit a file"},
		{"empty", nil, "too short"},
		{"huge header length", append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, raw[8:]...), "header length 9223372036854775807 is more than safetensors reads (at most 100000000)"},
		{"header over MAX_HEADER_SIZE", append(length(100_000_001), raw[8:]...), "header length 100000001 is more than safetensors reads (at most 100000000)"},
		{"header of MAX_HEADER_SIZE", append(length(100_000_000), raw[8:]...), "header length 100000000 does not fit a file"},
		{"not JSON", header(`{"w":`, 16), "header is not JSON"},
		{"not UTF-8", header("{\"w\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4), "header is not UTF-8"},
		{"size mismatch", header(`{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}`, 16), "tensor w: 12 bytes for F32 [2 2], which needs 16"},
		{"overlap", header(`{"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[4],"data_offsets":[4,12]}}`, 12), "tensors a and b overlap"},
		{"gap between tensors", header(`{"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[4],"data_offsets":[12,20]}}`, 20),
			"tensor b: data_offsets [12, 20] begin at 12, not at 8 where tensor a ends: safetensors refuses a gap between tensors"},
		{"gap before the first tensor", header(`{"a":{"dtype":"F16","shape":[4],"data_offsets":[4,12]}}`, 12),
			"tensor a: data_offsets [4, 12] begin at 4, not at 0 where the data begins"},
		{"trailing bytes", append(append([]byte(nil), raw...), 0, 0, 0, 0), "the data section has 4 bytes after offset 16 where tensor w ends: safetensors refuses trailing bytes"},
		{"data without tensors", header(`{"__metadata__":{"format":"pt"}}`, 8), "the data section has 8 bytes after offset 0 where the data begins"},
		{"dtype", header(`{"w":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}`, 8), `tensor w: dtype "I64" is not supported (supported: F32, BF16, F16)`},
		{"negative shape", header(`{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, 4), "not a tensor shape"},
	}
	for _, tc := range cases {
		p := filepath.Join(dir, tc.name+".safetensors")
		require.NoError(t, os.WriteFile(p, tc.data, 0o644))
		_, err := Open(p)
		if assert.Error(t, err, tc.name) {
			assert.Contains(t, err.Error(), p, tc.name)
			assert.Contains(t, err.Error(), tc.want, tc.name)
		}
	}

	// Tensors of no bytes lie anywhere a tensor begins or ends: sorted by
	// both offsets, as safetensors sorts them, they leave no gap.
	p := filepath.Join(dir, "empty tensors.safetensors")
	require.NoError(t, os.WriteFile(p, header(`{"z":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"y":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]}}`, 4), 0o644))
	f, err := Open(p)
	require.NoError(t, err)
	assert.Equal(t, []string{"z", "b", "y"}, f.Names())
	require.NoError(t, f.Close())
}

// TestShardedDirectory reads a model split over two files by its index,
// and refuses an index that disagrees with its shards.
func TestShardedDirectory(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "model-00001-of-00002.safetensors"), []Tensor{{Name: "a", DType: BF16, Shape: []int{2}, Values: []float32{1, 2}}})
	writeFile(t, filepath.Join(dir, "model-00002-of-00002.safetensors"), []Tensor{{Name: "b", DType: F32, Shape: []int{1}, Values: []float32{3}}})
	index := `{"metadata":{"total_size":8},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}`
	require.NoError(t, os.WriteFile(filepath.Join(dir, Index), []byte(index), 0o644))
	d, err := OpenDir(dir)
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, d.Names())
	v, err := d.Float32("b")
	require.NoError(t, err)
	assert.Equal(t, []float32{3}, v)
	_, file, ok := d.Info("a")
	assert.True(t, ok)
	assert.Equal(t, filepath.Join(dir, "model-00001-of-00002.safetensors"), file)
	require.NoError(t, d.Close())

	require.NoError(t, os.WriteFile(filepath.Join(dir, Index), []byte(`{"weight_map":{"a":"model-00002-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}`), 0o644))
	_, err = OpenDir(dir)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "tensor a should be in model-00002-of-00002.safetensors")
	require.NoError(t, os.WriteFile(filepath.Join(dir, Index), []byte(`{"weight_map":{"a":"../x.safetensors"}}`), 0o644))
	_, err = OpenDir(dir)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "is not a file in the directory")
	_, err = OpenDir(t.TempDir())
	assert.ErrorIs(t, err, ErrNoWeights)
}

// FuzzHeader opens arbitrary bytes as a safetensors file: an error or a
// file whose every tensor reads, never a panic, and no buffer larger than
// the file (every size is checked against it before anything is read).
func FuzzHeader(f *testing.F) {
	var b bytes.Buffer
	_ = Write(&b, []Tensor{{Name: "w", DType: F32, Shape: []int{2, 2}, Values: []float32{1, 2, 3, 4}}, {Name: "h", DType: BF16, Shape: []int{3}, Values: []float32{1, 2, 3}}}, map[string]string{"format": "pt"})
	f.Add(b.Bytes())
	f.Add([]byte{8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '})
	f.Add([]byte{255, 255, 255, 255, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "f.safetensors")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		sf, err := Open(p)
		if err != nil {
			return
		}
		defer sf.Close()
		for _, n := range sf.Names() {
			v, err := sf.Float32(n)
			if err != nil {
				t.Fatalf("tensor %s passed the header checks but does not read: %v", n, err)
			}
			if len(v)*4 > 2*len(data) {
				t.Fatalf("tensor %s: %d values from a %d-byte file", n, len(v), len(data))
			}
		}
	})
}
