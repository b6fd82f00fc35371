package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
)

// binary is the proxylens binary built for these tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "proxylens-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "proxylens")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		panic("build proxylens: " + err.Error())
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running proxylens binary.
type proc struct {
	cmd        *exec.Cmd
	grpc, http string
	stderr     *strings.Builder
	exited     chan error
}

var listening = regexp.MustCompile(`msg="(OTLP/gRPC receiver|HTTP server) listening" addr=(\S+)`)

// run starts the binary on loopback ports of its own choosing and waits
// until it says where it listens and that it has started.
func runBinary(t *testing.T, dataDir string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"serve", "--data-dir", dataDir,
		"--otlp-grpc-addr", "127.0.0.1:0", "--otlp-http-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, args...)...)
	// Paths the config leaves relative (the default ./backups, where the
	// first scheduled backup goes a minute after start) land in a
	// directory of the test's, not in the source tree.
	cmd.Dir = t.TempDir()
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	p := &proc{cmd: cmd, stderr: &strings.Builder{}, exited: make(chan error, 1)}
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			p.stderr.WriteString(line + "\n")
			if m := listening.FindStringSubmatch(line); m != nil {
				if m[1] == "HTTP server" {
					p.http = m[2]
				} else {
					p.grpc = m[2]
				}
			}
			if !signalled && strings.Contains(line, `msg="proxylens started"`) {
				signalled = true
				close(started)
			}
		}
		p.exited <- cmd.Wait()
	}()
	select {
	case <-started:
	case err := <-p.exited:
		t.Fatalf("proxylens exited before starting: %v\n%s", err, p.stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("proxylens did not start:\n%s", p.stderr.String())
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return p
}

func (p *proc) metric(t *testing.T, prefix string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.http + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
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

func sendSpans(t *testing.T, addr string, n, offset int) {
	t.Helper()
	exp, err := otlptracegrpc.New(context.Background(), otlptracegrpc.WithEndpoint(addr), otlptracegrpc.WithInsecure())
	require.NoError(t, err)
	defer func() { require.NoError(t, exp.Shutdown(context.Background())) }()
	end := time.Now().Add(-time.Second)
	res := resource.NewSchemaless(attribute.String("service.name", "crawler"))
	var stubs tracetest.SpanStubs
	for i := range n {
		var tid trace.TraceID
		var sid trace.SpanID
		tid[0], tid[1], tid[15] = byte((offset+i)>>8), byte(offset+i), 1
		sid[0], sid[1], sid[7] = byte((offset+i)>>8), byte(offset+i), 1
		stubs = append(stubs, tracetest.SpanStub{
			Name:        "GET",
			SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}),
			SpanKind:    trace.SpanKindClient,
			StartTime:   end.Add(-100 * time.Millisecond), EndTime: end,
			Attributes: []attribute.KeyValue{
				attribute.String("proxy.source", "brightdata"),
				attribute.String("proxy.url", "http://u:p@10.0.0.1:8080"),
				attribute.String("server.address", "example.com"),
				attribute.Int("http.response.status_code", 200),
			},
			Resource:             res,
			InstrumentationScope: instrumentation.Scope{Name: "test"},
		})
	}
	// Every batch is acknowledged (nil error) before the next one goes.
	for len(stubs) > 0 {
		k := min(len(stubs), 100)
		require.NoError(t, exp.ExportSpans(context.Background(), stubs[:k].Snapshots()))
		stubs = stubs[k:]
	}
}

func storedRecords(t *testing.T, dataDir string) int {
	t.Helper()
	db, err := pebblestore.Open(dataDir, pebblestore.Options{})
	require.NoError(t, err)
	defer func() { require.NoError(t, db.Close()) }()
	dict := otelanalytics.NewDict(0)
	_, err = otelanalytics.Restore(db, dict, otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, 15*time.Second, nil))
	require.NoError(t, err)
	n := 0
	require.NoError(t, otelanalytics.ScanRecords(context.Background(), db, dict, otelanalytics.RecordFilter{}, func(*otelanalytics.Record) error { n++; return nil }))
	return n
}

// TestKill9LosesNothingAcknowledged: spans acknowledged by the real binary
// survive kill -9 right after the acknowledgement, in the counters and as
// records.
func TestKill9LosesNothingAcknowledged(t *testing.T) {
	dir := t.TempDir()
	p := runBinary(t, dir)
	sendSpans(t, p.grpc, 1000, 0)
	require.Equal(t, 1000.0, p.metric(t, "proxy_requests_total"))
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	<-p.exited

	p2 := runBinary(t, dir)
	require.Equal(t, 1000.0, p2.metric(t, "proxy_requests_total"), "counters survive kill -9")
	sendSpans(t, p2.grpc, 500, 1000)
	require.Equal(t, 1500.0, p2.metric(t, "proxy_requests_total"))
	require.NoError(t, p2.cmd.Process.Signal(syscall.SIGKILL))
	<-p2.exited

	// The records were in the journal; the next start replays it and a
	// graceful stop writes them to the database.
	p3 := runBinary(t, dir)
	require.NoError(t, p3.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, <-p3.exited)
	require.Equal(t, 1500, storedRecords(t, dir), "every acknowledged span is a record")
}

// TestGracefulShutdown: SIGTERM stops accepting, drains, writes the final
// cut and exits 0; nothing is left to replay.
func TestGracefulShutdown(t *testing.T) {
	dir := t.TempDir()
	p := runBinary(t, dir, "--flush-interval", "1h")
	sendSpans(t, p.grpc, 300, 0)
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, <-p.exited, p.stderr.String())
	require.Contains(t, p.stderr.String(), `msg="proxylens stopped"`)
	require.Equal(t, 300, storedRecords(t, dir))

	p2 := runBinary(t, dir)
	require.NotContains(t, p2.stderr.String(), "replayed ingest journal", "the final cut left nothing to replay")
	require.Equal(t, 300.0, p2.metric(t, "proxy_requests_total"))
}

// TestRefusesBadConfiguration: the binary exits 2 naming the field and the
// value.
func TestRefusesBadConfiguration(t *testing.T) {
	out, err := exec.Command(binary, "--flush-interval", "7s", "--data-dir", t.TempDir()).CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	require.Equal(t, 2, exit.ExitCode())
	require.Contains(t, string(out), `--flush-interval (flush_interval): must divide an hour evenly (1s, 5s, 15s, 30s, 1m…), got "7s"`)
}
