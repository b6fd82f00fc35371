package receiver

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
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

// jsonBody is an OTLP/JSON request as the OpenTelemetry JavaScript SDK
// writes it: hex ids, timestamps as strings, intValue sometimes a number and
// sometimes a string. The third span has no timestamps.
func jsonBody() []byte {
	end := testNow.Add(-time.Minute).UnixNano()
	ts := func(ns int64) string { return strconv.Quote(strconv.FormatInt(ns, 10)) }
	return fmt.Appendf(nil, `{"resourceSpans":[{
  "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"storefront"}}],"droppedAttributesCount":0},
  "scopeSpans":[{"scope":{"name":"@opentelemetry/instrumentation-undici","version":"0.10.0"},"spans":[
    {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"GET","kind":3,
     "startTimeUnixNano":%s,"endTimeUnixNano":%s,
     "attributes":[
       {"key":"proxy.source","value":{"stringValue":"oxylabs"}},
       {"key":"proxy.url","value":{"stringValue":"http://user:s3cret@10.9.8.7:3128"}},
       {"key":"url.full","value":{"stringValue":"https://shop.example.com/?session=s3cret"}},
       {"key":"http.request.method","value":{"stringValue":"GET"}},
       {"key":"http.response.status_code","value":{"intValue":200}},
       {"key":"http.request.body.size","value":{"intValue":300}},
       {"key":"http.response.body.size","value":{"intValue":"5120"}}],
     "droppedAttributesCount":0,"events":[],"droppedEventsCount":0,"status":{"code":0},"links":[],"droppedLinksCount":0},
    {"traceId":"5b8efff798038103d269b633813fc60d","spanId":"eee19b7ec3c1b175","name":"POST","kind":3,
     "startTimeUnixNano":%s,"endTimeUnixNano":%s,
     "attributes":[
       {"key":"proxy.source","value":{"stringValue":"oxylabs"}},
       {"key":"http.request.method","value":{"stringValue":"POST"}},
       {"key":"http.response.status_code","value":{"intValue":"503"}},
       {"key":"http.request.body.size","value":{"intValue":"700"}},
       {"key":"http.response.body.size","value":{"intValue":880}}],
     "status":{"code":2,"message":"Service Unavailable"}},
    {"traceId":"5b8efff798038103d269b633813fc60e","spanId":"eee19b7ec3c1b176","name":"GET","kind":3,
     "attributes":[{"key":"proxy.source","value":{"stringValue":"oxylabs-secret-pool"}}]}
  ]}]}]}`, ts(end-int64(time.Second)), ts(end), ts(end-int64(2*time.Second)), ts(end))
}

// TestHTTPJSONChunked sends OTLP/JSON as the JavaScript SDK does: chunked,
// without a Content-Length.
func TestHTTPJSONChunked(t *testing.T) {
	s := startStack(t, Config{})
	r, err := s.send(t.Context(), http.MethodPost, "application/json", "", jsonBody(), true)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, r.code, "body: %s", r.body)
	require.Equal(t, contentJSON, r.header.Get("Content-Type"))
	resp := decodeResponse(t, r)
	require.EqualValues(t, 1, resp.PartialSuccess().RejectedSpans())
	require.Equal(t, "rejected 1 of 3 spans: 1 missing start or end time", resp.PartialSuccess().ErrorMessage())

	require.Equal(t, 2.0, s.requests())
	keys, _ := s.agg.Snapshot(otelanalytics.FamilyRequests)
	var statusCodes []uint16
	for _, k := range keys {
		statusCodes = append(statusCodes, k.StatusCode)
	}
	slices.Sort(statusCodes)
	require.Equal(t, []uint16{200, 503}, statusCodes, "intValue is read as a number and as a string")
	_, transfer := s.agg.Snapshot(otelanalytics.FamilyTransfer)
	var sent, received float64
	for i := 0; i < len(transfer); i += 2 {
		sent += transfer[i]
		received += transfer[i+1]
	}
	require.Equal(t, 300.0+700, sent)
	require.Equal(t, 5120.0+880, received)
}

// bomb returns gzip or zstd data that inflates to 100 MiB of zeros: one
// member (frame) of 1 MiB repeated, which decoders read as one stream.
func bomb(t testing.TB, encoding string) []byte {
	t.Helper()
	var one bytes.Buffer
	var w io.WriteCloser
	switch encoding {
	case "gzip":
		zw, err := gzip.NewWriterLevel(&one, gzip.BestCompression)
		require.NoError(t, err)
		w = zw
	case "zstd":
		zw, err := zstd.NewWriter(&one, zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(1<<15))
		require.NoError(t, err)
		w = zw
	}
	_, err := w.Write(make([]byte, 1<<20))
	require.NoError(t, err)
	require.NoError(t, w.Close())
	return bytes.Repeat(one.Bytes(), 100)
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, err := zw.Write(b)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

func zstded(t testing.TB, b []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	require.NoError(t, err)
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}

// zstdStream compresses b as a streaming encoder does (the zstd command
// reading a pipe): no content size in the frame header, the default window.
func zstdStream(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1))
	require.NoError(t, err)
	_, err = zw.Write(b)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

// TestHTTPStatuses walks the OTLP/HTTP status contract with raw requests.
func TestHTTPStatuses(t *testing.T) {
	const limit = 64 << 10
	s := startStack(t, Config{MaxRequestBytes: limit})
	valid := marshal(t, proxySpans(20, 1))
	validJSON, err := ptraceotlp.NewExportRequestFromTraces(proxySpans(20, 2)).MarshalJSON()
	require.NoError(t, err)
	large := marshal(t, proxySpans(400, 3))
	require.Greater(t, len(large), limit)
	truncatedGzip := gzipped(t, valid)
	truncatedGzip = truncatedGzip[:len(truncatedGzip)/2]

	type want struct {
		code     int
		ctype    string     // the response's Content-Type
		grpcCode codes.Code // of the google.rpc.Status body (protobuf or JSON)
		msg      string     // in the status message or plain-text body
	}
	text := "text/plain; charset=utf-8"
	cases := []struct {
		name     string
		method   string
		ctype    string
		encoding string
		body     []byte
		chunked  bool
		want     want
	}{
		{name: "GET", method: http.MethodGet, ctype: contentProtobuf,
			want: want{code: 405, ctype: text, msg: "method not allowed"}},
		{name: "PUT", method: http.MethodPut, ctype: contentProtobuf, body: valid,
			want: want{code: 405, ctype: text, msg: "method not allowed"}},
		{name: "text/plain", ctype: "text/plain", body: valid,
			want: want{code: 415, ctype: text, msg: "unsupported content type"}},
		{name: "no content type", body: valid,
			want: want{code: 415, ctype: text, msg: "unsupported content type"}},
		{name: "br encoding", ctype: contentProtobuf, encoding: "br", body: valid,
			want: want{code: 415, ctype: contentProtobuf, grpcCode: codes.InvalidArgument, msg: `content encoding "br"`}},
		{name: "br encoding json", ctype: contentJSON, encoding: "br", body: validJSON,
			want: want{code: 415, ctype: contentJSON, grpcCode: codes.InvalidArgument, msg: `content encoding "br"`}},
		{name: "malformed protobuf", ctype: contentProtobuf, body: []byte{0x0a, 0x05, 0x0a, 0x01},
			want: want{code: 400, ctype: contentProtobuf, grpcCode: codes.InvalidArgument, msg: "malformed request"}},
		{name: "malformed json", ctype: contentJSON, body: []byte(`{"resourceSpans":[{"scopeSpans":`),
			want: want{code: 400, ctype: contentJSON, grpcCode: codes.InvalidArgument, msg: "malformed request"}},
		{name: "malformed gzip", ctype: contentProtobuf, encoding: "gzip", body: []byte("not gzip at all"),
			want: want{code: 400, ctype: contentProtobuf, grpcCode: codes.InvalidArgument, msg: "gzip"}},
		{name: "truncated gzip", ctype: contentProtobuf, encoding: "gzip", body: truncatedGzip,
			want: want{code: 400, ctype: contentProtobuf, grpcCode: codes.InvalidArgument, msg: "malformed request"}},
		{name: "malformed zstd", ctype: contentJSON, encoding: "zstd", body: []byte("not zstd at all"),
			want: want{code: 400, ctype: contentJSON, grpcCode: codes.InvalidArgument, msg: "malformed request"}},
		{name: "too large", ctype: contentProtobuf, body: large,
			want: want{code: 413, ctype: contentProtobuf, grpcCode: codes.ResourceExhausted, msg: "request too large"}},
		{name: "too large chunked", ctype: contentProtobuf, body: large, chunked: true,
			want: want{code: 413, ctype: contentProtobuf, grpcCode: codes.ResourceExhausted, msg: "request too large"}},
		{name: "too large gzip", ctype: contentProtobuf, encoding: "gzip", body: gzipped(t, large),
			want: want{code: 413, ctype: contentProtobuf, grpcCode: codes.ResourceExhausted, msg: "request too large"}},
		{name: "gzip bomb", ctype: contentProtobuf, encoding: "gzip", body: bomb(t, "gzip"),
			want: want{code: 413, ctype: contentProtobuf, grpcCode: codes.ResourceExhausted, msg: "request too large"}},
		{name: "zstd bomb", ctype: contentJSON, encoding: "zstd", body: bomb(t, "zstd"),
			want: want{code: 413, ctype: contentJSON, grpcCode: codes.ResourceExhausted, msg: "request too large"}},
		{name: "protobuf", ctype: contentProtobuf, body: valid, want: want{code: 200, ctype: contentProtobuf}},
		{name: "protobuf with parameter", ctype: contentProtobuf + "; proto=opentelemetry", body: valid,
			want: want{code: 200, ctype: contentProtobuf}},
		{name: "identity", ctype: contentProtobuf, encoding: "identity", body: valid, want: want{code: 200, ctype: contentProtobuf}},
		{name: "gzip", ctype: contentProtobuf, encoding: "gzip", body: gzipped(t, valid), want: want{code: 200, ctype: contentProtobuf}},
		{name: "zstd", ctype: contentProtobuf, encoding: "zstd", body: zstded(t, valid), want: want{code: 200, ctype: contentProtobuf}},
		{name: "zstd stream", ctype: contentProtobuf, encoding: "zstd", body: zstdStream(t, valid), want: want{code: 200, ctype: contentProtobuf}},
		{name: "json", ctype: "application/json; charset=utf-8", body: validJSON, want: want{code: 200, ctype: contentJSON}},
		{name: "json gzip chunked", ctype: contentJSON, encoding: "gzip", body: gzipped(t, validJSON), chunked: true,
			want: want{code: 200, ctype: contentJSON}},
		{name: "empty", ctype: contentProtobuf, want: want{code: 200, ctype: contentProtobuf}},
		{name: "empty json object", ctype: contentJSON, body: []byte(`{}`), want: want{code: 200, ctype: contentJSON}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			before := s.requests()
			r, err := s.send(t.Context(), method, tc.ctype, tc.encoding, tc.body, tc.chunked)
			require.NoError(t, err)
			require.Equal(t, tc.want.code, r.code, "body: %q", r.body)
			require.Equal(t, tc.want.ctype, r.header.Get("Content-Type"))
			require.Equal(t, strconv.Itoa(len(r.body)), r.header.Get("Content-Length"))
			require.Empty(t, r.header.Get("Retry-After"), "only retryable refusals carry Retry-After")
			switch {
			case tc.want.code == http.StatusMethodNotAllowed:
				require.Equal(t, http.MethodPost, r.header.Get("Allow"))
				require.Contains(t, string(r.body), tc.want.msg)
			case tc.want.ctype == text:
				require.Contains(t, string(r.body), tc.want.msg)
			case tc.want.code == http.StatusOK:
				resp := decodeResponse(t, r)
				require.Zero(t, resp.PartialSuccess().RejectedSpans())
				require.Empty(t, resp.PartialSuccess().ErrorMessage())
				if len(tc.body) > 2 {
					require.Greater(t, s.requests(), before, "accepted spans are counted")
				}
				return
			default:
				st := decodeStatus(t, r)
				require.Equal(t, int32(tc.want.grpcCode), st.GetCode())
				require.Contains(t, st.GetMessage(), tc.want.msg)
			}
			require.Equal(t, before, s.requests(), "a refused request counts nothing")
		})
	}
	require.Zero(t, s.rcv.budget.inflight.Load(), "every request released its in-flight bytes")
}

// TestHTTPZstdLimits checks the size limit on zstd bodies: a body above it
// is refused as too large (413), like a gzip one, and a body below it is
// accepted whatever the window size its encoder chose.
func TestHTTPZstdLimits(t *testing.T) {
	const limit = 64 << 10
	s := startStack(t, Config{MaxRequestBytes: limit})
	large := marshal(t, proxySpans(400, 3))
	require.Greater(t, len(large), limit)
	valid := marshal(t, proxySpans(20, 1))

	for name, body := range map[string][]byte{
		"content size declared": zstded(t, large),
		"streamed":              zstdStream(t, large),
	} {
		t.Run("too large, "+name, func(t *testing.T) {
			r := s.post(t, contentProtobuf, "zstd", body)
			require.Equal(t, http.StatusRequestEntityTooLarge, r.code, "body: %q", r.body)
			require.Equal(t, int32(codes.ResourceExhausted), decodeStatus(t, r).GetCode())
		})
	}

	t.Run("small body, 8 MiB window", func(t *testing.T) {
		// A streaming encoder that flushes writes a frame without a content
		// size, whose header declares its window.
		var buf bytes.Buffer
		zw, err := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(8<<20))
		require.NoError(t, err)
		for chunk := range slices.Chunk(valid, 1024) {
			_, err = zw.Write(chunk)
			require.NoError(t, err)
			require.NoError(t, zw.Flush())
		}
		require.NoError(t, zw.Close())
		r := s.post(t, contentProtobuf, "zstd", buf.Bytes())
		require.Equal(t, http.StatusOK, r.code, "body: %q", r.body)
	})

	t.Run("another receiver's limit", func(t *testing.T) {
		big := startStack(t, Config{}) // MaxRequestBytes 64 MiB
		body := zstded(t, large)
		for range 5 {
			require.NotEqual(t, http.StatusOK, s.post(t, contentProtobuf, "zstd", body).code) // refused either way
			r := big.post(t, contentProtobuf, "zstd", body)
			require.Equal(t, http.StatusOK, r.code, "body: %q", r.body)
		}
	})
}

// countingReader counts the bytes read from it.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// TestHTTPBombStopsAtLimit checks that a decompression bomb is refused after
// reading little more than the limit's worth of it, not all of it.
func TestHTTPBombStopsAtLimit(t *testing.T) {
	rcv, err := New(Config{MaxRequestBytes: 64 << 10}, testMapper(), failingConsumer{err: errors.New("not reached")}, nil, nil)
	require.NoError(t, err)
	for _, enc := range []string{"gzip", "zstd"} {
		t.Run(enc, func(t *testing.T) {
			b := bomb(t, enc)
			body := &countingReader{r: bytes.NewReader(b)}
			req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/v1/traces", body)
			req.Header.Set("Content-Type", contentProtobuf)
			req.Header.Set("Content-Encoding", enc)
			rec := httptest.NewRecorder()
			rcv.ServeTraces(rec, req)
			require.Equal(t, http.StatusRequestEntityTooLarge, rec.Code, "body: %q", rec.Body)
			require.Less(t, body.n.Load(), int64(len(b)/10), "the handler stopped reading the %d-byte bomb early", len(b))
		})
	}
	require.Zero(t, rcv.budget.inflight.Load())
}

// TestHTTPPartialSuccess sends spans some of which cannot be mapped: the
// others are accepted and the response says how many were rejected, without
// quoting any span content.
func TestHTTPPartialSuccess(t *testing.T) {
	s := startStack(t, Config{})
	for i, ctype := range []string{contentProtobuf, contentJSON} {
		t.Run(ctype, func(t *testing.T) {
			td := proxySpans(20, uint64(10+i))
			spans := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans()
			for j := range 5 {
				spans.At(j * 4).SetStartTimestamp(0)
				spans.At(j*4 + 1).SetEndTimestamp(0)
			}
			wantRecs, wantRejected := referenceMap(testMapper(), td)
			require.Equal(t, 10, wantRejected)
			wantTotal := s.requests()
			for _, rec := range wantRecs {
				wantTotal += rec.Weight
			}

			req := ptraceotlp.NewExportRequestFromTraces(td)
			var body []byte
			var err error
			if ctype == contentJSON {
				body, err = req.MarshalJSON()
			} else {
				body, err = req.MarshalProto()
			}
			require.NoError(t, err)
			r := s.post(t, ctype, "", body)
			require.Equal(t, http.StatusOK, r.code, "body: %q", r.body)
			require.Equal(t, ctype, r.header.Get("Content-Type"))
			resp := decodeResponse(t, r)
			require.EqualValues(t, 10, resp.PartialSuccess().RejectedSpans())
			msg := resp.PartialSuccess().ErrorMessage()
			require.Equal(t, "rejected 10 of 20 spans: 10 missing start or end time", msg)
			requireNoAttributeValue(t, td, msg)
			require.InDelta(t, wantTotal, s.requests(), 1e-9, "the mappable spans are counted")
		})
	}
	require.EqualValues(t, 2, s.counter(`proxylens_otlp_requests_total{transport="http",outcome="partial"}`))
	require.EqualValues(t, 20, s.counter(`proxylens_spans_refused_total{reason="no_timestamps"}`))
}

// requireNoAttributeValue checks that msg quotes no string attribute of td.
func requireNoAttributeValue(t *testing.T, td ptrace.Traces, msg string) {
	t.Helper()
	check := func(attrs pcommon.Map) {
		for k, v := range attrs.All() {
			if v.Type() == pcommon.ValueTypeStr {
				require.NotContains(t, msg, v.Str(), "attribute %s leaked", k)
			}
		}
	}
	for _, rs := range td.ResourceSpans().All() {
		check(rs.Resource().Attributes())
		for _, ss := range rs.ScopeSpans().All() {
			for _, sp := range ss.Spans().All() {
				check(sp.Attributes())
			}
		}
	}
}

// rawClientCodec sends and receives bytes as they are, so a test can put any
// bytes on the wire as an Export request.
type rawClientCodec struct{}

func (rawClientCodec) Name() string { return "proto" }

func (rawClientCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawClientCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func TestGRPCExport(t *testing.T) {
	const limit = 64 << 10
	s := startStack(t, Config{MaxRequestBytes: limit})

	t.Run("valid", func(t *testing.T) {
		td := proxySpans(50, 1)
		recs, rejected := referenceMap(testMapper(), td)
		require.Zero(t, rejected)
		want := s.requests()
		for _, r := range recs {
			want += r.Weight
		}
		resp, err := s.export(t.Context(), td)
		require.NoError(t, err)
		require.Zero(t, resp.PartialSuccess().RejectedSpans())
		require.InDelta(t, want, s.requests(), 1e-9)
	})

	t.Run("zstd", func(t *testing.T) {
		// The receiver registers gRPC's zstd compressor, which this client
		// in the same process then uses too.
		td := proxySpans(50, 4)
		recs, _ := referenceMap(testMapper(), td)
		want := s.requests()
		for _, r := range recs {
			want += r.Weight
		}
		_, err := ptraceotlp.NewGRPCClient(s.conn).Export(t.Context(), ptraceotlp.NewExportRequestFromTraces(td),
			grpc.UseCompressor("zstd"))
		require.NoError(t, err)
		require.InDelta(t, want, s.requests(), 1e-9)
	})

	t.Run("no timestamps", func(t *testing.T) {
		td := proxySpans(7, 2)
		for _, sp := range td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().All() {
			sp.SetStartTimestamp(0)
			sp.SetEndTimestamp(0)
		}
		before := s.requests()
		resp, err := s.export(t.Context(), td)
		require.NoError(t, err)
		require.EqualValues(t, 7, resp.PartialSuccess().RejectedSpans())
		require.Equal(t, "rejected 7 of 7 spans: 7 missing start or end time", resp.PartialSuccess().ErrorMessage())
		requireNoAttributeValue(t, td, resp.PartialSuccess().ErrorMessage())
		require.Equal(t, before, s.requests())
	})

	t.Run("not selected", func(t *testing.T) {
		td := ptrace.NewTraces()
		sp := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans().AppendEmpty()
		sp.SetName("SELECT")
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(testNow.Add(-2 * time.Minute)))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(testNow.Add(-time.Minute)))
		sp.Attributes().PutStr("db.system", "postgresql")
		before := s.requests()
		resp, err := s.export(t.Context(), td)
		require.NoError(t, err)
		require.Zero(t, resp.PartialSuccess().RejectedSpans(), "spans that are not proxied requests are ignored, not rejected")
		require.Equal(t, before, s.requests())
	})

	invoke := func(ctx context.Context, body []byte) ([]byte, error) {
		var resp []byte
		err := s.conn.Invoke(ctx, exportMethod, &body, &resp, grpc.ForceCodecV2(rawClientCodec{}))
		return resp, err
	}

	t.Run("malformed", func(t *testing.T) {
		for _, body := range [][]byte{
			{0x0a, 0x05, 0x0a, 0x01},       // resource_spans longer than the message
			{0x0d, 0x00, 0x00, 0x00, 0x00}, // resource_spans as a fixed32
			{0x00},                         // field 0
		} {
			_, err := invoke(t.Context(), body)
			require.Equal(t, codes.InvalidArgument, status.Code(err), "%x: %v", body, err)
			require.Contains(t, status.Convert(err).Message(), "malformed request")
			require.Nil(t, retryInfo(err), "a malformed request must not be retried")
		}
	})

	t.Run("empty", func(t *testing.T) {
		resp, err := invoke(t.Context(), nil)
		require.NoError(t, err)
		require.Empty(t, resp)
	})

	t.Run("too large", func(t *testing.T) {
		td := proxySpans(400, 3)
		require.Greater(t, len(marshal(t, td)), limit)
		before := s.requests()
		_, err := s.export(t.Context(), td)
		require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
		require.Nil(t, retryInfo(err), "RESOURCE_EXHAUSTED without RetryInfo tells the client not to retry")
		require.Equal(t, before, s.requests())
	})

	t.Run("unknown method", func(t *testing.T) {
		body := []byte{}
		var resp []byte
		err := s.conn.Invoke(t.Context(), "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
			&body, &resp, grpc.ForceCodecV2(rawClientCodec{}))
		require.Equal(t, codes.Unimplemented, status.Code(err), "%v", err)
	})

	require.EqualValues(t, 1, s.counter(`proxylens_otlp_requests_total{transport="grpc",outcome="partial"}`))
	require.EqualValues(t, 3, s.counter(`proxylens_otlp_requests_total{transport="grpc",outcome="malformed"}`))
	require.Zero(t, s.rcv.budget.inflight.Load())
}

// failingConsumer refuses every batch with err.
type failingConsumer struct{ err error }

func (c failingConsumer) Consume(context.Context, []otelanalytics.Record) error { return c.err }

// blockingConsumer holds every batch until release is closed (or the
// request's context ends), announcing each on entered.
type blockingConsumer struct {
	entered chan int
	release chan struct{}
	once    sync.Once
}

func newBlockingConsumer() *blockingConsumer {
	return &blockingConsumer{entered: make(chan int, 64), release: make(chan struct{})}
}

func (c *blockingConsumer) Consume(ctx context.Context, recs []otelanalytics.Record) error {
	select {
	case c.entered <- len(recs):
	default:
	}
	select {
	case <-c.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *blockingConsumer) unblock() { c.once.Do(func() { close(c.release) }) }

// requireRetryableHTTP checks a 503 that tells the client to retry.
func requireRetryableHTTP(t *testing.T, r reply, ctype, retryAfter string) {
	t.Helper()
	require.Equal(t, http.StatusServiceUnavailable, r.code, "body: %q", r.body)
	require.Equal(t, retryAfter, r.header.Get("Retry-After"))
	require.Equal(t, ctype, r.header.Get("Content-Type"))
	require.Equal(t, int32(codes.Unavailable), decodeStatus(t, r).GetCode())
}

// requireRetryableGRPC checks an Unavailable status with a RetryInfo detail.
func requireRetryableGRPC(t *testing.T, err error, delay time.Duration) {
	t.Helper()
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	ri := retryInfo(err)
	require.NotNil(t, ri, "Unavailable carries a RetryInfo detail")
	require.Equal(t, delay, ri.GetRetryDelay().AsDuration())
}

// TestConsumerRefusals checks the statuses of a request whose batch the
// consumer refuses: the client must retry it later.
func TestConsumerRefusals(t *testing.T) {
	body := marshal(t, proxySpans(10, 1))
	jsonReq, err := ptraceotlp.NewExportRequestFromTraces(proxySpans(10, 1)).MarshalJSON()
	require.NoError(t, err)
	cases := []struct {
		name     string
		err      error
		outcome  string
		grpcCode codes.Code // Unavailable means: with RetryInfo
	}{
		{"overloaded", otelanalytics.ErrOverloaded, "overloaded", codes.Unavailable},
		{"stopped", otelanalytics.ErrStopped, "unavailable", codes.Unavailable},
		{"store failed", fmt.Errorf("commit ingest batch: %w", errors.New("disk full")), "unavailable", codes.Unavailable},
		{"canceled", fmt.Errorf("wait: %w", context.Canceled), "unavailable", codes.Canceled},
		{"deadline", context.DeadlineExceeded, "unavailable", codes.DeadlineExceeded},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := startReceiver(t, Config{RetryAfter: 3 * time.Second}, failingConsumer{err: tc.err})

			r := s.post(t, contentProtobuf, "", body)
			requireRetryableHTTP(t, r, contentProtobuf, "3")
			require.Contains(t, decodeStatus(t, r).GetMessage(), tc.err.Error())
			r = s.post(t, "application/json", "gzip", gzipped(t, jsonReq))
			requireRetryableHTTP(t, r, contentJSON, "3")

			_, err := s.export(t.Context(), proxySpans(10, 1))
			if tc.grpcCode == codes.Unavailable {
				requireRetryableGRPC(t, err, 3*time.Second)
			} else {
				require.Equal(t, tc.grpcCode, status.Code(err), "%v", err)
			}
			require.Contains(t, status.Convert(err).Message(), tc.err.Error())

			require.EqualValues(t, 2, s.counter(fmt.Sprintf(`proxylens_otlp_requests_total{transport="http",outcome=%q}`, tc.outcome)))
			require.EqualValues(t, 1, s.counter(fmt.Sprintf(`proxylens_otlp_requests_total{transport="grpc",outcome=%q}`, tc.outcome)))
			reason := "unavailable"
			if tc.outcome == "overloaded" {
				reason = "overloaded"
			}
			require.EqualValues(t, 30, s.counter(fmt.Sprintf(`proxylens_spans_refused_total{reason=%q}`, reason)))
		})
	}
}

// TestPipelineStopped refuses requests as retryable once the real pipeline
// has stopped, as during shutdown.
func TestPipelineStopped(t *testing.T) {
	s := startStack(t, Config{})
	require.NoError(t, s.pipe.Shutdown(t.Context()))

	r := s.post(t, contentProtobuf, "", marshal(t, proxySpans(5, 1)))
	requireRetryableHTTP(t, r, contentProtobuf, "1")
	require.Contains(t, decodeStatus(t, r).GetMessage(), otelanalytics.ErrStopped.Error())

	_, err := s.export(t.Context(), proxySpans(5, 2))
	requireRetryableGRPC(t, err, time.Second)

	// The SDK exporter reports the refusal (retries are off).
	exp, err := otlptracehttp.New(t.Context(), otlptracehttp.WithEndpoint(s.rcv.HTTPAddr().String()), otlptracehttp.WithInsecure(), noRetryHTTP)
	require.NoError(t, err)
	defer func() { require.NoError(t, exp.Shutdown(context.Background())) }()
	err = exp.ExportSpans(t.Context(), sdkSpans(3, 1))
	require.ErrorContains(t, err, "retry-able request failure")
	require.ErrorContains(t, err, otelanalytics.ErrStopped.Error())
	require.Zero(t, s.requests())
}

// TestInflightBytesBound holds one request inside the consumer and checks
// that a second one is refused as retryable while the in-flight bound is
// reached, and that the first succeeds once released.
func TestInflightBytesBound(t *testing.T) {
	td := proxySpans(8, 1)
	body := marshal(t, td)
	require.Greater(t, len(body), 2048, "two requests pass the 4096-byte bound")

	type result struct {
		code int
		err  error
	}
	hold := map[string]func(s *server, ctx context.Context) result{
		"http": func(s *server, ctx context.Context) result {
			r, err := s.send(ctx, http.MethodPost, contentProtobuf, "", body, false)
			return result{code: r.code, err: err}
		},
		"grpc": func(s *server, ctx context.Context) result {
			_, err := s.export(ctx, td)
			return result{code: int(status.Code(err)), err: err}
		},
	}
	for _, first := range []string{"http", "grpc"} {
		for _, second := range []string{"http", "grpc"} {
			t.Run(first+"+"+second, func(t *testing.T) {
				c := newBlockingConsumer()
				s := startReceiver(t, Config{MaxInflightBytes: 4096}, c)
				t.Cleanup(c.unblock) // runs before the receiver's shutdown

				done := make(chan result, 1)
				go func() { done <- hold[first](s, t.Context()) }()
				require.Equal(t, 8, <-c.entered, "the first request is inside the consumer")
				require.Positive(t, s.rcv.budget.inflight.Load())

				switch second {
				case "http":
					requireRetryableHTTP(t, s.post(t, contentProtobuf, "", body), contentProtobuf, "1")
				case "grpc":
					_, err := s.export(t.Context(), td)
					requireRetryableGRPC(t, err, time.Second)
				}
				require.Empty(t, c.entered, "the refused request never reached the consumer")

				c.unblock()
				res := <-done
				require.NoError(t, res.err)
				if first == "http" {
					require.Equal(t, http.StatusOK, res.code)
				}
				require.Zero(t, s.rcv.budget.inflight.Load())

				// With the first request gone, both transports are served again.
				require.Equal(t, http.StatusOK, s.post(t, contentProtobuf, "", body).code)
				_, err := s.export(t.Context(), td)
				require.NoError(t, err)
				require.EqualValues(t, 1, s.counter(fmt.Sprintf(`proxylens_otlp_requests_total{transport=%q,outcome="overloaded"}`, second)))
			})
		}
	}
}

// TestInflightBytesSingleLargeRequest checks that a request larger than the
// in-flight bound is still taken when nothing else is in flight.
func TestInflightBytesSingleLargeRequest(t *testing.T) {
	s := startStack(t, Config{MaxInflightBytes: 4096})
	td := proxySpans(100, 1)
	require.Greater(t, len(marshal(t, td)), 4096)
	require.Equal(t, http.StatusOK, s.post(t, contentProtobuf, "", marshal(t, td)).code)
	_, err := s.export(t.Context(), td)
	require.NoError(t, err)
	require.Positive(t, s.requests())
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

// pb builds protobuf messages field by field, so tests can send what pdata
// would never write: unknown fields of every wire type, groups, deprecated
// fields, entity refs.
type pb []byte

func (b pb) bytes(f protowire.Number, v []byte) pb {
	return protowire.AppendBytes(protowire.AppendTag(b, f, protowire.BytesType), v)
}

func (b pb) msg(f protowire.Number, m pb) pb     { return b.bytes(f, m) }
func (b pb) str(f protowire.Number, v string) pb { return b.bytes(f, []byte(v)) }

func (b pb) varint(f protowire.Number, v uint64) pb {
	return protowire.AppendVarint(protowire.AppendTag(b, f, protowire.VarintType), v)
}

func (b pb) fixed64(f protowire.Number, v uint64) pb {
	return protowire.AppendFixed64(protowire.AppendTag(b, f, protowire.Fixed64Type), v)
}

func (b pb) fixed32(f protowire.Number, v uint32) pb {
	return protowire.AppendFixed32(protowire.AppendTag(b, f, protowire.Fixed32Type), v)
}

func (b pb) group(f protowire.Number, inner pb) pb {
	b = append(protowire.AppendTag(b, f, protowire.StartGroupType), inner...)
	return protowire.AppendTag(b, f, protowire.EndGroupType)
}

// unknown appends fields of every wire type that no OTLP message defines.
func (b pb) unknown() pb {
	// pdata skips a group only up to its first scalar field, and not at the
	// end of a message (the decoder does as pdata does), so the group holds
	// only a group and comes first.
	return b.group(905, pb{}.group(906, nil)).varint(901, 7).fixed64(902, 8).str(903, "x").fixed32(904, 9)
}

func kv(key string, value pb) pb { return pb{}.str(1, key).msg(2, value) }

func strVal(s string) pb { return pb{}.str(1, s) }

func intVal(i int64) pb { return pb{}.varint(3, uint64(i)) }

// richRequest is an export request that uses every field of the trace
// protocol, and some that are unknown to it.
func richRequest() []byte {
	end := uint64(testNow.Add(-time.Minute).UnixNano())
	nested := pb{}.msg(1, strVal("a")).msg(1, intVal(1)).
		msg(1, pb{}.msg(6, pb{}.msg(1, kv("k", pb{}.bytes(7, []byte{0, 1}))))) // array of string, int, kvlist
	resource := pb{}.
		msg(1, kv("service.name", strVal("crawler"))).
		msg(1, kv("proxy.tier", strVal("premium"))).
		msg(1, kv("host.cores", intVal(8))).
		msg(1, kv("ratio", pb{}.fixed64(4, 0x3fe0000000000000))).
		msg(1, kv("enabled", pb{}.varint(2, 1))).
		msg(1, kv("tags", pb{}.msg(5, nested))).
		msg(1, kv("meta", pb{}.msg(6, pb{}.msg(1, kv("inner", pb{}.msg(6, pb{}.msg(1, kv("deep", strVal("d"))))))))).
		msg(1, kv("blob", pb{}.bytes(7, []byte{0, 1, 2}))).
		msg(1, kv("string_index", pb{}.varint(8, 3))).
		msg(1, kv("empty", pb{})).
		msg(1, pb{}.varint(3, 4).msg(2, strVal("by string index"))).
		varint(2, 3).
		msg(3, pb{}.str(1, "https://opentelemetry.io/schemas/1.30.0").str(2, "host").str(3, "host.name").str(4, "host.arch").unknown()).
		unknown()
	scope := pb{}.str(1, "proxyclient").str(2, "1.2.0").msg(3, kv("scope.attr", strVal("v"))).varint(4, 1).unknown()
	span := func(id byte, attrs ...pb) pb {
		sp := pb{}.
			bytes(1, bytes.Repeat([]byte{id}, 16)).
			bytes(2, bytes.Repeat([]byte{id}, 8)).
			str(3, "ot=th:c;rv:abcdef01234567,vendor=x").
			bytes(4, bytes.Repeat([]byte{id + 1}, 8)).
			str(5, "GET").
			varint(6, 3).
			fixed64(7, end-uint64(id)*uint64(time.Millisecond)).
			fixed64(8, end)
		for _, a := range attrs {
			sp = sp.msg(9, a)
		}
		return sp.
			varint(10, 1).
			msg(11, pb{}.fixed64(1, end).str(2, "retry").msg(3, kv("attempt", intVal(2))).varint(4, 1).unknown()).
			varint(12, 1).
			msg(13, pb{}.bytes(1, bytes.Repeat([]byte{9}, 16)).bytes(2, bytes.Repeat([]byte{9}, 8)).str(3, "k=v").
				msg(4, kv("link.attr", strVal("l"))).varint(5, 1).fixed32(6, 1).unknown()).
			varint(14, 1).
			msg(15, pb{}.str(2, "upstream closed").varint(3, 2).unknown()).
			fixed32(16, 0x301).
			unknown()
	}
	proxyAttrs := []pb{
		kv("proxy.source", strVal("brightdata")),
		kv("proxy.url", strVal("http://user:s3cret@10.0.0.1:8080")),
		kv("url.full", strVal("https://shop.example.com/p?token=s3cret")),
		kv("http.request.method", strVal("POST")),
		kv("http.response.status_code", intVal(502)),
		kv("http.response.body.size", intVal(512)),
		kv("error.type", strVal("bad_gateway")),
	}
	noTimes := pb{}.bytes(1, bytes.Repeat([]byte{7}, 16)).bytes(2, bytes.Repeat([]byte{7}, 8)).msg(9, proxyAttrs[0])
	notSelected := span(3, kv("db.system", strVal("postgresql")))

	current := pb{}.msg(1, scope).msg(2, span(1, proxyAttrs...)).msg(2, noTimes).msg(2, notSelected).
		str(3, "https://opentelemetry.io/schemas/1.30.0").unknown()
	deprecated := pb{}.msg(1, scope).msg(2, span(4, proxyAttrs[:2]...))
	return pb{}.
		// A resource after its scope spans: its attributes still apply.
		msg(1, pb{}.msg(2, current).msg(1, resource).str(3, "https://opentelemetry.io/schemas/1.30.0").unknown()).
		// Deprecated scope spans alone are mapped...
		msg(1, pb{}.msg(1000, deprecated)).
		// ...and only validated when current ones are present.
		msg(1, pb{}.msg(1000, deprecated).msg(2, pb{}.msg(2, span(5, proxyAttrs[:1]...)))).
		unknown()
}

// recordingConsumer keeps a copy of every record it is given.
type recordingConsumer struct {
	mu   sync.Mutex
	recs []otelanalytics.Record
}

func (c *recordingConsumer) Consume(_ context.Context, recs []otelanalytics.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range recs {
		s := r.Strings()
		for i := range s {
			s[i] = strings.Clone(s[i])
		}
		r.SetStrings(&s)
		c.recs = append(c.recs, r)
	}
	return nil
}

func (c *recordingConsumer) take() []otelanalytics.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	recs := c.recs
	c.recs = nil
	return recs
}

// TestRichRequest sends a request that uses every field of the protocol
// over both transports: the receiver maps it as pdata's view of the same
// bytes is mapped.
func TestRichRequest(t *testing.T) {
	c := &recordingConsumer{}
	s := startReceiver(t, Config{}, c)
	body := richRequest()
	req := ptraceotlp.NewExportRequest()
	require.NoError(t, req.UnmarshalProto(body), "pdata accepts the request")
	want, wantRejected := referenceMap(testMapper(), req.Traces())
	require.Len(t, want, 3)
	require.Equal(t, 1, wantRejected)

	r := s.post(t, contentProtobuf, "", body)
	require.Equal(t, http.StatusOK, r.code, "body: %q", r.body)
	require.EqualValues(t, 1, decodeResponse(t, r).PartialSuccess().RejectedSpans())
	require.Equal(t, want, c.take())

	var resp []byte
	require.NoError(t, s.conn.Invoke(t.Context(), exportMethod, &body, &resp, grpc.ForceCodecV2(rawClientCodec{})))
	pr := ptraceotlp.NewExportResponse()
	require.NoError(t, pr.UnmarshalProto(resp))
	require.EqualValues(t, 1, pr.PartialSuccess().RejectedSpans())
	require.Equal(t, want, c.take())

	// The same request as OTLP/JSON goes through pdata first.
	js, err := req.MarshalJSON()
	require.NoError(t, err)
	r = s.post(t, contentJSON, "", js)
	require.Equal(t, http.StatusOK, r.code, "body: %q", r.body)
	require.EqualValues(t, 1, decodeResponse(t, r).PartialSuccess().RejectedSpans())
	require.Len(t, c.take(), 3)
}

// TestMutatedRequests sends every truncation and many single-byte
// corruptions of a rich request, every eighth over gRPC: the receiver must
// refuse exactly what pdata refuses (400 / InvalidArgument) and map the rest
// as pdata's view of it is mapped.
func TestMutatedRequests(t *testing.T) {
	c := &recordingConsumer{}
	s := startReceiver(t, Config{}, c)
	base := richRequest()
	var bodies [][]byte
	for n := range len(base) {
		bodies = append(bodies, base[:n])
	}
	for i := range base {
		b := slices.Clone(base)
		b[i] ^= 0xff
		bodies = append(bodies, b)
		if i%3 == 0 {
			b = slices.Clone(base)
			b[i]++
			bodies = append(bodies, b)
		}
	}
	// Nesting at pdata's recursion limit and past it.
	for _, depth := range []int{98, 99, 100, 101} {
		v := strVal("leaf")
		for range depth {
			v = pb{}.msg(5, pb{}.msg(1, v))
		}
		attr := kv("nested", v)
		bodies = append(bodies, pb{}.msg(1, pb{}.msg(2, pb{}.msg(2, pb{}.msg(9, attr)))))
	}

	m := testMapper()
	refused := 0
	for i, body := range bodies {
		req := ptraceotlp.NewExportRequest()
		perr := req.UnmarshalProto(body)
		var rejected int64
		if i%8 != 1 {
			// Every eighth body crosses the loopback HTTP connection, most
			// go straight to the handler, to keep the test fast.
			var r reply
			if i%8 == 0 {
				r = s.post(t, contentProtobuf, "", body)
			} else {
				req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/v1/traces", bytes.NewReader(body))
				req.Header.Set("Content-Type", contentProtobuf)
				rec := httptest.NewRecorder()
				s.rcv.ServeTraces(rec, req)
				r = reply{code: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
			}
			if perr != nil {
				require.Equal(t, http.StatusBadRequest, r.code, "body %d %x: pdata refuses it: %v", i, body, perr)
				refused++
				continue
			}
			require.Equal(t, http.StatusOK, r.code, "body %d %x: %q", i, body, r.body)
			rejected = decodeResponse(t, r).PartialSuccess().RejectedSpans()
		} else {
			var resp []byte
			err := s.conn.Invoke(t.Context(), exportMethod, &body, &resp, grpc.ForceCodecV2(rawClientCodec{}))
			if perr != nil {
				require.Equal(t, codes.InvalidArgument, status.Code(err), "body %d %x: pdata refuses it: %v", i, body, perr)
				refused++
				continue
			}
			require.NoError(t, err, "body %d %x", i, body)
			pr := ptraceotlp.NewExportResponse()
			require.NoError(t, pr.UnmarshalProto(resp))
			rejected = pr.PartialSuccess().RejectedSpans()
		}
		want, wantRejected := referenceMap(m, req.Traces())
		require.EqualValues(t, wantRejected, rejected, "body %d %x", i, body)
		got := c.take()
		require.Len(t, got, len(want), "body %d %x", i, body)
		for j := range want {
			if math.IsNaN(want[j].Weight) {
				require.True(t, math.IsNaN(got[j].Weight))
				got[j].Weight = want[j].Weight
			}
			require.Equal(t, want[j], got[j], "body %d %x", i, body)
		}
	}
	require.Positive(t, refused)
	require.Less(t, refused, len(bodies))
}
