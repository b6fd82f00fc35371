package receiver

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/peer"

	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/selfmetrics"
)

// stalledGRPCCalls opens a connection to a gRPC server and starts n OTLP
// trace exports on it, each with a message that announces a mebibyte and
// sends its first kilobyte, and stalls.
func stalledGRPCCalls(t *testing.T, addr string, n int) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	_, err = io.WriteString(c, http2.ClientPreface)
	require.NoError(t, err)
	fr := http2.NewFramer(c, c)
	require.NoError(t, fr.WriteSettings())
	var hdr bytes.Buffer
	enc := hpack.NewEncoder(&hdr)
	for _, f := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":authority", addr},
		{":path", "/opentelemetry.proto.collector.trace.v1.TraceService/Export"},
		{"content-type", "application/grpc"}, {"te", "trailers"},
	} {
		require.NoError(t, enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}))
	}
	for i := range n {
		id := uint32(2*i + 1)
		require.NoError(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hdr.Bytes(), EndHeaders: true}))
		// A gRPC message: uncompressed, 1 MiB long; then its first 1 KiB.
		msg := append([]byte{0, 0, 0x10, 0, 0}, make([]byte, 1024)...)
		require.NoError(t, fr.WriteData(id, false, msg))
	}
	return c
}

// TestStalledGRPCCallsAreCutOff: an OTLP/gRPC call whose message does not
// arrive within the read timeout has its connection closed, counted once
// a connection in proxylens_http_read_timeouts_total{listener="otlp_grpc"}
// however many of its calls stall, while another
// client's connection is served before, meanwhile and after, and is not
// cut off by the timeouts of its own calls, whose messages arrived.
func TestStalledGRPCCallsAreCutOff(t *testing.T) {
	s := startStack(t, Config{ReadTimeout: time.Second})
	exp, err := otlptracegrpc.New(t.Context(), otlptracegrpc.WithEndpoint(s.grpcAddr), otlptracegrpc.WithInsecure(), noRetryGRPC)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, exp.Shutdown(context.Background())) })
	require.NoError(t, exp.ExportSpans(t.Context(), sdkSpans(20, 1)))

	stalled := []net.Conn{stalledGRPCCalls(t, s.grpcAddr, 1), stalledGRPCCalls(t, s.grpcAddr, 3)}
	require.NoError(t, exp.ExportSpans(t.Context(), sdkSpans(20, 2)), "served while calls stall")
	for i, c := range stalled {
		// A bound for a broken server, not a timing assertion: the read
		// timeout is one second.
		require.NoError(t, c.SetReadDeadline(time.Now().Add(30*time.Second)))
		_, err := io.Copy(io.Discard, c) // the server's frames, to the end
		require.False(t, errors.Is(err, os.ErrDeadlineExceeded), "stalled call %d: its connection is still open", i)
		if err != nil {
			require.ErrorIs(t, err, syscall.ECONNRESET, "stalled call %d", i)
		}
	}
	require.EqualValues(t, 2, s.counter(`proxylens_http_read_timeouts_total{listener="otlp_grpc"}`))
	require.Zero(t, s.rcv.budget.inflight.Load())

	// Past the read timeout of the exports above: had their timers not
	// been stopped, they would have closed the exporter's connection.
	time.Sleep(1500 * time.Millisecond)
	require.NoError(t, exp.ExportSpans(t.Context(), sdkSpans(20, 3)), "served after, on the same connection")
	require.Equal(t, float64(60), s.requests())
	require.EqualValues(t, 2, s.counter(`proxylens_http_read_timeouts_total{listener="otlp_grpc"}`),
		"calls whose message arrived are not cut off")
}

// trackingListener listens on loopback, adding what it accepts to conns.
func trackingListener(t *testing.T, conns *grpcConns) grpcListener {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = inner.Close() })
	return grpcListener{Listener: inner, conns: conns}
}

// dialTracked opens a connection to ln and returns both of its ends.
func dialTracked(t *testing.T, ln grpcListener) (client, server net.Conn) {
	t.Helper()
	client, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Close() })
	server, err = ln.Accept()
	require.NoError(t, err)
	return client, server
}

// TestGRPCConnsForgetClosedConnections: the table of the gRPC listener's
// connections holds them weakly, so connections closed and dropped (a
// client gone, a failed handshake) leave it: it is bounded by the
// connections alive.
func TestGRPCConnsForgetClosedConnections(t *testing.T) {
	conns := &grpcConns{}
	ln := trackingListener(t, conns)
	size := func() int {
		conns.mu.Lock()
		defer conns.mu.Unlock()
		return len(conns.m)
	}

	const n = 20
	var kept net.Conn
	for i := range n {
		_, c := dialTracked(t, ln)
		if i == 0 {
			kept = c
			continue
		}
		require.NoError(t, c.Close())
	}
	require.Equal(t, n, size())
	require.Eventually(t, func() bool {
		runtime.GC()
		return size() == 1
	}, 10*time.Second, 10*time.Millisecond)
	ends, ok := endsOf(kept.LocalAddr(), kept.RemoteAddr())
	require.True(t, ok)
	require.Same(t, kept, conns.m[ends].conn.Value())
	require.NoError(t, kept.Close())
}

// TestGRPCReadTimeoutOncePerConnection: when several calls of a connection
// time out, the connection is closed, counted and logged once.
func TestGRPCReadTimeoutOncePerConnection(t *testing.T) {
	reg := selfmetrics.New()
	r, err := New(Config{ReadTimeout: time.Second}, otelanalytics.NewMapper(otelanalytics.MappingConfig{}, nil), nil, reg, nil)
	require.NoError(t, err)
	r.cfg.ReadTimeout = 10 * time.Millisecond // below what Config allows, for a short test
	r.m.grpcReadTimeouts = readTimeouts(reg, "otlp_grpc")
	r.grpcConns = &grpcConns{}
	client, c := dialTracked(t, trackingListener(t, r.grpcConns))
	ctx := peer.NewContext(t.Context(), &peer.Peer{Addr: c.RemoteAddr(), LocalAddr: c.LocalAddr()})

	var timers []*time.Timer
	for range 3 {
		tm := r.boundGRPCRead(ctx)
		require.NotNil(t, tm)
		timers = append(timers, tm)
	}
	require.NoError(t, client.SetReadDeadline(time.Now().Add(30*time.Second)))
	_, err = client.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF, "the server side closed the connection")
	// The other timers, due at the same moment, fire too (on a machine
	// that delays them past this wait the test sees less, never fails).
	time.Sleep(200 * time.Millisecond)
	fired := 0
	for _, tm := range timers {
		if !tm.Stop() {
			fired++
		}
	}
	require.Positive(t, fired)
	require.EqualValues(t, 1, r.m.grpcReadTimeouts.Get())
}
