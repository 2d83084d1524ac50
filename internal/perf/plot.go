package perf

import (
	"fmt"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// The plots are PNGs of one size, readable in a report and on GitHub.
const (
	plotWidth  = 7 * vg.Inch
	plotHeight = 4.5 * vg.Inch
)

// xySeries is one named line of a line plot.
type xySeries struct {
	Name   string
	X, Y   []float64
	Dashed bool
}

// linePlot draws lines with points; logX for axes that double (consumers, series), logY
// for values that span orders of magnitude (a straight line on both is a power law).
func linePlot(path, title, xLabel, yLabel string, series []xySeries, logX, logY bool) error {
	p := plot.New()
	p.Title.Text, p.X.Label.Text, p.Y.Label.Text = title, xLabel, yLabel
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.XOffs, p.Legend.YOffs = vg.Points(12), -vg.Points(4)
	if logX {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = valueTicks(series)
	}
	p.Add(plotter.NewGrid())
	for i, s := range series {
		pts := make(plotter.XYs, 0, len(s.X))
		for j := range s.X {
			if logX && s.X[j] <= 0 || logY && s.Y[j] <= 0 || math.IsNaN(s.Y[j]) {
				continue
			}
			pts = append(pts, plotter.XY{X: s.X[j], Y: s.Y[j]})
		}
		if len(pts) == 0 {
			continue
		}
		l, sc, err := plotter.NewLinePoints(pts)
		if err != nil {
			return err
		}
		l.Color, sc.Color = plotutil.Color(i), plotutil.Color(i)
		sc.Shape = plotutil.Shape(i)
		if s.Dashed {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		}
		p.Add(l, sc)
		p.Legend.Add(s.Name, l, sc)
	}
	if logY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.TickerFunc(ticks125)
	} else {
		p.Y.Min = 0
	}
	return p.Save(plotWidth, plotHeight, path)
}

// ticks125 labels a log axis at 1, 2 and 5 times the powers of ten in [lo, hi]: plot's
// LogTicks labels only the powers, so a range within one decade would have none.
func ticks125(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		for _, m := range []float64{1, 2, 5} {
			if v := m * math.Pow(10, e); v >= lo && v <= hi {
				ticks = append(ticks, plot.Tick{Value: v, Label: tickLabel(v)})
			}
		}
	}
	return ticks
}

// valueTicks labels a log axis at the measured x values (1, 2, 4, 8 consumers; 1k to
// 1M series), which plot.LogTicks would leave unlabelled between powers of ten.
func valueTicks(series []xySeries) plot.Ticker {
	seen := map[float64]bool{}
	var ticks []plot.Tick
	for _, s := range series {
		for _, x := range s.X {
			if x > 0 && !seen[x] {
				seen[x] = true
				ticks = append(ticks, plot.Tick{Value: x, Label: tickLabel(x)})
			}
		}
	}
	return plot.ConstantTicks(ticks)
}

func tickLabel(x float64) string {
	switch {
	case x >= 1e6 && math.Mod(x, 1e6) == 0:
		return fmt.Sprintf("%gM", x/1e6)
	case x >= 1e3 && math.Mod(x, 1e3) == 0:
		return fmt.Sprintf("%gk", x/1e3)
	}
	return fmt.Sprintf("%g", x)
}

// barPlot draws one bar per label.
func barPlot(path, title, yLabel string, labels []string, values []float64) error {
	p := plot.New()
	p.Title.Text, p.Y.Label.Text = title, yLabel
	p.Add(plotter.NewGrid())
	vs := make(plotter.Values, len(values))
	copy(vs, values)
	bars, err := plotter.NewBarChart(vs, vg.Points(max(12, 360/float64(max(len(values), 1)))))
	if err != nil {
		return err
	}
	bars.Color = plotutil.Color(0)
	bars.LineStyle.Width = 0
	p.Add(bars)
	p.NominalX(labels...)
	p.Y.Min = 0
	return p.Save(plotWidth, plotHeight, path)
}

// histSeries is one named sample of a latency histogram, in milliseconds.
type histSeries struct {
	Name   string
	Values []float64
}

// latencyHistogram draws each sample's distribution as a step line over shared
// logarithmic bins, as the fraction of the sample in each bin, so that samples of
// different sizes compare.
func latencyHistogram(path, title, what string, series []histSeries) error {
	var all []float64
	for _, s := range series {
		all = append(all, s.Values...)
	}
	if len(all) == 0 {
		return fmt.Errorf("%s: no latencies to plot", title)
	}
	const bins = 40
	edges, _ := LogBins(all, bins)
	lo, hi := edges[0], edges[bins]
	step := (math.Log(hi) - math.Log(lo)) / bins
	p := plot.New()
	p.Title.Text, p.X.Label.Text, p.Y.Label.Text = title, "latency (ms, log scale)", "fraction of "+what
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	for i, s := range series {
		if len(s.Values) == 0 {
			continue
		}
		counts := make([]float64, bins)
		for _, v := range s.Values {
			k := 0
			if v > lo {
				k = min(int((math.Log(v)-math.Log(lo))/step), bins-1)
			}
			counts[k]++
		}
		pts := make(plotter.XYs, 0, 2*bins)
		for k, c := range counts {
			f := c / float64(len(s.Values))
			pts = append(pts, plotter.XY{X: edges[k], Y: f}, plotter.XY{X: edges[k+1], Y: f})
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		l.Color = plotutil.Color(i)
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(s.Name, l)
	}
	p.Y.Min = 0
	return p.Save(plotWidth, plotHeight, path)
}
