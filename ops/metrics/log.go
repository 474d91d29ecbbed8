// Package metrics records what runs do while they do it: the points of a
// run's metrics log (runs/<id>/metrics.jsonl in the artifact store) and the
// Prometheus series a worker serves on /metrics, alignflow's own beside the
// Temporal SDK's.
//
// An object store cannot append, and retried attempts redo work, so the
// log is kept in segments: an activity buffers a series' points and saves
// them when it saves the work they describe (a training checkpoint, the
// end of a phase, an iteration's update), under a key named by the steps
// they cover. A retried attempt resumes from that work and redoes the same
// steps into the same key, so the assembled log never repeats or misses a
// step.
package metrics

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/pipeline"
)

// File is the assembled log of a run, runs/<id>/metrics.jsonl.
const File = "metrics.jsonl"

// Series names what a point measures: a stage, the reward recipe it
// trains or uses, and the training phase ("" where there is none).
type Series struct {
	Stage  string `json:"stage"`
	Recipe string `json:"recipe,omitempty"`
	Phase  string `json:"phase,omitempty"`
}

// String is the series as people read it: "reward-model bt-scaled: regression".
func (s Series) String() string {
	out := s.Stage
	if s.Recipe != "" {
		out += " " + s.Recipe
	}
	if s.Phase != "" && s.Phase != s.Recipe {
		out += ": " + s.Phase
	}
	return out
}

// Point is one line of a metrics log: a logged step of a series.
type Point struct {
	Series
	Step    int                `json:"step"`
	Time    time.Time          `json:"time"`
	Metrics map[string]float64 `json:"metrics"`
}

// Log buffers the points of one series of one run until Flush saves them.
// It also shows each point on rec at once (nil: no Prometheus).
type Log struct {
	store   *artifact.Store
	runID   string
	series  Series
	rec     *Recorder
	pending []Point
}

// NewLog starts buffering points of series for the run runID.
func NewLog(store *artifact.Store, rec *Recorder, runID string, series Series) *Log {
	return &Log{store: store, runID: runID, series: series, rec: rec}
}

// Add records step's metrics, leaving out values that are not finite (JSON
// has no NaN): the loss of a diverged step is in the error that stops it.
func (l *Log) Add(step int, values map[string]float64) {
	m := make(map[string]float64, len(values))
	for k, v := range values {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			m[k] = v
		}
	}
	p := Point{Series: l.series, Step: step, Time: time.Now().UTC(), Metrics: m}
	l.rec.Observe(l.runID, p)
	l.pending = append(l.pending, p)
}

// Flush saves the buffered points as one segment, replacing a segment of
// the same steps that an earlier attempt saved (it holds the same steps,
// recomputed from the same saved state).
func (l *Log) Flush() error {
	if len(l.pending) == 0 {
		return nil
	}
	var b bytes.Buffer
	if err := WriteJSONL(&b, l.pending); err != nil {
		return err
	}
	key, err := segmentKey(l.runID, l.series, l.pending[0].Step, l.pending[len(l.pending)-1].Step)
	if err != nil {
		return err
	}
	if _, err := l.store.PutRecord(key, b.Bytes()); err != nil {
		return fmt.Errorf("save metrics of %s: %w", l.series, err)
	}
	l.pending = nil
	return nil
}

// Dir is the folder of a run's metric segments in the store; it refuses a
// run ID that is not a safe key (pipeline.RunKey).
func Dir(runID string) (string, error) {
	dir, err := pipeline.RunKey(runID, "metrics")
	return dir + "/", err
}

func segmentKey(runID string, s Series, first, last int) (string, error) {
	name := strings.Join(nonEmpty(s.Stage, s.Recipe, s.Phase), ".")
	name = strings.NewReplacer("/", "_", " ", "_", ":", "_").Replace(name)
	return pipeline.RunKey(runID, "metrics", name, fmt.Sprintf("%08d-%08d.jsonl", first, last))
}

func nonEmpty(parts ...string) []string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// WriteJSONL writes points one JSON object per line.
func WriteJSONL(w io.Writer, points []Point) error {
	enc := json.NewEncoder(w)
	for _, p := range points {
		if err := enc.Encode(p); err != nil {
			return fmt.Errorf("metrics line: %w", err)
		}
	}
	return nil
}

// ReadJSONL reads a metrics log; name says where it came from in errors.
func ReadJSONL(r io.Reader, name string) ([]Point, error) {
	var out []Point
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<24)
	for line := 1; sc.Scan(); line++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var p Point
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			return nil, fmt.Errorf("metrics %s:%d: %w", name, line, err)
		}
		out = append(out, p)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("metrics %s: %w", name, err)
	}
	return out, nil
}

// Collect reads every segment of a run's log, in time order (series and
// step break ties): the run's metrics.jsonl, so far.
func Collect(store *artifact.Store, runID string) ([]Point, error) {
	dir, err := Dir(runID)
	if err != nil {
		return nil, err
	}
	var keys []string
	if err := store.List(dir, func(key string, _ int64) error {
		if strings.HasSuffix(key, ".jsonl") {
			keys = append(keys, key)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list metrics of %s: %w", runID, err)
	}
	var all []Point
	for _, k := range keys {
		b, err := store.GetRecord(k)
		if err != nil {
			return nil, fmt.Errorf("read metrics %s: %w", store.Where(k), err)
		}
		pts, err := ReadJSONL(bytes.NewReader(b), store.Where(k))
		if err != nil {
			return nil, err
		}
		all = append(all, pts...)
	}
	sort.SliceStable(all, func(i, j int) bool {
		a, b := all[i], all[j]
		if !a.Time.Equal(b.Time) {
			return a.Time.Before(b.Time)
		}
		if a.Series != b.Series {
			return a.Series.String() < b.Series.String()
		}
		return a.Step < b.Step
	})
	return all, nil
}

// Assemble writes a run's whole log so far to runs/<id>/metrics.jsonl and
// returns its points and where the file is.
func Assemble(store *artifact.Store, runID string) ([]Point, string, error) {
	pts, err := Collect(store, runID)
	if err != nil {
		return nil, "", err
	}
	var b bytes.Buffer
	if err := WriteJSONL(&b, pts); err != nil {
		return nil, "", err
	}
	key, err := pipeline.RunKey(runID, File)
	if err != nil {
		return nil, "", err
	}
	where, err := store.PutRecord(key, b.Bytes())
	if err != nil {
		return nil, "", fmt.Errorf("write %s of %s: %w", File, runID, err)
	}
	return pts, where, nil
}

// Of returns the points of one series, in step order.
func Of(points []Point, s Series) []Point {
	var out []Point
	for _, p := range points {
		if p.Series == s {
			out = append(out, p)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Step < out[j].Step })
	return out
}

// SeriesOf lists the series of points with the given stage, in order of
// first appearance.
func SeriesOf(points []Point, stage string) []Series {
	var out []Series
	seen := map[Series]bool{}
	for _, p := range points {
		if p.Stage == stage && !seen[p.Series] {
			seen[p.Series] = true
			out = append(out, p.Series)
		}
	}
	return out
}
