package receiver

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"

	"github.com/proxylens/proxylens/pebblestore"
	"github.com/proxylens/proxylens/selfmetrics"
)

// TestOTLPMetricsExport: the OpenTelemetry SDK's OTLP metric exporters,
// over gRPC and HTTP, write series through the receiver's own listeners,
// as through the query API's OTLP path; a body that is not OTLP is
// refused there as on the traces endpoint, and counted as invalid.
func TestOTLPMetricsExport(t *testing.T) {
	db, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	store := db.Series()
	wreg := selfmetrics.New()
	s := startReceiver(t, Config{}, failingConsumer{}, func(r *Receiver) {
		r.ServeMetricsTo(NewSeriesWriter(store, SeriesWriterOptions{Metrics: wreg}))
	})
	counter := func(name string) uint64 { return wreg.Counter(name, "").Get() }
	ctx := t.Context()
	for _, tc := range []struct {
		transport string
		exporter  func() (sdkmetric.Exporter, error)
	}{
		{"grpc", func() (sdkmetric.Exporter, error) {
			return otlpmetricgrpc.New(ctx, otlpmetricgrpc.WithEndpoint(s.grpcAddr), otlpmetricgrpc.WithInsecure())
		}},
		{"http", func() (sdkmetric.Exporter, error) {
			return otlpmetrichttp.New(ctx, otlpmetrichttp.WithEndpoint(s.rcv.HTTPAddr().String()), otlpmetrichttp.WithInsecure())
		}},
	} {
		exp, err := tc.exporter()
		require.NoError(t, err)
		reader := sdkmetric.NewManualReader()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader),
			sdkmetric.WithResource(resource.NewSchemaless(attribute.String("service.name", "shop"))))
		c, err := mp.Meter("test").Int64Counter("orders", metric.WithUnit("{order}"))
		require.NoError(t, err)
		c.Add(ctx, 3, metric.WithAttributes(attribute.String("transport", tc.transport)))
		var rm metricdata.ResourceMetrics
		require.NoError(t, reader.Collect(ctx, &rm))
		require.NoError(t, exp.Export(ctx, &rm), tc.transport)
		require.NoError(t, exp.Shutdown(ctx))
		require.NoError(t, mp.Shutdown(ctx))
		require.Equal(t, []float64{3}, values(t, store, labels.MustNewMatcher(labels.MatchEqual, "transport", tc.transport)), tc.transport)
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+s.rcv.HTTPAddr().String()+"/v1/metrics", strings.NewReader("{nope"))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.EqualValues(t, 1, counter(`proxylens_write_requests_total{api="otlp",outcome="invalid"}`))
	require.EqualValues(t, 2, counter(`proxylens_write_requests_total{api="otlp",outcome="accepted"}`))
	require.EqualValues(t, 2, counter(`proxylens_write_samples_total{api="otlp"}`))
	require.Zero(t, s.rcv.budget.inflight.Load())
}

// values returns the samples of the orders_total series matching m.
func values(t *testing.T, s *pebblestore.SeriesStore, m *labels.Matcher) []float64 {
	t.Helper()
	q, err := s.Querier(0, time.Now().Add(time.Hour).UnixMilli())
	require.NoError(t, err)
	defer q.Close()
	set := q.Select(context.Background(), true, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "orders_total"), m)
	var out []float64
	for set.Next() {
		it := set.At().Iterator(nil)
		for it.Next() == chunkenc.ValFloat {
			_, v := it.At()
			out = append(out, v)
		}
	}
	require.NoError(t, set.Err())
	return out
}
