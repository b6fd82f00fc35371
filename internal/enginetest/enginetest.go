// Package enginetest starts the real remote write receivers and PromQL
// engines that integration tests run against: VictoriaMetrics single node
// and Prometheus, built from the Go module proxy by .ci/engines into
// $PROXYLENS_ENGINES_DIR (default ~/.cache/proxylens/engines).
//
// A test whose engine is missing skips, saying how to build it; under CI
// (CI set, as .ci/run sets it) it fails instead, except for Prometheus,
// whose build takes long enough that CI builds it only with
// PROXYLENS_ENGINES_PROMETHEUS=1 (then a missing binary fails too).
//
// Only tests import this package. An Engine is stopped by t.Cleanup.
package enginetest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Names of the engine binaries in the engines directory.
const (
	VictoriaMetrics = "victoria-metrics"
	Prometheus      = "prometheus"
)

// Dir returns the engines directory.
func Dir() string {
	if d := os.Getenv("PROXYLENS_ENGINES_DIR"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "proxylens-engines")
	}
	return filepath.Join(home, ".cache", "proxylens", "engines")
}

// Available reports whether an engine's binary is in the engines
// directory, and whether the run requires it (CI; for Prometheus, CI with
// PROXYLENS_ENGINES_PROMETHEUS=1).
func Available(name string) (ok, required bool) {
	required = os.Getenv("CI") != ""
	if name == Prometheus && os.Getenv("PROXYLENS_ENGINES_PROMETHEUS") != "1" {
		required = false
	}
	st, err := os.Stat(filepath.Join(Dir(), name))
	return err == nil && st.Mode()&0o111 != 0, required
}

// Binary returns the path of an engine's binary, or skips (fails under
// CI) when it is missing.
func Binary(t testing.TB, name string) string {
	t.Helper()
	path := filepath.Join(Dir(), name)
	ok, required := Available(name)
	if ok {
		return path
	}
	msg := fmt.Sprintf("%s not found in %s: build it with .ci/engines", path, Dir())
	if name == Prometheus {
		msg += " and PROXYLENS_ENGINES_PROMETHEUS=1 (5-30 minutes)"
	}
	if required {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// Engine is a running engine process.
type Engine struct {
	t       testing.TB
	name    string
	bin     string
	args    func(addr string) []string
	DataDir string
	Addr    string // host:port of its HTTP API
	cmd     *exec.Cmd
	log     *os.File
	exited  chan struct{}
}

// StartVictoriaMetrics starts VictoriaMetrics single node on a loopback
// port with a data directory of its own; remote write goes to WriteURL,
// PromQL to Query.
func StartVictoriaMetrics(t testing.TB) *Engine {
	e := &Engine{t: t, name: VictoriaMetrics, bin: Binary(t, VictoriaMetrics), DataDir: t.TempDir()}
	e.args = func(addr string) []string {
		return []string{
			"-storageDataPath=" + e.DataDir, "-httpListenAddr=" + addr, "-retentionPeriod=100y",
			// Without it the newest 30 s are not answered.
			"-search.latencyOffset=0s", "-search.disableCache", "-loggerLevel=WARN",
		}
	}
	e.start(freeAddr(t))
	return e
}

// StartPrometheus starts Prometheus as a remote write receiver on a
// loopback port with a data directory of its own.
func StartPrometheus(t testing.TB) *Engine {
	e := &Engine{t: t, name: Prometheus, bin: Binary(t, Prometheus), DataDir: t.TempDir()}
	cfg := filepath.Join(e.DataDir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte("global: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.args = func(addr string) []string {
		return []string{
			"--config.file=" + cfg, "--storage.tsdb.path=" + filepath.Join(e.DataDir, "tsdb"), "--web.listen-address=" + addr,
			"--web.enable-remote-write-receiver", "--log.level=warn",
		}
	}
	e.start(freeAddr(t))
	return e
}

// Name is the engine's binary name (VictoriaMetrics or Prometheus).
func (e *Engine) Name() string { return e.name }

// WriteURL is the engine's remote write endpoint.
func (e *Engine) WriteURL() string { return "http://" + e.Addr + "/api/v1/write" }

func (e *Engine) start(addr string) {
	e.t.Helper()
	e.Addr = addr
	log, err := os.CreateTemp(e.DataDir, e.name+"-*.log")
	if err != nil {
		e.t.Fatal(err)
	}
	e.log = log
	e.cmd = exec.Command(e.bin, e.args(addr)...)
	e.cmd.Stdout, e.cmd.Stderr = log, log
	if err := e.cmd.Start(); err != nil {
		e.t.Fatalf("start %s: %v", e.name, err)
	}
	e.exited = make(chan struct{})
	cmd, exited := e.cmd, e.exited
	go func() { _ = cmd.Wait(); close(exited) }()
	e.t.Cleanup(func() { e.Kill() })
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + readyPath(e.name))
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-exited:
			e.t.Fatalf("%s exited at start:\n%s", e.name, e.Log())
		default:
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s not ready on %s after 60 s:\n%s", e.name, addr, e.Log())
		}
		time.Sleep(50 * time.Millisecond) // polling a real process for readiness
	}
}

func readyPath(name string) string {
	if name == Prometheus {
		return "/-/ready"
	}
	return "/health"
}

// Kill stops the engine with SIGKILL, as a crash would, and waits for it.
func (e *Engine) Kill() {
	if e.cmd == nil || e.cmd.Process == nil {
		return
	}
	_ = e.cmd.Process.Signal(syscall.SIGKILL)
	<-e.exited
	_ = e.log.Close()
}

// Restart starts the engine again on the same data directory and port.
func (e *Engine) Restart() {
	e.t.Helper()
	e.Kill()
	e.start(e.Addr)
}

// Log returns what the engine wrote to stdout and stderr.
func (e *Engine) Log() string {
	b, _ := os.ReadFile(e.log.Name())
	return string(b)
}

// Query runs an instant PromQL query and returns the single value of its
// vector or scalar result; ok is false for an empty vector.
func (e *Engine) Query(q string) (v float64, ok bool, err error) {
	form := url.Values{"query": {q}, "nocache": {"1"}}
	resp, err := http.PostForm("http://"+e.Addr+"/api/v1/query", form)
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
		return 0, false, fmt.Errorf("%s: %w: %s", e.name, err, body)
	}
	if r.Status != "success" {
		return 0, false, fmt.Errorf("%s: query %s: %s", e.name, q, r.Error)
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
			return 0, false, fmt.Errorf("%s: query %s: %d series, want one", e.name, q, len(vec))
		}
		val = vec[0].Value
	default:
		return 0, false, fmt.Errorf("%s: query %s: result type %s", e.name, q, r.Data.ResultType)
	}
	if len(val) != 2 {
		return 0, false, fmt.Errorf("%s: query %s: value %v", e.name, q, val)
	}
	s, _ := val[1].(string)
	v, err = strconv.ParseFloat(strings.TrimSpace(s), 64)
	return v, err == nil, err
}

// freeAddr returns a loopback address with a port free at the time of the
// call.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}
