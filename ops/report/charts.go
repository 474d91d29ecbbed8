package report

import (
	"bytes"
	"fmt"
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/alignflow/alignflow/pipeline"
)

// A chart is drawn by gonum/plot and saved as PNG and, beside it, SVG.
type chart struct {
	name  string // file name without extension
	title string // what the report calls it
	plot  *plot.Plot
	w, h  vg.Length
}

// line is one series of a line chart.
type line struct {
	name   string
	xs, ys []float64
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text, p.X.Label.Text, p.Y.Label.Text = title, x, y
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	return p
}

// lineChart draws series as lines (with points when they are few).
func lineChart(name, title, x, y string, lines []line) (chart, error) {
	p := newPlot(title, x, y)
	for i, l := range lines {
		xys := make(plotter.XYs, 0, len(l.xs))
		for k := range l.xs {
			if !math.IsNaN(l.ys[k]) {
				xys = append(xys, plotter.XY{X: l.xs[k], Y: l.ys[k]})
			}
		}
		if len(xys) == 0 {
			continue
		}
		ln, err := plotter.NewLine(xys)
		if err != nil {
			return chart{}, fmt.Errorf("chart %s: %w", name, err)
		}
		ln.Color, ln.Width = plotutil.Color(i), vg.Points(1.5)
		p.Add(ln)
		if len(xys) <= 60 {
			pts, err := plotter.NewScatter(xys)
			if err != nil {
				return chart{}, fmt.Errorf("chart %s: %w", name, err)
			}
			pts.Color, pts.Shape, pts.Radius = plotutil.Color(i), draw.CircleGlyph{}, vg.Points(2)
			p.Add(pts)
		}
		if len(lines) > 1 || l.name != "" {
			p.Legend.Add(l.name, ln)
		}
	}
	return chart{name: name, title: title, plot: p, w: 7 * vg.Inch, h: 3.5 * vg.Inch}, nil
}

// barGroup is one set of bars, one bar per category, drawn side by side
// with the other groups'.
type barGroup struct {
	name   string
	values []float64 // NaN: no bar
}

// percent is the y label of charts of percentages, which run to 100.
const percent = "percent"

// groupedBars draws categories along x with one bar per group in each.
func groupedBars(name, title, y string, categories []string, groups []barGroup) (chart, error) {
	p := newPlot(title, "", y)
	width := vg.Points(min(60, 420/float64(max(1, len(categories)*len(groups)))))
	for i, g := range groups {
		vals := make(plotter.Values, len(g.values))
		for k, v := range g.values {
			if !math.IsNaN(v) {
				vals[k] = v
			}
		}
		bars, err := plotter.NewBarChart(vals, width)
		if err != nil {
			return chart{}, fmt.Errorf("chart %s: %w", name, err)
		}
		bars.Color, bars.LineStyle.Width = plotutil.Color(i), 0
		bars.Offset = width * vg.Length(float64(i)-float64(len(groups)-1)/2)
		p.Add(bars)
		if len(groups) > 1 {
			p.Legend.Add(g.name, bars)
		}
	}
	p.NominalX(categories...)
	p.X.Min, p.X.Max = -0.6, float64(len(categories))-0.4 // room for the outer groups' bars
	p.Y.Min = 0
	if y == percent {
		p.Y.Max = 100
	}
	return chart{name: name, title: title, plot: p, w: vg.Length(max(7, 1.1*float64(len(categories)))) * vg.Inch, h: 3.8 * vg.Inch}, nil
}

// timelineChart draws each stage as a bar from its start to its end,
// seconds from the run's start, with the time retried activities lost
// before their last attempt marked in red at the bar's start. Below the
// stages, a run with REINFORCE updates shows its rollout shards and its
// updates one by one, so that whether they overlap shows.
func timelineChart(stages []StageSpan, acts []Activity) (chart, error) {
	p := newPlot("Stage timeline", "seconds since the run started", "")
	if len(stages) == 0 {
		return chart{}, fmt.Errorf("chart timeline: no stages")
	}
	t0 := stages[0].Start // Stages are in the order they started
	g := &gantt{}
	// Rows from the bottom: the lanes, if any, then the stages, the first
	// one the highest.
	var names []string
	lanes := []struct{ typ, name string }{{pipeline.ActivityUpdatePolicy, " updates"}, {pipeline.ActivityRolloutShard, " rollout shards"}}
	if BusyOf(acts).Updates > 0 {
		for y, lane := range lanes {
			names = append(names, lane.name)
			for _, a := range acts {
				if a.Type == lane.typ && !a.Started.IsZero() && !a.Closed.IsZero() {
					g.bars = append(g.bars, ganttBar{y: float64(y), from: a.Started.Sub(t0).Seconds(), to: a.Closed.Sub(t0).Seconds(), color: stageBlue, thin: true})
				}
			}
		}
	}
	row := map[string]int{}
	for i := range stages {
		s := stages[len(stages)-1-i]
		row[s.Stage] = len(names)
		g.bars = append(g.bars, ganttBar{y: float64(len(names)), from: s.Start.Sub(t0).Seconds(), to: s.End.Sub(t0).Seconds(), color: stageBlue})
		names = append(names, " "+s.Stage) // gonum/plot cuts the first letter of a long tick label
	}
	for _, a := range acts {
		if a.Retried() && !a.Started.IsZero() {
			g.bars = append(g.bars, ganttBar{y: float64(row[a.Stage]), from: a.Scheduled.Sub(t0).Seconds(), to: a.Started.Sub(t0).Seconds(),
				color: retryRed, thin: true})
		}
	}
	p.Add(g)
	p.NominalY(names...)
	return chart{name: "timeline", title: "Stage timeline", plot: p, w: 8 * vg.Inch, h: vg.Length(1.2+0.35*float64(len(names))) * vg.Inch}, nil
}

var (
	stageBlue = color.RGBA{R: 70, G: 130, B: 200, A: 255}
	retryRed  = color.RGBA{R: 220, G: 40, B: 40, A: 255}
)

// gantt is a plotter of horizontal bars; gonum/plot has none.
type gantt struct{ bars []ganttBar }

type ganttBar struct {
	y, from, to float64
	color       color.Color
	thin        bool
}

func (g *gantt) Plot(c draw.Canvas, p *plot.Plot) {
	trX, trY := p.Transforms(&c)
	for _, b := range g.bars {
		half := 0.35
		if b.thin {
			half = 0.18
		}
		x0, x1 := trX(b.from), trX(b.to)
		if x1-x0 < vg.Points(1) {
			x1 = x0 + vg.Points(1) // a short stage still shows
		}
		y0, y1 := trY(b.y-half), trY(b.y+half)
		c.FillPolygon(b.color, c.ClipPolygonXY([]vg.Point{{X: x0, Y: y0}, {X: x1, Y: y0}, {X: x1, Y: y1}, {X: x0, Y: y1}}))
	}
}

func (g *gantt) DataRange() (xmin, xmax, ymin, ymax float64) {
	xmin, ymin = 0, -0.5
	for _, b := range g.bars {
		xmax, ymax = max(xmax, b.to), max(ymax, b.y+0.5)
	}
	return xmin, max(xmax, 1), ymin, ymax
}

// encode renders a chart in a format gonum/plot writes ("png", "svg"),
// with its legend, if it has one, beside the data rather than over it.
func (c chart) encode(format string) ([]byte, error) {
	legend := c.plot.Legend
	r := legend.Rectangle(draw.Canvas{})
	lw, pad := r.Max.X-r.Min.X, vg.Points(12)
	if lw <= 0 {
		lw, pad = 0, 0
	}
	cv, err := draw.NewFormattedCanvas(c.w+lw+pad, c.h, format)
	if err != nil {
		return nil, fmt.Errorf("draw %s.%s: %w", c.name, format, err)
	}
	dc := draw.New(cv)
	c.plot.Legend = plot.NewLegend()
	c.plot.Draw(draw.Crop(dc, 0, -(lw + pad), 0, 0))
	c.plot.Legend = legend
	if lw > 0 {
		legend.Top, legend.Left = true, false
		legend.Draw(draw.Crop(dc, c.w+pad/2, 0, 0, -vg.Points(24)))
	}
	var b bytes.Buffer
	if _, err := cv.WriteTo(&b); err != nil {
		return nil, fmt.Errorf("draw %s.%s: %w", c.name, format, err)
	}
	return b.Bytes(), nil
}
