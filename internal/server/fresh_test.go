package server

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// scalarAt runs an instant query whose answer is one sample.
func scalarAt(t *testing.T, p v1.API, q string, at time.Time) float64 {
	t.Helper()
	v, _, _, err := p.Query(context.Background(), q, at)
	require.NoError(t, err, q)
	vec := v.(model.Vector)
	require.Len(t, vec, 1, "%s at %s", q, at)
	return float64(vec[0].Value)
}

// TestFreshSpansQueryableAtOnce: spans are in every answer as soon as the
// export returns, long before a cut (the flush interval is an hour): the
// counters, increase(), the series and label lists; and they count once
// across a cut.
func TestFreshSpansQueryableAtOnce(t *testing.T) {
	s := start(t, testConfig(t), Options{})
	p := queryClient(t, s)
	ctx := context.Background()
	end := time.Now().Add(-time.Second)
	// Increments count at the end of their interval of event time (here
	// the next full hour): ask for the counters there.
	at := end.Truncate(time.Hour).Add(time.Hour)
	send := func(from, n int) {
		var stubs []tracetest.SpanStub
		for i := from; i < from+n; i++ {
			stubs = append(stubs, proxySpan(i, end))
		}
		exportGRPC(t, s, stubs...)
	}

	send(0, 10)
	require.Equal(t, 10.0, scalarAt(t, p, `sum(proxy_requests_total)`, at))
	require.InEpsilon(t, 10.0, scalarAt(t, p, `sum(increase(proxy_requests_total[1h]))`, at), 1e-6)
	require.Equal(t, 10.0, scalarAt(t, p, `sum(proxy_request_duration_seconds_count)`, at))
	series, _, _, err := p.Series(ctx, []string{"proxy_requests_total"}, end.Add(-time.Hour), at)
	require.NoError(t, err)
	require.Len(t, series, 2)
	vals, _, _, err := p.LabelValues(ctx, "source", []string{"proxy_requests_total"}, end.Add(-time.Hour), at)
	require.NoError(t, err)
	require.Equal(t, model.LabelValues{"brightdata", "spys-one"}, vals)

	exportHTTP(t, s, proxySpan(10, end), proxySpan(11, end))
	require.Equal(t, 12.0, scalarAt(t, p, `sum(proxy_requests_total)`, at))
	require.NoError(t, s.Pipeline().Flush())
	require.Equal(t, 12.0, scalarAt(t, p, `sum(proxy_requests_total)`, at), "once across the cut")
	send(12, 8)
	require.Equal(t, 20.0, scalarAt(t, p, `sum(proxy_requests_total)`, at), "the store's and memory's together")
	require.InEpsilon(t, 20.0, scalarAt(t, p, `sum(increase(proxy_requests_total[1h]))`, at), 1e-6)
	require.Zero(t, scalarAt(t, p, `max(resets(proxy_requests_total[2h]))`, at))
}

// TestBackfillQueryableAtOnce: a backfill of spans over the past three
// days answers right after its export, before any cut: every day's
// increase() counts exactly the spans that ended in it.
func TestBackfillQueryableAtOnce(t *testing.T) {
	s := start(t, testConfig(t), Options{})
	p := queryClient(t, s)
	hourEnd := time.Now().Truncate(time.Hour)
	rnd := rand.New(rand.NewPCG(3, 5))
	ends := make([]time.Time, 3000)
	for i := range ends {
		ends[i] = hourEnd.Add(-time.Duration(1 + rnd.Int64N(int64(72*time.Hour))))
	}
	for i := 0; i < len(ends); i += 500 {
		var stubs []tracetest.SpanStub
		for j := i; j < i+500; j++ {
			stubs = append(stubs, proxySpan(j, ends[j]))
		}
		exportGRPC(t, s, stubs...)
	}
	require.Positive(t, s.agg.Pending(), "no cut has written the backfill")

	require.Equal(t, 3000.0, scalarAt(t, p, `sum(last_over_time(proxy_requests_total[4d]))`, hourEnd))
	for d := range 3 {
		to := hourEnd.Add(-time.Duration(d) * 24 * time.Hour)
		want := 0.0
		for _, e := range ends {
			if e.After(to.Add(-24*time.Hour)) && !e.After(to) {
				want++
			}
		}
		// Exact but for the engine's extrapolation over 1 ms of the day.
		require.InDelta(t, want, scalarAt(t, p, `sum(increase(proxy_requests_total[1d]))`, to), want*1e-7+1e-9, "day ending %s", to)
	}
	require.Positive(t, s.agg.Pending(), "answered from memory")
}

// BenchmarkFreshness measures ack → visible: each iteration exports 100
// spans over OTLP/gRPC and, once the export returns, polls the query API
// until sum(proxy_requests_total) counts them; it reports the latency's
// median, 99th percentile and maximum. Cuts run meanwhile at the default
// flush interval (15 s).
func BenchmarkFreshness(b *testing.B) {
	cfg := DefaultConfig()
	cfg.DataDir = b.TempDir()
	cfg.OTLPGRPCAddr, cfg.OTLPHTTPAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Backup.Dir, cfg.Backup.Interval = b.TempDir(), 0
	s := New(cfg, Options{})
	require.NoError(b, s.Start(b.Context()))
	defer func() { require.NoError(b, s.Shutdown(context.Background())) }()
	exp, err := otlptracegrpc.New(b.Context(), otlptracegrpc.WithEndpoint(s.OTLPGRPCAddr().String()), otlptracegrpc.WithInsecure())
	require.NoError(b, err)
	defer func() { require.NoError(b, exp.Shutdown(context.Background())) }()
	c, err := api.NewClient(api.Config{Address: "http://" + s.HTTPAddr().String()})
	require.NoError(b, err)
	p := v1.NewAPI(c)
	ctx := context.Background()

	var lat []time.Duration
	sent, polls := 0, 0
	for b.Loop() {
		end := time.Now().Add(-time.Second)
		stubs := make([]tracetest.SpanStub, 100)
		for i := range stubs {
			stubs[i] = proxySpan(sent+i, end)
		}
		require.NoError(b, exp.ExportSpans(ctx, tracetest.SpanStubs(stubs).Snapshots()))
		acked := time.Now()
		sent += len(stubs)
		at := end.Truncate(cfg.FlushInterval).Add(cfg.FlushInterval) // the spans' interval end
		for {
			polls++
			v, _, _, err := p.Query(ctx, `sum(last_over_time(proxy_requests_total[1h]))`, at)
			require.NoError(b, err)
			if vec := v.(model.Vector); len(vec) == 1 && float64(vec[0].Value) >= float64(sent) {
				break
			}
		}
		lat = append(lat, time.Since(acked))
	}
	slices.Sort(lat)
	ms := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(ms(0.5), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
	b.ReportMetric(ms(1), "max-ms")
	b.ReportMetric(float64(polls)/float64(len(lat)), "polls/op")
}
