// Package upstreamtest starts real Prometheus-compatible engines
// (VictoriaMetrics single node, Prometheus) on loopback for tests of the
// query proxy, and writes samples into them with remote write 1.0.
//
// The binaries are taken from $PROXYLENS_ENGINES_DIR (default
// $HOME/.cache/proxylens/engines), where .ci/engines builds them with go
// install from the Go module proxy. A test whose engine is absent fails
// when the environment variable CI is set and is skipped otherwise;
// Prometheus, whose build takes 5 to 30 minutes, is required under CI
// only with PROXYLENS_ENGINES_PROMETHEUS=1, as .ci/engines builds it
// (the same rules as the rwout branch's internal/enginetest, into which
// this package can fold).
//
// Each engine is a child process of the test with its data in
// t.TempDir(), killed and waited for by t.Cleanup. The functions are safe
// for concurrent use by parallel tests.
package upstreamtest

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/prometheus/prompb"
	"github.com/stretchr/testify/require"
)

// Versions the engines are built at (.ci/engines).
const (
	VictoriaMetricsVersion = "v1.151.0"
	PrometheusVersion      = "v0.316.0"
)

// EnginesDir is where the engine binaries are looked for.
func EnginesDir() string {
	if d := os.Getenv("PROXYLENS_ENGINES_DIR"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "proxylens-engines")
	}
	return filepath.Join(home, ".cache", "proxylens", "engines")
}

// Binary returns the path of the engine binary name, failing the test
// under CI and skipping it otherwise when it is absent.
func Binary(t testing.TB, name, module string) string {
	t.Helper()
	path := filepath.Join(EnginesDir(), name)
	if _, err := os.Stat(path); err != nil {
		msg := fmt.Sprintf("%s is not built at %s (build it with .ci/engines, or: GOBIN=%s go install %s)", name, path, EnginesDir(), module)
		required := os.Getenv("CI") != ""
		if name == "prometheus" && os.Getenv("PROXYLENS_ENGINES_PROMETHEUS") != "1" {
			required = false
		}
		if required {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

// Engine is a running engine.
type Engine struct {
	URL string // http://127.0.0.1:PORT, the API root
}

// StartVictoriaMetrics starts a VictoriaMetrics single node that returns
// the newest samples at once (-search.latencyOffset=0s) and caches no
// answers, and waits until it is healthy.
func StartVictoriaMetrics(t testing.TB) Engine {
	t.Helper()
	bin := Binary(t, "victoria-metrics", "github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics@"+VictoriaMetricsVersion)
	addr := freeAddr(t)
	return start(t, bin, addr, "/health",
		"-httpListenAddr="+addr,
		"-storageDataPath="+t.TempDir(),
		"-search.latencyOffset=0s",
		"-search.disableCache",
		"-retentionPeriod=100y",
		"-loggerLevel=ERROR",
	)
}

// StartPrometheus starts a Prometheus with its remote write receiver and
// no scrape targets, and waits until it is ready.
func StartPrometheus(t testing.TB) Engine {
	t.Helper()
	bin := Binary(t, "prometheus", "github.com/prometheus/prometheus/cmd/prometheus@"+PrometheusVersion)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfg, []byte("global:\n  scrape_interval: 1m\n"), 0o600))
	addr := freeAddr(t)
	return start(t, bin, addr, "/-/ready",
		"--config.file="+cfg,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--web.enable-remote-write-receiver",
		"--storage.tsdb.retention.time=100y",
		"--log.level=error",
	)
}

func start(t testing.TB, bin, addr, health string, args ...string) Engine {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(bin), out.String())
		}
	})
	e := Engine{URL: "http://" + addr}
	require.Eventually(t, func() bool {
		select {
		case <-done:
			return true // exited: reported below
		default:
		}
		resp, err := http.Get(e.URL + health)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, time.Minute, 50*time.Millisecond, "%s did not become healthy", bin)
	select {
	case <-done:
		t.Fatalf("%s exited at start: %s", bin, out.String())
	default:
	}
	return e
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// RemoteWrite sends series to the engine's /api/v1/write (remote write
// 1.0, snappy protobuf) and requires a 2xx answer.
func (e Engine) RemoteWrite(t testing.TB, series []prompb.TimeSeries) {
	t.Helper()
	raw, err := (&prompb.WriteRequest{Timeseries: series}).Marshal()
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, e.URL+"/api/v1/write", bytes.NewReader(snappy.Encode(nil, raw)))
	require.NoError(t, err)
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Truef(t, resp.StatusCode/100 == 2, "remote write to %s: %d %s", e.URL, resp.StatusCode, body)
}
