package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/proxylens/proxylens/dashboards"
)

// The tests of this file run proxylens as a fleet against real engines
// (docs/scaling.md): several instances writing into one VictoriaMetrics
// and one Thanos Receive hashring, a high-availability pair deduplicated
// upstream, and the query proxy in front of Thanos Query.

// tally counts acknowledged spans by (source, error_type), the labels the
// checks group by.
type tally map[[2]string]int

func (t tally) add(o tally) {
	for k, v := range o {
		t[k] += v
	}
}

func (t tally) total() int {
	n := 0
	for _, v := range t {
		n += v
	}
	return n
}

// fleetSpans makes n spans numbered from id, all ending at end: even ids
// are source brightdata, odd ones oxylabs; every fifth brightdata span
// (id%10 == 0) is a 503 failure, oxylabs never fails. It returns the
// spans and their tally.
func fleetSpans(id, n int, end time.Time) (tracetest.SpanStubs, tally) {
	res := resource.NewSchemaless(attribute.String("service.name", "crawler"))
	stubs := make(tracetest.SpanStubs, 0, n)
	tl := tally{}
	for i := id; i < id+n; i++ {
		var tid trace.TraceID
		var sid trace.SpanID
		tid[0], tid[1], tid[2], tid[15] = byte(i>>16), byte(i>>8), byte(i), 2
		sid[0], sid[1], sid[2], sid[7] = byte(i>>16), byte(i>>8), byte(i), 2
		source, status, errType := "brightdata", 200, ""
		if i%2 == 1 {
			source = "oxylabs"
		} else if i%10 == 0 {
			status, errType = 503, "503"
		}
		tl[[2]string{source, errType}]++
		stubs = append(stubs, tracetest.SpanStub{
			Name:        "GET",
			SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}),
			SpanKind:    trace.SpanKindClient,
			StartTime:   end.Add(-100 * time.Millisecond), EndTime: end,
			Attributes: []attribute.KeyValue{
				attribute.String("proxy.source", source),
				attribute.String("proxy.url", "http://u:p@10.0.0.1:8080"),
				attribute.String("server.address", "example.com"),
				attribute.Int("http.response.status_code", status),
			},
			Resource:             res,
			InstrumentationScope: instrumentation.Scope{Name: "test"},
		})
	}
	return stubs, tl
}

// export sends spans to the proxylens at addr over OTLP/gRPC, in one
// request, and returns its error: nil is the acknowledgement.
func export(addr string, spans tracetest.SpanStubs) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(addr), otlptracegrpc.WithInsecure(),
		otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false}))
	if err != nil {
		return err
	}
	err = exp.ExportSpans(ctx, spans.Snapshots())
	return errors.Join(err, exp.Shutdown(context.Background()))
}

// sample is one series of an instant vector.
type sample struct {
	Metric map[string]string
	Value  float64
}

// instant runs q at time at on the Prometheus API at root and returns
// its vector.
func instant(t *testing.T, root, q string, at time.Time) ([]sample, error) {
	t.Helper()
	resp, err := http.PostForm(root+"/api/v1/query", url.Values{"query": {q}, "time": {fmt.Sprintf("%.3f", float64(at.UnixMilli())/1000)}, "nocache": {"1"}})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", q, err, body)
	}
	if r.Status != "success" || r.Data.ResultType != "vector" {
		return nil, fmt.Errorf("%s: %s %s: %s", q, r.Status, r.Data.ResultType, r.Error)
	}
	out := make([]sample, 0, len(r.Data.Result))
	for _, s := range r.Data.Result {
		str, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: value %v: %w", q, s.Value, err)
		}
		out = append(out, sample{Metric: s.Metric, Value: v})
	}
	return out, nil
}

// byLabels keys a vector by the values of the labels names, and fails if
// a series carries another label: the query aggregated it away, or not.
func byLabels(vec []sample, names ...string) (map[string]float64, error) {
	out := map[string]float64{}
	for _, s := range vec {
		var key []string
		for _, n := range names {
			key = append(key, s.Metric[n])
		}
		for l := range s.Metric {
			if !contains(names, l) {
				return nil, fmt.Errorf("series %v has label %s", s.Metric, l)
			}
		}
		k := strings.Join(key, "/")
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("two series for %s", k)
		}
		out[k] = s.Value
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// dashboardQuery returns the expression of the panel titled title in the
// shipped dashboard file (dashboards/), with Grafana's variables set as
// Grafana sets them for "All" sources and applications and the time
// range rng ($__range in milliseconds, which PromQL accepts as a
// duration).
func dashboardQuery(t *testing.T, file, title string, rng time.Duration) string {
	t.Helper()
	d := loadDashboard(t, filepath.Join("..", "..", "dashboards", file))
	for _, p := range d.panels() {
		if p.Title == title && len(p.Targets) > 0 {
			return strings.NewReplacer(
				"$source", ".*", "$application", ".*",
				"$__range", fmt.Sprintf("%dms", rng.Milliseconds()),
				"$__rate_interval", "1m",
			).Replace(p.Targets[0].Expr)
		}
	}
	t.Fatalf("%s has no panel %q", file, title)
	return ""
}

// alertExpr returns the expression of the shipped alert rule name
// (dashboards/alerts/proxylens.rules.yml, embedded as dashboards.RulesFile).
func alertExpr(t *testing.T, name string) string {
	t.Helper()
	groups, errs := rulefmt.Parse(dashboards.RulesFile, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	require.Empty(t, errs)
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == name {
				return r.Expr
			}
		}
	}
	t.Fatalf("no alert %s", name)
	return ""
}

// writeConfig writes a proxylens config file and returns its path. The
// scheduled backups are off: the first would come a minute after start,
// into ./backups, the package's source directory.
func writeConfig(t *testing.T, cfg string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "proxylens.yaml")
	require.NoError(t, os.WriteFile(f, []byte(cfg+"backup:\n  interval: 0s\n"), 0o600))
	return f
}

// remoteConfig is a remote_write entry that retries quickly (a test
// waits for it).
func remoteConfig(name, url string, extra string) string {
	return fmt.Sprintf("  - url: %s\n    name: %s\n    queue_config: {batch_send_deadline: 100ms, min_backoff: 50ms, max_backoff: 1s}\n%s", url, name, extra)
}

// eventually polls check until it returns nil, and fails with its last
// error after the deadline.
func eventually(t *testing.T, why string, within time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", why, err)
		}
		time.Sleep(100 * time.Millisecond) // polling interval, not a wait for an event
	}
}

// wantTotal checks that sum(proxy_requests_total) at the engine's root
// is want.
func wantTotal(t *testing.T, root, sel string, want int) error {
	vec, err := instant(t, root, "sum(proxy_requests_total"+sel+")", time.Now())
	if err != nil {
		return err
	}
	if len(vec) != 1 || vec[0].Value != float64(want) {
		return fmt.Errorf("sum(proxy_requests_total%s) = %v, want %d", sel, vec, want)
	}
	return nil
}

// sortedKeys is for messages.
func sortedKeys(m map[string]float64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// kill9 kills a proxylens binary as a crash would.
func kill9(t *testing.T, p *proc) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	<-p.exited
}
