package loadtest

import (
	"fmt"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// WriteCharts draws a report's per-second windows as two PNG charts in dir:
// <prefix>-latency.png (p50, p90, p99 and max latency over time) and
// <prefix>-rate.png (target, sent and achieved rate over time). It returns
// the paths written.
func WriteCharts(rep *Report, dir, prefix string) ([]string, error) {
	if len(rep.Windows) == 0 {
		return nil, fmt.Errorf("report has no windows to chart")
	}
	series := func(f func(Window) float64) plotter.XYs {
		pts := make(plotter.XYs, len(rep.Windows))
		for i, w := range rep.Windows {
			pts[i].X, pts[i].Y = w.ElapsedS, f(w)
		}
		return pts
	}
	lat := plot.New()
	lat.Title.Text = fmt.Sprintf("seer end-to-end latency (%s load)", rep.Mode)
	lat.X.Label.Text = "elapsed (s)"
	lat.Y.Label.Text = "latency per 1 s window (ms)"
	if err := plotutil.AddLines(lat,
		"p50", series(func(w Window) float64 { return w.Latency.P50 }),
		"p90", series(func(w Window) float64 { return w.Latency.P90 }),
		"p99", series(func(w Window) float64 { return w.Latency.P99 }),
		"max", series(func(w Window) float64 { return w.Latency.Max })); err != nil {
		return nil, err
	}
	rate := plot.New()
	rate.Title.Text = "target against achieved rate"
	rate.X.Label.Text = "elapsed (s)"
	rate.Y.Label.Text = "events per second"
	if err := plotutil.AddLines(rate,
		"target", series(func(w Window) float64 { return w.TargetRate }),
		"sent", series(func(w Window) float64 { return w.SentRate }),
		"predictions", series(func(w Window) float64 { return w.AchievedRate })); err != nil {
		return nil, err
	}
	var paths []string
	for name, p := range map[string]*plot.Plot{"latency": lat, "rate": rate} {
		p.Legend.Top = true
		path := filepath.Join(dir, prefix+"-"+name+".png")
		if err := p.Save(8*vg.Inch, 4*vg.Inch, path); err != nil {
			return nil, fmt.Errorf("saving %s: %w", path, err)
		}
		paths = append(paths, path)
	}
	return paths, nil
}
