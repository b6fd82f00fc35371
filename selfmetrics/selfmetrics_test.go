package selfmetrics

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"
)

func TestGatherTypesAndHelp(t *testing.T) {
	r := New()
	r.Counter(`x_total{reason="a"}`, "Things.").Add(3)
	r.Counter(`x_total{reason="b"}`, "Things.").Inc()
	r.Gauge("g", "A gauge.", func() float64 { return 2.5 })
	h := r.Histogram("lat_seconds", "Latency.", []float64{0.1, 1})
	h.Update(0.05)
	h.Update(0.5)
	r.FloatCounter("f_total", "Floats.").Add(1.5)

	mfs, err := r.Gather()
	require.NoError(t, err)
	byName := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		byName[mf.GetName()] = mf
	}
	require.Equal(t, dto.MetricType_COUNTER, byName["x_total"].GetType())
	require.Equal(t, "Things.", byName["x_total"].GetHelp())
	require.Len(t, byName["x_total"].GetMetric(), 2)
	require.Equal(t, dto.MetricType_GAUGE, byName["g"].GetType())
	require.Equal(t, 2.5, byName["g"].GetMetric()[0].GetGauge().GetValue())
	hist := byName["lat_seconds"]
	require.Equal(t, dto.MetricType_HISTOGRAM, hist.GetType())
	require.Equal(t, uint64(2), hist.GetMetric()[0].GetHistogram().GetSampleCount())
	require.Equal(t, 1.5, byName["f_total"].GetMetric()[0].GetCounter().GetValue())
	md, err := r.Metadata()
	require.NoError(t, err)
	require.Equal(t, metadata.Metadata{Type: "histogram", Help: "Latency.", Unit: "seconds"}, md["lat_seconds"])
	require.Equal(t, metadata.Metadata{Type: "counter", Help: "Things."}, md["x_total"])

	var app recorder
	require.NoError(t, r.AppendTo(&app, 1000))
	require.Contains(t, app.got, `{__name__="g"} 2.5`)
	require.Contains(t, app.got, `{__name__="lat_seconds_bucket", le="+Inf"} 2`)
	require.Contains(t, app.got, `{__name__="lat_seconds_count"} 2`)
	require.NotNil(t, OrNew(nil))
	require.Same(t, r, OrNew(r))
}

// recorder is a storage.Appender that records what is appended.
type recorder struct {
	storage.Appender
	got []string
}

func (r *recorder) Append(_ storage.SeriesRef, ls labels.Labels, t int64, v float64) (storage.SeriesRef, error) {
	if t != 1000 {
		return 0, fmt.Errorf("appended at %d", t)
	}
	r.got = append(r.got, fmt.Sprintf("%s %v", ls, v))
	return 0, nil
}

// TestAppendGathered: a client_golang registry's counters, gauges and
// histograms (classic buckets, also when native ones are on) are appended;
// summaries are not.
func TestAppendGathered(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "prometheus_rule_evaluation_failures_total"}, []string{"rule_group"})
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "d_seconds", Buckets: []float64{1}, NativeHistogramBucketFactor: 1.1})
	s := prometheus.NewSummary(prometheus.SummaryOpts{Name: "s_seconds"})
	reg.MustRegister(c, h, s)
	c.WithLabelValues("a;g").Add(3)
	h.Observe(0.5)
	s.Observe(1)
	var app recorder
	require.NoError(t, AppendGathered(&app, reg, 1000))
	require.ElementsMatch(t, []string{
		`{__name__="prometheus_rule_evaluation_failures_total", rule_group="a;g"} 3`,
		`{__name__="d_seconds_bucket", le="1.0"} 1`,
		`{__name__="d_seconds_bucket", le="+Inf"} 1`,
		`{__name__="d_seconds_sum"} 0.5`,
		`{__name__="d_seconds_count"} 1`,
	}, app.got)
}
