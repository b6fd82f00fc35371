package receiver

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc/codes"

	"github.com/proxylens/proxylens/otelanalytics"
)

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
