// Package safetensors reads and writes the safetensors format Hugging Face
// checkpoints use: single files and sharded ones (model.safetensors.index.json),
// with F32, BF16 and F16 tensors. Reads go tensor by tensor (ReadAt), so a
// multi-GB checkpoint is never held in one buffer; the header is checked
// first, as strictly as safetensors' own reader (a header of at most
// 100,000,000 bytes of UTF-8 JSON, sizes that match dtypes and shapes,
// tensors that cover the data exactly: no gaps, overlaps or trailing
// bytes), and errors name the file and the tensor.
package safetensors

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/x448/float16"
)

// DType is a tensor's element type.
type DType string

// The element types alignflow reads and writes.
const (
	F32  DType = "F32"
	BF16 DType = "BF16"
	F16  DType = "F16"
)

// DTypes lists the supported element types.
var DTypes = []DType{F32, BF16, F16}

// Size is the bytes per element (0 for an unsupported type).
func (d DType) Size() int {
	switch d {
	case F32:
		return 4
	case BF16, F16:
		return 2
	}
	return 0
}

// Info describes one tensor of a file.
type Info struct {
	Name  string
	DType DType
	Shape []int
	// Begin and End are byte offsets into the data section.
	Begin, End int64
}

// Elements is the number of values.
func (i Info) Elements() int64 {
	n := int64(1)
	for _, d := range i.Shape {
		n *= int64(d)
	}
	return n
}

// MaxHeader is the longest JSON header safetensors reads
// (safetensors/src/tensor.rs: MAX_HEADER_SIZE); real headers are at most a
// few MB.
const MaxHeader = 100_000_000

// File is an open safetensors file.
type File struct {
	Path     string
	Metadata map[string]string
	f        readerAtCloser
	data     int64 // offset of the data section
	tensors  map[string]Info
	order    []string // by Begin
}

// readerAtCloser is an open file tensors are read from at offsets.
type readerAtCloser interface {
	io.ReaderAt
	io.Closer
}

// Open reads and checks a file's header; tensors are read on demand.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return openFile(f, path)
}

// OpenFS is Open of name in fsys (whose files must be io.ReaderAt, as
// *os.File is); path names the file in errors.
func OpenFS(fsys fs.FS, name, path string) (*File, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	return openFile(f, path)
}

// openFile checks the header of the open file f (closed on an error).
func openFile(f fs.File, path string) (*File, error) {
	ra, ok := f.(readerAtCloser)
	if !ok {
		f.Close()
		return nil, fmt.Errorf("safetensors %s: the file cannot be read at offsets", path)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("safetensors %s: not a regular file", path)
	}
	sf, err := parseHeader(ra, st.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("safetensors %s: %w", path, err)
	}
	sf.Path, sf.f = path, ra
	return sf, nil
}

func parseHeader(r io.ReaderAt, size int64) (*File, error) {
	var lenBuf [8]byte
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return nil, fmt.Errorf("header length: file of %d bytes is too short", size)
	}
	hl := binary.LittleEndian.Uint64(lenBuf[:])
	if hl > MaxHeader {
		return nil, fmt.Errorf("header length %d is more than safetensors reads (at most %d)", hl, MaxHeader)
	}
	if int64(hl) > size-8 {
		return nil, fmt.Errorf("header length %d does not fit a file of %d bytes", hl, size)
	}
	hb := make([]byte, hl)
	if _, err := r.ReadAt(hb, 8); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if !utf8.Valid(hb) {
		return nil, fmt.Errorf("header is not UTF-8")
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hb, &raw); err != nil {
		return nil, fmt.Errorf("header is not JSON: %w", err)
	}
	sf := &File{data: 8 + int64(hl), tensors: map[string]Info{}, Metadata: map[string]string{}}
	dataSize := size - sf.data
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &sf.Metadata); err != nil {
				return nil, fmt.Errorf("__metadata__: %w", err)
			}
			continue
		}
		var e struct {
			DType       DType   `json:"dtype"`
			Shape       []int   `json:"shape"`
			DataOffsets []int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(msg, &e); err != nil {
			return nil, fmt.Errorf("tensor %s: %w", name, err)
		}
		info := Info{Name: name, DType: e.DType, Shape: e.Shape}
		if e.DType.Size() == 0 {
			return nil, fmt.Errorf("tensor %s: dtype %q is not supported (supported: F32, BF16, F16)", name, e.DType)
		}
		if len(e.DataOffsets) != 2 {
			return nil, fmt.Errorf("tensor %s: data_offsets must be [begin, end]", name)
		}
		info.Begin, info.End = e.DataOffsets[0], e.DataOffsets[1]
		n := int64(1)
		for _, d := range e.Shape {
			if d < 0 || d > math.MaxInt32 || n > math.MaxInt64/int64(max(d, 1)) {
				return nil, fmt.Errorf("tensor %s: shape %v is not a tensor shape", name, e.Shape)
			}
			n *= int64(d)
		}
		switch {
		case info.Begin < 0 || info.End < info.Begin || info.End > dataSize:
			return nil, fmt.Errorf("tensor %s: data_offsets [%d, %d] lie outside the %d data bytes", name, info.Begin, info.End, dataSize)
		case info.End-info.Begin != n*int64(e.DType.Size()):
			return nil, fmt.Errorf("tensor %s: %d bytes for %s %v, which needs %d", name, info.End-info.Begin, e.DType, e.Shape, n*int64(e.DType.Size()))
		}
		sf.tensors[name] = info
		sf.order = append(sf.order, name)
	}
	// The tensors must cover the data section exactly, one after another
	// in the order of their offsets, as safetensors' own reader requires
	// (safetensors/src/tensor.rs: Metadata::validate refuses a tensor that
	// does not begin where the one before it ends, SafeTensors::read_metadata
	// a file with bytes after the last).
	sort.Slice(sf.order, func(i, j int) bool {
		a, b := sf.tensors[sf.order[i]], sf.tensors[sf.order[j]]
		if a.Begin != b.Begin {
			return a.Begin < b.Begin
		}
		if a.End != b.End {
			return a.End < b.End
		}
		return a.Name < b.Name
	})
	end, at := int64(0), "where the data begins"
	for i, name := range sf.order {
		cur := sf.tensors[name]
		switch {
		case cur.Begin < end: // so i > 0
			prev := sf.tensors[sf.order[i-1]]
			return nil, fmt.Errorf("tensors %s and %s overlap (bytes %d..%d and %d..%d)", prev.Name, name, prev.Begin, prev.End, cur.Begin, cur.End)
		case cur.Begin > end:
			return nil, fmt.Errorf("tensor %s: data_offsets [%d, %d] begin at %d, not at %d %s: safetensors refuses a gap between tensors", name, cur.Begin, cur.End, cur.Begin, end, at)
		}
		end, at = cur.End, "where tensor "+name+" ends"
	}
	if end != dataSize {
		return nil, fmt.Errorf("the data section has %d bytes after offset %d %s: safetensors refuses trailing bytes", dataSize-end, end, at)
	}
	return sf, nil
}

// Close closes the file.
func (f *File) Close() error { return f.f.Close() }

// Names lists the tensors in file order.
func (f *File) Names() []string { return append([]string(nil), f.order...) }

// Info describes a tensor.
func (f *File) Info(name string) (Info, bool) {
	i, ok := f.tensors[name]
	return i, ok
}

// Float32 reads a tensor and converts it to float32.
func (f *File) Float32(name string) ([]float32, error) {
	info, ok := f.tensors[name]
	if !ok {
		return nil, fmt.Errorf("safetensors %s: no tensor %s", f.Path, name)
	}
	raw := make([]byte, info.End-info.Begin)
	if _, err := f.f.ReadAt(raw, f.data+info.Begin); err != nil {
		return nil, fmt.Errorf("safetensors %s: tensor %s: %w", f.Path, name, err)
	}
	return Decode(raw, info.DType), nil
}

// Decode converts little-endian raw values of dtype to float32.
func Decode(raw []byte, dtype DType) []float32 {
	out := make([]float32, len(raw)/dtype.Size())
	switch dtype {
	case F32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	case BF16:
		for i := range out {
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(raw[2*i:])) << 16)
		}
	case F16:
		for i := range out {
			out[i] = float16.Frombits(binary.LittleEndian.Uint16(raw[2*i:])).Float32()
		}
	}
	return out
}

// Encode converts float32 values to little-endian dtype, rounding to the
// nearest representable value (ties to even) for BF16 and F16.
func Encode(values []float32, dtype DType) []byte {
	out := make([]byte, len(values)*dtype.Size())
	switch dtype {
	case F32:
		for i, v := range values {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		}
	case BF16:
		for i, v := range values {
			binary.LittleEndian.PutUint16(out[2*i:], bf16(v))
		}
	case F16:
		for i, v := range values {
			binary.LittleEndian.PutUint16(out[2*i:], float16.Fromfloat32(v).Bits())
		}
	}
	return out
}

// bf16 rounds a float32 to bfloat16, nearest with ties to even (NaN stays NaN).
func bf16(v float32) uint16 {
	b := math.Float32bits(v)
	if v != v {
		return uint16(b>>16) | 0x40
	}
	b += 0x7FFF + (b>>16)&1
	return uint16(b >> 16)
}

// Tensor is a named tensor to write.
type Tensor struct {
	Name   string
	DType  DType
	Shape  []int
	Values []float32
	// Get, when Values is nil, produces the values as they are written, so
	// a writer never holds more than one converted tensor.
	Get func() []float32
}

func (t Tensor) values() []float32 {
	if t.Values == nil && t.Get != nil {
		return t.Get()
	}
	return t.Values
}

// Write writes tensors (in the order given) to w in the safetensors layout,
// converting each to its dtype. The header is padded to a multiple of 8
// bytes, as Hugging Face's writer does.
func Write(w io.Writer, tensors []Tensor, metadata map[string]string) error {
	header := map[string]any{}
	if len(metadata) > 0 {
		header["__metadata__"] = metadata
	}
	off := int64(0)
	seen := map[string]bool{}
	sizes := map[string]int64{}
	for _, t := range tensors {
		if t.DType.Size() == 0 {
			return fmt.Errorf("tensor %s: dtype %q is not supported", t.Name, t.DType)
		}
		if seen[t.Name] || t.Name == "__metadata__" {
			return fmt.Errorf("tensor %s: written twice", t.Name)
		}
		seen[t.Name] = true
		n := int64(1)
		for _, d := range t.Shape {
			n *= int64(d)
		}
		if t.Values != nil && n != int64(len(t.Values)) {
			return fmt.Errorf("tensor %s: %d values for shape %v", t.Name, len(t.Values), t.Shape)
		}
		end := off + n*int64(t.DType.Size())
		sizes[t.Name] = end - off
		header[t.Name] = map[string]any{"dtype": t.DType, "shape": shapeOrEmpty(t.Shape), "data_offsets": []int64{off, end}}
		off = end
	}
	hb, err := json.Marshal(header)
	if err != nil {
		return err
	}
	if pad := (8 - len(hb)%8) % 8; pad > 0 {
		hb = append(hb, strings.Repeat(" ", pad)...)
	}
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(hb)))
	if _, err := w.Write(lenBuf[:]); err != nil {
		return err
	}
	if _, err := w.Write(hb); err != nil {
		return err
	}
	for _, t := range tensors {
		v := t.values()
		if int64(len(v))*int64(t.DType.Size()) != sizes[t.Name] {
			return fmt.Errorf("tensor %s: %d values for shape %v", t.Name, len(v), t.Shape)
		}
		if _, err := w.Write(Encode(v, t.DType)); err != nil {
			return fmt.Errorf("tensor %s: %w", t.Name, err)
		}
	}
	return nil
}

func shapeOrEmpty(s []int) []int {
	if s == nil {
		return []int{}
	}
	return s
}

// ErrNoWeights means a directory holds neither model.safetensors nor a
// sharded index.
var ErrNoWeights = errors.New("no model.safetensors or model.safetensors.index.json")
