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
	"slices"
	"strings"
	"sync"

	"github.com/VictoriaMetrics/metrics"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
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

// Help returns the help text of a family, for /api/v1/metadata.
func (r *Registry) Help(family string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.help[family]
}
