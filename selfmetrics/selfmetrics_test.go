package selfmetrics

import (
	"testing"

	dto "github.com/prometheus/client_model/go"
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
	require.Equal(t, "Latency.", r.Help("lat_seconds"))
	require.NotNil(t, OrNew(nil))
	require.Same(t, r, OrNew(r))
}
