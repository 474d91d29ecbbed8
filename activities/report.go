package activities

import (
	"context"
	"fmt"
	"strings"

	"github.com/alignflow/alignflow/ops/metrics"
	"github.com/alignflow/alignflow/ops/report"
	"github.com/alignflow/alignflow/pipeline"
)

// WriteRunReport assembles the run's metrics log into runs/<run>/metrics.jsonl
// and writes its report (report.md, report.html, PNG and SVG charts) under
// runs/<run>/report/, with the stage timeline from the workflow history.
func (a *Activities) WriteRunReport(ctx context.Context, in pipeline.RunReportInput) (pipeline.RunReport, error) {
	defer keepAlive(ctx, pipeline.Progress{Stage: pipeline.StageReport})()
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
