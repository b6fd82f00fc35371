package promql_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/internal/upstreamtest"
	"github.com/proxylens/proxylens/pebblestore"
	"github.com/proxylens/proxylens/promql"
)

// t0 is where the fixture's samples start.
var t0 = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

var fixtureSources = upstreamtest.FixtureSources

// openStore opens a series store in a fresh directory.
func openStore(t testing.TB) *pebblestore.SeriesStore {
	t.Helper()
	db, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	return db.Series()
}

// fillFixture appends two hours of proxy_requests_total at 15 s
// resolution: source i (alpha, beta, gamma) and application app grows by
// (i+1) requests per second for app "web" and 1 per second for "batch".
func fillFixture(t testing.TB, s storage.Appendable) {
	t.Helper()
	app := s.Appender(context.Background())
	for i, src := range fixtureSources {
		for _, a := range []string{"web", "batch"} {
			ls := labels.FromStrings("__name__", "proxy_requests_total", "application", a, "source", src)
			perSec := 1.0
			if a == "web" {
				perSec = float64(i + 1)
			}
			for k := 0; k <= 2*240; k++ {
				ts := t0.Add(time.Duration(k) * 15 * time.Second)
				_, err := app.Append(0, ls, ts.UnixMilli(), perSec*15*float64(k))
				require.NoError(t, err)
			}
		}
	}
	require.NoError(t, app.Commit())
}

func fixtureMetadata() map[string][]metadata.Metadata {
	return map[string][]metadata.Metadata{
		"proxy_requests_total":             {{Type: "counter", Help: "Requests sent through proxies.", Unit: ""}},
		"proxy_request_duration_seconds":   {{Type: "histogram", Help: "Latency of proxied requests.", Unit: "seconds"}},
		"proxylens_ingest_spans_total":     {{Type: "counter", Help: "Spans accepted.", Unit: ""}},
		"proxylens_pipeline_batches_total": {{Type: "counter", Help: "Batches.", Unit: ""}},
	}
}

// startAPI serves an API over a store holding the fixture.
func startAPI(t testing.TB, cfg promql.Config) (*httptest.Server, *promql.API) {
	return startAPIWith(t, cfg, nil)
}

// startAPIWith registers the engine's metrics with reg.
func startAPIWith(t testing.TB, cfg promql.Config, reg prometheus.Registerer) (*httptest.Server, *promql.API) {
	t.Helper()
	s := openStore(t)
	fillFixture(t, s)
	a := promql.New(cfg, s, promql.Options{
		Metadata:   fixtureMetadata,
		BuildInfo:  promql.BuildInfo{Version: "1.2.3", Revision: "abc"},
		Now:        func() time.Time { return t0.Add(time.Hour) },
		Registerer: reg,
	})
	t.Cleanup(func() { require.NoError(t, a.Close()) })
	mux := http.NewServeMux()
	a.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, a
}

// envelope is Prometheus' response envelope with the data left raw.
type envelope struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Warnings  []string        `json:"warnings"`
	Infos     []string        `json:"infos"`
}

func do(t testing.TB, method, u string, form url.Values) (int, envelope, http.Header) {
	t.Helper()
	var body io.Reader
	if method == http.MethodPost && form != nil {
		body = strings.NewReader(form.Encode())
	} else if form != nil {
		u += "?" + form.Encode()
	}
	req, err := http.NewRequest(method, u, body)
	require.NoError(t, err)
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var env envelope
	if resp.Header.Get("Content-Type") == "application/json" {
		require.NoError(t, json.Unmarshal(b, &env), "body %s", b)
	}
	return resp.StatusCode, env, resp.Header
}

// TestGrafanaSaveAndTest replays what Grafana's Prometheus data source
// sends on "Save & test" and when it starts.
func TestGrafanaSaveAndTest(t *testing.T) {
	srv, _ := startAPI(t, promql.Config{})

	code, env, _ := do(t, http.MethodPost, srv.URL+"/api/v1/query", url.Values{"query": {"1+1"}, "time": {"4"}})
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "success", env.Status)
	assert.JSONEq(t, `{"resultType":"scalar","result":[4,"2"]}`, string(env.Data))

	// Grafana POSTs buildinfo first and retries with GET on 405.
	code, _, hdr := do(t, http.MethodPost, srv.URL+"/api/v1/status/buildinfo", url.Values{})
	require.Equal(t, http.StatusMethodNotAllowed, code)
	require.Contains(t, hdr.Get("Allow"), http.MethodGet)
	code, env, _ = do(t, http.MethodGet, srv.URL+"/api/v1/status/buildinfo", nil)
	require.Equal(t, http.StatusOK, code)
	var bi map[string]string
	require.NoError(t, json.Unmarshal(env.Data, &bi))
	require.Equal(t, "1.2.3", bi["version"])
	require.Equal(t, "abc", bi["revision"])
	require.NotEmpty(t, bi["goVersion"])

	// The exemplar probe sends milliseconds; there are no exemplars.
	ms := t0.UnixMilli()
	code, env, _ = do(t, http.MethodPost, srv.URL+"/api/v1/query_exemplars", url.Values{
		"query": {"proxy_requests_total"}, "start": {fmt.Sprint(ms)}, "end": {fmt.Sprint(ms + 3600_000)}})
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `[]`, string(env.Data))

	code, env, _ = do(t, http.MethodGet, srv.URL+"/api/v1/rules", nil)
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `{"groups":[]}`, string(env.Data))
}

// TestGrafanaVariablesAndBrowser replays the metric browser's and the
// variable editor's requests.
func TestGrafanaVariablesAndBrowser(t *testing.T) {
	srv, _ := startAPI(t, promql.Config{})
	start, end := fmt.Sprint(t0.Unix()), fmt.Sprint(t0.Add(2*time.Hour).Unix())

	code, env, _ := do(t, http.MethodGet, srv.URL+"/api/v1/label/__name__/values",
		url.Values{"start": {start}, "end": {end}, "limit": {"40000"}})
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `["proxy_requests_total"]`, string(env.Data))

	// label_values(proxy_requests_total{application="web"}, source)
	code, env, _ = do(t, http.MethodGet, srv.URL+"/api/v1/label/source/values",
		url.Values{"match[]": {`proxy_requests_total{application="web"}`}, "start": {start}, "end": {end}})
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `["alpha","beta","gamma"]`, string(env.Data))

	code, env, _ = do(t, http.MethodPost, srv.URL+"/api/v1/labels",
		url.Values{"match[]": {`proxy_requests_total`}, "start": {start}, "end": {end}})
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `["__name__","application","source"]`, string(env.Data))

	code, env, _ = do(t, http.MethodGet, srv.URL+"/api/v1/labels", url.Values{"start": {start}, "end": {end}})
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `["__name__","application","source"]`, string(env.Data))

	code, env, _ = do(t, http.MethodPost, srv.URL+"/api/v1/series",
		url.Values{"match[]": {`proxy_requests_total{source=~"al.*|beta",application!="batch"}`}, "start": {start}, "end": {end}})
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `[
		{"__name__":"proxy_requests_total","application":"web","source":"alpha"},
		{"__name__":"proxy_requests_total","application":"web","source":"beta"}]`, string(env.Data))

	// A range query POSTed as a form, start and end rounded to the step.
	code, env, _ = do(t, http.MethodPost, srv.URL+"/api/v1/query_range", url.Values{
		"query": {`sum by (source) (rate(proxy_requests_total{application="web"}[5m]))`},
		"start": {fmt.Sprint(t0.Add(time.Hour).Unix())}, "end": {fmt.Sprint(t0.Add(90 * time.Minute).Unix())}, "step": {"60"}})
	require.Equal(t, http.StatusOK, code, "%s", env.Error)
	var m struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Values [][2]any          `json:"values"`
		} `json:"result"`
	}
	require.NoError(t, json.Unmarshal(env.Data, &m))
	require.Equal(t, "matrix", m.ResultType)
	require.Len(t, m.Result, 3)
	for i, s := range m.Result {
		require.Equal(t, fixtureSources[i], s.Metric["source"])
		require.Len(t, s.Values, 31)
		for _, p := range s.Values {
			require.IsType(t, float64(0), p[0], "times are JSON numbers")
			v, err := strconv.ParseFloat(p[1].(string), 64)
			require.NoError(t, err, "values are strings")
			require.InDelta(t, float64(i+1), v, 1e-9)
		}
	}
}

func TestQueryParameters(t *testing.T) {
	srv, _ := startAPI(t, promql.Config{})
	q := func(method, path string, form url.Values) (int, envelope) {
		code, env, _ := do(t, method, srv.URL+path, form)
		return code, env
	}

	// Times as RFC 3339 and as Unix seconds with fractions, durations as
	// Prometheus durations and as seconds.
	for _, ts := range []string{t0.Add(time.Hour).Format(time.RFC3339Nano), fmt.Sprintf("%d.000", t0.Add(time.Hour).Unix())} {
		code, env := q(http.MethodGet, "/api/v1/query", url.Values{"query": {`proxy_requests_total{source="beta",application="web"}`}, "time": {ts}})
		require.Equal(t, http.StatusOK, code, env.Error)
		require.JSONEq(t, fmt.Sprintf(`{"resultType":"vector","result":[{"metric":{"__name__":"proxy_requests_total","application":"web","source":"beta"},"value":[%d,"7200"]}]}`, t0.Add(time.Hour).Unix()), string(env.Data))
	}
	// Without time, now.
	code, env := q(http.MethodGet, "/api/v1/query", url.Values{"query": {`time()`}})
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, fmt.Sprintf(`{"resultType":"scalar","result":[%d,"%d"]}`, t0.Add(time.Hour).Unix(), t0.Add(time.Hour).Unix()), string(env.Data))

	for _, step := range []string{"1m", "60", "60.0"} {
		code, env := q(http.MethodGet, "/api/v1/query_range", url.Values{"query": {`vector(1)`}, "start": {"0"}, "end": {"600"}, "step": {step}})
		require.Equal(t, http.StatusOK, code, env.Error)
		require.Contains(t, string(env.Data), `[600,"1"]`)
	}

	// limit truncates and warns.
	code, env = q(http.MethodPost, "/api/v1/query", url.Values{"query": {`proxy_requests_total`}, "time": {fmt.Sprint(t0.Add(time.Hour).Unix())}, "limit": {"2"}})
	require.Equal(t, http.StatusOK, code)
	var vec struct{ Result []any }
	require.NoError(t, json.Unmarshal(env.Data, &vec))
	require.Len(t, vec.Result, 2)
	require.Equal(t, []string{"results truncated due to limit"}, env.Warnings)

	// stats.
	code, env = q(http.MethodGet, "/api/v1/query", url.Values{"query": {`proxy_requests_total`}, "time": {fmt.Sprint(t0.Add(time.Hour).Unix())}, "stats": {"all"}})
	require.Equal(t, http.StatusOK, code)
	var st struct {
		Stats struct {
			Timings map[string]float64 `json:"timings"`
			Samples struct {
				TotalQueryableSamples int `json:"totalQueryableSamples"`
			} `json:"samples"`
		} `json:"stats"`
	}
	require.NoError(t, json.Unmarshal(env.Data, &st))
	require.Contains(t, st.Stats.Timings, "evalTotalTime")
	require.Equal(t, 6, st.Stats.Samples.TotalQueryableSamples)

	// Warnings from the engine pass through.
	code, env = q(http.MethodGet, "/api/v1/query", url.Values{"query": {`quantile(2, proxy_requests_total)`}, "time": {fmt.Sprint(t0.Add(time.Hour).Unix())}})
	require.Equal(t, http.StatusOK, code)
	require.NotEmpty(t, env.Warnings, "quantile out of range is a warning")
}

func TestErrors(t *testing.T) {
	srv, _ := startAPI(t, promql.Config{MaxSamples: 100})
	for _, tc := range []struct {
		name, method, path string
		form               url.Values
		code               int
		typ, msg           string
	}{
		{"parse error", "GET", "/api/v1/query", url.Values{"query": {"sum(("}}, 400, "bad_data", `invalid parameter "query"`},
		{"empty query", "GET", "/api/v1/query", url.Values{}, 400, "bad_data", `invalid parameter "query"`},
		{"bad time", "GET", "/api/v1/query", url.Values{"query": {"1"}, "time": {"yesterday"}}, 400, "bad_data", `invalid parameter "time": cannot parse "yesterday" to a valid timestamp`},
		{"bad timeout", "GET", "/api/v1/query", url.Values{"query": {"1"}, "timeout": {"soon"}}, 400, "bad_data", `invalid parameter "timeout"`},
		{"bad max_source_resolution", "GET", "/api/v1/query", url.Values{"query": {"1"}, "max_source_resolution": {"2h"}}, 400, "bad_data", `invalid parameter "max_source_resolution": "2h" is not raw, 0s, 5m, 1h or auto`},
		{"bad limit", "GET", "/api/v1/query", url.Values{"query": {"1"}, "limit": {"-1"}}, 400, "bad_data", `limit`},
		{"no start", "GET", "/api/v1/query_range", url.Values{"query": {"1"}, "end": {"10"}, "step": {"1"}}, 400, "bad_data", `invalid parameter "start"`},
		{"end before start", "GET", "/api/v1/query_range", url.Values{"query": {"1"}, "start": {"10"}, "end": {"5"}, "step": {"1"}}, 400, "bad_data", "end timestamp must not be before start time"},
		{"zero step", "GET", "/api/v1/query_range", url.Values{"query": {"1"}, "start": {"0"}, "end": {"5"}, "step": {"0"}}, 400, "bad_data", "zero or negative query resolution step widths are not accepted. Try a positive integer"},
		{"too many points", "GET", "/api/v1/query_range", url.Values{"query": {"1"}, "start": {"0"}, "end": {"11001"}, "step": {"1"}}, 400, "bad_data", "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"},
		{"too many samples", "GET", "/api/v1/query_range", url.Values{"query": {"proxy_requests_total"}, "start": {fmt.Sprint(t0.Unix())}, "end": {fmt.Sprint(t0.Add(time.Hour).Unix())}, "step": {"15"}}, 422, "execution", "query processing would load too many samples into memory"},
		{"execution error", "GET", "/api/v1/query", url.Values{"query": {`label_replace(proxy_requests_total, "source", "x", "", "")`}, "time": {fmt.Sprint(t0.Add(time.Hour).Unix())}}, 422, "execution", "vector cannot contain metrics with the same labelset"},
		{"series without match", "GET", "/api/v1/series", url.Values{}, 400, "bad_data", "no match[] parameter provided"},
		{"bad match", "POST", "/api/v1/series", url.Values{"match[]": {"{"}}, 400, "bad_data", `invalid parameter "match[]"`},
		{"bad label name", "GET", "/api/v1/label/%ff/values", nil, 400, "bad_data", "invalid label name"},
		{"bad format_query", "GET", "/api/v1/format_query", url.Values{"query": {"sum("}}, 400, "bad_data", `invalid parameter "query"`},
		{"bad exemplar query", "GET", "/api/v1/query_exemplars", url.Values{"query": {"sum("}}, 400, "bad_data", `invalid parameter "query"`},
		{"bad metadata limit", "GET", "/api/v1/metadata", url.Values{"limit": {"x"}}, 400, "bad_data", "limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, env, _ := do(t, tc.method, srv.URL+tc.path, tc.form)
			require.Equal(t, tc.code, code, env.Error)
			require.Equal(t, "error", env.Status)
			require.Equal(t, tc.typ, env.ErrorType)
			require.Contains(t, env.Error, tc.msg)
		})
	}

}

// TestTimeoutParameter: a query that cannot finish within the request's
// timeout parameter times out with 503.
func TestTimeoutParameter(t *testing.T) {
	srv, _ := startAPI(t, promql.Config{})
	code, env, _ := do(t, http.MethodGet, srv.URL+"/api/v1/query", url.Values{"query": {deathQuery}, "timeout": {"0.01"}})
	require.Equal(t, http.StatusServiceUnavailable, code, env.Error)
	require.Equal(t, "timeout", env.ErrorType)
}

func TestMaxQueryLength(t *testing.T) {
	srv, _ := startAPI(t, promql.Config{MaxQueryLength: 24 * time.Hour})
	code, env, _ := do(t, http.MethodGet, srv.URL+"/api/v1/query", url.Values{"query": {"rate(proxy_requests_total[1d])"}})
	require.Equal(t, http.StatusOK, code, env.Error)
	code, env, _ = do(t, http.MethodGet, srv.URL+"/api/v1/query", url.Values{"query": {"rate(proxy_requests_total[1d] offset 1h)"}})
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, env.Error, "the query covers 1d1h, more than the limit of 1d")
	code, env, _ = do(t, http.MethodGet, srv.URL+"/api/v1/query_range", url.Values{"query": {"rate(proxy_requests_total[5m])"}, "start": {"0"}, "end": {"86400"}, "step": {"3600"}})
	require.Equal(t, http.StatusBadRequest, code)
	require.Equal(t, "bad_data", env.ErrorType)
	code, _, _ = do(t, http.MethodGet, srv.URL+"/api/v1/query_range", url.Values{"query": {"max_over_time(vector(1)[2h:1m])"}, "start": {"0"}, "end": {"79200"}, "step": {"3600"}})
	require.Equal(t, http.StatusOK, code)
	code, _, _ = do(t, http.MethodGet, srv.URL+"/api/v1/query_range", url.Values{"query": {"max_over_time(vector(1)[3h:1m])"}, "start": {"0"}, "end": {"79200"}, "step": {"3600"}})
	require.Equal(t, http.StatusBadRequest, code)
}

func TestMetadataAndFormat(t *testing.T) {
	srv, _ := startAPI(t, promql.Config{})
	code, env, _ := do(t, http.MethodGet, srv.URL+"/api/v1/metadata", nil)
	require.Equal(t, http.StatusOK, code)
	var md map[string][]map[string]string
	require.NoError(t, json.Unmarshal(env.Data, &md))
	require.Len(t, md, 4)
	require.Equal(t, map[string]string{"type": "histogram", "help": "Latency of proxied requests.", "unit": "seconds"}, md["proxy_request_duration_seconds"][0])

	code, env, _ = do(t, http.MethodGet, srv.URL+"/api/v1/metadata", url.Values{"metric": {"proxy_requests_total"}})
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `{"proxy_requests_total":[{"type":"counter","help":"Requests sent through proxies.","unit":""}]}`, string(env.Data))

	code, env, _ = do(t, http.MethodGet, srv.URL+"/api/v1/metadata", url.Values{"limit": {"2"}})
	require.Equal(t, http.StatusOK, code)
	md = nil
	require.NoError(t, json.Unmarshal(env.Data, &md))
	require.Len(t, md, 2)

	code, env, _ = do(t, http.MethodGet, srv.URL+"/api/v1/format_query", url.Values{"query": {`sum by(source)(rate(proxy_requests_total{application="web"}[5m]))`}})
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `"sum by (source) (rate(proxy_requests_total{application=\"web\"}[5m]))"`, string(env.Data))
}

func TestSeriesAndLabelLimits(t *testing.T) {
	srv, _ := startAPI(t, promql.Config{})
	code, env, _ := do(t, http.MethodGet, srv.URL+"/api/v1/series", url.Values{"match[]": {"proxy_requests_total"}, "limit": {"4"}})
	require.Equal(t, http.StatusOK, code)
	var series []map[string]string
	require.NoError(t, json.Unmarshal(env.Data, &series))
	require.Len(t, series, 4)
	require.Equal(t, []string{"results truncated due to limit"}, env.Warnings)

	// Two match[] selecting overlapping series return each series once.
	code, env, _ = do(t, http.MethodGet, srv.URL+"/api/v1/series", url.Values{"match[]": {`{source="alpha"}`, `{application="web"}`}})
	require.Equal(t, http.StatusOK, code)
	require.NoError(t, json.Unmarshal(env.Data, &series))
	require.Len(t, series, 4)

	code, env, _ = do(t, http.MethodGet, srv.URL+"/api/v1/label/source/values", url.Values{"limit": {"2"}})
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `["alpha","beta"]`, string(env.Data))
	require.Equal(t, []string{"results truncated due to limit"}, env.Warnings)

	code, env, _ = do(t, http.MethodGet, srv.URL+"/api/v1/label/nothing/values", nil)
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `[]`, string(env.Data))

	code, env, _ = do(t, http.MethodGet, srv.URL+"/api/v1/labels", url.Values{"match[]": {`{source="nowhere"}`}})
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `[]`, string(env.Data))

	code, env, _ = do(t, http.MethodGet, srv.URL+"/api/v1/labels", url.Values{"limit": {"1"}})
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `["__name__"]`, string(env.Data))
}

// TestClientGolang queries through client_golang's API client, which
// decodes every answer with Prometheus' own types.
func TestClientGolang(t *testing.T) {
	srv, _ := startAPI(t, promql.Config{})
	c, err := api.NewClient(api.Config{Address: srv.URL})
	require.NoError(t, err)
	p := v1.NewAPI(c)
	ctx := context.Background()
	at := t0.Add(time.Hour)

	v, warn, _, err := p.Query(ctx, `sum by (source) (increase(proxy_requests_total[1h]))`, at)
	require.NoError(t, err)
	require.Empty(t, warn)
	vec := v.(model.Vector)
	require.Len(t, vec, 3)
	for i, s := range vec {
		require.Equal(t, model.LabelValue(fixtureSources[i]), s.Metric["source"])
		require.InDelta(t, float64(i+2)*3600, float64(s.Value), 1e-6)
	}

	// The second hour against the first: both hours grow alike, 0 %.
	v, _, _, err = p.Query(ctx, `100 * (sum(increase(proxy_requests_total[1h])) / sum(increase(proxy_requests_total[1h] offset 1h)) - 1)`, t0.Add(2*time.Hour))
	require.NoError(t, err)
	require.InDelta(t, 0, float64(v.(model.Vector)[0].Value), 1e-9)

	r, _, _, err := p.QueryRange(ctx, `sum(rate(proxy_requests_total[5m]))`, v1.Range{Start: at, End: at.Add(10 * time.Minute), Step: time.Minute})
	require.NoError(t, err)
	m := r.(model.Matrix)
	require.Len(t, m, 1)
	require.Len(t, m[0].Values, 11)
	for _, p := range m[0].Values {
		require.InDelta(t, 9, float64(p.Value), 1e-9)
	}

	set, _, _, err := p.Series(ctx, []string{`proxy_requests_total{source="gamma"}`}, t0, at)
	require.NoError(t, err)
	require.Len(t, set, 2)

	names, _, _, err := p.LabelNames(ctx, nil, t0, at)
	require.NoError(t, err)
	require.Equal(t, model.LabelNames{"__name__", "application", "source"}, names)

	vals, _, _, err := p.LabelValues(ctx, "application", []string{`{source="alpha"}`}, t0, at)
	require.NoError(t, err)
	require.Equal(t, model.LabelValues{"batch", "web"}, vals)

	md, err := p.Metadata(ctx, "proxy_requests_total", "")
	require.NoError(t, err)
	require.Equal(t, v1.MetricTypeCounter, md["proxy_requests_total"][0].Type)

	bi, err := p.Buildinfo(ctx)
	require.NoError(t, err)
	require.Equal(t, "1.2.3", bi.Version)

	ex, err := p.QueryExemplars(ctx, `proxy_requests_total`, t0, at)
	require.NoError(t, err)
	require.Empty(t, ex)

	rules, err := p.Rules(ctx, nil)
	require.NoError(t, err)
	require.Empty(t, rules.Groups)

	_, _, _, err = p.Query(ctx, `sum(`, at)
	var perr *v1.Error
	require.ErrorAs(t, err, &perr)
	require.Equal(t, v1.ErrBadData, perr.Type)
}

// deathQuery visits 155 million points for each of four series: at each of
// 86,401 steps, the 1,800 points of a subquery window. The engine checks
// the timeout between series.
const deathQuery = `max_over_time(max_over_time((vector(time()) or label_replace(vector(time()), "s", "1", "", "") or label_replace(vector(time()), "s", "2", "", "") or label_replace(vector(time()), "s", "3", "", ""))[30m:1s])[1d:1s])`

// TestQueryOfDeath runs a query far too expensive to finish beside cheap
// ones: the cheap ones answer while it runs, and it is stopped by the
// timeout instead of taking the service down.
func TestQueryOfDeath(t *testing.T) {
	srv, _ := startAPI(t, promql.Config{Timeout: time.Second})
	type answer struct {
		code int
		env  envelope
	}
	death := make(chan answer, 1)
	go func() {
		code, env, _ := do(t, http.MethodGet, srv.URL+"/api/v1/query", url.Values{"query": {deathQuery}, "time": {fmt.Sprint(t0.Add(2 * time.Hour).Unix())}})
		death <- answer{code, env}
	}()
	cheap := 0
	for {
		select {
		case a := <-death:
			require.Positive(t, cheap, "a cheap query answered while the query of death ran")
			require.Equal(t, http.StatusServiceUnavailable, a.code, a.env.Error)
			require.Equal(t, "timeout", a.env.ErrorType)
			return
		default:
		}
		code, env, _ := do(t, http.MethodGet, srv.URL+"/api/v1/query", url.Values{"query": {`sum(proxy_requests_total)`}, "time": {fmt.Sprint(t0.Add(time.Hour).Unix())}})
		require.Equal(t, http.StatusOK, code)
		require.Contains(t, string(env.Data), `"32400"`)
		cheap++
	}
}

// TestAbsurdSubquery: a subquery of more steps than a query may load
// samples is refused before it runs.
func TestAbsurdSubquery(t *testing.T) {
	srv, _ := startAPI(t, promql.Config{})
	code, env, _ := do(t, http.MethodGet, srv.URL+"/api/v1/query", url.Values{"query": {`vector(1)[30d:1ms]`}})
	require.Equal(t, http.StatusUnprocessableEntity, code)
	require.Equal(t, "execution", env.ErrorType)
	require.Contains(t, env.Error, "the subquery vector(1)[30d:1ms] would be evaluated at 2,592,000,001 steps, more than the 50,000,000 samples a query may load")
	// Nested: the inner subquery runs over the outer one's range too.
	code, env, _ = do(t, http.MethodGet, srv.URL+"/api/v1/query", url.Values{"query": {`max_over_time(count_over_time(vector(1)[1m:10ms])[60d:1m])`}})
	require.Equal(t, http.StatusUnprocessableEntity, code, env.Error)
	require.Contains(t, env.Error, "the subquery vector(1)[1m:10ms] would be evaluated at 518,406,001 steps")
	// A range query evaluates the subquery over its whole span.
	code, env, _ = do(t, http.MethodGet, srv.URL+"/api/v1/query_range", url.Values{"query": {`count_over_time(vector(1)[1m:1ms])`}, "start": {"0"}, "end": {"86400"}, "step": {"60"}})
	require.Equal(t, http.StatusUnprocessableEntity, code, env.Error)
	code, env, _ = do(t, http.MethodGet, srv.URL+"/api/v1/query", url.Values{"query": {`max_over_time(count_over_time(vector(1)[1m:1s])[1d:])`}, "time": {"100000"}})
	require.Equal(t, http.StatusOK, code, env.Error)
	require.Contains(t, string(env.Data), `"60"`)

	// A range function over a subquery visits steps × window points per
	// series, in a loop the engine's timeout does not interrupt.
	code, env, _ = do(t, http.MethodGet, srv.URL+"/api/v1/query", url.Values{"query": {`max_over_time(max_over_time(vector(time())[1d:1s])[7d:1s])`}})
	require.Equal(t, http.StatusUnprocessableEntity, code, env.Error)
	require.Contains(t, env.Error, "max_over_time over the subquery vector(time())[1d:1s] would visit 52,254,806,400 points per series, more than 1,000,000,000")
	code, env, _ = do(t, http.MethodGet, srv.URL+"/api/v1/query_range", url.Values{"query": {`max_over_time(vector(time())[2d:1s])`}, "start": {"0"}, "end": {"360000"}, "step": {"60"}})
	require.Equal(t, http.StatusUnprocessableEntity, code, env.Error)
	require.Contains(t, env.Error, "would visit 1,036,972,800 points per series")
}

// TestMaxConcurrent: with one slot, a second query waits in the queue while
// the first runs, and gives up with 503 when its own timeout passes first.
// The configured timeout counts the wait, as Prometheus' does: it is
// longer here than the slow query's own.
func TestMaxConcurrent(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv, _ := startAPIWith(t, promql.Config{MaxConcurrent: 1, Timeout: 10 * time.Second}, reg)
	running := func() float64 {
		mfs, err := reg.Gather()
		require.NoError(t, err)
		for _, mf := range mfs {
			if mf.GetName() == "prometheus_engine_queries" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return 0
	}
	slow := func(wg *sync.WaitGroup) {
		wg.Go(func() {
			_, _, _ = do(t, http.MethodGet, srv.URL+"/api/v1/query", url.Values{"query": {deathQuery}, "timeout": {"1s"}})
		})
		for running() == 0 { // until the slow query holds the slot
			time.Sleep(time.Millisecond)
		}
	}
	var wg sync.WaitGroup
	slow(&wg)
	code, env, _ := do(t, http.MethodGet, srv.URL+"/api/v1/query", url.Values{"query": {"1+1"}, "stats": {"1"}})
	require.Equal(t, http.StatusOK, code, env.Error)
	var st struct {
		Stats struct {
			Timings struct {
				ExecQueueTime float64 `json:"execQueueTime"`
			} `json:"timings"`
		} `json:"stats"`
	}
	require.NoError(t, json.Unmarshal(env.Data, &st))
	require.Greater(t, st.Stats.Timings.ExecQueueTime, 0.1, "the second query waited for the slot")
	wg.Wait()

	slow(&wg)
	code, env, _ = do(t, http.MethodGet, srv.URL+"/api/v1/query", url.Values{"query": {"1+1"}, "timeout": {"100ms"}})
	require.Equal(t, http.StatusServiceUnavailable, code, env.Error)
	require.Equal(t, "timeout", env.ErrorType)
	wg.Wait()
}

func TestConfigValidate(t *testing.T) {
	require.NoError(t, promql.DefaultConfig().Validate())
	err := promql.Config{Timeout: -1, MaxSamples: -1, MaxConcurrent: -1, MaxPoints: -1, MaxQueryLength: -1, MaxQueryBytes: -1, MaxQueryDepth: -1, LookbackDelta: -1,
		ResultCache: promql.ResultCacheConfig{MaxBytes: -1}}.Validate()
	for _, k := range []string{"query.timeout", "query.max_samples", "query.max_concurrent", "query.max_points_per_series", "query.max_query_length", "query.max_query_bytes", "query.max_query_depth", "query.lookback_delta",
		"query.result_cache.max_bytes"} {
		require.ErrorContains(t, err, k)
	}
}
