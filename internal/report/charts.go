package report

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"slices"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// The charts, drawn with gonum/plot: SVG inline in HTML, PNG in PDF.

// palette are the series' colours (Tableau 10, readable in grey too).
var palette = []color.RGBA{
	{0x4e, 0x79, 0xa7, 0xff}, {0xf2, 0x8e, 0x2b, 0xff}, {0x59, 0xa1, 0x4f, 0xff},
	{0xe1, 0x57, 0x59, 0xff}, {0x76, 0xb7, 0xb2, 0xff}, {0xed, 0xc9, 0x48, 0xff},
}

// Chart is one picture of a report.
type Chart struct {
	Title string
	plot  *plot.Plot
	// Height in centimetres at a width of chartWidth.
	height vg.Length
}

const chartWidth = 17 * vg.Centimeter

// maxBars is the most bars a per-source or per-application chart shows.
const maxBars = 12

// Charts returns the report's charts, in the order they are shown; a
// chart without data is left out.
func (r *Report) Charts() []Chart {
	var out []Chart
	if len(r.Days) > 0 {
		out = append(out, r.requestsChart(), r.successChart())
		if len(r.Currencies) > 0 {
			out = append(out, r.spendChart())
		}
	}
	if c, ok := r.sourceSpendChart(); ok {
		out = append(out, c)
	}
	if c, ok := r.appSpendChart(); ok {
		out = append(out, c)
	}
	if c, ok := r.latencyChart(); ok {
		out = append(out, c)
	}
	return out
}

func newPlot() *plot.Plot {
	p := plot.New()
	p.X.Padding, p.Y.Padding = vg.Points(2), vg.Points(2)
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		a.Label.TextStyle.Font.Variant, a.Label.TextStyle.Font.Size = "Sans", vg.Points(10)
		a.Tick.Label.Font.Variant, a.Tick.Label.Font.Size = "Sans", vg.Points(9)
		a.LineStyle.Color = color.Gray{0x80}
		a.Tick.LineStyle.Color = color.Gray{0x80}
	}
	p.Legend.Top = true
	p.Legend.TextStyle.Font.Variant, p.Legend.TextStyle.Font.Size = "Sans", vg.Points(9)
	return p
}

// dayLabels are the trend's x labels, thinned to about ten.
func (r *Report) dayLabels() []string {
	every := max(1, (len(r.Days)+7)/8)
	labels := make([]string, len(r.Days))
	for i, d := range r.Days {
		if (len(r.Days)-1-i)%every == 0 {
			labels[i] = d.End.UTC().Format("02 Jan")
			if r.Step < 24*time.Hour {
				labels[i] = d.End.UTC().Format("02 Jan 15h")
			}
		}
	}
	return labels
}

func (r *Report) stepName() string {
	if r.Step < 24*time.Hour {
		return "hour"
	}
	return "day"
}

func (r *Report) requestsChart() Chart {
	p := newPlot()
	vals := make(plotter.Values, len(r.Days))
	for i, d := range r.Days {
		vals[i] = d.Requests
	}
	bars, _ := plotter.NewBarChart(vals, barWidth(len(vals)))
	bars.Color, bars.LineStyle.Width = palette[0], 0
	p.Add(bars, plotter.NewGrid())
	p.NominalX(r.dayLabels()...)
	p.Y.Label.Text = "requests"
	p.Y.Min = 0
	p.Y.Tick.Marker = countTicks{}
	return Chart{Title: "Requests per " + r.stepName(), plot: p, height: 6 * vg.Centimeter}
}

func (r *Report) successChart() Chart {
	p := newPlot()
	var pts plotter.XYs
	for i, d := range r.Days {
		if d.Requests > 0 {
			pts = append(pts, plotter.XY{X: float64(i), Y: d.Successes / d.Requests * 100})
		}
	}
	if len(pts) > 0 {
		line, points, _ := plotter.NewLinePoints(pts)
		line.Color, line.Width = palette[2], vg.Points(1.5)
		points.Color, points.Shape = palette[2], draw.CircleGlyph{}
		points.Radius = vg.Points(2)
		p.Add(plotter.NewGrid(), line, points)
	}
	p.NominalX(r.dayLabels()...)
	p.Y.Label.Text = "success rate (%)"
	lo := 100.0
	for _, pt := range pts {
		lo = min(lo, pt.Y)
	}
	p.Y.Min, p.Y.Max = math.Max(0, math.Floor(lo/10)*10-5), 100
	return Chart{Title: "Success rate per " + r.stepName(), plot: p, height: 5 * vg.Centimeter}
}

func (r *Report) spendChart() Chart {
	p := newPlot()
	for i, cur := range r.Currencies {
		pts := make(plotter.XYs, len(r.Days))
		for j, d := range r.Days {
			pts[j] = plotter.XY{X: float64(j), Y: d.Spend[cur]}
		}
		line, points, _ := plotter.NewLinePoints(pts)
		c := palette[i%len(palette)]
		line.Color, line.Width = c, vg.Points(1.5)
		points.Color, points.Shape, points.Radius = c, draw.CircleGlyph{}, vg.Points(2)
		p.Add(line, points)
		p.Legend.Add(cur, line)
	}
	p.Add(plotter.NewGrid())
	p.NominalX(r.dayLabels()...)
	p.Y.Label.Text = "spend"
	p.Y.Min = 0
	p.Y.Max *= 1.25 // room for the legend
	return Chart{Title: "Spend per " + r.stepName() + " (per currency)", plot: p, height: 6 * vg.Centimeter}
}

// hbars is a horizontal bar chart of names (top to bottom) with one bar
// per series and name.
func hbars(names []string, series []string, value func(name, series string) float64, xlabel string) *plot.Plot {
	p := newPlot()
	n := len(names)
	rev := slices.Clone(names)
	slices.Reverse(rev) // the first name on top
	w := barThickness
	for i, s := range series {
		vals := make(plotter.Values, n)
		for j, name := range rev {
			vals[j] = math.Max(0, value(name, s))
		}
		b, _ := plotter.NewBarChart(vals, w)
		b.Horizontal, b.Color, b.LineStyle.Width = true, palette[i%len(palette)], 0
		b.Offset = w * vg.Length(float64(i)-float64(len(series)-1)/2)
		p.Add(b)
		if len(series) > 1 {
			p.Legend.Add(s, b)
		}
	}
	p.Add(plotter.NewGrid())
	p.NominalY(rev...)
	p.X.Label.Text = xlabel
	p.X.Min = 0
	if len(series) > 1 {
		p.X.Max *= 1.15 // room for the legend
	}
	return p
}

// barThickness is a horizontal bar's; each name gets a bar per series
// and a gap.
const barThickness = 0.4 * vg.Centimeter

func barsHeight(names, series int) vg.Length {
	return 1.6*vg.Centimeter + vg.Length(names)*(vg.Length(series)*barThickness+0.3*vg.Centimeter)
}

func (r *Report) sourceSpendChart() (Chart, bool) {
	var names []string
	for _, s := range r.Sources {
		if len(s.Spend) > 0 && len(names) < maxBars {
			names = append(names, s.Name)
		}
	}
	if len(names) == 0 || len(r.Currencies) == 0 {
		return Chart{}, false
	}
	byName := map[string]Source{}
	for _, s := range r.Sources {
		byName[s.Name] = s
	}
	p := hbars(names, r.Currencies, func(n, c string) float64 { return byName[n].Spend[c] }, "spend ("+strings.Join(r.Currencies, ", ")+")")
	return Chart{Title: "Spend per source", plot: p, height: barsHeight(len(names), len(r.Currencies))}, true
}

func (r *Report) appSpendChart() (Chart, bool) {
	var names []string
	byName := map[string]Application{}
	for _, a := range r.Applications {
		if len(a.Spend) > 0 && len(names) < maxBars {
			names = append(names, AppName(a.Name))
			byName[AppName(a.Name)] = a
		}
	}
	if len(names) == 0 || len(r.Currencies) == 0 {
		return Chart{}, false
	}
	p := hbars(names, r.Currencies, func(n, c string) float64 { return byName[n].Spend[c] }, "spend ("+strings.Join(r.Currencies, ", ")+")")
	return Chart{Title: "Spend per application (usage and allocated subscriptions)", plot: p, height: barsHeight(len(names), len(r.Currencies))}, true
}

func (r *Report) latencyChart() (Chart, bool) {
	var names []string
	byName := map[string]Source{}
	for _, s := range r.Sources {
		if !math.IsNaN(s.P95Latency) && len(names) < maxBars {
			names = append(names, s.Name)
			byName[s.Name] = s
		}
	}
	if len(names) == 0 {
		return Chart{}, false
	}
	p := hbars(names, []string{"p95"}, func(n, _ string) float64 { return byName[n].P95Latency * 1000 }, "95th percentile latency (ms)")
	return Chart{Title: "Latency (95th percentile) per source", plot: p, height: barsHeight(len(names), 1)}, true
}

func barWidth(n int) vg.Length {
	return vg.Points(math.Max(2, math.Min(24, 380/math.Max(1, float64(n)))))
}

// SVG draws the chart as an SVG document for inline use.
func (c Chart) SVG() ([]byte, error) {
	cv := vgsvg.NewWith(vgsvg.UseWH(chartWidth, c.height))
	c.plot.Draw(draw.New(cv))
	var b bytes.Buffer
	if _, err := cv.WriteTo(&b); err != nil {
		return nil, fmt.Errorf("draw chart %q as SVG: %w", c.Title, err)
	}
	// Drop the XML declaration: the SVG goes inside HTML.
	out := b.Bytes()
	if i := bytes.Index(out, []byte("<svg")); i > 0 {
		out = out[i:]
	}
	return out, nil
}

// PNG draws the chart as a PNG image at 150 dpi.
func (c Chart) PNG() ([]byte, error) {
	cv := vgimg.NewWith(vgimg.UseWH(chartWidth, c.height), vgimg.UseDPI(150), vgimg.UseBackgroundColor(color.White))
	c.plot.Draw(draw.New(cv))
	var b bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: cv}).WriteTo(&b); err != nil {
		return nil, fmt.Errorf("draw chart %q as PNG: %w", c.Title, err)
	}
	return b.Bytes(), nil
}

// countTicks are ticks labelled as counts: "12,000".
type countTicks struct{}

func (countTicks) Ticks(lo, hi float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = Count(ts[i].Value)
		}
	}
	return ts
}
