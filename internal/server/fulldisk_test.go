package server

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/prometheus/prompb"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/proxylens/proxylens/pebblestore"
)

// exportRequest is the OTLP request of stubs, as an SDK exporter builds it.
func exportRequest(stubs ...tracetest.SpanStub) ptraceotlp.ExportRequest {
	td := ptrace.NewTraces()
	ss := td.ResourceSpans().AppendEmpty()
	ss.Resource().Attributes().PutStr("service.name", "crawler")
	spans := ss.ScopeSpans().AppendEmpty().Spans()
	for _, st := range stubs {
		sp := spans.AppendEmpty()
		sp.SetName(st.Name)
		sp.SetKind(ptrace.SpanKindClient)
		sp.SetTraceID(pcommon.TraceID(st.SpanContext.TraceID()))
		sp.SetSpanID(pcommon.SpanID(st.SpanContext.SpanID()))
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(st.StartTime))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(st.EndTime))
		for _, kv := range st.Attributes {
			if kv.Value.Type() == attribute.INT64 {
				sp.Attributes().PutInt(string(kv.Key), kv.Value.AsInt64())
			} else {
				sp.Attributes().PutStr(string(kv.Key), kv.Value.AsString())
			}
		}
	}
	return ptraceotlp.NewExportRequestFromTraces(td)
}

// postOTLP posts req to the OTLP/HTTP receiver and returns the status and
// the Retry-After header.
func postOTLP(t *testing.T, s *Server, req ptraceotlp.ExportRequest) (int, string) {
	t.Helper()
	body, err := req.MarshalProto()
	require.NoError(t, err)
	r, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+s.OTLPHTTPAddr().String()+"/v1/traces", bytes.NewReader(body))
	require.NoError(t, err)
	r.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := http.DefaultClient.Do(r)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// postRemoteWrite sends one sample of node_load1 and returns the status
// and the Retry-After header.
func postRemoteWrite(t *testing.T, s *Server, ts time.Time, v float64) (int, string) {
	t.Helper()
	raw, err := (&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: "node_load1"}, {Name: "instance", Value: "a"}},
		Samples: []prompb.Sample{{Timestamp: ts.UnixMilli(), Value: v}},
	}}}).Marshal()
	require.NoError(t, err)
	r, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+s.HTTPAddr().String()+"/api/v1/write", bytes.NewReader(snappy.Encode(nil, raw)))
	require.NoError(t, err)
	r.Header.Set("Content-Encoding", "snappy")
	r.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := http.DefaultClient.Do(r)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// metricValue returns the value /metrics gives the line that starts with
// name, or "" if there is none.
func metricValue(t *testing.T, s *Server, name string) string {
	t.Helper()
	_, body, _ := get(t, "http://"+s.HTTPAddr().String()+"/metrics")
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, name+" ") {
			return line[len(name)+1:]
		}
	}
	return ""
}

// TestFullDiskRefusesAndResumes is the full-disk attack of issue 17
// against the real server, the free space driven full → free → full:
// while it is under storage.min_free_disk_bytes, exports over OTLP/HTTP
// and OTLP/gRPC and remote writes are refused as retryable (503 with
// Retry-After, gRPC Unavailable with RetryInfo), cuts wait, /-/ready
// answers 503 with the reason, proxylens_storage_read_only is 1, and
// queries answer; once space is back everything resumes without a
// restart, and every span acknowledged before and after is counted
// exactly once, through the PromQL API, across cuts.
func TestFullDiskRefusesAndResumes(t *testing.T) {
	var free atomic.Uint64
	free.Store(10 << 30)
	cfg := testConfig(t)
	cfg.Storage.MinFreeDiskBytes = 256 << 20
	s := start(t, cfg, Options{
		FreeDiskBytes:     func(string) (uint64, error) { return free.Load(), nil },
		DiskCheckInterval: 5 * time.Millisecond,
	})
	base := "http://" + s.HTTPAddr().String()
	p := queryClient(t, s)
	end := time.Now().Add(-time.Second)
	at := end.Truncate(time.Hour).Add(time.Hour)
	spans := func(from, n int) []tracetest.SpanStub { return spansEnding(from, n, end) }
	conn, err := grpc.NewClient(s.OTLPGRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	grpcClient := ptraceotlp.NewGRPCClient(conn)
	ready := func() (int, string) {
		code, body, _ := get(t, base+"/-/ready")
		return code, body
	}
	requireRefused := func() {
		t.Helper()
		code, retry := postOTLP(t, s, exportRequest(spans(1000, 5)...))
		require.Equal(t, http.StatusServiceUnavailable, code)
		require.Equal(t, "1", retry, "the receiver's retry_after")
		_, err := grpcClient.Export(t.Context(), exportRequest(spans(2000, 5)...))
		st, _ := status.FromError(err)
		require.Equal(t, codes.Unavailable, st.Code(), "%v", err)
		require.Contains(t, st.Message(), "disk space low")
		require.Len(t, st.Details(), 1)
		require.IsType(t, &errdetails.RetryInfo{}, st.Details()[0])
		code, retry = postRemoteWrite(t, s, time.Now(), 9)
		require.Equal(t, http.StatusServiceUnavailable, code)
		require.Equal(t, "1", retry, "the receiver's retry_after")
		require.ErrorIs(t, s.Pipeline().Flush(), pebblestore.ErrDiskFull, "the cut waits")
	}

	code, _ := ready()
	require.Equal(t, http.StatusOK, code)
	exportGRPC(t, s, spans(0, 10)...)
	require.NoError(t, s.Pipeline().Flush())
	exportHTTP(t, s, spans(10, 5)...)
	code, _ = postRemoteWrite(t, s, time.Now().Add(-time.Minute), 1)
	require.Equal(t, http.StatusNoContent, code)

	for round := range 2 {
		free.Store(100 << 20)
		require.Eventually(t, func() bool { c, _ := ready(); return c == http.StatusServiceUnavailable }, 10*time.Second, 5*time.Millisecond)
		_, body := ready()
		require.Contains(t, body, "100.0 MiB free on the data disk, below the 256.0 MiB bound")
		require.Equal(t, "1", metricValue(t, s, "proxylens_storage_read_only"))
		require.Equal(t, "1.048576e+08", metricValue(t, s, "proxylens_storage_free_bytes"))
		requireRefused()
		require.Equal(t, float64(15+round*10), scalarAt(t, p, `sum(proxy_requests_total)`, at), "queries answer while read-only")

		// Above the bound, under a quarter more: still read-only.
		free.Store(300 << 20)
		require.ErrorIs(t, s.store.CheckDisk(), pebblestore.ErrDiskFull, "resumes at 320 MiB")
		requireRefused()

		free.Store(10 << 30)
		require.Eventually(t, func() bool { c, _ := ready(); return c == http.StatusOK }, 10*time.Second, 5*time.Millisecond)
		require.Equal(t, "0", metricValue(t, s, "proxylens_storage_read_only"))
		exportGRPC(t, s, spans(100+round*10, 5)...)
		exportHTTP(t, s, spans(105+round*10, 5)...)
		code, _ = postRemoteWrite(t, s, time.Now(), float64(round+2))
		require.Equal(t, http.StatusNoContent, code)
		require.NoError(t, s.Pipeline().Flush())
		want := float64(25 + round*10)
		require.Equal(t, want, scalarAt(t, p, `sum(proxy_requests_total)`, at), "every acknowledged span once, no refused one")
	}
	require.NotEqual(t, "0", metricValue(t, s, "proxylens_storage_writes_refused_total"))
	require.Equal(t, 3.0, scalarAt(t, p, `count_over_time(node_load1[1h])`, time.Now()), "the acknowledged remote writes")
}

// TestFullDiskAtStart: a server stopped while the disk was full (its last
// batches in the journal only, the final cut postponed) starts again with
// the disk still full: it serves queries, counting the journal's batches,
// is not ready, and refuses ingest; once space is back it cuts and takes
// exports without a restart, and nothing acknowledged is lost.
func TestFullDiskAtStart(t *testing.T) {
	var free atomic.Uint64
	free.Store(10 << 30)
	cfg := testConfig(t)
	cfg.Storage.MinFreeDiskBytes = 256 << 20
	opts := Options{
		FreeDiskBytes:     func(string) (uint64, error) { return free.Load(), nil },
		DiskCheckInterval: 5 * time.Millisecond,
	}
	end := time.Now().Add(-time.Second)
	at := end.Truncate(time.Hour).Add(time.Hour)
	spans := func(from, n int) []tracetest.SpanStub { return spansEnding(from, n, end) }

	s := New(cfg, opts)
	require.NoError(t, s.Start(t.Context()))
	exportGRPC(t, s, spans(0, 10)...)
	require.NoError(t, s.Pipeline().Flush())
	exportGRPC(t, s, spans(10, 3)...) // in the journal only
	free.Store(20 << 20)
	require.Eventually(t, func() bool { return s.store.Writable() != nil }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, s.Shutdown(t.Context()), "a stop with the final cut postponed is clean")

	s = start(t, cfg, opts)
	base := "http://" + s.HTTPAddr().String()
	code, body, _ := get(t, base+"/-/ready")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "20.0 MiB free on the data disk")
	code, _, _ = get(t, base+"/-/healthy")
	require.Equal(t, http.StatusOK, code, "alive, only not ready")
	p := queryClient(t, s)
	require.Equal(t, 13.0, scalarAt(t, p, `sum(proxy_requests_total)`, at), "the journal's batches count while read-only")
	code, retry := postOTLP(t, s, exportRequest(spans(20, 4)...))
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "1", retry)

	free.Store(10 << 30)
	require.Eventually(t, func() bool { c, _, _ := get(t, base+"/-/ready"); return c == http.StatusOK }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, s.Pipeline().Flush())
	exportHTTP(t, s, spans(30, 2)...)
	require.Equal(t, 15.0, scalarAt(t, p, `sum(proxy_requests_total)`, at))
	require.NoError(t, s.Pipeline().Flush())
	require.Equal(t, 15.0, scalarAt(t, p, `sum(proxy_requests_total)`, at), "once across the cuts")
}

// TestFullDiskUnforeseen fills a real file system (a small tmpfs holding
// the journal, which the free-space guard does not watch: it looks at the
// data directory's) until the next start finds room for its journal
// segment but not for the spare after it. The server starts read-only
// instead of failing: not ready, exports refused as retryable, queries
// served. Once the filler is deleted, the next check makes it writable
// without a restart, and every acknowledged span counts once. It needs
// root, to mount the tmpfs.
func TestFullDiskUnforeseen(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	cfg := testConfig(t)
	cfg.Storage.MinFreeDiskBytes = 0 // nothing foreseen: the writes find the disk full
	jdir := filepath.Join(cfg.DataDir, "journal")
	require.NoError(t, os.Mkdir(jdir, 0o750))
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", jdir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (%v): %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", jdir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", jdir, err, out)
		}
	})
	opts := Options{DiskCheckInterval: time.Hour} // the test checks
	end := time.Now().Add(-time.Second)
	at := end.Truncate(time.Hour).Add(time.Hour)
	spans := func(from, n int) []tracetest.SpanStub { return spansEnding(from, n, end) }
	s := New(cfg, opts)
	require.NoError(t, s.Start(t.Context()))
	exportGRPC(t, s, spans(0, 10)...)
	require.NoError(t, s.Shutdown(t.Context()))

	// Room for one 8 MiB segment and a half once the start removes the
	// stop's empty segment (8 MiB).
	var st syscall.Statfs_t
	require.NoError(t, syscall.Statfs(jdir, &st))
	filler := filepath.Join(jdir, "filler")
	require.NoError(t, os.WriteFile(filler, make([]byte, int64(st.Bavail)*st.Bsize-4<<20), 0o600))

	s = start(t, cfg, opts)
	base := "http://" + s.HTTPAddr().String()
	code, body, _ := get(t, base+"/-/ready")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "no space left")
	code, retry := postOTLP(t, s, exportRequest(spans(20, 4)...))
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "1", retry)
	p := queryClient(t, s)
	require.Equal(t, 10.0, scalarAt(t, p, `sum(proxy_requests_total)`, at))

	require.NoError(t, os.Remove(filler))
	require.NoError(t, s.store.CheckDisk())
	code, _, _ = get(t, base+"/-/ready")
	require.Equal(t, http.StatusOK, code)
	exportHTTP(t, s, spans(30, 5)...)
	require.NoError(t, s.Pipeline().Flush(), "the seal makes the segment the start could not")
	exportGRPC(t, s, spans(40, 5)...)
	require.NoError(t, s.Pipeline().Flush())
	require.Equal(t, 20.0, scalarAt(t, p, `sum(proxy_requests_total)`, at))
}

// spansEnding is n proxy spans, numbered from from, ending at end.
func spansEnding(from, n int, end time.Time) []tracetest.SpanStub {
	out := make([]tracetest.SpanStub, 0, n)
	for i := from; i < from+n; i++ {
		out = append(out, proxySpan(i, end))
	}
	return out
}
