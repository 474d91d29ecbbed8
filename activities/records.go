package activities

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"strings"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/ops/metrics"
	"github.com/alignflow/alignflow/ops/report"
	"github.com/alignflow/alignflow/pipeline"
)

// WriteRunReport assembles the run's metrics log into runs/<run>/metrics.jsonl
// and writes its report (report.md, report.html, PNG and SVG charts) under
// runs/<run>/report/, with the stage timeline from the workflow history.
func (a *Activities) WriteRunReport(ctx context.Context, in pipeline.RunReportInput) (pipeline.RunReport, error) {
	ctx, _, stop := a.live(ctx, pipeline.Progress{Stage: pipeline.StageReport})
	defer stop()
	a.Metrics.Forget(in.RunID) // the run's last activity: its series end with it
	var out pipeline.RunReport
	r, err := report.Load(a.Store, in.RunID)
	if err != nil {
		return out, classify(err)
	}
	if r.Points, out.Metrics, err = metrics.Assemble(a.Store, in.RunID); err != nil {
		return out, classify(err)
	}
	if a.History == nil {
		r.HistoryNote = "this worker reads no workflow histories"
	} else if r.Histories, err = a.History.History(ctx, in.RunID); err != nil {
		return out, fmt.Errorf("report of %s: %w", in.RunID, err) // the server is unreachable: retried
	}
	files, err := report.Render(r)
	if err != nil {
		return out, classify(fmt.Errorf("report of %s: %w", in.RunID, err))
	}
	for _, f := range files {
		if strings.HasSuffix(f.Name, ".png") {
			out.Charts++
		}
	}
	out.HTML, out.Markdown, err = report.Save(a.Store, in.RunID, files)
	return out, classify(err)
}

// WriteReport writes a comparison's report where users look for it, as
// runs/<run>/comparison.json and, as tables shaped like the paper's,
// comparison.md, in the store (<data-dir>/runs/<run>/ for a local one).
func (a *Activities) WriteReport(_ context.Context, in pipeline.ReportInput) (pipeline.ReportPaths, error) {
	var out pipeline.ReportPaths
	if in.Report == nil {
		return out, fmt.Errorf("write report: no report given")
	}
	dir, err := runPath(in.RunID)
	if err != nil {
		return out, err
	}
	if out.JSON, err = a.putRecordJSON(path.Join(dir, pipeline.ComparisonFile), in.Report); err != nil {
		return out, classify(fmt.Errorf("write comparison report: %w", err))
	}
	if out.Markdown, err = a.Store.PutRecord(path.Join(dir, "comparison.md"), []byte(report.ComparisonMarkdown(in.Report))); err != nil {
		return out, classify(fmt.Errorf("write comparison report: %w", err))
	}
	return out, nil
}

// putRecordJSON writes v as indented JSON to a record of the store and
// says where it is.
func (a *Activities) putRecordJSON(key string, v any) (string, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return "", err
	}
	return a.Store.PutRecord(key, append(b, '\n'))
}

// curveSegment is the stored form of a CurveInput.
type curveSegment struct {
	Previous *artifact.Ref               `json:"previous,omitempty"`
	Points   []pipeline.IterationMetrics `json:"points"`
}

// SaveCurve stores a segment of the REINFORCE curve as
// <data-dir>/runs/<run>/reinforce/curve-<first>-<last>.json.
func (a *Activities) SaveCurve(_ context.Context, in pipeline.CurveInput) (artifact.Ref, error) {
	name := "curve-empty.json"
	if n := len(in.Points); n > 0 {
		name = fmt.Sprintf("curve-%05d-%05d.json", in.Points[0].Iteration, in.Points[n-1].Iteration)
	}
	key, err := runPath(in.RunID, "reinforce", name)
	if err != nil {
		return artifact.Ref{}, err
	}
	ref, err := a.Store.PutJSON(key, curveSegment{Previous: in.Previous, Points: in.Points})
	return ref, classify(err)
}

// loadCurve follows a chain of curve segments back to the first and returns
// every point in order, verifying each segment.
func (a *Activities) loadCurve(last artifact.Ref) ([]pipeline.IterationMetrics, error) {
	var segments [][]pipeline.IterationMetrics
	for ref := &last; ref != nil; {
		var seg curveSegment
		if err := a.Store.GetJSON(*ref, &seg); err != nil {
			return nil, fmt.Errorf("REINFORCE curve segment: %w", err)
		}
		segments = append(segments, seg.Points)
		ref = seg.Previous
	}
	var points []pipeline.IterationMetrics
	for i := len(segments) - 1; i >= 0; i-- {
		points = append(points, segments[i]...)
	}
	return points, nil
}

// WriteSummary writes the run summary to runs/<run>/summary.json in the
// store (<data-dir>/runs/<run>/summary.json for a local one),
// with the whole REINFORCE curve when it was stored in segments.
func (a *Activities) WriteSummary(_ context.Context, in pipeline.SummaryInput) (string, error) {
	if in.Summary == nil {
		return "", fmt.Errorf("write summary: no summary given")
	}
	a.Metrics.Forget(in.RunID) // the last activity of runs from before reports
	s := *in.Summary
	if in.Curve != nil {
		points, err := a.loadCurve(*in.Curve)
		if err != nil {
			return "", classify(err)
		}
		s.Curve = points
	}
	key, err := runPath(in.RunID, pipeline.SummaryFile)
	if err != nil {
		return "", err
	}
	p, err := a.putRecordJSON(key, s)
	if err != nil {
		return "", classify(fmt.Errorf("write summary: %w", err))
	}
	return p, nil
}
