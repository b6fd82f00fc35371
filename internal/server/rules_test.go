package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/alertmanager/api/v2/models"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/prompb"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/internal/ruler"
)

// alertmanager is an HTTP receiver on loopback that records what
// Alertmanager's API v2 receives: POST /api/v2/alerts with a JSON list of
// postable alerts.
type alertmanager struct {
	*httptest.Server
	mu     sync.Mutex
	alerts models.PostableAlerts
	bad    []string // requests Alertmanager would refuse
}

func newAlertmanager(t *testing.T) *alertmanager {
	am := &alertmanager{}
	am.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		am.mu.Lock()
		defer am.mu.Unlock()
		if r.Method != http.MethodPost || r.URL.Path != "/api/v2/alerts" || r.Header.Get("Content-Type") != "application/json" {
			am.bad = append(am.bad, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type"))
			http.NotFound(w, r)
			return
		}
		var alerts models.PostableAlerts
		if err := json.NewDecoder(r.Body).Decode(&alerts); err != nil {
			am.bad = append(am.bad, "body: "+err.Error())
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		am.alerts = append(am.alerts, alerts...)
	}))
	t.Cleanup(am.Close)
	return am
}

func (am *alertmanager) received() (models.PostableAlerts, []string) {
	am.mu.Lock()
	defer am.mu.Unlock()
	return append(models.PostableAlerts(nil), am.alerts...), append([]string(nil), am.bad...)
}

// remoteWrite sends samples of one series to the server's remote-write
// endpoint.
func remoteWrite(t *testing.T, s *Server, ls []prompb.Label, samples ...prompb.Sample) {
	t.Helper()
	raw, err := (&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: ls, Samples: samples}}}).Marshal()
	require.NoError(t, err)
	r, err := http.NewRequest(http.MethodPost, "http://"+s.HTTPAddr().String()+"/api/v1/write", bytes.NewReader(snappy.Encode(nil, raw)))
	require.NoError(t, err)
	r.Header.Set("Content-Encoding", "snappy")
	r.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := http.DefaultClient.Do(r)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
}

const e2eRules = `groups:
  - name: e2e
    rules:
      - record: instance:node_load1:max
        expr: max by (instance) (node_load1)
      - alert: HighLoad
        expr: max by (instance) (node_load1) > 0.5
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.instance }} has a load of {{ $value }}"
`

// TestRulesEndToEnd: a server with a rule file and an Alertmanager on
// loopback evaluates the rules over remote-written series, sends the
// alert as Alertmanager's API v2 receives it, lists it at /api/v1/alerts
// and /api/v1/rules as Prometheus does (read with client_golang's API
// client), writes the recording rule's output back into the store, and
// evaluates the shipped rules next to the configured ones.
func TestRulesEndToEnd(t *testing.T) {
	am := newAlertmanager(t)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "e2e.rules.yml"), []byte(e2eRules), 0o600))
	cfgFile := filepath.Join(dir, "proxylens.yaml")
	require.NoError(t, os.WriteFile(cfgFile, fmt.Appendf(nil, `
evaluation_interval: 1s
rule_files: ["*.rules.yml"]
alerting:
  alertmanagers:
    - static_configs: [{targets: [%q]}]
      timeout: 5s
`, strings.TrimPrefix(am.URL, "http://")), 0o600))
	cfg, err := LoadFile(cfgFile)
	require.NoError(t, err)
	test := testConfig(t)
	cfg.DataDir, cfg.OTLPGRPCAddr, cfg.OTLPHTTPAddr, cfg.HTTPAddr = test.DataDir, test.OTLPGRPCAddr, test.OTLPHTTPAddr, test.HTTPAddr
	cfg.FlushInterval, cfg.Backup = test.FlushInterval, test.Backup
	require.NoError(t, cfg.Validate())
	s := start(t, cfg, Options{})

	now := time.Now()
	remoteWrite(t, s, []prompb.Label{{Name: "__name__", Value: "node_load1"}, {Name: "instance", Value: "n1"}},
		prompb.Sample{Timestamp: now.Add(-30 * time.Second).UnixMilli(), Value: 0.5}, prompb.Sample{Timestamp: now.UnixMilli(), Value: 0.75})
	remoteWrite(t, s, []prompb.Label{{Name: "__name__", Value: "node_load1"}, {Name: "instance", Value: "n2"}},
		prompb.Sample{Timestamp: now.UnixMilli(), Value: 0.25})

	// The alert reaches the Alertmanager.
	require.Eventually(t, func() bool {
		alerts, bad := am.received()
		require.Empty(t, bad)
		return len(alerts) > 0
	}, 15*time.Second, 50*time.Millisecond, "no alert reached the Alertmanager")
	alerts, _ := am.received()
	a := alerts[0]
	require.NoError(t, a.Validate(nil), "a valid postable alert")
	require.Equal(t, models.LabelSet{"alertname": "HighLoad", "instance": "n1", "severity": "page"}, a.Labels)
	require.Equal(t, models.LabelSet{"summary": "n1 has a load of 0.75"}, a.Annotations)
	require.WithinDuration(t, time.Now(), time.Time(a.StartsAt), 15*time.Second)
	require.True(t, time.Time(a.EndsAt).After(time.Time(a.StartsAt)), "endsAt is the firing alert's validity")
	require.True(t, strings.HasPrefix(a.GeneratorURL.String(), "http://"+s.HTTPAddr().String()+"/graph?g0.expr="), a.GeneratorURL.String())
	for _, other := range alerts {
		require.Equal(t, "n1", other.Labels["instance"], "only n1's load is above 0.5")
	}

	// /api/v1/alerts, read as Prometheus' answer.
	client := queryClient(t, s)
	ctx := context.Background()
	ar, err := client.Alerts(ctx)
	require.NoError(t, err)
	require.Len(t, ar.Alerts, 1)
	require.Equal(t, v1.AlertStateFiring, ar.Alerts[0].State)
	require.Equal(t, model.LabelSet{"alertname": "HighLoad", "instance": "n1", "severity": "page"}, ar.Alerts[0].Labels)
	require.Equal(t, "7.5e-01", ar.Alerts[0].Value)

	// /api/v1/rules: the configured group and the shipped ones.
	rr, err := client.Rules(ctx, nil)
	require.NoError(t, err)
	files := map[string][]string{}
	for _, g := range rr.Groups {
		files[g.File] = append(files[g.File], g.Name)
	}
	require.Equal(t, []string{"e2e"}, files[filepath.Join(dir, "e2e.rules.yml")])
	require.ElementsMatch(t, []string{"proxylens-costs", "proxylens-self", "proxylens-sources"}, files[ruler.ShippedRulesFile])
	for _, g := range rr.Groups {
		if g.Name != "e2e" {
			continue
		}
		require.Equal(t, 1.0, g.Interval)
		require.Len(t, g.Rules, 2)
		rec, ok := g.Rules[0].(v1.RecordingRule)
		require.True(t, ok, "%T", g.Rules[0])
		require.Equal(t, "instance:node_load1:max", rec.Name)
		require.Equal(t, v1.RuleHealth(v1.RuleHealthGood), rec.Health)
		al, ok := g.Rules[1].(v1.AlertingRule)
		require.True(t, ok, "%T", g.Rules[1])
		require.Equal(t, "HighLoad", al.Name)
		require.Equal(t, "firing", al.State)
		require.Len(t, al.Alerts, 1)
		require.Equal(t, model.LabelValue("n1"), al.Alerts[0].Labels["instance"])
	}

	// The recording rule's output is queryable.
	require.Eventually(t, func() bool {
		v, _, _, err := client.Query(ctx, `instance:node_load1:max`, time.Now())
		require.NoError(t, err)
		return v.String() == fmt.Sprintf("instance:node_load1:max{instance=\"n1\"} => 0.75 @[%s]\ninstance:node_load1:max{instance=\"n2\"} => 0.25 @[%s]",
			v.(model.Vector)[0].Timestamp, v.(model.Vector)[0].Timestamp)
	}, 10*time.Second, 50*time.Millisecond)

	// The engine's and the notifier's metrics are on /metrics and, with the
	// self-metrics, in the store, where the shipped self rules read them.
	_, metrics, _ := get(t, "http://"+s.HTTPAddr().String()+"/metrics")
	require.Contains(t, metrics, `prometheus_notifications_sent_total{alertmanager="`+am.URL+`/api/v2/alerts"}`)
	require.Contains(t, metrics, "prometheus_rule_evaluations_total{rule_group=")
	require.NoError(t, s.appendSelfMetrics(ctx, time.Now()))
	v, _, _, err := client.Query(ctx, `sum(prometheus_rule_evaluations_total{rule_group=~".*;e2e"})`, time.Now())
	require.NoError(t, err)
	require.Len(t, v.(model.Vector), 1)
	require.Positive(t, float64(v.(model.Vector)[0].Value))
}

// TestShippedRulesSwitch: the shipped rules are listed by default and not
// with shipped_rules: false; without rule files there is then nothing.
func TestShippedRulesSwitch(t *testing.T) {
	for _, shipped := range []bool{true, false} {
		cfg := testConfig(t)
		cfg.Rules.ShippedRules = shipped
		s := start(t, cfg, Options{})
		rr, err := queryClient(t, s).Rules(context.Background(), nil)
		require.NoError(t, err)
		var names []string
		for _, g := range rr.Groups {
			require.Equal(t, ruler.ShippedRulesFile, g.File)
			want := 60.0 // evaluation_interval's default
			if g.Name == "proxylens-costs" {
				want = 300 // the group's own interval
			}
			require.Equal(t, want, g.Interval, g.Name)
			for _, r := range g.Rules {
				if a, ok := r.(v1.AlertingRule); ok {
					names = append(names, a.Name)
				}
			}
		}
		if shipped {
			require.Contains(t, names, "ProxySourceDegraded")
			require.Contains(t, names, "ProxySourceOverBudget")
		} else {
			require.Empty(t, names)
		}
	}
}

// TestRulesMatchBounded: /api/v1/rules' match[] selectors go through the
// query bounds before the ruler parses them (issue 17, attack 3).
func TestRulesMatchBounded(t *testing.T) {
	s := start(t, testConfig(t), Options{})
	get := func(match string) (int, string) {
		resp, err := http.Get("http://" + s.HTTPAddr().String() + "/api/v1/rules?" + url.Values{"match[]": {match}}.Encode())
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(body)
	}
	code, body := get(strings.Repeat("{", 50_000))
	require.Equal(t, http.StatusBadRequest, code, body)
	require.Contains(t, body, `invalid parameter \"match[]\": nested deeper than the limit of 256 levels`)
	code, body = get(`{severity="page"}`)
	require.Equal(t, http.StatusOK, code, body)
}
