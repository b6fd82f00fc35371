// Package selfmetrics holds proxylens' own metrics (proxylens_*). It is
// the bottom floor of the house: receiver, otelanalytics, pebblestore and
// promql each take a Registry and build their own metrics from it, and it
// imports none of them.
//
// The metrics are VictoriaMetrics/metrics counters, gauges and histograms:
// an atomic add on the hot path, no label hashing, no allocation. A
// Registry also implements prometheus.Gatherer, so client_golang serves
// them at /metrics next to the proxy_* aggregates, in the text or the
// OpenMetrics format.
//
// All methods are safe for concurrent use.
package selfmetrics

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"

	"github.com/VictoriaMetrics/metrics"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/storage"
)

// Registry is a set of self-metrics with their help texts.
type Registry struct {
	set *metrics.Set

	mu   sync.Mutex
	help map[string]string // by family name
}

// New returns an empty registry.
func New() *Registry {
	// TYPE lines let the text parser in Gather rebuild histograms. The switch
	// is process-wide in VictoriaMetrics/metrics, and only adds metadata.
	metrics.ExposeMetadata(true)
	return &Registry{set: metrics.NewSet(), help: map[string]string{}}
}

// OrNew returns r, or a new private registry when r is nil, so components can
// take an optional registry.
func OrNew(r *Registry) *Registry {
	if r == nil {
		return New()
	}
	return r
}

func (r *Registry) describe(name, help string) {
	family := name
	if i := strings.IndexByte(name, '{'); i >= 0 {
		family = name[:i]
	}
	r.mu.Lock()
	r.help[family] = help
	r.mu.Unlock()
}

// Counter returns the counter name (which may carry labels, as in
// `x_total{reason="y"}`), creating it if needed.
func (r *Registry) Counter(name, help string) *metrics.Counter {
	r.describe(name, help)
	return r.set.GetOrCreateCounter(name)
}

// FloatCounter returns the float counter name, creating it if needed.
func (r *Registry) FloatCounter(name, help string) *metrics.FloatCounter {
	r.describe(name, help)
	return r.set.GetOrCreateFloatCounter(name)
}

// Gauge registers a gauge whose value f reads at scrape time. Registering
// the same name twice keeps the first f.
func (r *Registry) Gauge(name, help string, f func() float64) {
	r.describe(name, help)
	r.set.GetOrCreateGauge(name, f)
}

// LatencyBuckets are the upper bounds, in seconds, of the latency
// histograms of ingest commits, journal syncs and cuts: 100 µs to 10 s.
var LatencyBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Histogram returns a Prometheus histogram with the given upper bounds.
func (r *Registry) Histogram(name, help string, buckets []float64) *metrics.PrometheusHistogram {
	r.describe(name, help)
	return r.set.GetOrCreatePrometheusHistogramExt(name, buckets)
}

// Gather implements prometheus.Gatherer.
func (r *Registry) Gather() ([]*dto.MetricFamily, error) {
	var buf bytes.Buffer
	r.set.WritePrometheus(&buf)
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(&buf)
	if err != nil {
		return nil, fmt.Errorf("parse self-metrics: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*dto.MetricFamily, 0, len(mfs))
	for name, mf := range mfs {
		if h, ok := r.help[name]; ok {
			mf.Help = &h
		}
		out = append(out, mf)
	}
	slices.SortFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out, nil
}

// Metadata describes the self-metrics for the query API's
// /api/v1/metadata: their types and help texts, and the unit their names
// end with, as Prometheus reads units from names.
func (r *Registry) Metadata() (map[string]metadata.Metadata, error) {
	mfs, err := r.Gather()
	if err != nil {
		return nil, err
	}
	out := make(map[string]metadata.Metadata, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = metadata.Metadata{
			Type: model.MetricType(strings.ToLower(mf.GetType().String())),
			Help: mf.GetHelp(),
			Unit: unitOf(mf.GetName()),
		}
	}
	return out, nil
}

// unitOf returns the unit a metric's name ends with.
func unitOf(name string) string {
	name = strings.TrimSuffix(name, "_total")
	for _, u := range []string{"seconds", "bytes"} {
		if strings.HasSuffix(name, "_"+u) {
			return u
		}
	}
	return ""
}

// AppendTo appends one sample of every self-metric at t (Unix ms) to app,
// so that proxylens' health can be graphed from the same data source as
// the traffic: counters and gauges as they are, histograms as classic
// _bucket, _sum and _count series.
func (r *Registry) AppendTo(app storage.Appender, t int64) error {
	return AppendGathered(app, r, t)
}

// Gatherer is what AppendGathered reads: prometheus.Gatherer.
type Gatherer interface {
	Gather() ([]*dto.MetricFamily, error)
}

// AppendGathered appends one sample at t (Unix ms) of every counter,
// gauge and classic histogram g gathers, as AppendTo does for a Registry
// (summaries are left out): the rule engine's and the notifier's
// prometheus_* metrics reach the series store this way.
func AppendGathered(app storage.Appender, g Gatherer, t int64) error {
	mfs, err := g.Gather()
	if err != nil {
		return err
	}
	var b labels.ScratchBuilder
	add := func(name string, m *dto.Metric, v float64, extra ...string) error {
		b.Reset()
		b.Add(model.MetricNameLabel, name)
		for _, lp := range m.GetLabel() {
			b.Add(lp.GetName(), lp.GetValue())
		}
		for i := 0; i+1 < len(extra); i += 2 {
			b.Add(extra[i], extra[i+1])
		}
		b.Sort()
		_, err := app.Append(0, b.Labels(), t, v)
		return err
	}
	for _, mf := range mfs {
		name := mf.GetName()
		for _, m := range mf.GetMetric() {
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				err = add(name, m, m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				err = add(name, m, m.GetGauge().GetValue())
			case dto.MetricType_UNTYPED:
				err = add(name, m, m.GetUntyped().GetValue())
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				inf := false
				for _, bk := range h.GetBucket() {
					inf = math.IsInf(bk.GetUpperBound(), 1)
					if err = add(name+"_bucket", m, float64(bk.GetCumulativeCount()), model.BucketLabel, labels.FormatOpenMetricsFloat(bk.GetUpperBound())); err != nil {
						break
					}
				}
				if err == nil && !inf {
					err = add(name+"_bucket", m, float64(h.GetSampleCount()), model.BucketLabel, "+Inf")
				}
				if err == nil {
					err = add(name+"_sum", m, h.GetSampleSum())
				}
				if err == nil {
					err = add(name+"_count", m, float64(h.GetSampleCount()))
				}
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}
