package otelanalytics

import (
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

// Increments calls fn for every increment of the cut as an increment of a
// Prometheus series, with the names and labels of /metrics: one series for
// the request and endpoint counters, one per direction for transfer, and
// for durations one cumulative _bucket series per bound (le) with _sum and
// _count (promNames and expandIncrement, which the overlay uses too, so
// that memory and the store name every increment alike). Times are in
// milliseconds. ls is valid only during the call: its memory is reused for
// the next.
func (c *Cut) Increments(d *Dict, fn func(ls labels.Labels, tMs int64, v float64) error) error {
	b := labels.NewScratchBuilder(12)
	var ls labels.Labels
	var vals []float64
	for f := range NumFamilies {
		fc := &c.Families[f]
		cache := map[SeriesKey][]labels.Label{}
		for i := range fc.NumIncs() {
			k := fc.IncKey(i)
			base, ok := cache[k]
			if !ok {
				base = seriesLabels(f, k, d)
				cache[k] = base
			}
			t := fc.IncTime(i) / 1e6
			vals = expandIncrement(f, fc.Inc(i), vals[:0])
			for j, pn := range promNames[f] {
				pn.build(&b, base)
				b.Overwrite(&ls)
				if err := fn(ls, t, vals[j]); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// promName is the name and extra labels of one Prometheus series that a
// series of a family stands for.
type promName struct {
	name  string
	extra []labels.Label
}

// build leaves in b the series' labels, with base (the family series'
// labels without the name).
func (pn promName) build(b *labels.ScratchBuilder, base []labels.Label) {
	b.Reset()
	b.Add(model.MetricNameLabel, pn.name)
	for _, l := range base {
		b.Add(l.Name, l.Value)
	}
	for _, l := range pn.extra {
		b.Add(l.Name, l.Value)
	}
	b.Sort()
}

// promNames lists, per family, the Prometheus series one of its series
// stands for, in the order expandIncrement gives their values.
var promNames = func() (out [NumFamilies][]promName) {
	for f := range NumFamilies {
		switch f {
		case FamilyDuration:
			const bucket = "proxy_request_duration_seconds_bucket"
			for _, ub := range DurationBuckets {
				out[f] = append(out[f], promName{bucket, []labels.Label{{Name: "le", Value: formatBound(ub)}}})
			}
			out[f] = append(out[f], promName{bucket, []labels.Label{{Name: "le", Value: "+Inf"}}},
				promName{name: "proxy_request_duration_seconds_sum"}, promName{name: "proxy_request_duration_seconds_count"})
		case FamilyTransfer:
			out[f] = []promName{{f.Name(), []labels.Label{{Name: "direction", Value: "sent"}}}, {f.Name(), []labels.Label{{Name: "direction", Value: "received"}}}}
		default:
			out[f] = []promName{{name: f.Name()}}
		}
	}
	return out
}()

// promSeries returns the labels of the Prometheus series that one series of
// family f stands for (base: its labels without the name), in the order of
// promNames.
func promSeries(f Family, base []labels.Label) []labels.Labels {
	b := labels.NewScratchBuilder(len(base) + 2)
	out := make([]labels.Labels, len(promNames[f]))
	for i, pn := range promNames[f] {
		pn.build(&b, base)
		out[i] = b.Labels()
	}
	return out
}

// expandIncrement appends the values of the Prometheus series of one
// increment (v, the family's width), in the order of promSeries.
func expandIncrement(f Family, v []float64, dst []float64) []float64 {
	switch f {
	case FamilyDuration:
		var cum float64
		for j := range durationBuckets {
			cum += v[j]
			dst = append(dst, cum)
		}
		return append(dst, v[durationSum], cum)
	case FamilyTransfer:
		return append(dst, v[transferSent], v[transferReceived])
	default:
		return append(dst, v[0])
	}
}

// seriesLabels returns the labels of a family's series without the metric
// name; empty values are left out, as Prometheus leaves them out.
func seriesLabels(f Family, k SeriesKey, d *Dict) []labels.Label {
	if k.Overflow {
		return []labels.Label{{Name: OverflowLabel, Value: "true"}}
	}
	names := f.Labels()
	out := make([]labels.Label, 0, len(names))
	for i, v := range f.LabelValues(k, d) {
		if v != "" {
			out = append(out, labels.Label{Name: names[i], Value: v})
		}
	}
	return out
}

// formatBound renders a bucket bound as Prometheus 3 stores le: in
// OpenMetrics' float format ("1.0", "0.005"), whatever the exposition said.
func formatBound(ub float64) string { return labels.FormatOpenMetricsFloat(ub) }
