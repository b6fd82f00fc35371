package receiver

import (
	"math"
	"sort"
	"strconv"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/model/value"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

const tsNs = 1_700_000_000_123_000_000 // a data point's time

// converted renders a conversion's samples as "labels value" lines, sorted.
func converted(c *otlpConversion) []string {
	var out []string
	for _, s := range c.samples {
		v := ""
		switch {
		case s.h != nil:
			v = s.h.String()
		case value.IsStaleNaN(s.f):
			v = "stale"
		default:
			v = formatValue(s.f)
		}
		out = append(out, s.ls.String()+" "+v)
	}
	sort.Strings(out)
	return out
}

func formatValue(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func newMetrics(res map[string]string) (pmetric.Metrics, pmetric.MetricSlice) {
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	for k, v := range res {
		rm.Resource().Attributes().PutStr(k, v)
	}
	sm := rm.ScopeMetrics().AppendEmpty()
	sm.Scope().SetName("lib")
	return md, sm.Metrics()
}

// TestConvertOTLP checks every metric type against what Prometheus' OTLP
// endpoint stores for it with its default settings.
func TestConvertOTLP(t *testing.T) {
	md, ms := newMetrics(map[string]string{"service.name": "api", "service.namespace": "shop", "service.instance.id": "i-1"})

	g := ms.AppendEmpty()
	g.SetName("queue.depth")
	g.SetUnit("{item}")
	gp := g.SetEmptyGauge().DataPoints().AppendEmpty()
	gp.SetTimestamp(tsNs)
	gp.SetIntValue(7)
	gp.Attributes().PutStr("a.b", "1")
	gp.Attributes().PutStr("a_b", "2") // collides with a.b once sanitized
	gp.Attributes().PutInt("2xx", 3)   // starts with a digit
	stale := g.Gauge().DataPoints().AppendEmpty()
	stale.SetTimestamp(tsNs + 1e9)
	stale.SetDoubleValue(1)
	stale.SetFlags(pmetric.DefaultDataPointFlags.WithNoRecordedValue(true))

	c := ms.AppendEmpty()
	c.SetName("http.requests")
	c.SetDescription("Requests.")
	cs := c.SetEmptySum()
	cs.SetIsMonotonic(true)
	cs.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	cp := cs.DataPoints().AppendEmpty()
	cp.SetTimestamp(tsNs)
	cp.SetDoubleValue(12.5)

	u := ms.AppendEmpty()
	u.SetName("conns")
	us := u.SetEmptySum()
	us.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	up := us.DataPoints().AppendEmpty()
	up.SetTimestamp(tsNs)
	up.SetIntValue(-2)

	r := ms.AppendEmpty()
	r.SetName("cpu.utilization")
	r.SetUnit("1")
	rp := r.SetEmptyGauge().DataPoints().AppendEmpty()
	rp.SetTimestamp(tsNs)
	rp.SetDoubleValue(0.5)

	h := ms.AppendEmpty()
	h.SetName("rpc.duration")
	h.SetUnit("ms")
	hh := h.SetEmptyHistogram()
	hh.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	hp := hh.DataPoints().AppendEmpty()
	hp.SetTimestamp(tsNs)
	hp.ExplicitBounds().FromRaw([]float64{0.5, 1, math.Inf(1)})
	hp.BucketCounts().FromRaw([]uint64{1, 2, 3, 0})
	hp.SetCount(6)
	hp.SetSum(9)
	nosum := hh.DataPoints().AppendEmpty()
	nosum.SetTimestamp(tsNs)
	nosum.Attributes().PutStr("x", "y")
	nosum.ExplicitBounds().FromRaw([]float64{10})
	nosum.BucketCounts().FromRaw([]uint64{1, 1})
	nosum.SetCount(2)

	e := ms.AppendEmpty()
	e.SetName("size")
	e.SetUnit("By")
	eh := e.SetEmptyExponentialHistogram()
	eh.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	ep := eh.DataPoints().AppendEmpty()
	ep.SetTimestamp(tsNs)
	ep.SetScale(10) // beyond Prometheus' largest schema (8): scaled down
	ep.SetZeroCount(1)
	ep.Positive().SetOffset(-1)
	ep.Positive().BucketCounts().FromRaw([]uint64{1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2})
	ep.Negative().BucketCounts().FromRaw([]uint64{1})
	ep.SetCount(8)
	ep.SetSum(100)

	s := ms.AppendEmpty()
	s.SetName("latency")
	s.SetUnit("s")
	sp := s.SetEmptySummary().DataPoints().AppendEmpty()
	sp.SetTimestamp(tsNs)
	sp.SetCount(4)
	sp.SetSum(2)
	q := sp.QuantileValues().AppendEmpty()
	q.SetQuantile(0.99)
	q.SetValue(1.5)

	d := ms.AppendEmpty()
	d.SetName("jobs")
	ds := d.SetEmptySum()
	ds.SetAggregationTemporality(pmetric.AggregationTemporalityDelta)
	ds.DataPoints().AppendEmpty().SetIntValue(1)

	conv := convertOTLP(md, ReservedName)
	var eHist *histogram.Histogram
	for _, smp := range conv.samples {
		if smp.h != nil {
			eHist = smp.h
		}
	}
	require.NotNil(t, eHist)
	id := `instance="i-1", job="shop/api"`
	require.ElementsMatch(t, []string{
		`{__name__="conns", ` + id + `} -2`,
		`{__name__="cpu_utilization_ratio", ` + id + `} 0.5`,
		`{__name__="http_requests_total", ` + id + `} 12.5`,
		`{__name__="latency_seconds", ` + id + `, quantile="0.99"} 1.5`,
		`{__name__="latency_seconds_count", ` + id + `} 4`,
		`{__name__="latency_seconds_sum", ` + id + `} 2`,
		`{__name__="queue_depth", a_b="1;2", ` + id + `, key_2xx="3"} 7`,
		`{__name__="queue_depth", ` + id + `} stale`,
		`{__name__="rpc_duration_milliseconds_bucket", ` + id + `, le="+Inf"} 6`,
		`{__name__="rpc_duration_milliseconds_bucket", ` + id + `, le="+Inf", x="y"} 2`,
		`{__name__="rpc_duration_milliseconds_bucket", ` + id + `, le="0.5"} 1`,
		`{__name__="rpc_duration_milliseconds_bucket", ` + id + `, le="1"} 3`,
		`{__name__="rpc_duration_milliseconds_bucket", ` + id + `, le="10", x="y"} 1`,
		`{__name__="rpc_duration_milliseconds_count", ` + id + `} 6`,
		`{__name__="rpc_duration_milliseconds_count", ` + id + `, x="y"} 2`,
		`{__name__="rpc_duration_milliseconds_sum", ` + id + `} 9`,
		`{__name__="size_bytes", ` + id + `} ` + eHist.String(),
	}, converted(conv))
	for _, smp := range conv.samples {
		if smp.ls.Get("__name__") != "queue_depth" {
			require.Equal(t, int64(tsNs/1e6), smp.t, "times in milliseconds")
		}
	}
	// Scaled down from 10 to 8: four buckets merge into one.
	require.Equal(t, int32(8), eHist.Schema)
	require.Equal(t, uint64(8), eHist.Count)
	require.NoError(t, eHist.Validate())
	require.Equal(t, int64(1), conv.rejected)
	require.Equal(t, []string{`invalid temporality and type combination for metric "jobs"`}, conv.errs)
	require.Equal(t, metadata.Metadata{Type: "counter", Help: "Requests."}, conv.metadata["http_requests_total"])
	require.Equal(t, metadata.Metadata{Type: "histogram", Unit: "milliseconds"}, conv.metadata["rpc_duration_milliseconds"])
	require.Equal(t, metadata.Metadata{Type: "summary", Unit: "seconds"}, conv.metadata["latency_seconds"])
	require.Equal(t, metadata.Metadata{Type: "gauge"}, conv.metadata["conns"])
	require.NotContains(t, conv.metadata, "target_info", "no other resource attributes: no target_info")
}

func TestConvertOTLPTargetInfo(t *testing.T) {
	md, ms := newMetrics(map[string]string{"service.name": "api", "host.name": "h1", "cloud.region": "eu"})
	m := ms.AppendEmpty()
	m.SetName("up")
	pts := m.SetEmptyGauge().DataPoints()
	pts.AppendEmpty().SetTimestamp(tsNs)
	pts.AppendEmpty().SetTimestamp(tsNs + 6*60*1e9) // six minutes later
	conv := convertOTLP(md, ReservedName)
	var info []int64
	for _, s := range conv.samples {
		if s.ls.Get("__name__") == "target_info" {
			require.Equal(t, `{__name__="target_info", cloud_region="eu", host_name="h1", job="api"}`, s.ls.String())
			info = append(info, s.t)
		}
	}
	start := int64(tsNs / 1e6)
	require.Equal(t, []int64{start, start + 150000, start + 300000, start + 360000}, info)
	require.Equal(t, model.MetricTypeGauge, conv.metadata["target_info"].Type)

	// Without job or instance there is no target_info.
	md, ms = newMetrics(map[string]string{"host.name": "h1"})
	ms.AppendEmpty().SetEmptyGauge().DataPoints().AppendEmpty().SetTimestamp(tsNs)
	ms.At(0).SetName("up")
	for _, s := range convertOTLP(md, ReservedName).samples {
		require.NotEqual(t, "target_info", s.ls.Get("__name__"))
	}
}

func TestExponentialToNative(t *testing.T) {
	p := pmetric.NewExponentialHistogramDataPoint()
	p.SetScale(-11)
	_, err := exponentialToNative(p)
	require.ErrorContains(t, err, "scale must be >= -4")

	p = pmetric.NewExponentialHistogramDataPoint()
	p.SetScale(2)
	p.Positive().SetOffset(3)
	p.Positive().BucketCounts().FromRaw([]uint64{2, 0, 0, 0, 0, 1, 0, 3}) // a gap of four: a new span
	p.SetCount(6)
	p.SetSum(10)
	h, err := exponentialToNative(p)
	require.NoError(t, err)
	require.Equal(t, []histogram.Span{{Offset: 4, Length: 1}, {Offset: 4, Length: 3}}, h.PositiveSpans)
	require.Equal(t, []int64{2, -1, -1, 3}, h.PositiveBuckets)
	require.Equal(t, int32(2), h.Schema)

	p.SetFlags(pmetric.DefaultDataPointFlags.WithNoRecordedValue(true))
	h, err = exponentialToNative(p)
	require.NoError(t, err)
	require.True(t, value.IsStaleNaN(h.Sum))

	p = pmetric.NewExponentialHistogramDataPoint()
	p.SetCount(3)
	p.Positive().BucketCounts().FromRaw([]uint64{1})
	_, err = exponentialToNative(p)
	require.Error(t, err, "a count that does not match the buckets")
}
