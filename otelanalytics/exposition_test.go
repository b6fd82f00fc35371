package otelanalytics

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

func exposed() (*Aggregator, *Dict) {
	a := NewAggregator(AggregationConfig{MaxSeriesPerFamily: 3}, res, nil)
	d := NewDict(0)
	applyOne(a, d,
		reqRecord(base, "brightdata", "x.com", true, 0.2, 1),
		reqRecord(base, "brightdata", "x.com", true, 0.03, 2),
		reqRecord(base, "brightdata", "x.com", false, 40, 1),
	)
	r := reqRecord(base, "spys", "y.com", true, 1.5, 1)
	r.Tier, r.Method, r.StatusCode, r.Proxy = "free", MethodOther, 0, "1.2.3.4:3128"
	applyOne(a, d, r)
	applyOne(a, d, reqRecord(base, "third", "z.com", true, 0.1, 1)) // past the limit for requests
	return a, d
}

func TestCollectorText(t *testing.T) {
	a, d := exposed()
	c := NewCollector(a, d)
	want := `
# HELP proxy_requests_total Proxied requests, weighted by upstream sampling, by source, tier, application, target domain, method, status code, outcome and error type.
# TYPE proxy_requests_total counter
proxy_requests_total{application="app",domain="x.com",error_type="",method="GET",outcome="success",source="brightdata",status_code="200",tier="premium"} 3
proxy_requests_total{application="app",domain="x.com",error_type="503",method="GET",outcome="failure",source="brightdata",status_code="503",tier="premium"} 1
proxy_requests_total{application="app",domain="y.com",error_type="",method="_OTHER",outcome="success",source="spys",status_code="",tier="free"} 1
proxy_requests_total{otel_metric_overflow="true"} 1
# HELP proxy_transfer_bytes_total Bytes sent and received through proxies, by source, application and direction.
# TYPE proxy_transfer_bytes_total counter
proxy_transfer_bytes_total{application="app",direction="received",source="brightdata"} 4000
proxy_transfer_bytes_total{application="app",direction="sent",source="brightdata"} 40
proxy_transfer_bytes_total{application="app",direction="received",source="spys"} 1000
proxy_transfer_bytes_total{application="app",direction="sent",source="spys"} 10
proxy_transfer_bytes_total{application="app",direction="received",source="third"} 1000
proxy_transfer_bytes_total{application="app",direction="sent",source="third"} 10
`
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(want), "proxy_requests_total", "proxy_transfer_bytes_total"))

	wantHist := `
# HELP proxy_request_duration_seconds Duration of proxied requests in seconds, by source, tier, application and outcome.
# TYPE proxy_request_duration_seconds histogram
` + histLines(`application="app",outcome="success",source="brightdata",tier="premium"`, map[float64]uint64{0.05: 2, 0.25: 3}, 3, 0.26) +
		histLines(`application="app",outcome="failure",source="brightdata",tier="premium"`, map[float64]uint64{60: 1}, 1, 40) +
		histLines(`application="app",outcome="success",source="spys",tier="free"`, map[float64]uint64{2.5: 1}, 1, 1.5) +
		histLines(`otel_metric_overflow="true"`, map[float64]uint64{0.1: 1}, 1, 0.1) // past the limit of 3 series
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(wantHist), "proxy_request_duration_seconds"))
	require.Equal(t, 4, testutil.CollectAndCount(c, "proxy_endpoint_requests_total"))
}

// histLines renders a classic histogram whose cumulative count steps up at
// the given bounds.
func histLines(labels string, steps map[float64]uint64, count uint64, sum float64) string {
	var b strings.Builder
	var cum uint64
	for _, ub := range DurationBuckets {
		if c, ok := steps[ub]; ok {
			cum = c
		}
		fmt.Fprintf(&b, "proxy_request_duration_seconds_bucket{%s,le=%q} %d\n", labels, strconv.FormatFloat(ub, 'g', -1, 64), cum)
	}
	fmt.Fprintf(&b, "proxy_request_duration_seconds_bucket{%s,le=\"+Inf\"} %d\n", labels, count)
	fmt.Fprintf(&b, "proxy_request_duration_seconds_sum{%s} %s\n", labels, strconv.FormatFloat(sum, 'g', -1, 64))
	fmt.Fprintf(&b, "proxy_request_duration_seconds_count{%s} %d\n", labels, count)
	return b.String()
}

func TestOpenMetricsExposition(t *testing.T) {
	a, d := exposed()
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(a, d))
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Content-Type"), "application/openmetrics-text")
	require.Contains(t, string(body), "# TYPE proxy_requests counter")
	require.Contains(t, string(body), `proxy_requests_total{otel_metric_overflow="true"} 1.0`)
	require.True(t, strings.HasSuffix(string(body), "# EOF\n"))
}

// TestFractionalHistogramCounts: upstream sampling makes bucket counts
// fractional; exposition rounds the cumulative counts, which stay monotonic.
func TestFractionalHistogramCounts(t *testing.T) {
	v := make([]float64, FamilyDuration.Width())
	v[0], v[1], v[2] = 1.4, 1.4, 1.4 // cumulative 1.4, 2.8, 4.2
	require.Equal(t, []uint64{1, 3, 4, 4}, cumulativeCounts(v)[:4])
}

func TestProducer(t *testing.T) {
	a, d := exposed()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	reader := sdkmetric.NewManualReader(sdkmetric.WithProducer(NewProducer(a, d, start)))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { require.NoError(t, mp.Shutdown(context.Background())) }()
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	byName := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			byName[m.Name] = m
		}
	}
	req := byName["proxy_requests_total"]
	require.Equal(t, "{request}", req.Unit)
	sum := req.Data.(metricdata.Sum[float64])
	require.True(t, sum.IsMonotonic)
	require.Equal(t, metricdata.CumulativeTemporality, sum.Temporality)
	var total float64
	overflow := false
	for _, dp := range sum.DataPoints {
		total += dp.Value
		require.Equal(t, start, dp.StartTime)
		if v, ok := dp.Attributes.Value(attribute.Key(OverflowLabel)); ok && v.AsBool() {
			overflow = true
		}
		if v, ok := dp.Attributes.Value("status_code"); ok {
			require.NotEmpty(t, v.AsString(), "empty labels are left out")
		}
	}
	require.Equal(t, 6.0, total)
	require.True(t, overflow)

	h := byName["proxy_request_duration_seconds"].Data.(metricdata.Histogram[float64])
	require.Equal(t, "s", byName["proxy_request_duration_seconds"].Unit)
	var count uint64
	for _, dp := range h.DataPoints {
		var sum uint64
		for _, c := range dp.BucketCounts {
			sum += c
		}
		require.Equal(t, dp.Count, sum)
		require.Len(t, dp.Bounds, len(DurationBuckets))
		count += dp.Count
	}
	require.Equal(t, uint64(6), count)

	tr := byName["proxy_transfer_bytes_total"].Data.(metricdata.Sum[float64])
	require.Len(t, tr.DataPoints, 6, "sent and received for each of three series")
	require.Equal(t, "By", byName["proxy_transfer_bytes_total"].Unit)
	require.Len(t, byName["proxy_endpoint_requests_total"].Data.(metricdata.Sum[float64]).DataPoints, 4)
}
