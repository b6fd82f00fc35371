package ruler

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	promqlengine "github.com/prometheus/prometheus/promql"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"

	"github.com/proxylens/proxylens/promql"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/cockroachdb/pebble/v2.(*DB).maybeScheduleFlush"))
}

const testRules = `groups:
  - name: test
    labels:
      team: proxy
    rules:
      - record: source:requests:sum
        expr: sum by (source) (requests_total)
        labels:
          recorded: "yes"
      - alert: TooManyRequests
        expr: sum by (source) (requests_total) > 10
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.source }} has {{ $value }} requests"
  - name: other
    rules:
      - alert: Never
        expr: vector(1) < 0
`

// writeRules writes a rule file into a temporary directory.
func writeRules(t *testing.T, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "test.rules.yml")
	require.NoError(t, os.WriteFile(f, []byte(content), 0o600))
	return f
}

// getJSON asks the handler and decodes the envelope's data into a
// generic value, so that field names are compared as written.
func getJSON(t *testing.T, srv *httptest.Server, path string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var env map[string]any
	require.NoError(t, json.Unmarshal(b, &env), "%s", b)
	return resp.StatusCode, env
}

// TestRulesAndAlertsAPI runs the ruler on a rule file with a recording
// rule and an alert that fires, and checks /api/v1/rules and
// /api/v1/alerts field by field against Prometheus' answer (web/api/v1:
// RuleDiscovery, RuleGroup, AlertingRule, RecordingRule, AlertDiscovery,
// Alert), with its filters; the recording rule's output is queryable.
func TestRulesAndAlertsAPI(t *testing.T) {
	now := time.Now()
	cfg := DefaultConfig()
	cfg.ShippedRules = false
	cfg.EvaluationInterval = time.Second
	cfg.RuleFiles = []string{writeRules(t, testRules)}
	require.NoError(t, cfg.Validate())
	r, api := openRuler(t, cfg, func(add func(labels.Labels, time.Time, float64)) {
		// Samples up to a minute ahead, so that every evaluation sees them.
		every(now.Add(-time.Minute), now.Add(time.Minute), 15*time.Second, func(at time.Time) {
			add(labels.FromStrings("__name__", "requests_total", "source", "a"), at, 42)
			add(labels.FromStrings("__name__", "requests_total", "source", "b"), at, 1)
		})
	})
	ext, _ := url.Parse("http://127.0.0.1:9464")
	r.opts.ExternalURL = func() *url.URL { return ext }
	require.NoError(t, r.Start(context.Background()))
	defer func() { require.NoError(t, r.Shutdown(context.Background())) }()

	api2 := promql.New(promql.Config{}, nil, promql.Options{Rules: r})
	defer api2.Close()
	mux := http.NewServeMux()
	api2.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	require.Eventually(t, func() bool {
		_, env := getJSON(t, srv, "/api/v1/alerts")
		return len(env["data"].(map[string]any)["alerts"].([]any)) == 1
	}, 10*time.Second, 20*time.Millisecond, "the alert fires at the first evaluation")

	code, env := getJSON(t, srv, "/api/v1/alerts")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "success", env["status"])
	alert := env["data"].(map[string]any)["alerts"].([]any)[0].(map[string]any)
	require.ElementsMatch(t, []string{"labels", "annotations", "state", "activeAt", "value"}, mapKeys(alert))
	require.Equal(t, map[string]any{"alertname": "TooManyRequests", "severity": "page", "source": "a", "team": "proxy"}, alert["labels"])
	require.Equal(t, map[string]any{"summary": "a has 42 requests"}, alert["annotations"])
	require.Equal(t, "firing", alert["state"])
	require.Equal(t, "4.2e+01", alert["value"])
	activeAt, err := time.Parse(time.RFC3339Nano, alert["activeAt"].(string))
	require.NoError(t, err)
	require.WithinDuration(t, time.Now(), activeAt, time.Minute)

	// Wait for both groups to be evaluated, so that every field is set.
	require.Eventually(t, func() bool {
		_, env := getJSON(t, srv, "/api/v1/rules")
		for _, g := range env["data"].(map[string]any)["groups"].([]any) {
			if strings.HasPrefix(g.(map[string]any)["lastEvaluation"].(string), "0001") {
				return false
			}
		}
		return true
	}, 10*time.Second, 20*time.Millisecond)
	code, env = getJSON(t, srv, "/api/v1/rules")
	require.Equal(t, http.StatusOK, code)
	groups := env["data"].(map[string]any)["groups"].([]any)
	require.Len(t, groups, 2)
	g := groups[1].(map[string]any) // sorted by file, then name, as Prometheus lists them
	require.ElementsMatch(t, []string{"name", "file", "rules", "interval", "limit", "evaluationTime", "lastEvaluation"}, mapKeys(g))
	require.Equal(t, "test", g["name"])
	require.Equal(t, cfg.RuleFiles[0], g["file"])
	require.Equal(t, 1.0, g["interval"])
	require.Equal(t, 0.0, g["limit"])
	rls := g["rules"].([]any)
	require.Len(t, rls, 2)
	rec, al := rls[0].(map[string]any), rls[1].(map[string]any)
	require.ElementsMatch(t, []string{"name", "query", "labels", "health", "evaluationTime", "lastEvaluation", "type"}, mapKeys(rec))
	require.Equal(t, "recording", rec["type"])
	require.Equal(t, "source:requests:sum", rec["name"])
	require.Equal(t, "sum by (source) (requests_total)", rec["query"])
	require.Equal(t, map[string]any{"recorded": "yes", "team": "proxy"}, rec["labels"])
	require.Equal(t, "ok", rec["health"])
	require.ElementsMatch(t, []string{"state", "name", "query", "duration", "keepFiringFor", "labels", "annotations",
		"alerts", "health", "evaluationTime", "lastEvaluation", "type"}, mapKeys(al))
	require.Equal(t, "alerting", al["type"])
	require.Equal(t, "firing", al["state"])
	require.Equal(t, "sum by (source) (requests_total) > 10", al["query"])
	require.Equal(t, 0.0, al["duration"])
	require.Equal(t, 0.0, al["keepFiringFor"])
	require.Equal(t, map[string]any{"severity": "page", "team": "proxy"}, al["labels"])
	require.Equal(t, map[string]any{"summary": "{{ $labels.source }} has {{ $value }} requests"}, al["annotations"])
	require.Len(t, al["alerts"], 1)
	require.Equal(t, alert, al["alerts"].([]any)[0])
	require.Equal(t, "inactive", groups[0].(map[string]any)["rules"].([]any)[0].(map[string]any)["state"])

	// The filters.
	for _, c := range []struct {
		query string
		want  []string // group/rule names
	}{
		{"type=record", []string{"test/source:requests:sum"}},
		{"type=alert", []string{"other/Never", "test/TooManyRequests"}},
		{"rule_name[]=Never", []string{"other/Never"}},
		{"rule_group[]=test&type=alert", []string{"test/TooManyRequests"}},
		{"file[]=" + url.QueryEscape(cfg.RuleFiles[0]) + "&rule_name[]=TooManyRequests", []string{"test/TooManyRequests"}},
		{"file[]=nope", nil},
		{"match[]=" + url.QueryEscape(`{severity="page"}`), []string{"test/TooManyRequests"}},
		{"group_limit=1", []string{"other/Never"}},
	} {
		code, env := getJSON(t, srv, "/api/v1/rules?"+c.query)
		require.Equal(t, http.StatusOK, code, c.query)
		var got []string
		for _, g := range env["data"].(map[string]any)["groups"].([]any) {
			for _, rl := range g.(map[string]any)["rules"].([]any) {
				got = append(got, g.(map[string]any)["name"].(string)+"/"+rl.(map[string]any)["name"].(string))
			}
		}
		require.Equal(t, c.want, got, c.query)
	}
	_, env = getJSON(t, srv, "/api/v1/rules?group_limit=1")
	token := env["data"].(map[string]any)["groupNextToken"].(string)
	_, env = getJSON(t, srv, "/api/v1/rules?group_limit=1&group_next_token="+token)
	require.Equal(t, "test", env["data"].(map[string]any)["groups"].([]any)[0].(map[string]any)["name"])
	_, env = getJSON(t, srv, "/api/v1/rules?exclude_alerts=true&rule_name[]=TooManyRequests")
	require.Nil(t, env["data"].(map[string]any)["groups"].([]any)[0].(map[string]any)["rules"].([]any)[0].(map[string]any)["alerts"])

	for q, msg := range map[string]string{
		"type=bogus":             `invalid parameter "type": not supported value "bogus"`,
		"exclude_alerts=maybe":   `invalid parameter "exclude_alerts": error converting exclude_alerts: strconv.ParseBool: parsing "maybe": invalid syntax`,
		"group_limit=0":          `invalid parameter "group_limit": group_limit needs to be greater than 0`,
		"group_next_token=x":     `invalid parameter "group_next_token": group_limit needs to be present in order to paginate over the groups`,
		"match[]=" + `{a=~".*"}`: "match[] must contain at least one non-empty matcher",
	} {
		code, env := getJSON(t, srv, "/api/v1/rules?"+q)
		require.Equal(t, http.StatusBadRequest, code, q)
		require.Equal(t, "bad_data", env["errorType"], q)
		require.Equal(t, msg, env["error"], q)
	}

	// The recording rule's output is in the store.
	require.Eventually(t, func() bool {
		res, err := api.Exec(context.Background(), promql.Request{Query: `source:requests:sum`, End: time.Now()})
		require.NoError(t, err)
		defer res.Close()
		v := res.Value.(promqlengine.Vector)
		return len(v) == 2 && v[0].Metric.String() == `{__name__="source:requests:sum", recorded="yes", source="a", team="proxy"}` && v[0].F == 42
	}, 10*time.Second, 20*time.Millisecond, "the recording rule's output is queryable")
}

func mapKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestLifecycle: Shutdown works without Start and twice; Start after
// Shutdown is refused; a ruler without Alertmanagers starts no notifier.
func TestLifecycle(t *testing.T) {
	r, _ := openRuler(t, DefaultConfig(), nil)
	require.NoError(t, r.Shutdown(context.Background()))
	require.NoError(t, r.Shutdown(context.Background()))
	require.Error(t, r.Start(context.Background()))

	r, _ = openRuler(t, DefaultConfig(), nil)
	require.NoError(t, r.Start(context.Background()))
	require.Error(t, r.Start(context.Background()), "started twice")
	require.Nil(t, r.Alertmanagers())
	files, err := r.Files()
	require.NoError(t, err)
	require.Equal(t, []string{ShippedRulesFile}, files)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = r.Shutdown(ctx) // nil, or ctx's error if it ends first: the goroutines then end in the background
	require.Equal(t, err, r.Shutdown(context.Background()), "the first result is kept")
}

// TestConfig: the alerting section is Prometheus', strictly decoded; a
// bad rule file is an error naming the file, the group and the rule.
func TestConfig(t *testing.T) {
	decode := func(s string) (Config, error) {
		cfg := DefaultConfig()
		dec := yaml.NewDecoder(strings.NewReader(s))
		dec.KnownFields(true)
		return cfg, dec.Decode(&cfg)
	}
	cfg, err := decode(`
rule_files: [` + writeRules(t, testRules) + `]
evaluation_interval: 30s
alerting:
  alertmanagers:
    - static_configs: [{targets: ["127.0.0.1:9093"]}]
      scheme: https
      path_prefix: /am
      timeout: 5s
      api_version: v2
      basic_auth: {username: u, password: p}
      tls_config: {insecure_skip_verify: true}
`)
	require.NoError(t, err)
	require.NoError(t, cfg.Validate())
	require.True(t, cfg.ShippedRules, "default")
	require.Equal(t, 30*time.Second, cfg.EvaluationInterval)
	am := cfg.Alerting.AlertmanagerConfigs[0]
	require.Equal(t, "https", am.Scheme)
	require.Equal(t, "/am", am.PathPrefix)
	require.Equal(t, "u", am.HTTPClientConfig.BasicAuth.Username)

	_, err = decode("alerting:\n  alertmanagers:\n    - static_configs: [{targets: [\"http://127.0.0.1:9093\"]}]\n")
	require.EqualError(t, err, `alerting: "http://127.0.0.1:9093" is not a valid hostname`)
	_, err = decode("alerting:\n  alertmanagers:\n    - api_version: v1\n")
	require.EqualError(t, err, "alerting: expected Alertmanager api version to be one of [v2] but got v1")
	_, err = decode("alerting:\n  alertmanagers:\n    - kubernetes_sd_configs: []\n")
	require.ErrorContains(t, err, "line 3: field kubernetes_sd_configs not found")

	bad := writeRules(t, "groups:\n  - name: g\n    rules:\n      - alert: Broken\n        expr: sum(\n")
	cfg = DefaultConfig()
	cfg.RuleFiles = []string{bad, "[", filepath.Join(t.TempDir(), "none-*.yml")}
	cfg.EvaluationInterval = 0
	err = cfg.Validate()
	require.ErrorContains(t, err, "evaluation_interval: must be at least 1s, got \"0s\"")
	require.ErrorContains(t, err, `rule_files[1]: "[" is not a valid glob`)
	require.ErrorContains(t, err, "rule_files: "+bad+`: 5:15: group "g", rule 1, "Broken": could not parse expression`)
}
