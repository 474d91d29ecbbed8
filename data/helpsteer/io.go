package helpsteer

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// valueKind is the JSON type a schema field must have.
type valueKind int

const (
	kindString valueKind = iota
	kindInt
	kindList
)

// schemaField describes one key of a row. The schema pass exists only to turn
// missing keys, nulls and wrong types into precise "<field>: <reason>"
// messages; the authoritative decode is the DisallowUnknownFields pass.
type schemaField struct {
	name     string
	kind     valueKind
	required bool
	// nullable accepts JSON null (decoded as the zero value); used for free
	// text that real exports may leave empty.
	nullable bool
	elem     []schemaField // object schema of list elements
}

var ratingSchema = []schemaField{
	{name: "prompt", kind: kindString, required: true},
	{name: "response", kind: kindString, required: true},
	{name: "helpfulness", kind: kindInt, required: true},
	{name: "correctness", kind: kindInt, required: true},
	{name: "coherence", kind: kindInt, required: true},
	{name: "complexity", kind: kindInt, required: true},
	{name: "verbosity", kind: kindInt, required: true},
	{name: "split", kind: kindString, nullable: true},
	{name: "answer", kind: kindString},
}

var preferenceSchema = []schemaField{
	{name: "split", kind: kindString, required: true},
	{name: "prompt", kind: kindString, required: true},
	{name: "response_1", kind: kindString, required: true},
	{name: "response_2", kind: kindString, required: true},
	{name: "preference_strength", kind: kindInt, required: true},
	{name: "preference_statement", kind: kindString, required: true, nullable: true},
	{name: "preference_elaboration", kind: kindString, required: true, nullable: true},
	{name: "three_most_similar_preferences", kind: kindList, required: true, elem: []schemaField{
		{name: "statement", kind: kindString, required: true, nullable: true},
		{name: "elaboration", kind: kindString, required: true, nullable: true},
		{name: "strength", kind: kindInt, required: true},
	}},
	{name: "all_preferences_unprocessed", kind: kindList, required: true, elem: []schemaField{
		{name: "justification", kind: kindString, required: true, nullable: true},
		{name: "strength", kind: kindInt, required: true},
	}},
	{name: "answer", kind: kindString},
}

var promptSchema = []schemaField{
	{name: "prompt", kind: kindString, required: true},
	{name: "answer", kind: kindString},
}

// ReadOptions tunes the Load functions.
type ReadOptions struct {
	// SkipInvalid drops rows that fail to decode or validate, recording them
	// in the ReadReport, instead of stopping at the first one. File-level
	// problems (unopenable file, bad gzip, an I/O error mid-stream, no valid
	// row at all, a line or a decompressed file over its bound) are errors
	// either way.
	SkipInvalid bool
	// Open opens the file (nil: os.Open); a worker opens a run's files
	// through its data roots (config.Roots.Open).
	Open func(path string) (io.ReadCloser, error)
	// MaxLineBytes bounds a line (0: DefaultMaxLineBytes). A longer one is
	// an error as soon as the bound is passed, before the rest is read.
	MaxLineBytes int
	// MaxBytes bounds what a gzip-compressed file decompresses to (0:
	// DefaultMaxBytes): a small file that inflates to gigabytes is an error
	// once the bound is passed.
	MaxBytes int64
	// RequireAnswer makes a prompts file's row without an answer invalid
	// (LoadPrompts): a verifier checks responses against it.
	RequireAnswer bool
}

// The bounds of ReadOptions: HelpSteer2's rows are a few KB and its files
// about 100 MB; these leave room for long conversations and larger sets
// while keeping a hostile file from exhausting a worker's memory.
const (
	DefaultMaxLineBytes = 16 << 20
	DefaultMaxBytes     = 8 << 30
)

// ErrTooLarge is what a line or a decompressed file over its bound wraps.
var ErrTooLarge = errors.New("over the reader's bound")

// maxReportedErrors bounds ReadReport.Errors.
const maxReportedErrors = 10

// ReadReport says what a Load function read.
type ReadReport struct {
	// Rows is the number of valid rows returned.
	Rows int
	// Skipped is the number of invalid rows dropped (only with SkipInvalid).
	Skipped int
	// Errors holds the errors of the first 10 skipped rows, in file order,
	// each as "<file>:<line>: <field>: <reason>".
	Errors []*LoadError
}

// ReadRatings loads a HelpSteer2 ratings JSONL file, plain or gzip-compressed
// (detected from the content, not the name), rejecting any row that is not
// exactly a valid Rating.
func ReadRatings(path string) ([]Rating, error) {
	rows, _, err := LoadRatings(path, ReadOptions{})
	return rows, err
}

// LoadRatings is ReadRatings with options: with SkipInvalid, invalid rows are
// dropped and reported instead of failing the load.
func LoadRatings(path string, opts ReadOptions) ([]Rating, ReadReport, error) {
	return readJSONL(path, ratingSchema, func(r *Rating) error { r.Split = normalSplit(r.Split); return r.Validate() }, opts)
}

// ReadPreferences loads a HelpSteer2-Preference JSONL file, plain or
// gzip-compressed (detected from the content, not the name), rejecting any
// row that is not exactly a valid Preference.
func ReadPreferences(path string) ([]Preference, error) {
	rows, _, err := LoadPreferences(path, ReadOptions{})
	return rows, err
}

// LoadPreferences is ReadPreferences with options, like LoadRatings.
func LoadPreferences(path string, opts ReadOptions) ([]Preference, ReadReport, error) {
	return readJSONL(path, preferenceSchema, func(p *Preference) error { p.Split = normalSplit(p.Split); return p.Validate() }, opts)
}

// ReadPrompts loads a prompts-only JSONL file (one PromptRow per line), plain
// or gzip-compressed (detected from the content, not the name), as strictly
// as ReadRatings: an unknown field, a missing or empty prompt or a
// non-string answer is an error naming the field and its file:line.
func ReadPrompts(path string) ([]PromptRow, error) {
	rows, _, err := LoadPrompts(path, ReadOptions{})
	return rows, err
}

// LoadPrompts is ReadPrompts with options, like LoadRatings; with
// opts.RequireAnswer a row must carry a non-empty answer.
func LoadPrompts(path string, opts ReadOptions) ([]PromptRow, ReadReport, error) {
	return readJSONL(path, promptSchema, func(p *PromptRow) error {
		if err := p.Validate(); err != nil {
			return err
		}
		if opts.RequireAnswer && strings.TrimSpace(p.Answer) == "" {
			return fieldErr("answer", "is missing or empty, and reward.verifier checks every response against its prompt's answer")
		}
		return nil
	}, opts)
}

// WritePrompts writes prompts-only rows as JSONL, gzip-compressed when
// path ends in ".gz", atomically and after validating every row, like
// WriteRatings.
func WritePrompts(path string, rows []PromptRow) error {
	return writeJSONL(path, "prompts", rows, PromptRow.Validate)
}

// WriteRatings writes rows as JSONL, gzip-compressed when path ends in ".gz".
// The file is replaced atomically, so a crash never leaves a truncated
// dataset behind. Rows are validated first so the output always loads back.
func WriteRatings(path string, rows []Rating) error {
	return writeJSONL(path, "ratings", rows, Rating.Validate)
}

// WritePreferences writes rows as JSONL, gzip-compressed when path ends in
// ".gz", atomically and after validating every row, like WriteRatings.
func WritePreferences(path string, rows []Preference) error {
	return writeJSONL(path, "preferences", rows, Preference.Validate)
}

var gzipMagic = []byte{0x1f, 0x8b}

// readJSONL reads rows of type T; check normalises a decoded row in place
// (the split "val" becomes "validation") and validates it.
func readJSONL[T any](path string, schema []schemaField, check func(*T) error, opts ReadOptions) ([]T, ReadReport, error) {
	var report ReadReport
	open := opts.Open
	if open == nil {
		open = func(p string) (io.ReadCloser, error) { return os.Open(p) }
	}
	maxLine, maxBytes := opts.MaxLineBytes, opts.MaxBytes
	if maxLine <= 0 {
		maxLine = DefaultMaxLineBytes
	}
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	f, err := open(path)
	if err != nil {
		return nil, report, &LoadError{File: path, Field: "file", Err: err}
	}
	defer f.Close()

	src := bufio.NewReaderSize(f, 64<<10)
	ioField := "file"
	var r io.Reader = src
	if magic, _ := src.Peek(2); bytes.Equal(magic, gzipMagic) {
		zr, err := gzip.NewReader(src)
		if err != nil {
			return nil, report, &LoadError{File: path, Field: "gzip", Err: err}
		}
		defer zr.Close()
		r = &boundedReader{r: zr, left: maxBytes, max: maxBytes}
		ioField = "gzip"
	}

	br := bufio.NewReaderSize(r, 64<<10)
	var rows []T
	var firstErr *LoadError
	for lineNo := 1; ; lineNo++ {
		line, readErr := readLine(br, maxLine)
		if long := (*lineTooLong)(nil); errors.As(readErr, &long) {
			return nil, report, &LoadError{File: path, Line: lineNo, Field: "line", Err: readErr}
		}
		if readErr != nil && readErr != io.EOF {
			return nil, report, &LoadError{File: path, Line: lineNo, Field: ioField, Err: readErr}
		}
		if lineNo == 1 {
			line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf")) // UTF-8 BOM
		}
		if trimmed := bytes.TrimSpace(line); len(trimmed) > 0 {
			row, err := decodeRow[T](trimmed, schema, check)
			if err != nil {
				le := rowError(path, lineNo, err)
				if !opts.SkipInvalid {
					return nil, report, le
				}
				if firstErr == nil {
					firstErr = le
				}
				report.Skipped++
				if len(report.Errors) < maxReportedErrors {
					report.Errors = append(report.Errors, le)
				}
			} else {
				rows = append(rows, row)
			}
		}
		if readErr == io.EOF {
			break
		}
	}
	report.Rows = len(rows)
	if len(rows) == 0 {
		if firstErr != nil {
			return nil, report, &LoadError{File: path, Field: "rows",
				Err: fmt.Errorf("all %d rows were invalid; the first: %w", report.Skipped, firstErr)}
		}
		return nil, report, &LoadError{File: path, Field: "rows", Err: ErrNoRows}
	}
	return rows, report, nil
}

// readLine reads up to and including the next newline, refusing a line
// longer than max bytes as soon as it is (bufio.Scanner's limit would too,
// but ends the file there without saying where).
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > max {
			return nil, &lineTooLong{max}
		}
		line = append(line, chunk...)
		if err != bufio.ErrBufferFull {
			return line, err
		}
	}
}

// lineTooLong is a line over ReadOptions.MaxLineBytes.
type lineTooLong struct{ max int }

func (e *lineTooLong) Error() string {
	return fmt.Sprintf("longer than %d bytes (%v): not a row of this format", e.max, ErrTooLarge)
}

func (e *lineTooLong) Unwrap() error { return ErrTooLarge }

// boundedReader refuses to read past max bytes of r.
type boundedReader struct {
	r         io.Reader
	left, max int64
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.left == 0 {
		// Exactly max bytes so far: the end is fine, one more byte is not.
		var one [1]byte
		for {
			m, err := b.r.Read(one[:])
			if m > 0 {
				return 0, fmt.Errorf("decompresses to more than %d bytes (%w)", b.max, ErrTooLarge)
			}
			if err != nil {
				return 0, err
			}
		}
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}

// rowError locates a decodeRow error at path:lineNo.
func rowError(path string, lineNo int, err error) *LoadError {
	var fe *FieldError
	if errors.As(err, &fe) {
		return &LoadError{File: path, Line: lineNo, Field: fe.Field, Err: errors.New(fe.Reason)}
	}
	return &LoadError{File: path, Line: lineNo, Field: "json", Err: err}
}

// decodeRow checks one line against schema, decodes it strictly and validates
// the values. Errors are *FieldError, or a plain error meaning the line is not
// JSON at all.
func decodeRow[T any](line []byte, schema []schemaField, check func(*T) error) (T, error) {
	var zero T
	var obj map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(line))
	if err := dec.Decode(&obj); err != nil {
		return zero, describeJSONError(err, "row")
	}
	if obj == nil {
		return zero, fieldErr("json", "row is null, want an object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return zero, fieldErr("json", fmt.Sprintf("unexpected data after the object at byte %d", dec.InputOffset()))
	}
	if err := checkObject(obj, schema, ""); err != nil {
		return zero, err
	}

	var row T
	strict := json.NewDecoder(bytes.NewReader(line))
	strict.DisallowUnknownFields()
	if err := strict.Decode(&row); err != nil {
		return zero, describeJSONError(err, "row")
	}
	if err := check(&row); err != nil {
		return zero, err
	}
	return row, nil
}

// checkObject reports unknown keys, missing required keys, unexpected nulls
// and wrong JSON types, naming the field by its path (e.g.
// "all_preferences_unprocessed[2].strength").
func checkObject(obj map[string]json.RawMessage, schema []schemaField, prefix string) error {
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !slices.ContainsFunc(schema, func(f schemaField) bool { return f.name == k }) {
			return fieldErr(prefix+k, "unknown field")
		}
	}
	for _, f := range schema {
		name := prefix + f.name
		raw, ok := obj[f.name]
		if !ok {
			if f.required {
				return fieldErr(name, "missing required field")
			}
			continue
		}
		got := jsonType(raw)
		if got == "null" {
			if f.nullable {
				continue
			}
			return fieldErr(name, "is null")
		}
		switch f.kind {
		case kindString:
			if got != "string" {
				return fieldErr(name, "want a string, got "+got)
			}
		case kindInt:
			if got != "number" {
				return fieldErr(name, "want an integer, got "+got)
			}
			var n int
			if err := json.Unmarshal(raw, &n); err != nil {
				return fieldErr(name, fmt.Sprintf("want an integer, got %s", raw))
			}
		case kindList:
			if got != "array" {
				return fieldErr(name, "want an array, got "+got)
			}
			var items []json.RawMessage
			if err := json.Unmarshal(raw, &items); err != nil {
				return fieldErr(name, err.Error())
			}
			for i, item := range items {
				itemName := fmt.Sprintf("%s[%d]", name, i)
				if t := jsonType(item); t != "object" {
					return fieldErr(itemName, "want an object, got "+t)
				}
				var sub map[string]json.RawMessage
				if err := json.Unmarshal(item, &sub); err != nil {
					return fieldErr(itemName, err.Error())
				}
				if err := checkObject(sub, f.elem, itemName+"."); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// jsonType names the JSON type of an already syntax-checked value.
func jsonType(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	default:
		return "number"
	}
}

// describeJSONError turns encoding/json errors into *FieldError values.
func describeJSONError(err error, what string) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fieldErr("json", fmt.Sprintf("malformed JSON at byte %d: %v", syn.Offset, syn))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fieldErr("json", "malformed JSON: unexpected end of line")
	case errors.As(err, &typ):
		if typ.Field == "" {
			return fieldErr("json", fmt.Sprintf("%s must be a JSON object, got %s", what, typ.Value))
		}
		return fieldErr(typ.Field, fmt.Sprintf("want %s, got %s", typ.Type, typ.Value))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return fieldErr(name, "unknown field")
	default:
		return fieldErr("json", err.Error())
	}
}

func writeJSONL[T any](path, what string, rows []T, validate func(T) error) (err error) {
	if len(rows) == 0 {
		return fmt.Errorf("write %s %s: %w", what, path, ErrNoRows)
	}
	for i, row := range rows {
		if verr := validate(row); verr != nil {
			return fmt.Errorf("write %s %s: row %d: %w", what, path, i, verr)
		}
	}

	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s %s: %w", what, path, err)
	}
	renamed := false
	defer func() {
		if !renamed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()

	bw := bufio.NewWriterSize(tmp, 64<<10)
	var w io.Writer = bw
	var zw *gzip.Writer
	if strings.HasSuffix(path, ".gz") {
		// A zero gzip header (no name, no mtime) keeps output byte-identical
		// for identical rows, which the determinism checks rely on.
		zw = gzip.NewWriter(bw)
		w = zw
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // keep "->" and "<extra_id_1>" readable
	for i, row := range rows {
		if err := enc.Encode(row); err != nil {
			return fmt.Errorf("write %s %s: row %d: %w", what, path, i, err)
		}
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return fmt.Errorf("write %s %s: gzip: %w", what, path, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write %s %s: %w", what, path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("write %s %s: %w", what, path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s %s: fsync: %w", what, path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s %s: %w", what, path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		renamed = true // nothing left to clean up
		return fmt.Errorf("write %s %s: %w", what, path, err)
	}
	renamed = true
	syncDir(dir)
	return nil
}

// syncDir makes the rename durable. It is best effort: some filesystems
// refuse fsync on directories, and the data itself is already synced.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	_ = d.Close()
}
