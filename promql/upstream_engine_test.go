package promql_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	promqlengine "github.com/prometheus/prometheus/promql"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/internal/upstreamtest"
	"github.com/proxylens/proxylens/promql"
)

// engineFixture writes upstreamtest.Fixture(start) into e and waits until
// the engine answers for all of it.
func engineFixture(t testing.TB, e upstreamtest.Engine, start time.Time) {
	t.Helper()
	series, want := upstreamtest.Fixture(start)
	e.RemoteWrite(t, series)
	end := start.Add(2 * time.Hour)
	require.Eventually(t, func() bool {
		resp, err := http.PostForm(e.URL+"/api/v1/query", url.Values{"query": {"sum(proxy_requests_total)"}, "time": {strconv.FormatInt(end.Unix(), 10)}})
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var env struct {
			Data struct {
				Result []struct {
					Value [2]any `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if json.NewDecoder(resp.Body).Decode(&env) != nil || len(env.Data.Result) != 1 {
			return false
		}
		return env.Data.Result[0].Value[1] == strconv.FormatFloat(want, 'f', -1, 64)
	}, time.Minute, 100*time.Millisecond, "the engine does not answer for the fixture")
}

// fixtureStart is where an engine's fixture starts: three hours ago on
// the hour, inside any engine's retention and accepted by its ingest.
func fixtureStart() time.Time { return time.Now().UTC().Truncate(time.Hour).Add(-3 * time.Hour) }

// TestUpstreamVictoriaMetrics: Grafana's requests through the proxy
// answer as VictoriaMetrics answers them directly; Exec (rules, exports,
// reports) gets the engine's values; proxied requests are audited.
func TestUpstreamVictoriaMetrics(t *testing.T) {
	testUpstreamEngine(t, upstreamtest.StartVictoriaMetrics(t))
}

// TestUpstreamPrometheus: the same against Prometheus.
func TestUpstreamPrometheus(t *testing.T) {
	testUpstreamEngine(t, upstreamtest.StartPrometheus(t))
}

func testUpstreamEngine(t *testing.T, e upstreamtest.Engine) {
	start := fixtureStart()
	engineFixture(t, e, start)
	var mu sync.Mutex
	var audited []promql.Access
	srv, a := startProxy(t, promql.Config{}, promql.UpstreamConfig{URL: e.URL}, promql.Options{
		Audit: func(_ context.Context, acc promql.Access) {
			mu.Lock()
			audited = append(audited, acc)
			mu.Unlock()
		},
	})

	for _, r := range upstreamtest.GrafanaRequests(start) {
		upstreamtest.SameAnswer(t, srv.URL, e.URL, r)
	}
	// Grafana POSTs buildinfo, and retries with GET on 405: proxylens
	// answers it itself.
	code, _, _ := upstreamtest.Do(t, http.MethodPost, srv.URL+"/api/v1/status/buildinfo", nil, nil)
	require.Equal(t, http.StatusMethodNotAllowed, code)
	code, env, _ := do(t, http.MethodGet, srv.URL+"/api/v1/status/buildinfo", nil)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, string(env.Data), `"version":"1.2.3"`)

	// The dashboard query, decoded: source i's web traffic is i+1 a second.
	body := upstreamtest.SameAnswer(t, srv.URL, e.URL, upstreamtest.GrafanaRequests(start)[6])
	var m struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Values [][2]any          `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &m))
	require.Len(t, m.Data.Result, 3)
	for _, s := range m.Data.Result {
		i := indexOf(fixtureSources, s.Metric["source"])
		require.Len(t, s.Values, 31)
		for _, p := range s.Values {
			require.IsType(t, float64(0), p[0], "times are JSON numbers")
			v, err := strconv.ParseFloat(p[1].(string), 64)
			require.NoError(t, err, "values are strings")
			require.InDelta(t, float64(i+1), v, 1e-9)
		}
	}

	mu.Lock()
	require.Len(t, audited, 11)
	q := audited[6] // the dashboard's range query
	require.Equal(t, "query_range", q.Action)
	require.Equal(t, `sum by (source) (rate(proxy_requests_total{application="web"}[5m]))`, q.Query)
	require.Equal(t, 3, q.Results)
	require.Empty(t, q.Err)
	require.Equal(t, "series", audited[5].Action)
	require.Equal(t, 2, audited[5].Results)
	require.NotEmpty(t, audited[9].Err, "the engine's error is audited")
	mu.Unlock()

	// Exec: the engine's values, as rules, exports and reports read them.
	at := start.Add(2 * time.Hour)
	res, err := a.Exec(context.Background(), promql.Request{Query: `sum by (application) (proxy_requests_total)`, End: at})
	require.NoError(t, err)
	vec, ok := res.Value.(promqlengine.Vector)
	require.True(t, ok, "%T", res.Value)
	require.Len(t, vec, 2)
	got := map[string]float64{}
	for _, s := range vec {
		got[s.Metric.Get("application")] = s.F
		require.Equal(t, at.UnixMilli(), s.T)
	}
	require.Equal(t, map[string]float64{"web": 6 * 7200, "batch": 3 * 7200}, got)
	res.Close()

	res, err = a.Exec(context.Background(), promql.Request{Query: `sum by (source) (rate(proxy_requests_total{application="web"}[5m]))`,
		Start: start.Add(time.Hour), End: start.Add(90 * time.Minute), Step: time.Minute})
	require.NoError(t, err)
	mat, ok := res.Value.(promqlengine.Matrix)
	require.True(t, ok, "%T", res.Value)
	require.Len(t, mat, 3)
	for _, s := range mat {
		i := indexOf(fixtureSources, s.Metric.Get("source"))
		require.Equal(t, labels.FromStrings("source", fixtureSources[i]), s.Metric)
		require.Len(t, s.Floats, 31)
		for _, p := range s.Floats {
			require.InDelta(t, float64(i+1), p.F, 1e-9)
		}
	}
	res.Close()

	res, err = a.Exec(context.Background(), promql.Request{Query: "scalar(sum(proxy_requests_total{source=\"alpha\"}))", End: at})
	require.NoError(t, err)
	switch v := res.Value.(type) {
	case promqlengine.Scalar: // Prometheus
		require.Equal(t, promqlengine.Scalar{T: at.UnixMilli(), V: 2 * 7200}, v)
	case promqlengine.Vector: // VictoriaMetrics answers scalar() with a vector
		require.Equal(t, promqlengine.Vector{{T: at.UnixMilli(), F: 2 * 7200, Metric: labels.EmptyLabels()}}, v)
	default:
		t.Fatalf("scalar() answered a %T", v)
	}
	res.Close()

	res, err = a.Exec(context.Background(), promql.Request{Query: `label_replace(up, "a", "$1", "b", "(")`, End: at})
	require.Error(t, err, fmt.Sprint(res.Value))
	res.Close()
}

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}
