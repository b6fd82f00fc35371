package receiver

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
)

// slowUpload opens a connection that announces a body of announced bytes
// to path and sends only its first byte.
func slowUpload(t *testing.T, addr, path string, announced int) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	_, err = fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-protobuf\r\nContent-Length: %d\r\n\r\n\x0a",
		path, addr, announced)
	require.NoError(t, err)
	return c
}

// requireCutOff reads the answer to a slow upload: 408 saying which bound
// it hit, then the end of the connection.
func requireCutOff(t *testing.T, c net.Conn) {
	t.Helper()
	// A bound for a broken server, not a timing assertion: the server's
	// read timeout in these tests is one second.
	require.NoError(t, c.SetReadDeadline(time.Now().Add(30*time.Second)))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusRequestTimeout, resp.StatusCode, "body: %q", body)
	require.Contains(t, string(body), "receiver.read_timeout")
	_, err = br.ReadByte()
	require.ErrorIs(t, err, io.EOF, "the server closed the connection")
}

// TestSlowUploadsDoNotStarveExports reproduces attack 1 of issue 17: four
// connections announce bodies of 64 MiB - 1 (a buffer of 64 MiB each with
// room to see the end: together the whole default in-flight budget, which
// the receiver reserved up front) and trickle them a byte at a time.
// Real OTLP exporters, over HTTP and gRPC, keep being served meanwhile, and
// the slow uploads are cut off after the read timeout.
func TestSlowUploadsDoNotStarveExports(t *testing.T) {
	s := startStack(t, Config{ReadTimeout: time.Second})
	addr := s.rcv.HTTPAddr().String()
	var slow []net.Conn
	for range 4 {
		slow = append(slow, slowUpload(t, addr, "/v1/traces", 64<<20-1))
	}
	// Each slow upload holds a first chunk of the budget, not 64 MiB.
	require.Eventually(t, func() bool { return s.rcv.budget.inflight.Load() == 4*readChunk },
		10*time.Second, time.Millisecond)

	httpExp, err := otlptracehttp.New(t.Context(), otlptracehttp.WithEndpoint(addr), otlptracehttp.WithInsecure(), noRetryHTTP)
	require.NoError(t, err)
	grpcExp, err := otlptracegrpc.New(t.Context(), otlptracegrpc.WithEndpoint(s.grpcAddr), otlptracegrpc.WithInsecure(), noRetryGRPC)
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, httpExp.Shutdown(context.Background()))
		require.NoError(t, grpcExp.Shutdown(context.Background()))
	})
	for i := range 5 {
		require.NoError(t, httpExp.ExportSpans(t.Context(), sdkSpans(20, uint64(2*i+1))), "OTLP/HTTP export %d", i)
		require.NoError(t, grpcExp.ExportSpans(t.Context(), sdkSpans(20, uint64(2*i+2))), "OTLP/gRPC export %d", i)
		for _, c := range slow { // the trickle goes on
			_, err := c.Write([]byte{0})
			require.NoError(t, err)
		}
	}
	require.Equal(t, float64(200), s.requests(), "every acknowledged span is counted")
	require.Zero(t, s.counter(`proxylens_otlp_requests_total{transport="http",outcome="overloaded"}`))
	require.Zero(t, s.counter(`proxylens_otlp_requests_total{transport="grpc",outcome="overloaded"}`))

	for _, c := range slow {
		requireCutOff(t, c)
	}
	require.EqualValues(t, 4, s.counter(`proxylens_http_read_timeouts_total{listener="otlp_http"}`))
	require.Eventually(t, func() bool { return s.rcv.budget.inflight.Load() == 0 }, 10*time.Second, time.Millisecond)
	require.NoError(t, httpExp.ExportSpans(t.Context(), sdkSpans(20, 99)), "served after the slow uploads are gone")
}

// TestFastStalledUploadsKeepHalfTheBudget: uploads that send much of a
// large body quickly and then stall hold what they sent, but bodies still
// arriving hold at most half of the budget between them, so gRPC exports
// (whose messages are complete when they are reserved) are still served.
func TestFastStalledUploadsKeepHalfTheBudget(t *testing.T) {
	const budget = 1 << 20
	s := startStack(t, Config{MaxInflightBytes: budget, ReadTimeout: time.Second})
	addr := s.rcv.HTTPAddr().String()
	// Each sends an eighth of the budget and stalls, holding a quarter
	// (its reservation grows ahead of what arrived, doubling); the third
	// finds half the budget taken by bodies still arriving and is refused.
	var stalled []net.Conn
	for i := range 3 {
		c := slowUpload(t, addr, "/v1/traces", 2*budget)
		_, err := c.Write(make([]byte, budget/8))
		require.NoError(t, err)
		stalled = append(stalled, c)
		if i < 2 {
			require.Eventually(t, func() bool { return s.rcv.budget.arriving.Load() == int64(i+1)*budget/4 },
				10*time.Second, time.Millisecond)
		}
	}
	require.Eventually(t, func() bool {
		return s.counter(`proxylens_otlp_requests_total{transport="http",outcome="overloaded"}`) == 1
	}, 10*time.Second, time.Millisecond)
	require.Equal(t, int64(budget/2), s.rcv.budget.arriving.Load())

	_, err := s.export(t.Context(), proxySpans(50, 1))
	require.NoError(t, err, "gRPC exports have the other half")
	require.Positive(t, s.requests())

	answers := 0
	for _, c := range stalled {
		require.NoError(t, c.SetReadDeadline(time.Now().Add(30*time.Second)))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		require.Contains(t, []int{http.StatusServiceUnavailable, http.StatusRequestTimeout}, resp.StatusCode)
		answers++
	}
	require.Equal(t, 3, answers)
	require.Eventually(t, func() bool { return s.rcv.budget.inflight.Load() == 0 }, 10*time.Second, time.Millisecond)
}

// TestBoundReadsLeavesLongHandlers: the read deadline ends with the body,
// so a handler that works longer than the read timeout after reading its
// body (a long query, a streamed export) is neither canceled nor cut off,
// and requests without a body get no deadline at all.
func TestBoundReadsLeavesLongHandlers(t *testing.T) {
	const timeout = 50 * time.Millisecond
	h := BoundReads(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		// The handler's work outlasts the read timeout several times.
		select {
		case <-time.After(4 * timeout):
		case <-req.Context().Done():
			http.Error(w, "canceled", http.StatusInternalServerError)
			return
		}
		_, _ = fmt.Fprintf(w, "read %d bytes", len(body))
	}), timeout, nil, "test")
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	for _, method := range []string{http.MethodPost, http.MethodGet} {
		var body io.Reader
		if method == http.MethodPost {
			body = strings.NewReader("query=up")
		}
		req, err := http.NewRequestWithContext(t.Context(), method, srv.URL, body)
		require.NoError(t, err)
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", method, b)
	}

	// A body that does not arrive in time is refused.
	c := slowUpload(t, srv.Listener.Addr().String(), "/", 1000)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(30*time.Second)))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, string(b), "request body not received in time")
}
