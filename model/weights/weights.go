// Package weights holds named float32 tensors — model parameters and optimizer
// moments — as plain Go slices, so they can be hashed, saved, interpolated and
// handed to any backend. Files use the safetensors layout, readable by the
// Python tools users already have.
package weights

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"

	"github.com/gomlx/gomlx/pkg/core/tensors"
)

// Tensor is a dense row-major float32 array.
type Tensor struct {
	Shape []int
	Data  []float32
}

// NewTensor returns a zero tensor of the given shape.
func NewTensor(shape ...int) *Tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return &Tensor{Shape: append([]int(nil), shape...), Data: make([]float32, n)}
}

// ToGoMLX copies t into a GoMLX tensor (FromFlatDataAndDimensions copies).
func (t *Tensor) ToGoMLX() *tensors.Tensor {
	return tensors.FromFlatDataAndDimensions(t.Data, t.Shape...)
}

// FromGoMLX copies a float32 GoMLX tensor.
func FromGoMLX(t *tensors.Tensor) *Tensor {
	return &Tensor{Shape: t.Shape().Dimensions, Data: tensors.MustCopyFlatData[float32](t)}
}

// Set is a collection of tensors addressed by name. Names iterate in sorted
// order, which fixes the order of graph parameters and of bytes on disk.
type Set struct {
	m map[string]*Tensor
	// Metadata is saved with the tensors (safetensors "__metadata__"): model
	// configuration, step counters.
	Metadata map[string]string
	// lentTo names who holds the set's tensors while it is lent (Lend); "" when not lent.
	lentTo string
}

// Lend hands the set's tensors over to holder, something that keeps them
// in memory of its own and changes them there (an optimizer session, whose
// weights live on the device between steps): it drops them from the set,
// and until Reclaim every method that reads or changes tensors panics,
// naming holder. A lent set is never read stale: code that reads it
// before the holder writes the tensors back is a bug, and fails where it
// reads. Metadata stays readable.
func (s *Set) Lend(holder string) {
	s.checkNotLent()
	s.m, s.lentTo = map[string]*Tensor{}, holder
}

// Reclaim ends a Lend, leaving the set empty for the holder to Put the
// tensors back.
func (s *Set) Reclaim() { s.lentTo = "" }

// Lent reports whether the set is lent, and to whom.
func (s *Set) Lent() (holder string, lent bool) { return s.lentTo, s.lentTo != "" }

// checkNotLent panics if the set is lent: its tensors are elsewhere.
func (s *Set) checkNotLent() {
	if s.lentTo != "" {
		panic(fmt.Sprintf("weights: the set is lent to %s, which holds its tensors until it writes them back (Sync or Close it first)", s.lentTo))
	}
}

// NewSet returns an empty set.
func NewSet() *Set { return &Set{m: map[string]*Tensor{}, Metadata: map[string]string{}} }

// Put adds or replaces a tensor.
func (s *Set) Put(name string, t *Tensor) {
	s.checkNotLent()
	s.m[name] = t
}

// Get returns the named tensor or nil.
func (s *Set) Get(name string) *Tensor {
	s.checkNotLent()
	return s.m[name]
}

// Len is the number of tensors.
func (s *Set) Len() int {
	s.checkNotLent()
	return len(s.m)
}

// Names returns the tensor names, sorted.
func (s *Set) Names() []string {
	s.checkNotLent()
	names := make([]string, 0, len(s.m))
	for n := range s.m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Tensors returns the tensors in Names order.
func (s *Set) Tensors() []*Tensor {
	s.checkNotLent()
	names := s.Names()
	out := make([]*Tensor, len(names))
	for i, n := range names {
		out[i] = s.m[n]
	}
	return out
}

// Args returns the named tensors, in the order of names, as GoMLX tensors:
// the arguments of a compiled graph whose parameters are those names (the
// graph maps them back by the same list). Every graph that reads a set's
// tensors takes them this way. A name the set lacks is an error.
func (s *Set) Args(names []string) ([]any, error) {
	s.checkNotLent()
	args := make([]any, 0, len(names))
	for _, n := range names {
		t := s.m[n]
		if t == nil {
			return nil, fmt.Errorf("tensor %q missing", n)
		}
		args = append(args, t.ToGoMLX())
	}
	return args, nil
}

// Clone returns a deep copy.
func (s *Set) Clone() *Set {
	s.checkNotLent()
	c := NewSet()
	for n, t := range s.m {
		c.m[n] = &Tensor{Shape: append([]int(nil), t.Shape...), Data: append([]float32(nil), t.Data...)}
	}
	for k, v := range s.Metadata {
		c.Metadata[k] = v
	}
	return c
}

// ZerosLike returns a set with the same names and shapes, all zero.
func (s *Set) ZerosLike() *Set {
	s.checkNotLent()
	z := NewSet()
	for n, t := range s.m {
		z.m[n] = NewTensor(t.Shape...)
	}
	return z
}

// NumParams counts the scalars in the set.
func (s *Set) NumParams() int {
	s.checkNotLent()
	n := 0
	for _, t := range s.m {
		n += len(t.Data)
	}
	return n
}

// CheckFinite returns an error naming the first tensor holding NaN or Inf.
func (s *Set) CheckFinite() error {
	s.checkNotLent()
	for _, n := range s.Names() {
		for i, v := range s.m[n].Data {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("tensor %s holds %v at index %d", n, v, i)
			}
		}
	}
	return nil
}

type headerEntry struct {
	DType       string `json:"dtype"`
	Shape       []int  `json:"shape"`
	DataOffsets [2]int `json:"data_offsets"`
}

// WriteTo writes the set in the safetensors layout: an 8-byte little-endian
// header length, a JSON header, then the raw little-endian data.
func (s *Set) WriteTo(w io.Writer) (int64, error) {
	s.checkNotLent()
	header := map[string]any{}
	if len(s.Metadata) > 0 {
		header["__metadata__"] = s.Metadata
	}
	off := 0
	for _, n := range s.Names() {
		t := s.m[n]
		header[n] = headerEntry{DType: "F32", Shape: t.Shape, DataOffsets: [2]int{off, off + 4*len(t.Data)}}
		off += 4 * len(t.Data)
	}
	hb, err := json.Marshal(header)
	if err != nil {
		return 0, fmt.Errorf("encode safetensors header: %w", err)
	}
	for len(hb)%8 != 0 {
		hb = append(hb, ' ')
	}
	bw := bufio.NewWriter(w)
	var total int64
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(hb)))
	n, _ := bw.Write(lenBuf[:])
	total += int64(n)
	n, _ = bw.Write(hb)
	total += int64(n)
	var fb [4]byte
	for _, name := range s.Names() {
		for _, v := range s.m[name].Data {
			binary.LittleEndian.PutUint32(fb[:], math.Float32bits(v))
			n, _ = bw.Write(fb[:])
			total += int64(n)
		}
	}
	if err := bw.Flush(); err != nil {
		return total, fmt.Errorf("write tensors: %w", err)
	}
	return total, nil
}

// Read parses a safetensors stream holding F32 tensors.
func Read(r io.Reader) (*Set, error) {
	var lenBuf [8]byte
	if _, err := io.ReadFull(r, lenBuf[:]); err != nil {
		return nil, fmt.Errorf("read safetensors header length: %w", err)
	}
	hl := binary.LittleEndian.Uint64(lenBuf[:])
	if hl > 100<<20 {
		return nil, fmt.Errorf("safetensors header length %d is implausible", hl)
	}
	hb := make([]byte, hl)
	if _, err := io.ReadFull(r, hb); err != nil {
		return nil, fmt.Errorf("read safetensors header: %w", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hb, &raw); err != nil {
		return nil, fmt.Errorf("parse safetensors header: %w", err)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read tensor data: %w", err)
	}
	s := NewSet()
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &s.Metadata); err != nil {
				return nil, fmt.Errorf("parse safetensors metadata: %w", err)
			}
			continue
		}
		var e headerEntry
		if err := json.Unmarshal(msg, &e); err != nil {
			return nil, fmt.Errorf("parse safetensors entry %s: %w", name, err)
		}
		if e.DType != "F32" {
			return nil, fmt.Errorf("tensor %s has dtype %s; only F32 is supported", name, e.DType)
		}
		t := NewTensor(e.Shape...)
		b, end := e.DataOffsets[0], e.DataOffsets[1]
		if b < 0 || end > len(data) || end-b != 4*len(t.Data) {
			return nil, fmt.Errorf("tensor %s: data offsets %v do not match shape %v and %d data bytes", name, e.DataOffsets, e.Shape, len(data))
		}
		for i := range t.Data {
			t.Data[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[b+4*i:]))
		}
		s.m[name] = t
	}
	return s, nil
}

// Digest is the sha256 of the set's serialized bytes: equal digests mean
// bit-identical tensors, names and metadata.
func (s *Set) Digest() string {
	h := sha256.New()
	if _, err := s.WriteTo(h); err != nil {
		panic(err) // hash.Hash writes never fail
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Extrapolate returns weak + alpha*(strong-weak) for every tensor: ExPO model
// extrapolation (alpha > 1 moves past the strong model; alpha 1 returns it).
// Both sets must hold the same names and shapes; metadata comes from strong.
func Extrapolate(weak, strong *Set, alpha float64) (*Set, error) {
	if weak.Len() != strong.Len() {
		return nil, fmt.Errorf("extrapolate: %d tensors vs %d", weak.Len(), strong.Len())
	}
	out := strong.Clone()
	for _, n := range strong.Names() {
		w, s := weak.Get(n), strong.Get(n)
		if w == nil {
			return nil, fmt.Errorf("extrapolate: tensor %q missing from the weak model", n)
		}
		if len(w.Data) != len(s.Data) || fmt.Sprint(w.Shape) != fmt.Sprint(s.Shape) {
			return nil, fmt.Errorf("extrapolate: tensor %q has shape %v in the weak model and %v in the strong one", n, w.Shape, s.Shape)
		}
		o := out.Get(n)
		for i := range o.Data {
			o.Data[i] = float32(float64(w.Data[i]) + alpha*(float64(s.Data[i])-float64(w.Data[i])))
		}
	}
	return out, nil
}
