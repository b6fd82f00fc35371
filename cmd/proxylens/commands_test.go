package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/internal/server"
	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
)

func startServer(t *testing.T) *server.Server {
	t.Helper()
	return startServerFlushing(t, time.Hour)
}

// startServerFlushing starts a server on loopback ports with the test
// admin token, cutting every flush interval.
func startServerFlushing(t *testing.T, flush time.Duration) *server.Server {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.OTLPGRPCAddr, cfg.OTLPHTTPAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.FlushInterval = flush
	cfg.Backup.Dir, cfg.Backup.Interval = t.TempDir(), 0
	cfg.AdminTokenFile = "testdata/admin.token"
	s := server.New(cfg, server.Options{})
	require.NoError(t, s.Start(t.Context()))
	t.Cleanup(func() { require.NoError(t, s.Shutdown(context.Background())) })
	return s
}

func scrape(t *testing.T, s *server.Server, prefix string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + s.HTTPAddr().String() + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, prefix) {
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			require.NoError(t, err)
			sum += v
		}
	}
	return sum
}

// TestDemoLive sends live demo traffic through the SDK exporter, over gRPC
// and over HTTP, and every span is counted.
func TestDemoLive(t *testing.T) {
	s := startServer(t)
	for _, proto := range []struct{ name, addr string }{{"grpc", s.OTLPGRPCAddr().String()}, {"http", s.OTLPHTTPAddr().String()}} {
		var out bytes.Buffer
		require.NoError(t, run(t.Context(), []string{"demo", "--endpoint", proto.addr, "--protocol", proto.name,
			"--rate", "0", "--duration", "300ms", "--seed", "1"}, &out, io.Discard))
		require.Contains(t, out.String(), "sent ")
	}
	require.Positive(t, scrape(t, s, "proxy_requests_total"))
	require.Equal(t, scrape(t, s, "proxylens_spans_received_total"), scrape(t, s, "proxy_requests_total"),
		"every demo span is a proxied request")
}

// TestDemoBackfill spreads spans over the past week: they land in their own
// intervals, as the records' times show.
func TestDemoBackfill(t *testing.T) {
	s := startServer(t)
	var out bytes.Buffer
	require.NoError(t, run(t.Context(), []string{"demo", "--endpoint", s.OTLPGRPCAddr().String(),
		"--backfill", "7d", "--spans", "2000", "--rate", "0"}, &out, io.Discard))
	require.Contains(t, out.String(), "sent 2000 spans")
	require.Equal(t, 2000.0, scrape(t, s, "proxy_requests_total"))
	require.NoError(t, s.Pipeline().Flush())
	var oldest, newest time.Time
	n := 0
	require.NoError(t, s.ScanRecords(t.Context(), otelanalytics.RecordFilter{}, func(r *otelanalytics.Record) error {
		if n == 0 {
			oldest = r.Time()
		}
		newest = r.Time()
		n++
		return nil
	}))
	require.Equal(t, 2000, n)
	require.Greater(t, newest.Sub(oldest), 6*24*time.Hour)
	require.Less(t, time.Since(oldest), 7*24*time.Hour+time.Hour)
}

func TestLoadgen(t *testing.T) {
	s := startServer(t)
	var out bytes.Buffer
	require.NoError(t, run(t.Context(), []string{"loadgen", "--endpoint", s.OTLPGRPCAddr().String(),
		"--duration", "500ms", "--connections", "2", "--batch", "100", "--payloads", "4", "--compression", "gzip",
		"--metrics-url", "http://" + s.HTTPAddr().String() + "/metrics"}, &out, io.Discard))
	report := out.String()
	for _, want := range []string{"throughput:", "export latency: p50", "server CPU:", "spans per CPU-second"} {
		require.Contains(t, report, want)
	}
	require.NotContains(t, report, "failed requests")
	// A request cut off by the end of the run may still be in the server:
	// received, not yet counted.
	counted := scrape(t, s, "proxy_requests_total")
	require.Positive(t, counted)
	require.LessOrEqual(t, counted, scrape(t, s, "proxylens_spans_received_total"))

	// A paced run sends about the asked rate.
	out.Reset()
	require.NoError(t, run(t.Context(), []string{"loadgen", "--endpoint", s.OTLPGRPCAddr().String(),
		"--duration", "1s", "--rate", "2000", "--batch", "100"}, &out, io.Discard))
	require.Contains(t, out.String(), "sent ")
}

func TestCommandFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"demo", "--protocol", "smtp"},
		{"demo", "--duration", "-1s"},
		{"demo", "--backfill", "soon"},
		{"demo", "--spans", "0"},
		{"demo", "extra", "--nope"},
		{"loadgen", "--connections", "0"},
		{"loadgen", "--compression", "brotli"},
		{"loadgen", "--rate", "-5"},
		{"loadgen", "--duration", "0s"},
		{"backup"},
		{"backup", "--to"},
		{"restore", "--from", "x"},
		{"restore", "--data-dir", "x", "extra"},
		{"audit"},
		{"audit", "check"},
		{"audit", "verify", "--nope"},
		{"export"},
		{"export", "--out", "x", "extra"},
	} {
		var stderr bytes.Buffer
		err := run(t.Context(), args, io.Discard, &stderr)
		require.ErrorIs(t, err, errUsage, "%v", args)
		require.NotEmpty(t, stderr.String(), "%v", args)
	}
}

// TestBackupRestoreCommands: proxylens backup asks a running server (and
// copies a stopped data directory), proxylens restore verifies and
// restores, refusing a directory that is not empty; the restored store
// opens with the same series.
func TestBackupRestoreCommands(t *testing.T) {
	s := startServer(t)
	require.NoError(t, s.Store().Series().AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
		return add(labels.FromStrings("__name__", "x_total", "a", "b"), time.Now().UnixMilli(), 1)
	}))
	url := "http://" + s.HTTPAddr().String()
	dir := t.TempDir()
	var out, stderr bytes.Buffer
	require.NoError(t, run(t.Context(), []string{"backup", "--to", dir, "--server", url, "--admin-token-file", "testdata/admin.token"}, &out, &stderr), stderr.String())
	require.Contains(t, out.String(), "written to "+dir)
	err := run(t.Context(), []string{"backup", "--to", dir, "--server", url}, io.Discard, io.Discard)
	require.ErrorContains(t, err, "--admin-token-file is required")
	err = run(t.Context(), []string{"backup", "--to", dir, "--data-dir", s.Store().Dir()}, io.Discard, io.Discard)
	require.ErrorContains(t, err, "is proxylens running?")

	dataDir := s.Store().Dir()
	want := s.Store().Series().NumSeries()
	require.NoError(t, s.Shutdown(context.Background()))
	out.Reset()
	require.NoError(t, run(t.Context(), []string{"backup", "--to", dir, "--data-dir", dataDir, "--archive"}, &out, io.Discard))
	require.Contains(t, out.String(), ".tar.zst")
	archive := strings.Fields(out.String())[4]

	restored := t.TempDir() + "/restored"
	require.NoError(t, run(t.Context(), []string{"restore", "--from", archive, "--data-dir", restored}, io.Discard, io.Discard))
	err = run(t.Context(), []string{"restore", "--from", archive, "--data-dir", restored}, io.Discard, io.Discard)
	require.ErrorContains(t, err, "not empty")
	db, err := pebblestore.Open(restored, pebblestore.Options{})
	require.NoError(t, err)
	defer db.Close()
	_, err = otelanalytics.Restore(db, otelanalytics.NewDict(0), otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, time.Hour, nil))
	require.NoError(t, err)
	require.Equal(t, 1, want)
	require.Equal(t, want, db.Series().NumSeries())
}

// TestAuditVerifyCommand: proxylens audit verify checks the chain through a
// running server and in a stopped data directory.
func TestAuditVerifyCommand(t *testing.T) {
	s := startServer(t)
	require.NoError(t, s.Store().Audit(pebblestore.AuditEntry{Time: time.Now(), User: "admin", Action: "query", Success: true}))
	var out bytes.Buffer
	url := "http://" + s.HTTPAddr().String()
	require.NoError(t, run(t.Context(), []string{"audit", "verify", "--server", url, "--admin-token-file", "testdata/admin.token"}, &out, io.Discard))
	require.Equal(t, "ok: 1 entries, every link and hash checks\n", out.String())
	dataDir := s.Store().Dir()
	require.NoError(t, s.Shutdown(context.Background()))
	out.Reset()
	require.NoError(t, run(t.Context(), []string{"audit", "verify", "--data-dir", dataDir}, &out, io.Discard))
	require.Contains(t, out.String(), "ok: 1 entries")
}

// TestExportCommand: proxylens export asks the server for a job, follows
// it and writes the file.
func TestExportCommand(t *testing.T) {
	s := startServer(t)
	require.NoError(t, run(t.Context(), []string{"demo", "--endpoint", s.OTLPGRPCAddr().String(),
		"--backfill", "1d", "--spans", "500", "--rate", "0"}, io.Discard, io.Discard))
	require.NoError(t, s.Pipeline().Flush())
	url := "http://" + s.HTTPAddr().String()
	out := t.TempDir() + "/records.csv"
	var stdout bytes.Buffer
	require.NoError(t, run(t.Context(), []string{"export", "--range", "7d", "--format", "csv", "--out", out,
		"--server", url, "--token-file", "testdata/admin.token"}, &stdout, io.Discard))
	require.Contains(t, stdout.String(), "written to "+out)
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Equal(t, 501, strings.Count(string(b), "\n"), "a header and 500 records")

	err = run(t.Context(), []string{"export", "--format", "pdf", "--out", out, "--server", url, "--token-file", "testdata/admin.token"}, io.Discard, io.Discard)
	require.ErrorContains(t, err, "the export was refused")
	err = run(t.Context(), []string{"export", "--out", out, "--server", url}, io.Discard, io.Discard)
	require.ErrorContains(t, err, "401")
}
