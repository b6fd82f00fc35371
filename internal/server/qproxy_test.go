package server

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/internal/upstreamtest"
	"github.com/proxylens/proxylens/pebblestore"
	"github.com/proxylens/proxylens/promql"
)

const proxyRules = `groups:
  - name: proxied
    rules:
      - alert: UpstreamOnly
        expr: upstream_only > 0
        labels:
          severity: page
`

// TestQueryProxy: a server with query.upstream set to a real
// VictoriaMetrics answers queries from it, keeping in front of it what
// proxylens adds: a credential is required (401 without one), a viewer may
// query, the query is audited under its user, and the rules evaluate
// over the upstream.
func TestQueryProxy(t *testing.T) {
	vm := upstreamtest.StartVictoriaMetrics(t)
	now := time.Now()
	vm.RemoteWrite(t, []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: "upstream_only"}, {Name: "instance", Value: "vm"}},
		Samples: []prompb.Sample{{Timestamp: now.Add(-30 * time.Second).UnixMilli(), Value: 1}, {Timestamp: now.UnixMilli(), Value: 2}},
	}})

	cfg := adminConfig(t)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "proxied.rules.yml"), []byte(proxyRules), 0o600))
	cfg.Rules.RuleFiles = []string{filepath.Join(dir, "*.rules.yml")}
	cfg.Rules.EvaluationInterval = time.Second
	cfg.Auth = AuthConfig{Users: []AuthUser{{Name: "vera", Role: RoleViewer, PasswordHash: bcryptHash(t, "vera-pass")}}}
	cfg.Query.Upstream = &promql.UpstreamConfig{URL: vm.URL}
	require.NoError(t, cfg.Validate())
	s := start(t, cfg, Options{})
	base := "http://" + s.HTTPAddr().String()

	get := func(root, path string, form url.Values, user string) (int, map[string]any) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, root+path, strings.NewReader(form.Encode()))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if user != "" {
			req.SetBasicAuth(user, user+"-pass")
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		var out map[string]any
		require.NoError(t, json.Unmarshal(b, &out), string(b))
		if st, ok := out["stats"].(map[string]any); ok {
			delete(st, "executionTimeMsec")
		}
		return resp.StatusCode, out
	}
	form := url.Values{"query": {"upstream_only"}, "time": {strconv.FormatInt(now.Unix(), 10)}}
	code, _ := get(base, "/api/v1/query", form, "")
	require.Equal(t, http.StatusUnauthorized, code)
	require.Eventually(t, func() bool {
		_, direct := get(vm.URL, "/api/v1/query", form, "")
		return len(direct["data"].(map[string]any)["result"].([]any)) == 1
	}, time.Minute, 50*time.Millisecond, "VictoriaMetrics does not answer for the sample")
	code, proxied := get(base, "/api/v1/query", form, "vera")
	require.Equal(t, http.StatusOK, code, proxied)
	_, direct := get(vm.URL, "/api/v1/query", form, "")
	require.Equal(t, direct, proxied)

	// Series written into proxylens itself are not what the proxy answers.
	app := s.store.Series().Appender(t.Context())
	var err error
	_, err = app.Append(0, labels.FromStrings("__name__", "local_only"), now.UnixMilli(), 1)
	require.NoError(t, err)
	require.NoError(t, app.Commit())
	code, proxied = get(base, "/api/v1/query", url.Values{"query": {"local_only"}, "time": {strconv.FormatInt(now.Unix(), 10)}}, "vera")
	require.Equal(t, http.StatusOK, code)
	require.Empty(t, proxied["data"].(map[string]any)["result"])

	entries, err := s.Store().AuditEntries(pebblestore.AuditFilter{Users: []string{"vera"}, Actions: []string{"query"}})
	require.NoError(t, err)
	require.Len(t, entries, 2)
	e := entries[0]
	require.Equal(t, "upstream_only", e.Resource)
	require.EqualValues(t, 1, e.Results)
	require.True(t, e.Success)
	require.Equal(t, "127.0.0.1", e.ClientIP)

	// The rule evaluates over the upstream: the alert fires.
	require.Eventually(t, func() bool {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/api/v1/alerts", nil)
		require.NoError(t, err)
		req.SetBasicAuth("vera", "vera-pass")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var env struct {
			Data struct {
				Alerts []struct {
					Labels map[string]string `json:"labels"`
					State  string            `json:"state"`
					Value  string            `json:"value"`
				} `json:"alerts"`
			} `json:"data"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&env))
		for _, a := range env.Data.Alerts {
			if a.Labels["alertname"] == "UpstreamOnly" {
				require.Equal(t, "vm", a.Labels["instance"])
				require.Equal(t, "firing", a.State)
				require.Equal(t, "2e+00", a.Value)
				return true
			}
		}
		return false
	}, 30*time.Second, 100*time.Millisecond, "the rule over the upstream did not fire")
}

// TestQueryUpstreamConfig: query.upstream reads Prometheus' client keys
// with Prometheus' client defaults.
func TestQueryUpstreamConfig(t *testing.T) {
	cfg := DefaultConfig()
	require.NoError(t, Parse([]byte(`
query:
  upstream:
    url: https://mimir.example/prometheus
    headers: {X-Scope-OrgID: team-a}
    timeout: 30s
    authorization: {type: Bearer, credentials_file: /etc/proxylens/upstream.token}
    tls_config: {ca_file: /etc/proxylens/ca.pem, insecure_skip_verify: false}
`), &cfg))
	up := cfg.Query.Upstream
	require.NotNil(t, up)
	require.Equal(t, "https://mimir.example/prometheus", up.URL)
	require.Equal(t, map[string]string{"X-Scope-OrgID": "team-a"}, up.Headers)
	require.Equal(t, 30*time.Second, up.Timeout)
	require.Equal(t, "/etc/proxylens/upstream.token", up.HTTPClientConfig.Authorization.CredentialsFile)
	require.Equal(t, "/etc/proxylens/ca.pem", up.HTTPClientConfig.TLSConfig.CAFile)
	require.True(t, up.HTTPClientConfig.FollowRedirects, "Prometheus' default")
	require.True(t, up.HTTPClientConfig.EnableHTTP2, "Prometheus' default")
	require.NoError(t, cfg.Validate())
	require.Nil(t, DefaultConfig().Query.Upstream, "no upstream: the local store answers")
}
