package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/proxylens/proxylens/otelanalytics"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The OpenTelemetry SDK's exporters and gRPC keep a few package-level
		// goroutines (resolver, keepalive) alive after Shutdown.
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// syncBuffer is a log destination that tests can read.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testConfig(t testing.TB) Config {
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.OTLPGRPCAddr, cfg.OTLPHTTPAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.FlushInterval = time.Hour // tests cut explicitly
	cfg.Backup.Dir, cfg.Backup.Interval = filepath.Join(t.TempDir(), "backups"), 0
	return cfg
}

// start runs a server and shuts it down at the end of the test.
func start(t *testing.T, cfg Config, opts Options) *Server {
	t.Helper()
	s := New(cfg, opts)
	require.NoError(t, s.Start(t.Context()))
	t.Cleanup(func() { require.NoError(t, s.Shutdown(context.Background())) })
	return s
}

// proxySpan is a span as an instrumented proxy client records it.
func proxySpan(i int, end time.Time, attrs ...attribute.KeyValue) tracetest.SpanStub {
	var tid trace.TraceID
	var sid trace.SpanID
	tid[0], tid[15] = byte(i>>8), byte(i)|1
	sid[0], sid[7] = byte(i>>8), byte(i)|1
	base := []attribute.KeyValue{
		attribute.String("proxy.source", []string{"brightdata", "spys-one"}[i%2]),
		attribute.String("proxy.tier", []string{"premium", "free"}[i%2]),
		attribute.String("app.id", "price-monitor"),
		attribute.String("http.request.method", "GET"),
		attribute.String("server.address", "shop.example.com"),
		attribute.Int("http.response.status_code", 200),
		attribute.Int("http.response.body.size", 1000),
	}
	return tracetest.SpanStub{
		Name:                 "GET",
		SpanContext:          trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}),
		SpanKind:             trace.SpanKindClient,
		StartTime:            end.Add(-150 * time.Millisecond),
		EndTime:              end,
		Attributes:           append(base, attrs...),
		Resource:             resource.NewSchemaless(attribute.String("service.name", "crawler")),
		InstrumentationScope: instrumentation.Scope{Name: "proxyclient"},
	}
}

func exportGRPC(t *testing.T, s *Server, stubs ...tracetest.SpanStub) {
	t.Helper()
	exp, err := otlptracegrpc.New(t.Context(), otlptracegrpc.WithEndpoint(s.OTLPGRPCAddr().String()), otlptracegrpc.WithInsecure())
	require.NoError(t, err)
	require.NoError(t, exp.ExportSpans(t.Context(), tracetest.SpanStubs(stubs).Snapshots()))
	require.NoError(t, exp.Shutdown(context.Background()))
}

func exportHTTP(t *testing.T, s *Server, stubs ...tracetest.SpanStub) {
	t.Helper()
	exp, err := otlptracehttp.New(t.Context(), otlptracehttp.WithEndpoint(s.OTLPHTTPAddr().String()), otlptracehttp.WithInsecure())
	require.NoError(t, err)
	require.NoError(t, exp.ExportSpans(t.Context(), tracetest.SpanStubs(stubs).Snapshots()))
	require.NoError(t, exp.Shutdown(context.Background()))
}

func get(t *testing.T, url string, header ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body), resp.Header
}

// TestCredentialsNeverStored is the credential test of the issue: spans
// whose proxy.url carries a password and whose url.full carries a token are
// ingested over both transports, and "s3cret" appears nowhere: not in any
// record read back, not in /metrics, not in any file of the data directory
// (the Pebble WAL, sstables and manifest, written uncompressed, and the
// journal), not in the logs, not in partial_success messages.
func TestCredentialsNeverStored(t *testing.T) {
	logs := &syncBuffer{}
	cfg := testConfig(t)
	cfg.LogLevel = "debug"
	s := start(t, cfg, Options{
		Logger:             slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		DisableCompression: true,
	})
	end := time.Now().Add(-time.Second)
	secret := []attribute.KeyValue{
		attribute.String("proxy.url", "http://user:s3cret@10.1.2.3:8080"),
		attribute.String("url.full", "https://shop.example.com/cart?token=s3cret&id=1"),
	}
	var grpcSpans, httpSpans []tracetest.SpanStub
	for i := range 50 {
		grpcSpans = append(grpcSpans, proxySpan(i, end, secret...))
		httpSpans = append(httpSpans, proxySpan(100+i, end, secret...))
	}
	// Userinfo in the address attributes themselves, and a span that is
	// rejected (its partial_success message must not quote it either).
	grpcSpans = append(grpcSpans, proxySpan(60, end,
		attribute.String("proxy.url", "user:s3cret@10.1.2.3:8080"),
		attribute.String("server.address", "user:s3cret@shop.example.com")))
	bad := proxySpan(61, end, secret...)
	bad.EndTime = bad.StartTime.Add(-time.Second)
	grpcSpans = append(grpcSpans, bad)

	// The SDK reports the rejected span as an error; its message is ours and
	// must not quote the span.
	exp, err := otlptracegrpc.New(t.Context(), otlptracegrpc.WithEndpoint(s.OTLPGRPCAddr().String()), otlptracegrpc.WithInsecure())
	require.NoError(t, err)
	err = exp.ExportSpans(t.Context(), tracetest.SpanStubs(grpcSpans).Snapshots())
	require.ErrorContains(t, err, "rejected 1 of 52 spans: 1 end time before start time")
	require.NotContains(t, err.Error(), "s3cret")
	require.NoError(t, exp.Shutdown(context.Background()))
	exportHTTP(t, s, httpSpans...)
	// The journal is on disk before the cut: check it too.
	requireNoSecret(t, cfg.DataDir)
	require.NoError(t, s.Pipeline().Flush())
	require.NoError(t, s.Store().Flush()) // memtables to sstables

	n := 0
	require.NoError(t, s.ScanRecords(t.Context(), otelanalytics.RecordFilter{}, func(r *otelanalytics.Record) error {
		n++
		require.NotContains(t, fmt.Sprintf("%+v", *r), "s3cret")
		require.NotContains(t, fmt.Sprintf("%+v", *r), "user")
		require.Equal(t, "10.1.2.3:8080", r.Proxy)
		require.Equal(t, "shop.example.com", r.Domain)
		return nil
	}))
	require.Equal(t, 101, n, "every span but the rejected one is a record")

	_, metrics, _ := get(t, "http://"+s.HTTPAddr().String()+"/metrics")
	require.Contains(t, metrics, `proxy="10.1.2.3:8080"`)
	require.NotContains(t, metrics, "s3cret")
	_, om, _ := get(t, "http://"+s.HTTPAddr().String()+"/metrics", "Accept", "application/openmetrics-text; version=1.0.0")
	require.NotContains(t, om, "s3cret")

	require.NoError(t, s.Shutdown(t.Context()))
	requireNoSecret(t, cfg.DataDir)
	require.NotEmpty(t, logs.String())
	require.NotContains(t, logs.String(), "s3cret")
}

// requireNoSecret reads every file under dir byte for byte.
func requireNoSecret(t *testing.T, dir string) {
	t.Helper()
	files := 0
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // Pebble removed an obsolete file; what it held is in newer ones
		}
		require.NoError(t, err)
		require.False(t, bytes.Contains(b, []byte("s3cret")), "%s holds the secret", path)
		files++
		return nil
	}))
	require.Positive(t, files)
}

func TestHealthReadyAndMetrics(t *testing.T) {
	s := start(t, testConfig(t), Options{})
	base := "http://" + s.HTTPAddr().String()
	code, body, _ := get(t, base+"/-/healthy")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "healthy")
	code, _, _ = get(t, base+"/-/ready")
	require.Equal(t, http.StatusOK, code)

	end := time.Now().Add(-time.Second)
	var spans []tracetest.SpanStub
	for i := range 20 {
		spans = append(spans, proxySpan(i, end))
	}
	failed := proxySpan(99, end, attribute.String("error.type", "timeout"))
	failed.Status.Code = codes.Error
	spans = append(spans, failed)
	exportHTTP(t, s, spans...)

	_, metrics, hdr := get(t, base+"/metrics")
	require.Contains(t, hdr.Get("Content-Type"), "text/plain")
	for _, want := range []string{
		`proxy_requests_total{application="price-monitor",domain="shop.example.com",error_type="",method="GET",outcome="success",source="brightdata",status_code="200",tier="premium"} 10`,
		`proxy_requests_total{application="price-monitor",domain="shop.example.com",error_type="timeout",method="GET",outcome="failure",source="spys-one",status_code="200",tier="free"} 1`,
		`proxy_request_duration_seconds_bucket{application="price-monitor",outcome="success",source="spys-one",tier="free",le="0.25"} 10`,
		`proxy_transfer_bytes_total{application="price-monitor",direction="received",source="brightdata"} 10000`,
		`proxylens_spans_received_total{transport="http"} 21`,
		`proxylens_records_stored_total 21`,
		`proxylens_build_info{version="` + Version + `"} 1`,
		"go_goroutines", "process_cpu_seconds_total",
		"# HELP proxylens_spans_received_total Spans received in well-formed OTLP requests.",
	} {
		require.Contains(t, metrics, want)
	}
	_, om, hdr := get(t, base+"/metrics", "Accept", "application/openmetrics-text; version=1.0.0")
	require.Contains(t, hdr.Get("Content-Type"), "application/openmetrics-text")
	require.True(t, strings.HasSuffix(om, "# EOF\n"))

	require.NoError(t, s.Shutdown(t.Context()))
	require.NoError(t, s.Shutdown(t.Context()), "Shutdown twice")
}

// TestRestartKeepsCounters: counters continue across a restart on the same
// data directory, with and without a final cut.
func TestRestartKeepsCounters(t *testing.T) {
	cfg := testConfig(t)
	total := func(s *Server) string {
		_, metrics, _ := get(t, "http://"+s.HTTPAddr().String()+"/metrics")
		for _, line := range strings.Split(metrics, "\n") {
			if strings.HasPrefix(line, "proxy_endpoint_requests_total{") && strings.Contains(line, `source="brightdata"`) {
				return line[strings.LastIndexByte(line, ' ')+1:]
			}
		}
		return ""
	}
	end := time.Now().Add(-time.Second)
	s := New(cfg, Options{})
	require.NoError(t, s.Start(t.Context()))
	exportGRPC(t, s, proxySpan(0, end), proxySpan(2, end))
	require.Equal(t, "2", total(s))
	require.NoError(t, s.Shutdown(t.Context()))

	s = New(cfg, Options{})
	require.NoError(t, s.Start(t.Context()))
	require.Equal(t, "2", total(s))
	exportGRPC(t, s, proxySpan(4, end))
	require.Equal(t, "3", total(s))
	require.NoError(t, s.Shutdown(t.Context()))
}

func TestStartFailsCleanly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	cfg := testConfig(t)
	cfg.OTLPHTTPAddr = ln.Addr().String() // busy
	s := New(cfg, Options{})
	err = s.Start(t.Context())
	require.ErrorContains(t, err, ln.Addr().String())
	require.NoError(t, s.Shutdown(t.Context()))
	require.Error(t, s.Start(t.Context()), "a server starts once")

	// The data directory was released: another server can use it.
	cfg.OTLPHTTPAddr = "127.0.0.1:0"
	start(t, cfg, Options{})
}

// metricsSink is an OTLP/gRPC metrics receiver standing in for a collector.
type metricsSink struct {
	pmetricotlp.UnimplementedGRPCServer
	got chan pmetric.Metrics
}

func (m *metricsSink) Export(_ context.Context, req pmetricotlp.ExportRequest) (pmetricotlp.ExportResponse, error) {
	select {
	case m.got <- req.Metrics():
	default:
	}
	return pmetricotlp.NewExportResponse(), nil
}

// TestOTLPMetricsPush: with otlp_metrics_endpoint set, the aggregates reach
// a collector over OTLP with the names, units and values of /metrics.
func TestOTLPMetricsPush(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	sink := &metricsSink{got: make(chan pmetric.Metrics, 100)}
	gs := grpc.NewServer()
	pmetricotlp.RegisterGRPCServer(gs, sink)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop) // after the server's shutdown, which pushes a last time

	cfg := testConfig(t)
	cfg.FlushInterval = time.Second
	cfg.OTLPMetricsEndpoint = "grpc://" + ln.Addr().String()
	require.NoError(t, cfg.Validate())
	s := start(t, cfg, Options{})
	end := time.Now().Add(-time.Second)
	exportGRPC(t, s, proxySpan(0, end), proxySpan(2, end), proxySpan(4, end))

	deadline := time.After(30 * time.Second)
	for {
		select {
		case md := <-sink.got:
			if v, ok := pushedRequests(md); ok && v == 3 {
				rm := md.ResourceMetrics().At(0)
				name, _ := rm.Resource().Attributes().Get("service.name")
				require.Equal(t, "proxylens", name.Str())
				return
			}
		case <-deadline:
			t.Fatal("no OTLP export with the three requests arrived")
		}
	}
}

func pushedRequests(md pmetric.Metrics) (float64, bool) {
	var sum float64
	found := false
	for _, rm := range md.ResourceMetrics().All() {
		for _, sm := range rm.ScopeMetrics().All() {
			for _, m := range sm.Metrics().All() {
				if m.Name() != "proxy_requests_total" {
					continue
				}
				if m.Unit() != "{request}" || !m.Sum().IsMonotonic() || m.Sum().AggregationTemporality() != pmetric.AggregationTemporalityCumulative {
					return 0, false
				}
				for _, dp := range m.Sum().DataPoints().All() {
					sum += dp.DoubleValue()
					found = true
				}
			}
		}
	}
	return sum, found
}
