package server

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
)

const testAdminToken = "pl-admin-0123456789abcdef"

// adminConfig is a test config with the bootstrap admin token.
func adminConfig(t *testing.T) Config {
	cfg := testConfig(t)
	cfg.AdminTokenFile = filepath.Join(t.TempDir(), "admin.token")
	require.NoError(t, os.WriteFile(cfg.AdminTokenFile, []byte(testAdminToken+"\n"), 0o600))
	return cfg
}

// call sends an admin request and decodes the envelope's data into out.
func call(t *testing.T, s *Server, method, path, token, body string, out any) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, "http://"+s.HTTPAddr().String()+path, strings.NewReader(body))
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var env struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
		Error  string          `json:"error"`
	}
	if resp.StatusCode != http.StatusNotFound {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&env))
	}
	if out != nil && env.Status == "success" {
		require.NoError(t, json.Unmarshal(env.Data, out))
	}
	return resp.StatusCode, env.Error
}

func TestAdminAPIDisabledWithoutToken(t *testing.T) {
	s := start(t, testConfig(t), Options{})
	for _, p := range []string{"/api/v1/admin/retention", "/api/v1/admin/costs", "/api/v1/admin/sampling"} {
		code, _ := call(t, s, http.MethodGet, p, testAdminToken, "", nil)
		require.Equal(t, http.StatusNotFound, code, p)
	}
}

func TestAdminAuthAndRetention(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	s := start(t, adminConfig(t), Options{Now: func() time.Time { return now }})

	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+s.HTTPAddr().String()+"/api/v1/admin/retention", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.Equal(t, `Bearer realm="proxylens admin"`, resp.Header.Get("WWW-Authenticate"))
	code, _ := call(t, s, http.MethodGet, "/api/v1/admin/retention", "wrong-token-0123456789", "", nil)
	require.Equal(t, http.StatusUnauthorized, code)

	var p pebblestore.RetentionPolicy
	code, _ = call(t, s, http.MethodGet, "/api/v1/admin/retention", testAdminToken, "", &p)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, pebblestore.DefaultRetention(), p)

	code, msg := call(t, s, http.MethodPut, "/api/v1/admin/retention", testAdminToken, `{"hourly_days": 3}`, nil)
	require.Equal(t, http.StatusBadRequest, code)
	require.Equal(t, "retention.hourly_days: must be at least raw_series_days (7), got 3\nretention.hourly_days: must be at least raw_records_days (7), got 3", msg)
	code, msg = call(t, s, http.MethodPut, "/api/v1/admin/retention", testAdminToken, `{"hourly_dayz": 3}`, nil)
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, msg, `unknown field "hourly_dayz"`)

	code, _ = call(t, s, http.MethodPut, "/api/v1/admin/retention", testAdminToken, `{"raw_records_days": 14, "immutable_until": "2027-01-01T00:00:00Z"}`, &p)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, 14, p.RawRecordsDays)
	require.Equal(t, 30, p.HourlyDays, "fields left out keep their value")
	code, msg = call(t, s, http.MethodPut, "/api/v1/admin/retention", testAdminToken, `{"raw_records_days": 7}`, nil)
	require.Equal(t, http.StatusConflict, code)
	require.Equal(t, "retention.raw_records_days: the compliance hold until 2027-01-01T00:00:00Z forbids shortening it (14 → 7 days)", msg)
	code, _ = call(t, s, http.MethodPut, "/api/v1/admin/retention", testAdminToken, `{"immutable_until": null}`, nil)
	require.Equal(t, http.StatusConflict, code)

	// Enforcement under the hold deletes nothing.
	var e pebblestore.Enforcement
	code, _ = call(t, s, http.MethodPost, "/api/v1/admin/retention/enforce", testAdminToken, "", &e)
	require.Equal(t, http.StatusOK, code)
	require.True(t, e.Held)

	// Sampling thresholds take effect at once.
	var sc otelanalytics.SamplingConfig
	code, _ = call(t, s, http.MethodPut, "/api/v1/admin/sampling", testAdminToken, `{"floor": 0.5}`, &sc)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, 0.5, s.Sampler().Config().Floor)
	code, msg = call(t, s, http.MethodPut, "/api/v1/admin/sampling", testAdminToken, `{"floor": 2}`, nil)
	require.Equal(t, http.StatusBadRequest, code)
	require.Equal(t, "sampling.floor: must be in (0, 1], got 2", msg)

	// Rollup on demand.
	var rr pebblestore.RollupResult
	code, _ = call(t, s, http.MethodPost, "/api/v1/admin/rollup", testAdminToken, `{"start": "2026-11-01T00:00:00Z", "end": "2026-11-29T00:00:00Z"}`, &rr)
	require.Equal(t, http.StatusOK, code)
	code, msg = call(t, s, http.MethodPost, "/api/v1/admin/rollup", testAdminToken, `{"start": "2026-11-29T00:00:00Z"}`, nil)
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, msg, "start and end")

	// Every change and refusal is audited.
	entries, err := s.Store().AuditEntries(pebblestore.AuditFilter{From: now.Add(-time.Hour), To: now.Add(time.Hour)})
	require.NoError(t, err)
	var actions []string
	for _, en := range entries {
		actions = append(actions, en.Action+map[bool]string{true: ":ok", false: ":refused"}[en.Success])
	}
	require.Equal(t, []string{
		"retention.update:refused", "retention.update:ok", "retention.update:refused", "retention.update:refused",
		"retention.enforce:ok", "sampling.update:ok", "sampling.update:refused", "rollup.run:ok",
	}, actions)

	// The audit API, with filters, and the chain's verification.
	var listed []pebblestore.AuditEntry
	code, msg = call(t, s, http.MethodGet, "/api/v1/audit?action=sampling.update&limit=1", testAdminToken, "", &listed)
	require.Equal(t, http.StatusOK, code, msg)
	require.Len(t, listed, 1)
	require.Equal(t, "sampling.update", listed[0].Action)
	require.False(t, listed[0].Success)
	require.Equal(t, "127.0.0.1", listed[0].ClientIP)
	code, _ = call(t, s, http.MethodGet, "/api/v1/audit?start=2026-11-29T13:00:00Z", testAdminToken, "", &listed)
	require.Equal(t, http.StatusOK, code)
	require.Empty(t, listed)
	code, msg = call(t, s, http.MethodGet, "/api/v1/audit?limit=0", testAdminToken, "", nil)
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, msg, `invalid parameter "limit"`)
	code, _ = call(t, s, http.MethodGet, "/api/v1/audit", "", "", nil)
	require.Equal(t, http.StatusUnauthorized, code)
	var v AuditVerification
	code, _ = call(t, s, http.MethodGet, "/api/v1/admin/audit/verify", testAdminToken, "", &v)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, AuditVerification{Entries: 8, Valid: true}, v)
}

// TestCostsEndToEnd: cost models set through the admin API price the
// spans sent afterwards, by event time, per source and application; the
// figures PromQL gives equal the bill computed from what was sent.
func TestCostsEndToEnd(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Hour)
	cfg := adminConfig(t)
	s := start(t, cfg, Options{})

	code, msg := call(t, s, http.MethodPut, "/api/v1/admin/costs", testAdminToken, `[{"source": "brightdata", "model": "hybrid", "currency": "usdx", "from": "2026-01-01T00:00:00Z", "per_request": 0.001}]`, nil)
	require.Equal(t, http.StatusBadRequest, code, msg)
	code, msg = call(t, s, http.MethodPut, "/api/v1/admin/costs", testAdminToken, `[{"source": "brightdata", "model": "per_request", "from": "2026-01-01T00:00:00Z", "per_gb": 3}]`, nil)
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, msg, "costs[0].")

	models := `[
	  {"source": "brightdata", "model": "hybrid", "currency": "USD", "from": "2020-01-01T00:00:00Z", "per_request": 0.002, "per_gb": 4, "subscription": 300, "period": "month"},
	  {"source": "spys-one", "model": "per_request", "currency": "USD", "from": "2020-01-01T00:00:00Z", "per_request": 0}
	]`
	var got []otelanalytics.CostModel
	code, msg = call(t, s, http.MethodPut, "/api/v1/admin/costs", testAdminToken, models, &got)
	require.Equal(t, http.StatusOK, code, msg)
	require.Len(t, got, 2)
	code, _ = call(t, s, http.MethodGet, "/api/v1/admin/costs", testAdminToken, "", &got)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "brightdata", got[0].Source)

	// 200 spans over the past two hours; even ones from brightdata with
	// 1000 bytes received (proxySpan) and 500 sent.
	var stubs []tracetest.SpanStub
	wantUSD := 0.0
	for i := range 200 {
		st := proxySpan(i, now.Add(-time.Duration(i)*30*time.Second-time.Second), attribute.Int("http.request.body.size", 500))
		stubs = append(stubs, st)
		if i%2 == 0 {
			wantUSD += 0.002 + 1500.0/1e9*4
		}
	}
	exportGRPC(t, s, stubs...)
	require.NoError(t, s.Pipeline().Flush())
	require.NoError(t, s.appendSelfMetrics(t.Context(), now))

	api := queryClient(t, s)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	v, _, _, err := api.Query(ctx, `sum by (source, currency) (increase(proxy_cost_total[3h]))`, now)
	require.NoError(t, err)
	vec := v.(model.Vector)
	require.Len(t, vec, 2)
	bySource := map[string]float64{}
	for _, smp := range vec {
		bySource[string(smp.Metric["source"])] = float64(smp.Value)
		require.Equal(t, "USD", string(smp.Metric["currency"]))
	}
	require.InEpsilon(t, wantUSD, bySource["brightdata"], 0.005)
	require.Zero(t, bySource["spys-one"])

	v, _, _, err = api.Query(ctx, `proxy_subscription_cost`, now)
	require.NoError(t, err)
	vec = v.(model.Vector)
	require.Len(t, vec, 1)
	require.Equal(t, model.Metric{"__name__": "proxy_subscription_cost", "source": "brightdata", "currency": "USD", "period": "month"}, vec[0].Metric)
	require.Equal(t, 300.0, float64(vec[0].Value))

	// The models outlive a restart.
	require.NoError(t, s.Shutdown(context.Background()))
	s2 := start(t, cfg, Options{})
	code, _ = call(t, s2, http.MethodGet, "/api/v1/admin/costs", testAdminToken, "", &got)
	require.Equal(t, http.StatusOK, code)
	require.Len(t, got, 2)
}

// TestSamplingPersists: a sampling change through the admin API outlives
// a restart, audited; an edit of the config file's sampling section
// afterwards wins at the next start.
func TestSamplingPersists(t *testing.T) {
	cfg := adminConfig(t)
	s := start(t, cfg, Options{})
	var sc otelanalytics.SamplingConfig
	code, msg := call(t, s, http.MethodPut, "/api/v1/admin/sampling", testAdminToken, `{"floor": 0.5, "low_per_minute": 2000}`, &sc)
	require.Equal(t, http.StatusOK, code, msg)
	want := otelanalytics.SamplingConfig{LowPerMinute: 2000, HighPerMinute: cfg.Sampling.HighPerMinute, Floor: 0.5}
	require.Equal(t, want, sc)
	entries, err := s.Store().AuditEntries(pebblestore.AuditFilter{Actions: []string{"sampling.update"}})
	require.NoError(t, err)
	require.Len(t, entries, 1)
	require.True(t, entries[0].Success)
	require.Contains(t, entries[0].Detail, `"floor":0.5`)

	require.NoError(t, s.Shutdown(context.Background()))
	s = start(t, cfg, Options{})
	code, _ = call(t, s, http.MethodGet, "/api/v1/admin/sampling", testAdminToken, "", &sc)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, want, sc, "the API's change outlives a restart")

	require.NoError(t, s.Shutdown(context.Background()))
	cfg.Sampling.Floor = 0.25
	s = start(t, cfg, Options{})
	code, _ = call(t, s, http.MethodGet, "/api/v1/admin/sampling", testAdminToken, "", &sc)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, cfg.Sampling, sc, "the config file changed since: the file's applies")
}
