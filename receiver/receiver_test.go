package receiver

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
	"github.com/proxylens/proxylens/selfmetrics"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const exportMethod = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

// testClock is the clock of the pipeline and the store: the mapper's.
func testClock() time.Time { return testNow }

// server is a started receiver with clients for both transports.
type server struct {
	rcv      *Receiver
	reg      *selfmetrics.Registry
	url      string // the OTLP/HTTP traces endpoint
	grpcAddr string
	client   *http.Client
	conn     *grpc.ClientConn

	// Set by startStack only.
	agg  *otelanalytics.Aggregator
	pipe *otelanalytics.Pipeline
}

// startReceiver starts a receiver on loopback ports in front of consumer and
// shuts it down when the test ends.
func startReceiver(t *testing.T, cfg Config, consumer Consumer, setup ...func(*Receiver)) *server {
	t.Helper()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	reg := selfmetrics.New()
	rcv, err := New(cfg, testMapper(), consumer, reg, nil)
	require.NoError(t, err)
	for _, f := range setup {
		f(rcv)
	}
	require.NoError(t, rcv.Start(t.Context()))
	s := &server{
		rcv:      rcv,
		reg:      reg,
		url:      "http://" + rcv.HTTPAddr().String() + "/v1/traces",
		grpcAddr: rcv.GRPCAddr().String(),
		client:   &http.Client{Transport: &http.Transport{}},
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, rcv.Shutdown(ctx))
	})
	conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	s.conn = conn
	// Cleanups run last in, first out: the clients go before the receiver.
	t.Cleanup(func() {
		s.client.CloseIdleConnections()
		require.NoError(t, conn.Close())
	})
	return s
}

// startStack starts the production stack in a temporary directory: Pebble,
// the dictionary, the aggregator, the sampler and the ingest pipeline behind
// the receiver. Everything is shut down in order when the test ends.
func startStack(t *testing.T, cfg Config) *server {
	t.Helper()
	db, err := pebblestore.Open(t.TempDir(), pebblestore.Options{Now: testClock})
	require.NoError(t, err)
	dict := otelanalytics.NewDict(0)
	agg := otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, time.Second, nil)
	nextSeq, err := otelanalytics.Restore(db, dict, agg)
	require.NoError(t, err)
	pipe := otelanalytics.NewPipeline(otelanalytics.PipelineConfig{FlushInterval: time.Second}, dict,
		otelanalytics.NewSampler(otelanalytics.DefaultSamplingConfig()), agg, db, nextSeq, nil, nil, testClock)
	require.NoError(t, pipe.Start(t.Context()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, pipe.Shutdown(ctx))
		require.NoError(t, db.Close())
	})
	s := startReceiver(t, cfg, pipe)
	s.agg, s.pipe = agg, pipe
	return s
}

// requests sums proxy_requests_total over every series: the spans the
// aggregates counted, weighted by their adjusted count.
func (s *server) requests() float64 {
	_, vals := s.agg.Snapshot(otelanalytics.FamilyRequests)
	sum := 0.0
	for _, v := range vals {
		sum += v
	}
	return sum
}

// counter reads one of the receiver's self-metrics.
func (s *server) counter(name string) uint64 {
	return s.reg.Counter(name, "").Get()
}

type reply struct {
	code   int
	header http.Header
	body   []byte
}

// send sends body to the traces endpoint; empty ctype or encoding sends no
// such header, and chunked sends the body with no Content-Length.
func (s *server) send(ctx context.Context, method, ctype, encoding string, body []byte, chunked bool) (reply, error) {
	var rd io.Reader = bytes.NewReader(body)
	if chunked {
		rd = io.MultiReader(rd) // a reader of unknown length
	}
	req, err := http.NewRequestWithContext(ctx, method, s.url, rd)
	if err != nil {
		return reply{}, err
	}
	if chunked {
		req.ContentLength = -1
		req.TransferEncoding = []string{"chunked"}
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	return reply{code: resp.StatusCode, header: resp.Header, body: b}, nil
}

func (s *server) post(t *testing.T, ctype, encoding string, body []byte) reply {
	t.Helper()
	r, err := s.send(t.Context(), http.MethodPost, ctype, encoding, body, false)
	require.NoError(t, err)
	return r
}

func (s *server) export(ctx context.Context, td ptrace.Traces, opts ...grpc.CallOption) (ptraceotlp.ExportResponse, error) {
	return ptraceotlp.NewGRPCClient(s.conn).Export(ctx, ptraceotlp.NewExportRequestFromTraces(td), opts...)
}

// decodeStatus decodes a google.rpc.Status body in the response's encoding.
func decodeStatus(t *testing.T, r reply) *spb.Status {
	t.Helper()
	st := &spb.Status{}
	switch ct := r.header.Get("Content-Type"); ct {
	case contentProtobuf:
		require.NoError(t, proto.Unmarshal(r.body, st))
	case contentJSON:
		require.NoError(t, protojson.Unmarshal(r.body, st))
	default:
		require.Failf(t, "no google.rpc.Status body", "Content-Type %q, body %q", ct, r.body)
	}
	return st
}

// decodeResponse decodes an ExportTraceServiceResponse in the response's
// encoding.
func decodeResponse(t *testing.T, r reply) ptraceotlp.ExportResponse {
	t.Helper()
	resp := ptraceotlp.NewExportResponse()
	switch ct := r.header.Get("Content-Type"); ct {
	case contentProtobuf:
		require.NoError(t, resp.UnmarshalProto(r.body))
	case contentJSON:
		require.NoError(t, resp.UnmarshalJSON(r.body))
	default:
		require.Failf(t, "no ExportTraceServiceResponse", "Content-Type %q, body %q", ct, r.body)
	}
	return resp
}

// retryInfo returns the RetryInfo detail of a gRPC error, or nil.
func retryInfo(err error) *errdetails.RetryInfo {
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri
		}
	}
	return nil
}

// sdkSpans builds n finished proxy spans as the OpenTelemetry Go SDK records
// them, ending just before the mapper's now; ids start after seed.
func sdkSpans(n int, seed uint64) []sdktrace.ReadOnlySpan {
	res := resource.NewSchemaless(attribute.String("service.name", "checkout"))
	end := testNow.Add(-30 * time.Second)
	stubs := make(tracetest.SpanStubs, n)
	for i := range stubs {
		var tid trace.TraceID
		var sid trace.SpanID
		binary.BigEndian.PutUint64(tid[:], seed)
		binary.BigEndian.PutUint64(tid[8:], uint64(i)+1)
		binary.BigEndian.PutUint64(sid[:], seed<<20|uint64(i)+1)
		stubs[i] = tracetest.SpanStub{
			Name: "GET",
			SpanContext: trace.NewSpanContext(trace.SpanContextConfig{
				TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled,
			}),
			SpanKind:  trace.SpanKindClient,
			StartTime: end.Add(-time.Duration(100+i) * time.Millisecond),
			EndTime:   end.Add(time.Duration(i) * time.Millisecond),
			Attributes: []attribute.KeyValue{
				attribute.String("proxy.source", "brightdata"),
				attribute.String("proxy.url", "http://user:s3cret@10.0.0.7:8080"),
				attribute.String("http.request.method", "GET"),
				attribute.String("url.full", "https://shop.example.com/cart?token=s3cret"),
				attribute.Int("http.response.status_code", 200),
				attribute.Int("http.response.body.size", 2048),
			},
			Resource:             res,
			InstrumentationScope: instrumentation.Scope{Name: "proxyclient", Version: "1.2.0"},
		}
	}
	return stubs.Snapshots()
}

// noRetry keeps the SDK exporters from retrying on the wall clock.
var (
	noRetryGRPC = otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false})
	noRetryHTTP = otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false})
)

func TestSDKExporterGRPC(t *testing.T) {
	s := startStack(t, Config{})
	for i, compressor := range []string{"", "gzip"} { // the SDK compresses with gzip only
		t.Run("compressor="+compressor, func(t *testing.T) {
			opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(s.grpcAddr), otlptracegrpc.WithInsecure(), noRetryGRPC}
			if compressor != "" {
				opts = append(opts, otlptracegrpc.WithCompressor(compressor))
			}
			exp, err := otlptracegrpc.New(t.Context(), opts...)
			require.NoError(t, err)
			defer func() { require.NoError(t, exp.Shutdown(context.Background())) }()

			before := s.requests()
			require.NoError(t, exp.ExportSpans(t.Context(), sdkSpans(25, uint64(i+1))))
			require.Equal(t, before+25, s.requests(), "an acknowledged export is counted")
		})
	}
	require.EqualValues(t, 2, s.counter(`proxylens_otlp_requests_total{transport="grpc",outcome="accepted"}`))
	require.EqualValues(t, 50, s.counter(`proxylens_spans_received_total{transport="grpc"}`))
}

func TestSDKExporterHTTP(t *testing.T) {
	s := startStack(t, Config{})
	cases := []struct {
		name string
		opts []otlptracehttp.Option
	}{
		{"protobuf", nil},
		{"protobuf+gzip", []otlptracehttp.Option{otlptracehttp.WithCompression(otlptracehttp.GzipCompression)}},
		{"json", []otlptracehttp.Option{otlptracehttp.WithEncoding(otlptracehttp.EncodingJSON)}},
		{"json+gzip", []otlptracehttp.Option{
			otlptracehttp.WithEncoding(otlptracehttp.EncodingJSON),
			otlptracehttp.WithCompression(otlptracehttp.GzipCompression),
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := append([]otlptracehttp.Option{
				otlptracehttp.WithEndpoint(s.rcv.HTTPAddr().String()), otlptracehttp.WithInsecure(), noRetryHTTP,
			}, tc.opts...)
			exp, err := otlptracehttp.New(t.Context(), opts...)
			require.NoError(t, err)
			defer func() { require.NoError(t, exp.Shutdown(context.Background())) }()

			before := s.requests()
			require.NoError(t, exp.ExportSpans(t.Context(), sdkSpans(40, uint64(i+1))))
			require.Equal(t, before+40, s.requests(), "an acknowledged export is counted")
		})
	}
	require.EqualValues(t, 4, s.counter(`proxylens_otlp_requests_total{transport="http",outcome="accepted"}`))
}

// TestSDKExporterPartialSuccess checks that the SDK exporters see the
// partial_success of a request with an unmappable span, and that the other
// spans are counted.
func TestSDKExporterPartialSuccess(t *testing.T) {
	s := startStack(t, Config{})
	spans := func(seed uint64) []sdktrace.ReadOnlySpan {
		stubs := tracetest.SpanStubsFromReadOnlySpans(sdkSpans(10, seed))
		stubs[3].EndTime = stubs[3].StartTime.Add(-time.Second) // end before start
		return stubs.Snapshots()
	}
	grpcExp, err := otlptracegrpc.New(t.Context(), otlptracegrpc.WithEndpoint(s.grpcAddr), otlptracegrpc.WithInsecure(), noRetryGRPC)
	require.NoError(t, err)
	defer func() { require.NoError(t, grpcExp.Shutdown(context.Background())) }()
	httpExp, err := otlptracehttp.New(t.Context(), otlptracehttp.WithEndpoint(s.rcv.HTTPAddr().String()), otlptracehttp.WithInsecure(), noRetryHTTP)
	require.NoError(t, err)
	defer func() { require.NoError(t, httpExp.Shutdown(context.Background())) }()

	for i, exp := range []sdktrace.SpanExporter{grpcExp, httpExp} {
		before := s.requests()
		err := exp.ExportSpans(t.Context(), spans(uint64(i+1)))
		require.ErrorContains(t, err, "1 spans rejected")
		require.ErrorContains(t, err, "rejected 1 of 10 spans: 1 end time before start time")
		require.NotContains(t, err.Error(), "s3cret")
		require.Equal(t, before+9, s.requests())
	}
	require.EqualValues(t, 2, s.counter(`proxylens_spans_refused_total{reason="end_before_start"}`))
}

// TestSDKExporterConcurrent exports from many goroutines over both
// transports at once; every acknowledged span must be counted exactly once.
func TestSDKExporterConcurrent(t *testing.T) {
	s := startStack(t, Config{})
	grpcExp, err := otlptracegrpc.New(t.Context(), otlptracegrpc.WithEndpoint(s.grpcAddr), otlptracegrpc.WithInsecure(),
		otlptracegrpc.WithCompressor("gzip"), noRetryGRPC)
	require.NoError(t, err)
	defer func() { require.NoError(t, grpcExp.Shutdown(context.Background())) }()
	httpExp, err := otlptracehttp.New(t.Context(), otlptracehttp.WithEndpoint(s.rcv.HTTPAddr().String()), otlptracehttp.WithInsecure(), noRetryHTTP)
	require.NoError(t, err)
	defer func() { require.NoError(t, httpExp.Shutdown(context.Background())) }()

	const workers, exports, spans = 8, 10, 20
	errs := make(chan error, workers*exports)
	var wg sync.WaitGroup
	for w := range workers {
		exp := sdktrace.SpanExporter(grpcExp)
		if w%2 == 1 {
			exp = httpExp
		}
		wg.Go(func() {
			for i := range exports {
				errs <- exp.ExportSpans(t.Context(), sdkSpans(spans, uint64(w*exports+i+1)))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, float64(workers*exports*spans), s.requests())
}

// TestShutdownHonoursDeadline holds a request on each transport and shuts
// down with a context that has already ended.
func TestShutdownHonoursDeadline(t *testing.T) {
	c := newBlockingConsumer()
	s := startReceiver(t, Config{}, c)
	t.Cleanup(c.unblock)
	body := marshal(t, proxySpans(4, 1))

	httpDone := make(chan reply, 1)
	go func() {
		r, err := s.send(context.Background(), http.MethodPost, contentProtobuf, "", body, false)
		if err != nil {
			r = reply{code: -1, body: []byte(err.Error())}
		}
		httpDone <- r
	}()
	grpcDone := make(chan error, 1)
	go func() {
		_, err := s.export(context.Background(), proxySpans(4, 2))
		grpcDone <- err
	}()
	<-c.entered
	<-c.entered

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := s.rcv.Shutdown(ctx)
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, "stop OTLP/HTTP server")
	require.ErrorContains(t, err, "stop OTLP/gRPC server")

	// The gRPC server was stopped hard; its request is cancelled.
	require.Error(t, <-grpcDone)
	// The HTTP request is still being served and completes when released.
	c.unblock()
	r := <-httpDone
	require.Equal(t, http.StatusOK, r.code, "body: %q", r.body)

	// No new connection is accepted.
	_, err = s.send(t.Context(), http.MethodPost, contentProtobuf, "", body, false)
	require.Error(t, err)
	require.NoError(t, s.rcv.Shutdown(context.Background()))
}

func TestLifecycle(t *testing.T) {
	ctx := t.Context()
	t.Run("shutdown without start", func(t *testing.T) {
		rcv, err := New(Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"}, testMapper(), failingConsumer{}, nil, nil)
		require.NoError(t, err)
		require.NoError(t, rcv.Shutdown(ctx))
		require.NoError(t, rcv.Shutdown(ctx))
		require.Nil(t, rcv.GRPCAddr())
		require.Nil(t, rcv.HTTPAddr())
		require.ErrorContains(t, rcv.Start(ctx), "already started", "a receiver that was shut down does not start")
	})
	t.Run("start twice, shutdown twice", func(t *testing.T) {
		rcv, err := New(Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"}, testMapper(), failingConsumer{}, nil, nil)
		require.NoError(t, err)
		require.NoError(t, rcv.Start(ctx))
		require.Error(t, rcv.Start(ctx))
		require.NotNil(t, rcv.GRPCAddr())
		require.NotNil(t, rcv.HTTPAddr())
		require.NoError(t, rcv.Shutdown(ctx))
		require.NoError(t, rcv.Shutdown(ctx))
		require.Error(t, rcv.Start(ctx))
	})
	t.Run("one transport", func(t *testing.T) {
		rcv, err := New(Config{HTTPAddr: "127.0.0.1:0"}, testMapper(), failingConsumer{}, nil, nil)
		require.NoError(t, err)
		require.NoError(t, rcv.Start(ctx))
		require.Nil(t, rcv.GRPCAddr())
		require.NotNil(t, rcv.HTTPAddr())
		require.NoError(t, rcv.Shutdown(ctx))

		rcv, err = New(Config{GRPCAddr: "127.0.0.1:0"}, testMapper(), failingConsumer{}, nil, nil)
		require.NoError(t, err)
		require.NoError(t, rcv.Start(ctx))
		require.NotNil(t, rcv.GRPCAddr())
		require.Nil(t, rcv.HTTPAddr())
		require.NoError(t, rcv.Shutdown(ctx))
	})
}

func TestStartBusyPort(t *testing.T) {
	ctx := t.Context()
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { require.NoError(t, ln.Close()) }()
	busy := ln.Addr().String()

	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"grpc", Config{GRPCAddr: busy, HTTPAddr: "127.0.0.1:0"}, "listen for OTLP/gRPC on " + busy},
		{"http", Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: busy}, "listen for OTLP/HTTP on " + busy},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rcv, err := New(tc.cfg, testMapper(), failingConsumer{}, nil, nil)
			require.NoError(t, err)
			err = rcv.Start(ctx)
			require.ErrorContains(t, err, tc.want)
			require.NoError(t, rcv.Shutdown(ctx))
		})
	}
}

func TestNewValidatesConfig(t *testing.T) {
	_, err := New(Config{MaxRequestBytes: 100, MaxInflightBytes: -1, RetryAfter: 1500 * time.Millisecond},
		testMapper(), failingConsumer{}, nil, nil)
	require.ErrorContains(t, err, "max_request_bytes: must be at least 1024, got 100")
	require.ErrorContains(t, err, "max_inflight_bytes: must be at least 1024, got -1")
	require.ErrorContains(t, err, `retry_after: must be a whole number of seconds, at least 1s, got "1.5s"`)

	_, err = New(Config{RetryAfter: 500 * time.Millisecond}, testMapper(), failingConsumer{}, nil, nil)
	require.ErrorContains(t, err, "retry_after")
	require.NoError(t, DefaultConfig().Validate())
}

// TestReceiverUsesMapperClock checks that "too far in the future" is judged
// by the mapper's clock, which the server injects (Options.Now) so that its
// tests control time.
func TestReceiverUsesMapperClock(t *testing.T) {
	s := startStack(t, Config{})
	td := proxySpans(3, 1)
	for _, sp := range td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().All() {
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(testNow.Add(time.Hour - time.Second)))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(testNow.Add(time.Hour)))
	}
	_, wantRejected := referenceMap(testMapper(), td)
	require.Equal(t, 3, wantRejected, "an hour past the mapper's now is in the future")
	resp, err := s.export(t.Context(), td)
	require.NoError(t, err)
	require.EqualValues(t, 3, resp.PartialSuccess().RejectedSpans())
	require.Zero(t, s.requests())
}
