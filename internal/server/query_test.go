package server

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/prompb"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// queryClient is client_golang's Prometheus API client for s.
func queryClient(t testing.TB, s *Server) v1.API {
	c, err := api.NewClient(api.Config{Address: "http://" + s.HTTPAddr().String()})
	require.NoError(t, err)
	return v1.NewAPI(c)
}

// sentSpan is a span of the end-to-end tests and what it should count as.
type sentSpan struct {
	source  string
	end     time.Time
	dur     time.Duration
	success bool
}

func (s sentSpan) stub(i int) tracetest.SpanStub {
	st := proxySpan(i, s.end)
	st.StartTime = s.end.Add(-s.dur)
	// The mapping takes the first proxy.source it meets: replace it.
	for j, a := range st.Attributes {
		if a.Key == "proxy.source" {
			st.Attributes[j] = attribute.String("proxy.source", s.source)
		}
	}
	if !s.success {
		st.Status.Code = codes.Error
		st.Attributes = append(st.Attributes, attribute.String("error.type", "timeout"))
	}
	return st
}

// TestQueryHistoryByEventTime is the history test of the issue: spans that
// ended at random times over the past seven days are sent in random order
// with the OpenTelemetry SDK exporter, and client_golang's API client then
// finds, at the end of every past hour, increase() equal to the spans that
// ended in that hour, per source; histogram_quantile() in the right bucket;
// and the day-over-day change of an offset comparison.
func TestQueryHistoryByEventTime(t *testing.T) {
	cfg := testConfig(t)
	cfg.FlushInterval = time.Minute
	s := start(t, cfg, Options{})
	now := time.Now()
	hourEnd := now.Truncate(time.Hour)

	rnd := rand.New(rand.NewPCG(7, 11))
	sources := []string{"brightdata", "spys-one", "oxylabs"}
	var spans []sentSpan
	for range 3000 {
		sp := sentSpan{
			source:  sources[rnd.IntN(len(sources))],
			end:     hourEnd.Add(-time.Duration(rnd.Int64N(int64(7 * 24 * time.Hour)))),
			dur:     30 * time.Millisecond,
			success: rnd.IntN(10) > 0,
		}
		if rnd.IntN(20) == 0 { // 5 % are slow: the 95th percentile sits among them
			sp.dur = 2 * time.Second
		}
		spans = append(spans, sp)
	}
	// The last day has 50 % more traffic than the day before it.
	for range 600 {
		spans = append(spans, sentSpan{source: "oxylabs", end: hourEnd.Add(-time.Duration(rnd.Int64N(int64(24 * time.Hour)))), dur: 30 * time.Millisecond, success: true})
	}
	rnd.Shuffle(len(spans), func(i, j int) { spans[i], spans[j] = spans[j], spans[i] })
	for i := 0; i < len(spans); i += 400 {
		var stubs []tracetest.SpanStub
		for j := i; j < min(i+400, len(spans)); j++ {
			stubs = append(stubs, spans[j].stub(j))
		}
		exportGRPC(t, s, stubs...)
	}
	require.NoError(t, s.Pipeline().Flush())

	// count returns the spans per source that ended in (from, to].
	count := func(from, to time.Time) map[string]float64 {
		out := map[string]float64{}
		for _, sp := range spans {
			if sp.end.After(from) && !sp.end.After(to) {
				out[sp.source]++
			}
		}
		return out
	}
	p := queryClient(t, s)
	ctx := context.Background()
	checked := 0
	for h := hourEnd; h.After(hourEnd.Add(-7 * 24 * time.Hour)); h = h.Add(-time.Hour) {
		v, warns, _, err := p.Query(ctx, `sum by (source) (increase(proxy_requests_total[1h]))`, h)
		require.NoError(t, err)
		require.Empty(t, warns)
		want := count(h.Add(-time.Hour), h)
		got := map[string]float64{}
		for _, smp := range v.(model.Vector) {
			got[string(smp.Metric["source"])] = float64(smp.Value)
		}
		for src, n := range want {
			// Exact but for the engine's extrapolation over 1 ms of the hour.
			require.InDelta(t, n, got[src], n*1.01/3600000, "source %s, hour ending %s", src, h)
			checked++
		}
		for src, n := range got {
			if want[src] == 0 {
				require.InDelta(t, 0, n, 1e-9, "source %s, hour ending %s", src, h)
			}
		}
	}
	require.Greater(t, checked, 400)

	// Counters are monotonic: no resets anywhere in the week.
	v, _, _, err := p.Query(ctx, `max(resets(proxy_requests_total[8d]))`, now)
	require.NoError(t, err)
	require.Zero(t, float64(v.(model.Vector)[0].Value))

	// 5 % of the spans took 2 s, the rest 30 ms: the 95th percentile lies
	// in the bucket (1, 2.5], the 90th in (0.025, 0.05].
	for _, tc := range []struct {
		q      float64
		lo, hi float64
	}{{0.96, 1, 2.5}, {0.9, 0.025, 0.05}} {
		v, _, _, err = p.Query(ctx, fmt.Sprintf(`histogram_quantile(%g, sum by (le) (increase(proxy_request_duration_seconds_bucket[8d])))`, tc.q), now)
		require.NoError(t, err)
		q := float64(v.(model.Vector)[0].Value)
		require.Greater(t, q, tc.lo, "quantile %g", tc.q)
		require.LessOrEqual(t, q, tc.hi, "quantile %g", tc.q)
	}

	// Day over day: the change of an offset comparison.
	sum := func(m map[string]float64) (n float64) {
		for _, v := range m {
			n += v
		}
		return n
	}
	last, before := sum(count(hourEnd.Add(-24*time.Hour), hourEnd)), sum(count(hourEnd.Add(-48*time.Hour), hourEnd.Add(-24*time.Hour)))
	v, _, _, err = p.Query(ctx, `100 * (sum(increase(proxy_requests_total[1d])) / sum(increase(proxy_requests_total[1d] offset 1d)) - 1)`, hourEnd)
	require.NoError(t, err)
	require.InDelta(t, 100*(last/before-1), float64(v.(model.Vector)[0].Value), 0.01)
	require.Greater(t, float64(v.(model.Vector)[0].Value), 30.0, "the last day had more traffic")

	// Success ratio by source over the week, as the performance dashboard
	// asks it.
	v, _, _, err = p.Query(ctx, `sum by (source) (increase(proxy_requests_total{outcome="success"}[7d])) / sum by (source) (increase(proxy_requests_total[7d]))`, hourEnd)
	require.NoError(t, err)
	for _, smp := range v.(model.Vector) {
		var ok, all float64
		for _, sp := range spans {
			if sp.source == string(smp.Metric["source"]) {
				all++
				if sp.success {
					ok++
				}
			}
		}
		require.InDelta(t, ok/all, float64(smp.Value), 1e-6, "source %s", smp.Metric["source"])
	}
}

// TestQueryAPIServed: the query API answers on http_addr with the
// families' metadata, build info and the label index of real traffic.
func TestQueryAPIServed(t *testing.T) {
	s := start(t, testConfig(t), Options{})
	end := time.Now().Add(-time.Second)
	exportHTTP(t, s, proxySpan(0, end), proxySpan(1, end))
	require.NoError(t, s.Pipeline().Flush())
	p := queryClient(t, s)
	ctx := context.Background()

	vals, _, _, err := p.LabelValues(ctx, "source", []string{"proxy_requests_total"}, end.Add(-time.Hour), end.Add(time.Hour))
	require.NoError(t, err)
	require.Equal(t, model.LabelValues{"brightdata", "spys-one"}, vals)

	md, err := p.Metadata(ctx, "", "")
	require.NoError(t, err)
	require.Equal(t, []v1.Metadata{{Type: v1.MetricTypeHistogram, Help: "Duration of proxied requests in seconds, by source, tier, application and outcome.", Unit: "seconds"}}, md["proxy_request_duration_seconds"])
	require.Equal(t, v1.MetricTypeCounter, md["proxy_transfer_bytes_total"][0].Type)
	require.Equal(t, "bytes", md["proxy_transfer_bytes_total"][0].Unit)
	require.Equal(t, []v1.Metadata{{Type: v1.MetricTypeCounter, Help: "Spans received in well-formed OTLP requests.", Unit: ""}}, md["proxylens_spans_received_total"])

	bi, err := p.Buildinfo(ctx)
	require.NoError(t, err)
	require.Equal(t, Version, bi.Version)
	require.NotEmpty(t, bi.GoVersion)

	// The engine's own metrics are served at /metrics.
	_, metrics, _ := get(t, "http://"+s.HTTPAddr().String()+"/metrics")
	require.Contains(t, metrics, "prometheus_engine_query_duration_seconds")

	code, _, _ := get(t, "http://"+s.HTTPAddr().String()+"/api/v1/query?query=sum(")
	require.Equal(t, http.StatusBadRequest, code)
}

// TestSelfMetricsStored: the proxylens_* self-metrics are appended to the
// series store every flush interval and are queryable like the traffic.
func TestSelfMetricsStored(t *testing.T) {
	cfg := testConfig(t)
	cfg.FlushInterval = time.Second
	s := start(t, cfg, Options{})
	end := time.Now().Add(-time.Second)
	exportGRPC(t, s, proxySpan(0, end), proxySpan(1, end), proxySpan(2, end))
	p := queryClient(t, s)
	ctx := context.Background()

	// The recorder runs every second; wait for a sample that counts the
	// three spans.
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, _, _, err := p.Query(ctx, `proxylens_spans_received_total{transport="grpc"}`, time.Now())
		require.NoError(t, err)
		if vec := v.(model.Vector); len(vec) == 1 && vec[0].Value == 3 {
			break
		}
		require.True(t, time.Now().Before(deadline), "no stored sample of proxylens_spans_received_total counts the spans: %v", v)
		time.Sleep(100 * time.Millisecond)
	}

	// Histograms are stored as classic buckets with le in Prometheus 3's
	// float format.
	require.NoError(t, s.appendSelfMetrics(ctx, time.Now()))
	set, _, _, err := p.Series(ctx, []string{`{__name__=~"proxylens_.+_bucket", le="+Inf"}`}, time.Now().Add(-time.Minute), time.Now())
	require.NoError(t, err)
	require.NotEmpty(t, set)
	v, _, _, err := p.Query(ctx, `proxylens_build_info`, time.Now())
	require.NoError(t, err)
	require.Equal(t, model.LabelValue(Version), v.(model.Vector)[0].Metric["version"])
}

// TestOTLPMetricsIngest: metrics from the OpenTelemetry SDK's exporters,
// over OTLP/gRPC and OTLP/HTTP, land in the series store under the names
// and labels Prometheus' OTLP endpoint gives them, and are queryable.
func TestOTLPMetricsIngest(t *testing.T) {
	s := start(t, testConfig(t), Options{})
	ctx := context.Background()
	res := resource.NewSchemaless(
		attribute.String("service.name", "checkout"), attribute.String("service.namespace", "shop"),
		attribute.String("service.instance.id", "pod-1"), attribute.String("host.name", "h1"))

	grpcExp, err := otlpmetricgrpc.New(ctx, otlpmetricgrpc.WithEndpoint(s.OTLPGRPCAddr().String()), otlpmetricgrpc.WithInsecure())
	require.NoError(t, err)
	httpExp, err := otlpmetrichttp.New(ctx, otlpmetrichttp.WithEndpoint(s.OTLPHTTPAddr().String()), otlpmetrichttp.WithInsecure())
	require.NoError(t, err)
	for _, exp := range []sdkmetric.Exporter{grpcExp, httpExp} {
		reader := sdkmetric.NewManualReader()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader), sdkmetric.WithResource(res),
			sdkmetric.WithView(sdkmetric.NewView(sdkmetric.Instrument{Name: "rpc.latency"},
				sdkmetric.Stream{Aggregation: sdkmetric.AggregationBase2ExponentialHistogram{MaxSize: 160, MaxScale: 20}})))
		m := mp.Meter("shop")
		proto := "grpc"
		if exp == httpExp {
			proto = "http"
		}
		reqs, err := m.Int64Counter("http.server.requests", metric.WithUnit("{request}"), metric.WithDescription("Requests served."))
		require.NoError(t, err)
		reqs.Add(ctx, 5, metric.WithAttributes(attribute.String("http.method", "GET"), attribute.String("via", proto)))
		dur, err := m.Float64Histogram("http.server.request.duration", metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(0.1, 0.5, 1))
		require.NoError(t, err)
		for _, v := range []float64{0.2, 0.7, 3} {
			dur.Record(ctx, v, metric.WithAttributes(attribute.String("via", proto)))
		}
		queue, err := m.Int64UpDownCounter("queue.size")
		require.NoError(t, err)
		queue.Add(ctx, 7, metric.WithAttributes(attribute.String("via", proto)))
		cpu, err := m.Float64Gauge("cpu.utilization", metric.WithUnit("1"))
		require.NoError(t, err)
		cpu.Record(ctx, 0.25, metric.WithAttributes(attribute.String("via", proto)))
		lat, err := m.Float64Histogram("rpc.latency", metric.WithUnit("ms"))
		require.NoError(t, err)
		for i := range 40 {
			lat.Record(ctx, float64(1+i), metric.WithAttributes(attribute.String("via", proto)))
		}
		var rm metricdata.ResourceMetrics
		require.NoError(t, reader.Collect(ctx, &rm))
		require.NoError(t, exp.Export(ctx, &rm))
		require.NoError(t, exp.Shutdown(ctx))
		require.NoError(t, mp.Shutdown(ctx))
	}

	p := queryClient(t, s)
	now := time.Now()
	for _, tc := range []struct {
		query string
		want  float64
	}{
		{`http_server_requests_total{job="shop/checkout", instance="pod-1", http_method="GET", via="grpc"}`, 5},
		{`http_server_requests_total{via="http"}`, 5},
		{`http_server_request_duration_seconds_bucket{le="0.1", via="grpc"}`, 0},
		{`http_server_request_duration_seconds_bucket{le="0.5", via="grpc"}`, 1},
		{`http_server_request_duration_seconds_bucket{le="1", via="http"}`, 2},
		{`http_server_request_duration_seconds_bucket{le="+Inf", via="http"}`, 3},
		{`http_server_request_duration_seconds_count{via="grpc"}`, 3},
		{`http_server_request_duration_seconds_sum{via="grpc"}`, 3.9},
		{`queue_size{via="grpc"}`, 7},
		{`cpu_utilization_ratio{via="http"}`, 0.25},
		{`histogram_count(rpc_latency_milliseconds{via="grpc"})`, 40},
		{`histogram_sum(rpc_latency_milliseconds{via="http"})`, 820},
		{`target_info{job="shop/checkout", instance="pod-1", host_name="h1"}`, 1},
	} {
		v, _, _, err := p.Query(ctx, tc.query, now)
		require.NoError(t, err)
		vec := v.(model.Vector)
		require.Len(t, vec, 1, tc.query)
		require.InDelta(t, tc.want, float64(vec[0].Value), 1e-9, tc.query)
	}
	md, err := p.Metadata(ctx, "", "")
	require.NoError(t, err)
	require.Equal(t, []v1.Metadata{{Type: v1.MetricTypeCounter, Help: "Requests served."}}, md["http_server_requests_total"])
	require.Equal(t, []v1.Metadata{{Type: v1.MetricTypeHistogram, Unit: "seconds"}}, md["http_server_request_duration_seconds"])

	// Delta temporality is refused, as by Prometheus: a partial success.
	body := fmt.Sprintf(`{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
		{"name":"jobs","sum":{"aggregationTemporality":1,"isMonotonic":true,"dataPoints":[{"timeUnixNano":"%d","asInt":"3"}]}},
		{"name":"ok","gauge":{"dataPoints":[{"timeUnixNano":"%d","asDouble":1}]}}]}]}]}`, now.UnixNano(), now.UnixNano())
	resp, err := http.Post("http://"+s.OTLPHTTPAddr().String()+"/v1/metrics", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
	require.JSONEq(t, `{"partialSuccess":{"rejectedDataPoints":"1","errorMessage":"invalid temporality and type combination for metric \"jobs\""}}`, string(b))
}

// TestRemoteWriteServed: a running proxylens takes remote write on its
// HTTP address and answers for the series it was sent.
func TestRemoteWriteServed(t *testing.T) {
	s := start(t, testConfig(t), Options{})
	now := time.Now()
	remoteWrite(t, s, []prompb.Label{{Name: "__name__", Value: "node_load1"}, {Name: "instance", Value: "n1"}},
		prompb.Sample{Timestamp: now.Add(-time.Minute).UnixMilli(), Value: 0.5}, prompb.Sample{Timestamp: now.UnixMilli(), Value: 0.75})

	v, _, _, err := queryClient(t, s).Query(context.Background(), `max_over_time(node_load1[5m])`, now)
	require.NoError(t, err)
	require.Equal(t, model.SampleValue(0.75), v.(model.Vector)[0].Value)
	_, metrics, _ := get(t, "http://"+s.HTTPAddr().String()+"/metrics")
	require.Contains(t, metrics, `proxylens_write_samples_total{api="remote_write"} 2`)
}
