// Package upstreamtest starts real Prometheus-compatible engines
// (VictoriaMetrics single node, Prometheus, a Thanos Receive hashring and
// Thanos Query) on loopback for tests of the
// query proxy and of remote write out, writes samples into them with
// remote write 1.0, queries them, and kills and restarts them on their
// data to test what survives a receiver's crash.
//
// The binaries are taken from $PROXYLENS_ENGINES_DIR (default
// $HOME/.cache/proxylens/engines), where .ci/engines builds them with go
// install from the Go module proxy. A test whose engine is absent fails
// when the environment variable CI is set and is skipped otherwise;
// Prometheus and Thanos, whose builds take 5 to 30 and 4 to 11 minutes,
// are required under CI only with PROXYLENS_ENGINES_PROMETHEUS=1 and
// PROXYLENS_ENGINES_THANOS=1, as .ci/engines builds them (Available says
// which engines a run has and requires).
//
// Each engine is a child process of the test with its data in
// t.TempDir(), killed and waited for by t.Cleanup. The functions are safe
// for concurrent use by parallel tests.
package upstreamtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
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

// Names of the engine binaries in EnginesDir.
const (
	VictoriaMetrics = "victoria-metrics"
	Prometheus      = "prometheus"
)

// Available reports whether the engine binary name is built, and whether
// this run requires it (CI; for Prometheus and Thanos, CI with
// PROXYLENS_ENGINES_PROMETHEUS=1 or PROXYLENS_ENGINES_THANOS=1).
func Available(name string) (built, required bool) {
	required = os.Getenv("CI") != ""
	if name == Prometheus && os.Getenv("PROXYLENS_ENGINES_PROMETHEUS") != "1" {
		required = false
	}
	if name == Thanos && os.Getenv("PROXYLENS_ENGINES_THANOS") != "1" {
		required = false
	}
	_, err := os.Stat(filepath.Join(EnginesDir(), name))
	return err == nil, required
}

// Binary returns the path of the engine binary name, failing the test
// under CI and skipping it otherwise when it is absent.
func Binary(t testing.TB, name, module string) string {
	t.Helper()
	path := filepath.Join(EnginesDir(), name)
	if built, required := Available(name); !built {
		msg := fmt.Sprintf("%s is not built at %s (build it with .ci/engines, or: GOBIN=%s go install %s)", name, path, EnginesDir(), module)
		if name == Thanos {
			msg = fmt.Sprintf("%s is not built at %s (PROXYLENS_ENGINES_THANOS=1 .ci/engines builds it, 4 to 11 minutes: %s)", name, path, module)
		}
		if name == Prometheus {
			msg += "; .ci/engines builds it with PROXYLENS_ENGINES_PROMETHEUS=1 (5 to 30 minutes)"
		}
		if required {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

// Engine is a running engine. Copies share the process.
type Engine struct {
	URL   string // http://127.0.0.1:PORT, the API root
	p     *process
	write string // the remote write endpoint when not URL/api/v1/write (Thanos Receive)
	name  string // Name when not the binary's name
}

// process is an engine's child process, restartable on its data.
type process struct {
	t      testing.TB
	bin    string
	addr   string
	health string
	args   []string
	cmd    *exec.Cmd
	done   chan struct{}
	out    *bytes.Buffer // written by the process until done is closed
}

// StartVictoriaMetrics starts a VictoriaMetrics single node that returns
// the newest samples at once (-search.latencyOffset=0s) and caches no
// answers, with the further flags extra (such as
// -dedup.minScrapeInterval), and waits until it is healthy.
func StartVictoriaMetrics(t testing.TB, extra ...string) Engine {
	t.Helper()
	bin := Binary(t, VictoriaMetrics, "github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics@"+VictoriaMetricsVersion)
	addr := freeAddr(t)
	return start(t, bin, addr, "/health", append([]string{
		"-httpListenAddr=" + addr,
		"-storageDataPath=" + t.TempDir(),
		"-search.latencyOffset=0s",
		"-search.disableCache",
		"-retentionPeriod=100y",
		"-loggerLevel=ERROR",
	}, extra...)...)
}

// StartPrometheus starts a Prometheus with its remote write receiver (RW
// 1.0 and 2.0) and no scrape targets, and waits until it is ready.
func StartPrometheus(t testing.TB) Engine {
	t.Helper()
	bin := Binary(t, Prometheus, "github.com/prometheus/prometheus/cmd/prometheus@"+PrometheusVersion)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfg, []byte("global:\n  scrape_interval: 1m\n"), 0o600))
	addr := freeAddr(t)
	return start(t, bin, addr, "/-/ready",
		"--config.file="+cfg,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--web.enable-remote-write-receiver",
		"--web.remote-write-receiver.accepted-protobuf-messages=prometheus.WriteRequest",
		"--web.remote-write-receiver.accepted-protobuf-messages=io.prometheus.write.v2.Request",
		"--storage.tsdb.retention.time=100y",
		"--log.level=error",
	)
}

func start(t testing.TB, bin, addr, health string, args ...string) Engine {
	t.Helper()
	p := &process{t: t, bin: bin, addr: addr, health: health, args: args}
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(bin), p.out.String())
		}
	})
	p.start()
	return Engine{URL: "http://" + addr, p: p}
}

func (p *process) start() {
	t := p.t
	t.Helper()
	p.out = &bytes.Buffer{}
	p.cmd = exec.Command(p.bin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	require.NoError(t, p.cmd.Start())
	done := make(chan struct{})
	p.done = done
	cmd := p.cmd
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	require.Eventually(t, func() bool {
		select {
		case <-done:
			return true // exited: reported below
		default:
		}
		resp, err := http.Get("http://" + p.addr + p.health)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, time.Minute, 50*time.Millisecond, "%s did not become healthy", p.bin)
	select {
	case <-done:
		t.Fatalf("%s exited at start: %s", p.bin, p.out.String())
	default:
	}
}

func (p *process) kill() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Name is the engine's binary name, VictoriaMetrics or Prometheus, or
// its URL for an Engine this package did not start (any Prometheus API,
// proxylens' own, to Query).
func (e Engine) Name() string {
	if e.name != "" {
		return e.name
	}
	if e.p == nil {
		return e.URL
	}
	return filepath.Base(e.p.bin)
}

// WriteURL is the engine's remote write endpoint.
func (e Engine) WriteURL() string {
	if e.write != "" {
		return e.write
	}
	return e.URL + "/api/v1/write"
}

// Kill stops the engine with SIGKILL, as a crash would, and waits for it.
func (e Engine) Kill() { e.p.kill() }

// Stop stops the engine with SIGTERM, as an operator would, and waits
// for it to exit (Kill after a minute). Restart starts it again.
func (e Engine) Stop() {
	e.p.t.Helper()
	if e.p.cmd == nil {
		return
	}
	_ = e.p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.p.done:
	case <-time.After(time.Minute):
		e.p.t.Errorf("%s did not stop within a minute of SIGTERM: killed", e.Name())
		e.p.kill()
	}
}

// Restart kills the engine if it runs and starts it again on the same
// data and port, waiting until it is healthy.
func (e Engine) Restart() {
	e.p.t.Helper()
	e.p.kill()
	e.p.start()
}

// Query runs an instant PromQL query (uncached) and returns the single
// value of its result; ok is false for an empty vector.
func (e Engine) Query(q string) (v float64, ok bool, err error) {
	resp, err := http.PostForm(e.URL+"/api/v1/query", url.Values{"query": {q}, "nocache": {"1"}})
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, false, err
	}
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return 0, false, fmt.Errorf("%s: %w: %s", e.Name(), err, body)
	}
	if r.Status != "success" {
		return 0, false, fmt.Errorf("%s: query %s: %s", e.Name(), q, r.Error)
	}
	var val []any
	switch r.Data.ResultType {
	case "scalar":
		if err := json.Unmarshal(r.Data.Result, &val); err != nil {
			return 0, false, err
		}
	case "vector":
		var vec []struct {
			Value []any `json:"value"`
		}
		if err := json.Unmarshal(r.Data.Result, &vec); err != nil {
			return 0, false, err
		}
		if len(vec) == 0 {
			return 0, false, nil
		}
		if len(vec) > 1 {
			return 0, false, fmt.Errorf("%s: query %s: %d series, want one", e.Name(), q, len(vec))
		}
		val = vec[0].Value
	default:
		return 0, false, fmt.Errorf("%s: query %s: result type %s", e.Name(), q, r.Data.ResultType)
	}
	if len(val) != 2 {
		return 0, false, fmt.Errorf("%s: query %s: value %v", e.Name(), q, val)
	}
	str, _ := val[1].(string)
	v, err = strconv.ParseFloat(str, 64)
	return v, err == nil, err
}

// givenPorts are the ports freeAddr has handed out in this process.
var givenPorts struct {
	sync.Mutex
	m map[int]bool
}

// freeAddr returns a loopback address with a port free a moment ago, for
// an engine to listen on. The port is one freeAddr has not handed out
// before in this process (the kernel hands a port just closed out again,
// and an engine given two equal addresses cannot start), and lies below
// Linux's ephemeral range (32768–60999), so that no outgoing connection
// takes it as its source port before the engine binds it.
func freeAddr(t testing.TB) string {
	t.Helper()
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		givenPorts.Lock()
		if givenPorts.m == nil {
			givenPorts.m = map[int]bool{}
		}
		given := givenPorts.m[port]
		givenPorts.m[port] = true
		givenPorts.Unlock()
		if given {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // taken
		}
		addr := ln.Addr().String()
		require.NoError(t, ln.Close())
		return addr
	}
	t.Fatal("no free loopback port in 20000-31999")
	return ""
}

// RemoteWrite sends series to the engine's /api/v1/write (remote write
// 1.0, snappy protobuf) and requires a 2xx answer.
func (e Engine) RemoteWrite(t testing.TB, series []prompb.TimeSeries) {
	t.Helper()
	raw, err := (&prompb.WriteRequest{Timeseries: series}).Marshal()
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, e.WriteURL(), bytes.NewReader(snappy.Encode(nil, raw)))
	require.NoError(t, err)
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Truef(t, resp.StatusCode/100 == 2, "remote write to %s: %d %s", e.WriteURL(), resp.StatusCode, body)
}
