package promql_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/promql"
)

// auditLog keeps what the audit hook was told.
type auditLog struct {
	mu   sync.Mutex
	accs []promql.Access
}

func (l *auditLog) add(_ context.Context, a promql.Access) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.accs = append(l.accs, a)
}

func (l *auditLog) all() []promql.Access {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]promql.Access(nil), l.accs...)
}

// startAudited serves an API with an audit hook over q (nil: a store
// holding the fixture), as the server runs it.
func startAudited(t *testing.T, cfg promql.Config, q storage.Queryable) (*httptest.Server, *auditLog, *prometheus.Registry) {
	t.Helper()
	if q == nil {
		s := openStore(t)
		fillFixture(t, s)
		q = s
	}
	log, reg := &auditLog{}, prometheus.NewRegistry()
	a := promql.New(cfg, q, promql.Options{Now: func() time.Time { return t0.Add(time.Hour) }, Registerer: reg, Audit: log.add})
	t.Cleanup(func() { require.NoError(t, a.Close()) })
	mux := http.NewServeMux()
	a.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, log, reg
}

// requireAnswers checks that the server still answers a cheap query.
func requireAnswers(t *testing.T, srv *httptest.Server) {
	t.Helper()
	code, env, _ := do(t, http.MethodGet, srv.URL+"/api/v1/query", url.Values{"query": {`sum(proxy_requests_total)`}, "time": {fmt.Sprint(t0.Add(time.Hour).Unix())}})
	require.Equal(t, http.StatusOK, code, env.Error)
	require.Contains(t, string(env.Data), `"32400"`)
}

func refusedCount(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "proxylens_query_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestNestedQueryRefused: issue 17's attack 3. Deeply nested PromQL, which
// the parser takes tens of seconds for before any timeout applies, is
// refused at once with the limit it broke, on every endpoint that parses
// PromQL; the server answers afterwards.
func TestNestedQueryRefused(t *testing.T) {
	srv, log, reg := startAudited(t, promql.Config{Timeout: time.Second}, nil)
	deep := strings.Repeat("(", 50_000) + "1" + strings.Repeat(")", 50_000) // 100 KB
	const depthMsg = "nested deeper than the limit of 256 levels of brackets and operators (query.max_query_depth)"
	for _, c := range []struct {
		path string
		form url.Values
	}{
		{"/api/v1/query", url.Values{"query": {deep}, "timeout": {"1s"}}},
		{"/api/v1/query_range", url.Values{"query": {deep}, "start": {"0"}, "end": {"3600"}, "step": {"60"}, "timeout": {"1s"}}},
		{"/api/v1/query_exemplars", url.Values{"query": {deep}}},
		{"/api/v1/format_query", url.Values{"query": {strings.Repeat("sum(", 3000) + "x" + strings.Repeat(")", 3000)}}},
		{"/api/v1/series", url.Values{"match[]": {"up", strings.Repeat("(", 1000) + "up" + strings.Repeat(")", 1000)}}},
		{"/api/v1/labels", url.Values{"match[]": {strings.Repeat("(", 1000) + "up" + strings.Repeat(")", 1000)}}},
		// A chain of operators nests as deep as brackets do.
		{"/api/v1/query", url.Values{"query": {"1" + strings.Repeat("+1", 5000)}}},
	} {
		for _, m := range []string{http.MethodGet, http.MethodPost} {
			code, env, _ := do(t, m, srv.URL+c.path, c.form)
			require.Equal(t, http.StatusBadRequest, code, "%s %s: %s", m, c.path, env.Error)
			require.Equal(t, "bad_data", env.ErrorType)
			require.Contains(t, env.Error, depthMsg, "%s %s", m, c.path)
		}
	}
	code, env, _ := do(t, http.MethodGet, srv.URL+"/api/v1/label/source/values", url.Values{"match[]": {strings.Repeat("{", 300)}})
	require.Equal(t, http.StatusBadRequest, code, env.Error)
	require.Contains(t, env.Error, depthMsg)
	require.Equal(t, float64(2*7+1), refusedCount(t, reg, "too_deep"))

	// 200 KB: refused by its length before it is scanned.
	huge := strings.Repeat("(", 100_000) + "1" + strings.Repeat(")", 100_000)
	code, env, _ = do(t, http.MethodPost, srv.URL+"/api/v1/query", url.Values{"query": {huge}, "timeout": {"1s"}})
	require.Equal(t, http.StatusBadRequest, code, env.Error)
	require.Equal(t, `invalid parameter "query": 200,001 bytes long, more than the limit of 131,072 bytes (query.max_query_bytes)`, env.Error)
	require.Equal(t, float64(1), refusedCount(t, reg, "too_long"))
	// The audit log says what was refused.
	accs := log.all()
	require.Contains(t, accs[len(accs)-1].Err, "query.max_query_bytes")

	// What real dashboards send still answers, and a query at the limit
	// parses.
	requireAnswers(t, srv)
	atLimit := strings.Repeat("(", 254) + "sum(proxy_requests_total)" + strings.Repeat(")", 254) // 256 with sum( and the leaf
	code, env, _ = do(t, http.MethodGet, srv.URL+"/api/v1/query", url.Values{"query": {atLimit}, "time": {fmt.Sprint(t0.Add(time.Hour).Unix())}})
	require.Equal(t, http.StatusOK, code, env.Error)
	require.Contains(t, string(env.Data), `"32400"`)
}

// TestFormatQueryCost: format_query's pretty-printer takes time growing
// with the cube of the depth; a query within the depth limit but wide
// enough to keep it busy for seconds is refused, a usual one formatted.
func TestFormatQueryCost(t *testing.T) {
	srv, _, reg := startAudited(t, promql.Config{}, nil)
	chain := "x" + strings.Repeat(" + x", 200)
	var tree func(k int) string
	tree = func(k int) string {
		if k == 0 {
			return "(" + chain + ")"
		}
		return "(" + tree(k-1) + " + " + tree(k-1) + ")"
	}
	q := tree(5) // 32 chains of 200 operators, 211 deep
	code, env, _ := do(t, http.MethodPost, srv.URL+"/api/v1/format_query", url.Values{"query": {q}})
	require.Equal(t, http.StatusBadRequest, code, env.Error)
	require.Contains(t, env.Error, "too large and deeply nested to format")
	require.Equal(t, float64(1), refusedCount(t, reg, "format_cost"))

	code, env, _ = do(t, http.MethodPost, srv.URL+"/api/v1/format_query", url.Values{"query": {chain}})
	require.Equal(t, http.StatusOK, code, env.Error)
	requireAnswers(t, srv)
}

// TestTooManyParamsAndHugeBody: issue 17's item 9. More than 10,000
// match[] parameters, or a POST body over 10 MB, is refused with what was
// too large and the limit, not as a request without match[] or query.
func TestTooManyParamsAndHugeBody(t *testing.T) {
	srv, log, reg := startAudited(t, promql.Config{}, nil)
	many := url.Values{"match[]": make([]string, 10_001)}
	for i := range many["match[]"] {
		many["match[]"][i] = fmt.Sprintf(`proxy_requests_total{n="%d"}`, i)
	}
	const paramsMsg = "too many parameters (such as match[]): at most 10,000 in the URL and 10,000 in the form body"
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		for _, path := range []string{"/api/v1/series", "/api/v1/labels"} {
			code, env, _ := do(t, m, srv.URL+path, many)
			require.Equal(t, http.StatusBadRequest, code, env.Error)
			require.Equal(t, "bad_data", env.ErrorType)
			require.Equal(t, paramsMsg, env.Error, "%s %s", m, path)
		}
	}
	require.Equal(t, float64(4), refusedCount(t, reg, "too_many_params"))
	// 10,000 is allowed.
	many["match[]"] = many["match[]"][:9_999] // and start
	code, env, _ := do(t, http.MethodPost, srv.URL+"/api/v1/series", url.Values{"match[]": many["match[]"], "start": {"0"}})
	require.Equal(t, http.StatusOK, code, env.Error)

	big := url.Values{"query": {"sum(proxy_requests_total) + " + strings.Repeat(" ", 11<<20) + "0"}}
	code, env, _ = do(t, http.MethodPost, srv.URL+"/api/v1/query", big)
	require.Equal(t, http.StatusBadRequest, code, env.Error)
	require.Equal(t, "request body too large: at most 10 MB (10,485,760 bytes) of form", env.Error)
	require.Equal(t, float64(1), refusedCount(t, reg, "body_too_large"))
	accs := log.all()
	require.Equal(t, env.Error, accs[len(accs)-1].Err)
	requireAnswers(t, srv)
}

// blockingStore is the store with a hook: a Select waits until its
// context ends, then reports why and reads the store.
type blockingStore struct {
	storage.Queryable
	started chan struct{}
	ended   chan error
}

func (s blockingStore) Querier(mint, maxt int64) (storage.Querier, error) {
	q, err := s.Queryable.Querier(mint, maxt)
	if err != nil {
		return nil, err
	}
	return blockingQuerier{Querier: q, s: s}, nil
}

type blockingQuerier struct {
	storage.Querier
	s blockingStore
}

func (q blockingQuerier) Select(ctx context.Context, sort bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	q.s.started <- struct{}{}
	<-ctx.Done()
	q.s.ended <- ctx.Err()
	return q.Querier.Select(ctx, sort, hints, ms...)
}

// TestAbandonedQueryStops: a query whose client went away stops with
// context.Canceled in the store's read, long before its timeout, and frees
// its slot for the next query.
func TestAbandonedQueryStops(t *testing.T) {
	s := openStore(t)
	fillFixture(t, s)
	bs := blockingStore{Queryable: s, started: make(chan struct{}, 1), ended: make(chan error, 1)}
	srv, log, reg := startAudited(t, promql.Config{Timeout: time.Hour, MaxConcurrent: 1}, bs)

	ctx, cancel := context.WithCancel(context.Background())
	u := srv.URL + "/api/v1/query?" + url.Values{"query": {`sum(proxy_requests_total)`}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	require.NoError(t, err)
	clientErr := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		clientErr <- err
	}()
	<-bs.started // the query holds the slot and reads the store
	require.Equal(t, float64(1), testutil.ToFloat64(gauge(t, reg, "prometheus_engine_queries")))
	cancel()
	require.ErrorIs(t, <-clientErr, context.Canceled)
	require.ErrorIs(t, <-bs.ended, context.Canceled, "the store's read saw the client go")
	require.Eventually(t, func() bool {
		accs := log.all()
		return len(accs) == 1 && strings.Contains(accs[0].Err, "canceled")
	}, 10*time.Second, 5*time.Millisecond, "the query ended as canceled")
	require.Equal(t, float64(0), testutil.ToFloat64(gauge(t, reg, "prometheus_engine_queries")))

	// The slot is free: the next query (reading the store too) runs.
	go func() { <-bs.started; bs.ended <- nil }()
	qctx, qcancel := context.WithTimeout(context.Background(), time.Minute)
	defer qcancel()
	req, err = http.NewRequestWithContext(qctx, http.MethodGet, srv.URL+"/api/v1/query?"+url.Values{"query": {`vector(1)`}}.Encode(), nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// gauge returns the registered gauge named name as a collector.
func gauge(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name})
			g.Set(mf.GetMetric()[0].GetGauge().GetValue())
			return g
		}
	}
	require.Fail(t, "no metric "+name)
	return nil
}

// TestNestedQueryNotForwarded: in query proxy mode the bounds apply
// before anything is forwarded, to queries, selectors and Exec alike.
func TestNestedQueryNotForwarded(t *testing.T) {
	up := newFakeUpstream(t, answerJSON(http.StatusOK, `{"status":"success","data":{"resultType":"vector","result":[]}}`))
	srv, a := startProxy(t, promql.Config{}, promql.UpstreamConfig{URL: up.URL}, promql.Options{})
	deep := strings.Repeat("(", 10_000) + "1" + strings.Repeat(")", 10_000)
	for _, c := range []struct {
		path string
		form url.Values
	}{
		{"/api/v1/query", url.Values{"query": {deep}}},
		{"/api/v1/query_range", url.Values{"query": {deep}, "start": {"0"}, "end": {"60"}, "step": {"15"}}},
		{"/api/v1/query_exemplars", url.Values{"query": {deep}}},
		{"/api/v1/series", url.Values{"match[]": {deep}}},
	} {
		code, env, _ := do(t, http.MethodPost, srv.URL+c.path, c.form)
		require.Equal(t, http.StatusBadRequest, code, env.Error)
		require.Contains(t, env.Error, "(query.max_query_depth)", c.path)
	}
	res, err := a.Exec(context.Background(), promql.Request{Query: deep, End: t0})
	res.Close()
	require.ErrorContains(t, err, "(query.max_query_depth)")
	require.Zero(t, up.count(), "nothing forwarded")
	code, env, _ := do(t, http.MethodPost, srv.URL+"/api/v1/query", url.Values{"query": {"up"}})
	require.Equal(t, http.StatusOK, code, env.Error)
	require.Equal(t, 1, up.count())
}
