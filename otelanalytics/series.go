package otelanalytics

import (
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

// Increments calls fn for every increment of the cut as an increment of a
// Prometheus series, with the names and labels of /metrics: one series for
// the request and endpoint counters, one per direction for transfer, and
// for durations one cumulative _bucket series per bound (le) with _sum and
// _count. Times are in milliseconds. ls is valid only during the call:
// its memory is reused for the next.
func (c *Cut) Increments(d *Dict, fn func(ls labels.Labels, tMs int64, v float64) error) error {
	b := labels.NewScratchBuilder(12)
	var ls labels.Labels
	for f := range NumFamilies {
		fc := &c.Families[f]
		w := f.Width()
		cache := map[SeriesKey][]labels.Label{}
		for i, k := range fc.IncKeys {
			base, ok := cache[k]
			if !ok {
				base = seriesLabels(f, k, d)
				cache[k] = base
			}
			t := fc.IncTimes[i] / 1e6
			v := fc.IncValues[i*w : (i+1)*w]
			emit := func(name string, extra []labels.Label, val float64) error {
				b.Reset()
				b.Add(model.MetricNameLabel, name)
				for _, l := range base {
					b.Add(l.Name, l.Value)
				}
				for _, l := range extra {
					b.Add(l.Name, l.Value)
				}
				b.Sort()
				b.Overwrite(&ls)
				return fn(ls, t, val)
			}
			var err error
			switch f {
			case FamilyDuration:
				var cum float64
				for j, ub := range DurationBuckets {
					cum += v[j]
					if err = emit("proxy_request_duration_seconds_bucket", []labels.Label{{Name: "le", Value: formatBound(ub)}}, cum); err != nil {
						return err
					}
				}
				cum += v[len(DurationBuckets)]
				if err = emit("proxy_request_duration_seconds_bucket", []labels.Label{{Name: "le", Value: "+Inf"}}, cum); err != nil {
					return err
				}
				if err = emit("proxy_request_duration_seconds_sum", nil, v[durationSum]); err != nil {
					return err
				}
				err = emit("proxy_request_duration_seconds_count", nil, cum)
			case FamilyTransfer:
				if err = emit(f.Name(), []labels.Label{{Name: "direction", Value: "sent"}}, v[transferSent]); err != nil {
					return err
				}
				err = emit(f.Name(), []labels.Label{{Name: "direction", Value: "received"}}, v[transferReceived])
			default:
				err = emit(f.Name(), nil, v[0])
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
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
