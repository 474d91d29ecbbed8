package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// Roots are the directories a worker reads a run's files from: the data
// files a spec names, and every file of model.path and reward.path. Every
// such read goes through Open (or FS), which opens the file beneath one
// root with os.Root: each component of the path, symbolic links included,
// is resolved within the root as the file is opened, so a link out of the
// root is refused, and the file read is the file checked (a file or
// directory swapped for a link after a check cannot redirect the read).
//
// The zero Roots let a run read no file at all; AnyFile lets it read any
// file the process can (a developer's own machine).
type Roots struct {
	dirs []string // absolute
	any  bool
}

// AnyFile lets a run read any file the worker can: what `alignflow dev` and
// a worker on a loopback Temporal address do without --data-root.
func AnyFile() Roots { return Roots{any: true} }

// RootsAt confines a run's files to dirs (relative ones to the current
// directory); none means no file at all.
func RootsAt(dirs ...string) Roots {
	r := Roots{}
	for _, d := range dirs {
		abs, err := filepath.Abs(d)
		if err != nil {
			abs = filepath.Clean(d)
		}
		r.dirs = append(r.dirs, abs)
	}
	return r
}

// Any reports whether every file is allowed.
func (r Roots) Any() bool { return r.any }

// Dirs are the roots (nil for AnyFile and for no file).
func (r Roots) Dirs() []string { return append([]string(nil), r.dirs...) }

// String says what a run may read, for messages.
func (r Roots) String() string {
	switch {
	case r.any:
		return "any file"
	case len(r.dirs) == 0:
		return "no file (no --data-root)"
	}
	return strings.Join(r.dirs, ", ")
}

// ErrOutsideRoots is what a read outside the worker's data roots wraps.
var ErrOutsideRoots = errors.New("outside the worker's data roots")

// OutsideError is a file the roots do not hold, or a symbolic link in its
// path that leads out of them.
type OutsideError struct {
	Path  string // as given
	Link  string // the link that leads out ("" when the path itself is outside)
	To    string // what Link points to
	Roots Roots
}

func (e *OutsideError) Error() string {
	fix := "move it under one of them, or start the worker with --data-root naming its directory"
	if len(e.Roots.dirs) == 0 {
		fix = "this worker reads no files: start it with --data-root DIR (or --data-root / to allow any file)"
	}
	if e.Link != "" {
		return fmt.Sprintf("%s: %s is a symbolic link to %s, %v (%s); %s", e.Path, e.Link, e.To, ErrOutsideRoots, e.Roots, fix)
	}
	return fmt.Sprintf("%s is %v (%s); %s", e.Path, ErrOutsideRoots, e.Roots, fix)
}

func (e *OutsideError) Unwrap() error { return ErrOutsideRoots }

// Open opens the file at path (relative to the current directory) for
// reading through the root that holds it. A path lies in a root as
// written, or once its links are resolved (a link to a file in another
// root is followed there); either way the open itself is confined to that
// root. A path in no root, or one whose links lead out of the roots, is an
// *OutsideError naming the link and its target.
func (r Roots) Open(path string) (*os.File, error) {
	if r.any {
		return os.Open(path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	cands := []string{abs}
	if res, err := filepath.EvalSymlinks(abs); err == nil && res != abs {
		cands = append(cands, res)
	}
	var inside bool
	var openErr error
	for _, p := range cands {
		for _, dir := range r.forms() {
			rel, ok := within(dir, p)
			if !ok {
				continue
			}
			inside = true
			f, err := openBeneath(dir, rel)
			if err == nil {
				return f, nil
			}
			if openErr == nil || errors.Is(openErr, fs.ErrNotExist) && !errors.Is(err, fs.ErrNotExist) {
				openErr = err
			}
		}
	}
	if !inside {
		return nil, &OutsideError{Path: path, Roots: r}
	}
	if link, to, ok := r.escape(abs); ok {
		return nil, &OutsideError{Path: path, Link: link, To: to, Roots: r}
	}
	if strings.Contains(openErr.Error(), "path escapes from parent") { // os.Root's refusal
		return nil, &OutsideError{Path: path, Roots: r}
	}
	return nil, openErr
}

// forms are the roots as given and with their own links resolved (a root
// may itself be a link, /data to /mnt/data).
func (r Roots) forms() []string {
	var out []string
	for _, d := range r.dirs {
		out = append(out, d)
		if res := resolvePath(d); res != d {
			out = append(out, res)
		}
	}
	return out
}

// openBeneath opens dir/rel with dir as an os.Root.
func openBeneath(dir, rel string) (*os.File, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close() // files opened through it stay open
	return root.Open(rel)
}

// within is p relative to dir, when p is dir or beneath it.
func within(dir, p string) (string, bool) {
	rel, err := filepath.Rel(dir, p)
	if err != nil || !filepath.IsLocal(rel) && rel != "." {
		return "", false
	}
	return rel, true
}

// inRoots reports whether p, resolved, lies in a root.
func (r Roots) inRoots(p string) bool {
	for _, d := range r.forms() {
		if _, ok := within(d, p); ok {
			return true
		}
	}
	return false
}

// escape finds the symbolic link on the way to abs whose target lies
// outside every root, for the error message (the refusal itself is
// os.Root's).
func (r Roots) escape(abs string) (link, to string, ok bool) {
	parts := strings.Split(strings.TrimPrefix(abs, string(filepath.Separator)), string(filepath.Separator))
	cur := string(filepath.Separator)
	for _, part := range parts {
		next := filepath.Join(cur, part)
		st, err := os.Lstat(next)
		if err != nil {
			return "", "", false
		}
		if st.Mode()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(next)
			if err != nil {
				return "", "", false
			}
			dest := target
			if !filepath.IsAbs(dest) {
				dest = filepath.Join(cur, dest)
			}
			dest = resolvePath(dest)
			if r.inRoots(filepath.Dir(next)) && !r.inRoots(dest) {
				return next, target, true
			}
			cur = dest
			continue
		}
		cur = next
	}
	return "", "", false
}

// Stat is the file at path as Open finds it.
func (r Roots) Stat(path string) (fs.FileInfo, error) {
	f, err := r.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Stat()
}

// Check reports whether path lies in a root, as written or with its links
// resolved, without opening it: a missing file is judged by where it would
// be. It is a quick early answer; what the worker reads goes through Open.
func (r Roots) Check(path string) error {
	if r.any {
		return nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	for _, dir := range r.forms() {
		if _, ok := within(dir, abs); ok {
			if link, to, ok := r.escape(abs); ok {
				return &OutsideError{Path: path, Link: link, To: to, Roots: r}
			}
			return nil
		}
	}
	if r.inRoots(resolvePath(abs)) {
		return nil
	}
	return &OutsideError{Path: path, Roots: r}
}

// FS is the directory dir as a file system whose every Open goes through
// Roots.Open: what the readers of a model directory read it with. Its
// files are *os.File (io.ReaderAt, for safetensors).
func (r Roots) FS(dir string) fs.FS { return rootsFS{r: r, dir: dir} }

type rootsFS struct {
	r   Roots
	dir string
}

func (f rootsFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	file, err := f.r.Open(filepath.Join(f.dir, filepath.FromSlash(name)))
	if err != nil {
		return nil, err
	}
	return file, nil
}

// Roots are the connection's data roots: --data-root's directories; without
// any, every file on a loopback Temporal address (a developer's machine,
// `alignflow dev`), and no file on any other, where whoever can start a
// workflow is not necessarily who runs the worker.
func (c Connection) Roots() Roots {
	if len(c.DataRoots) > 0 {
		return RootsAt(c.DataRoots...)
	}
	if IsLoopback(c.Address) {
		return AnyFile()
	}
	return Roots{}
}

// IsLoopback reports whether a Temporal address (HOST:PORT) names this
// machine: localhost or a loopback IP. A name is not resolved.
func IsLoopback(address string) bool {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		host = address
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
