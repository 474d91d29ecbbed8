package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Single and Index are the names of a model directory's weights.
const (
	Single = "model.safetensors"
	Index  = "model.safetensors.index.json"
)

// Dir is the weights of a model directory: one file or the shards an index
// names. It is read tensor by tensor.
type Dir struct {
	Path   string
	files  map[string]*File // by file name
	byName map[string]*File
	names  []string
}

// OpenDir opens dir/model.safetensors, or every shard of
// dir/model.safetensors.index.json (checking that the index and the shards
// agree on which tensor is where).
func OpenDir(dir string) (*Dir, error) { return OpenDirFS(dirFS(dir), dir) }

// maxIndex bounds model.safetensors.index.json: real ones are a few
// hundred KB (a tensor name and a file name per tensor).
const maxIndex = 64 << 20

// OpenDirFS is OpenDir of the directory fsys, every file opened through
// it (a worker's data roots); dir names it in errors.
func OpenDirFS(fsys fs.FS, dir string) (*Dir, error) {
	d := &Dir{Path: dir, files: map[string]*File{}, byName: map[string]*File{}}
	f, err := OpenFS(fsys, Single, filepath.Join(dir, Single))
	if err == nil {
		d.files[Single] = f
		for _, n := range f.Names() {
			d.byName[n] = f
		}
		d.names = f.Names()
		return d, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	ip := filepath.Join(dir, Index)
	b, err := readBounded(fsys, Index, maxIndex)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", dir, ErrNoWeights)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ip, err)
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("%s: %w", ip, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, fmt.Errorf("%s: weight_map is empty", ip)
	}
	for name, file := range idx.WeightMap {
		if file == "" || file != filepath.Base(file) || strings.HasPrefix(file, ".") {
			d.Close()
			return nil, fmt.Errorf("%s: weight_map[%s] = %q is not a file in the directory", ip, name, file)
		}
		f, ok := d.files[file]
		if !ok {
			if f, err = OpenFS(fsys, file, filepath.Join(dir, file)); err != nil {
				d.Close()
				return nil, fmt.Errorf("%s names %s: %w", ip, file, err)
			}
			d.files[file] = f
		}
		if _, ok := f.Info(name); !ok {
			d.Close()
			return nil, fmt.Errorf("%s: tensor %s should be in %s, which does not hold it", ip, name, file)
		}
		d.byName[name] = f
		d.names = append(d.names, name)
	}
	for file, f := range d.files {
		for _, n := range f.Names() {
			if d.byName[n] != f {
				d.Close()
				return nil, fmt.Errorf("%s: shard %s holds tensor %s, which the index does not place there", ip, file, n)
			}
		}
	}
	sort.Strings(d.names)
	return d, nil
}

// Close closes every file.
func (d *Dir) Close() error {
	var errs []error
	for _, f := range d.files {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}

// Names lists every tensor, sorted.
func (d *Dir) Names() []string { return append([]string(nil), d.names...) }

// Info describes a tensor and says which file holds it.
func (d *Dir) Info(name string) (Info, string, bool) {
	f, ok := d.byName[name]
	if !ok {
		return Info{}, "", false
	}
	i, _ := f.Info(name)
	return i, f.Path, true
}

// Float32 reads a tensor as float32.
func (d *Dir) Float32(name string) ([]float32, error) {
	f, ok := d.byName[name]
	if !ok {
		return nil, fmt.Errorf("%s: no tensor %s", d.Path, name)
	}
	return f.Float32(name)
}

// readBounded reads name from fsys, refusing more than max bytes.
func readBounded(fsys fs.FS, name string, max int64) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("more than %d bytes: not a safetensors index", max)
	}
	return b, nil
}

// dirFS is dir as a file system (dir "" is the current directory, as
// filepath.Join reads it).
func dirFS(dir string) fs.FS {
	if dir == "" {
		dir = "."
	}
	return os.DirFS(dir)
}
