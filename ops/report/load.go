package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/ops/metrics"
	"github.com/alignflow/alignflow/pipeline"
)

// Dir is the folder of a run's report in the store; it refuses a run ID
// that is not a safe key (pipeline.RunKey).
func Dir(runID string) (string, error) { return pipeline.RunKey(runID, "report") }

// Load reads what a run's report shows from the store: its summary or
// comparison report (neither until it finishes) and its metrics log so
// far. A run the store knows nothing of is an error naming the store, as
// is a run ID that is not a safe key.
func Load(store *artifact.Store, runID string) (Run, error) {
	r := Run{WorkflowID: runID}
	dir, err := pipeline.RunKey(runID)
	if err != nil {
		return r, err
	}
	if r.Summary, err = record[pipeline.Summary](store, runID, pipeline.SummaryFile); err != nil {
		return r, err
	}
	if r.Comparison, err = record[pipeline.ComparisonReport](store, runID, pipeline.ComparisonFile); err != nil {
		return r, err
	}
	if r.Points, err = metrics.Collect(store, runID); err != nil {
		return r, err
	}
	if r.Summary == nil && r.Comparison == nil && len(r.Points) == 0 {
		return r, fmt.Errorf("run %s: no summary, comparison or metrics in %s (is --data-dir or --store the worker's?)", runID, store.Where(dir))
	}
	return r, nil
}

// record reads a run's JSON record, nil when it is absent.
func record[T any](store *artifact.Store, runID, name string) (*T, error) {
	key, err := pipeline.RunKey(runID, name)
	if err != nil {
		return nil, err
	}
	b, err := store.GetRecord(key)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", store.Where(key), err)
	}
	v := new(T)
	if err := json.Unmarshal(b, v); err != nil {
		return nil, fmt.Errorf("read %s: %w", store.Where(key), err)
	}
	return v, nil
}

// order puts the pages last, so a report that stops half-way has no page
// pointing at charts that are not there.
func order(files []File) []File {
	var charts, pages []File
	for _, f := range files {
		if f.Name == Markdown || f.Name == HTML {
			pages = append(pages, f)
		} else {
			charts = append(charts, f)
		}
	}
	return append(charts, pages...)
}

// WriteDir writes a report's files into dir, each atomically, the pages
// last.
func WriteDir(dir string, files []File) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("report dir %s: %w", dir, err)
	}
	for _, f := range order(files) {
		if err := artifact.WriteFileAtomic(filepath.Join(dir, f.Name), f.Data); err != nil {
			return fmt.Errorf("write report %s: %w", f.Name, err)
		}
	}
	return nil
}

// Save writes a report's files under the run's report folder in the
// store, the pages last, and says where the page is.
func Save(store *artifact.Store, runID string, files []File) (html, md string, err error) {
	dir, err := Dir(runID)
	if err != nil {
		return "", "", err
	}
	for _, f := range order(files) {
		where, err := store.PutRecord(path.Join(dir, f.Name), f.Data)
		if err != nil {
			return "", "", fmt.Errorf("write report %s: %w", f.Name, err)
		}
		switch f.Name {
		case HTML:
			html = where
		case Markdown:
			md = where
		}
	}
	return html, md, nil
}
