package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
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
func OpenDir(dir string) (*Dir, error) {
	d := &Dir{Path: dir, files: map[string]*File{}, byName: map[string]*File{}}
	if _, err := os.Stat(filepath.Join(dir, Single)); err == nil {
		f, err := Open(filepath.Join(dir, Single))
		if err != nil {
			return nil, err
		}
		d.files[Single] = f
		for _, n := range f.Names() {
			d.byName[n] = f
		}
		d.names = f.Names()
		return d, nil
	}
	ip := filepath.Join(dir, Index)
	b, err := os.ReadFile(ip)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", dir, ErrNoWeights)
	}
	if err != nil {
		return nil, err
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
			if f, err = Open(filepath.Join(dir, file)); err != nil {
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
