package promql_test

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/config"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/internal/upstreamtest"
	"github.com/proxylens/proxylens/promql"
)

// startProxy serves an API whose queries go to the upstream at upURL.
func startProxy(t testing.TB, cfg promql.Config, up promql.UpstreamConfig, opts promql.Options) (*httptest.Server, *promql.API) {
	t.Helper()
	if up.URL == "" {
		t.Fatal("no upstream URL")
	}
	u, err := promql.NewUpstream(up, promql.UpstreamOptions{UserAgent: "proxylens/test", Registerer: opts.Registerer})
	require.NoError(t, err)
	opts.Upstream = u
	if opts.BuildInfo.Version == "" {
		opts.BuildInfo = promql.BuildInfo{Version: "1.2.3"}
	}
	a := promql.New(cfg, openStore(t), opts)
	t.Cleanup(func() { require.NoError(t, a.Close()) })
	mux := http.NewServeMux()
	a.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, a
}

// fakeUpstream records the requests it gets and answers with answer.
type fakeUpstream struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []*http.Request
	form []url.Values
}

func newFakeUpstream(t testing.TB, answer http.HandlerFunc) *fakeUpstream {
	f := &fakeUpstream{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		f.mu.Lock()
		f.reqs = append(f.reqs, r)
		f.form = append(f.form, r.Form)
		f.mu.Unlock()
		answer(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeUpstream) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reqs)
}

func answerJSON(code int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body)
	}
}

// TestUpstreamLimitsBeforeForwarding: what the limits refuse never
// reaches the upstream, and the rest is forwarded with the configured
// timeout, or the request's when shorter.
func TestUpstreamLimitsBeforeForwarding(t *testing.T) {
	up := newFakeUpstream(t, answerJSON(200, `{"status":"success","data":{"resultType":"vector","result":[]}}`))
	srv, _ := startProxy(t, promql.Config{MaxQueryLength: 24 * time.Hour, MaxPoints: 100, MaxSamples: 1000, Timeout: time.Minute}, promql.UpstreamConfig{URL: up.URL}, promql.Options{})
	for _, c := range []struct {
		name, path string
		form       url.Values
		errType    string
		contains   string
	}{
		{"parse", "/api/v1/query", url.Values{"query": {"sum(("}}, "bad_data", `invalid parameter "query"`},
		{"metricsql", "/api/v1/query", url.Values{"query": {"rollup_candlestick(up)"}}, "bad_data", "unknown function"},
		{"time", "/api/v1/query", url.Values{"query": {"up"}, "time": {"yesterday"}}, "bad_data", `invalid parameter "time"`},
		{"length", "/api/v1/query", url.Values{"query": {"increase(up[30d])"}}, "bad_data", "more than the limit of 1d"},
		{"points", "/api/v1/query_range", url.Values{"query": {"up"}, "start": {"0"}, "end": {"3600"}, "step": {"1"}}, "bad_data", "exceeded maximum resolution of 100 points"},
		{"subquery", "/api/v1/query", url.Values{"query": {"max_over_time(up[1h:1ms])"}}, "execution", "would visit 3,600,000 points per series"},
		{"limit", "/api/v1/query", url.Values{"query": {"up"}, "limit": {"-1"}}, "bad_data", "limit must be"},
		{"timeout", "/api/v1/query", url.Values{"query": {"up"}, "timeout": {"soon"}}, "bad_data", `invalid parameter "timeout"`},
		{"match", "/api/v1/series", url.Values{"match[]": {"{"}}, "bad_data", `invalid parameter "match[]"`},
		{"no match", "/api/v1/series", url.Values{}, "bad_data", "no match[] parameter provided"},
		{"label name", "/api/v1/label/" + url.PathEscape("\xff") + "/values", nil, "bad_data", "invalid label name"},
		{"exemplars", "/api/v1/query_exemplars", url.Values{"query": {"sum(("}}, "bad_data", `invalid parameter "query"`},
		{"metadata", "/api/v1/metadata", url.Values{"limit_per_metric": {"x"}}, "bad_data", "limit_per_metric"},
	} {
		method := http.MethodPost
		if strings.HasPrefix(c.path, "/api/v1/label/") || c.path == "/api/v1/metadata" {
			method = http.MethodGet
		}
		code, env, _ := do(t, method, srv.URL+c.path, c.form)
		require.Equal(t, "error", env.Status, c.name)
		require.Equal(t, c.errType, env.ErrorType, c.name)
		require.Contains(t, env.Error, c.contains, c.name)
		require.NotEqual(t, http.StatusOK, code, c.name)
	}
	require.Zero(t, up.count(), "refused requests reached the upstream")

	code, env, _ := do(t, http.MethodPost, srv.URL+"/api/v1/query", url.Values{"query": {"up"}, "time": {"1700000000"}})
	require.Equal(t, http.StatusOK, code, env.Error)
	code, env, _ = do(t, http.MethodGet, srv.URL+"/api/v1/query_range", url.Values{"query": {"up"}, "start": {"0"}, "end": {"60"}, "step": {"1"}, "timeout": {"5s"}})
	require.Equal(t, http.StatusOK, code, env.Error)
	require.Equal(t, 2, up.count())
	up.mu.Lock()
	defer up.mu.Unlock()
	require.Equal(t, http.MethodPost, up.reqs[0].Method, "queries go as POST forms")
	require.Equal(t, url.Values{"query": {"up"}, "time": {"1700000000"}, "timeout": {"1m"}}, up.form[0])
	require.Equal(t, url.Values{"query": {"up"}, "start": {"0"}, "end": {"60"}, "step": {"1"}, "timeout": {"5s"}}, up.form[1])
}

// TestUpstreamAnswersPassThrough: the upstream's answers, errors
// included, reach the client byte for byte with their status; an answer
// that is not the Prometheus API's, or none, is a 503 unavailable; the
// API keeps serving what it answers itself.
func TestUpstreamAnswersPassThrough(t *testing.T) {
	const errBody = `{"status":"error","errorType":"execution","error":"query processing would load too many samples into memory","warnings":["w1"]}`
	const okBody = `{"status":"success","isPartial":false,"data":{"resultType":"scalar","result":[4,"2"]},"stats":{"seriesFetched":"0"}}`
	up := newFakeUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.Form.Get("query") {
		case "heavy":
			answerJSON(http.StatusUnprocessableEntity, errBody)(w, r)
		case "gz":
			require.Equal(t, "gzip", r.Header.Get("Accept-Encoding"))
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Encoding", "gzip")
			zw := gzip.NewWriter(w)
			_, _ = io.WriteString(zw, okBody)
			_ = zw.Close()
		case "html":
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = io.WriteString(w, "<html>502 Bad Gateway</html>")
		default:
			answerJSON(200, okBody)(w, r)
		}
	})
	reg := prometheus.NewRegistry()
	srv, _ := startProxy(t, promql.Config{}, promql.UpstreamConfig{URL: up.URL}, promql.Options{Registerer: reg})

	code, ct, body := upstreamtest.Do(t, http.MethodPost, srv.URL+"/api/v1/query", url.Values{"query": {"1+1"}, "time": {"4"}}, nil)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "application/json", ct)
	require.Equal(t, okBody, body)

	code, _, body = upstreamtest.Do(t, http.MethodPost, srv.URL+"/api/v1/query", url.Values{"query": {"gz"}}, nil)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, okBody, body, "a gzip answer, decompressed")

	small, _ := startProxy(t, promql.Config{}, promql.UpstreamConfig{URL: up.URL, MaxResponseBytes: int64(len(okBody) - 1)}, promql.Options{})
	code, env, _ := do(t, http.MethodPost, small.URL+"/api/v1/query", url.Values{"query": {"gz"}})
	require.Equal(t, http.StatusUnprocessableEntity, code)
	require.Equal(t, "execution", env.ErrorType)
	require.Contains(t, env.Error, fmt.Sprintf("answered more than query.upstream.max_response_bytes (%d bytes)", len(okBody)-1))

	code, _, body = upstreamtest.Do(t, http.MethodPost, srv.URL+"/api/v1/query", url.Values{"query": {"heavy"}}, nil)
	require.Equal(t, http.StatusUnprocessableEntity, code)
	require.Equal(t, errBody, body)

	code, env, _ = do(t, http.MethodPost, srv.URL+"/api/v1/query", url.Values{"query": {"html"}})
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "unavailable", env.ErrorType)
	require.Contains(t, env.Error, "answered 502 (text/html) and not with the Prometheus API")
	require.Contains(t, env.Error, "502 Bad Gateway")

	require.Equal(t, 1.0, upstreamCount(t, reg, "/api/v1/query", "error"))
	require.Equal(t, 1.0, upstreamCount(t, reg, "/api/v1/query", "unavailable"))
	require.Equal(t, 2.0, upstreamCount(t, reg, "/api/v1/query", "success"))

	// The upstream goes away.
	up.Close()
	for _, c := range []struct {
		method, path string
		form         url.Values
	}{
		{http.MethodPost, "/api/v1/query", url.Values{"query": {"up"}}},
		{http.MethodPost, "/api/v1/query_range", url.Values{"query": {"up"}, "start": {"0"}, "end": {"60"}, "step": {"15"}}},
		{http.MethodPost, "/api/v1/series", url.Values{"match[]": {"up"}}},
		{http.MethodPost, "/api/v1/labels", nil},
		{http.MethodGet, "/api/v1/label/job/values", nil},
		{http.MethodGet, "/api/v1/metadata", nil},
	} {
		code, env, _ := do(t, c.method, srv.URL+c.path, c.form)
		require.Equal(t, http.StatusServiceUnavailable, code, c.path)
		require.Equal(t, "unavailable", env.ErrorType, c.path)
		require.Contains(t, env.Error, "query upstream unavailable: "+up.URL+c.path, c.path)
	}
	code, env, _ = do(t, http.MethodGet, srv.URL+"/api/v1/status/buildinfo", nil)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, string(env.Data), `"version":"1.2.3"`)
	code, env, _ = do(t, http.MethodGet, srv.URL+"/api/v1/format_query", url.Values{"query": {"sum(up)"}})
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, `"sum(up)"`, string(env.Data))
}

// upstreamCount returns proxylens_query_upstream_requests_total{endpoint,outcome}.
func upstreamCount(t testing.TB, reg *prometheus.Registry, endpoint, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "proxylens_query_upstream_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["endpoint"] == endpoint && l["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no proxylens_query_upstream_requests_total{endpoint=%q,outcome=%q}", endpoint, outcome)
	return 0
}

// TestUpstreamCredentials: the upstream gets the configured credentials
// (a bearer token read from its file at each request, as Prometheus does)
// and headers, never the client's own Authorization.
func TestUpstreamCredentials(t *testing.T) {
	up := newFakeUpstream(t, answerJSON(200, `{"status":"success","data":[]}`))
	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("first-token\n"), 0o600))
	srv, _ := startProxy(t, promql.Config{}, promql.UpstreamConfig{
		URL:     up.URL + "/prefix/",
		Headers: map[string]string{"X-Scope-OrgID": "tenant-1"},
		HTTPClientConfig: config.HTTPClientConfig{
			Authorization: &config.Authorization{Type: "Bearer", CredentialsFile: tokenFile},
		},
	}, promql.Options{})
	client := http.Header{"Authorization": {"Basic dmVyYTp2ZXJhLXBhc3M="}}
	code, _, _ := upstreamtest.Do(t, http.MethodGet, srv.URL+"/api/v1/labels", nil, client)
	require.Equal(t, http.StatusOK, code)
	require.NoError(t, os.WriteFile(tokenFile, []byte("second-token\n"), 0o600))
	code, _, _ = upstreamtest.Do(t, http.MethodGet, srv.URL+"/api/v1/label/"+url.PathEscape("U__a_2e_b")+"/values", nil, client)
	require.Equal(t, http.StatusOK, code)

	up.mu.Lock()
	defer up.mu.Unlock()
	require.Len(t, up.reqs, 2)
	require.Equal(t, "/prefix/api/v1/labels", up.reqs[0].URL.Path)
	require.Equal(t, "/prefix/api/v1/label/U__a_2e_b/values", up.reqs[1].URL.Path)
	for i, tok := range []string{"first-token", "second-token"} {
		require.Equal(t, "Bearer "+tok, up.reqs[i].Header.Get("Authorization"))
		require.Equal(t, "tenant-1", up.reqs[i].Header.Get("X-Scope-OrgID"))
		require.Equal(t, "proxylens/test", up.reqs[i].Header.Get("User-Agent"))
	}
}

// TestUpstreamConcurrency: max_concurrent bounds the requests in flight
// to the upstream; the others wait for a slot.
func TestUpstreamConcurrency(t *testing.T) {
	var (
		mu                  sync.Mutex
		inFlight, maxFlight int
	)
	arrived := make(chan struct{}, 8)
	release := make(chan struct{})
	up := newFakeUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inFlight++
		maxFlight = max(maxFlight, inFlight)
		mu.Unlock()
		arrived <- struct{}{}
		<-release
		mu.Lock()
		inFlight--
		mu.Unlock()
		answerJSON(200, `{"status":"success","data":{"resultType":"vector","result":[]}}`)(w, r)
	})
	srv, _ := startProxy(t, promql.Config{MaxConcurrent: 2}, promql.UpstreamConfig{URL: up.URL}, promql.Options{})
	const n = 6
	codes := make(chan int, n)
	for range n {
		go func() {
			resp, err := http.PostForm(srv.URL+"/api/v1/query", url.Values{"query": {"up"}})
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	// Two reach the upstream; then each one let go makes room for one more.
	<-arrived
	<-arrived
	for range n - 2 {
		release <- struct{}{}
		<-arrived
	}
	release <- struct{}{}
	release <- struct{}{}
	for range n {
		require.Equal(t, http.StatusOK, <-codes)
	}
	require.Equal(t, 2, maxFlight, "requests in flight to the upstream")
}

// TestUpstreamTimeout: a request the upstream does not answer within
// query.upstream.timeout ends with a timeout error.
func TestUpstreamTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept() // accepts, never answers
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	srv, a := startProxy(t, promql.Config{}, promql.UpstreamConfig{URL: "http://" + ln.Addr().String(), Timeout: 100 * time.Millisecond}, promql.Options{})
	code, env, _ := do(t, http.MethodPost, srv.URL+"/api/v1/query", url.Values{"query": {"up"}})
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "timeout", env.ErrorType, env.Error)

	res, err := a.Exec(context.Background(), promql.Request{Query: "up", End: time.Unix(1000, 0)})
	require.ErrorContains(t, err, "deadline exceeded")
	res.Close()
}

// TestUpstreamConfigValidate: every problem of the section at once.
func TestUpstreamConfigValidate(t *testing.T) {
	c := promql.Config{Upstream: &promql.UpstreamConfig{URL: "vm:8428", Timeout: -time.Second}}
	err := c.Validate()
	require.EqualError(t, err, `query.upstream.url: must be an http or https URL, got "vm:8428"`+"\n"+`query.upstream.timeout: must not be negative, got "-1s"`)
	_, err = promql.NewUpstream(promql.UpstreamConfig{}, promql.UpstreamOptions{})
	require.EqualError(t, err, "query.upstream.url: required")
	require.NoError(t, promql.Config{Upstream: &promql.UpstreamConfig{URL: "https://mimir.example/prometheus"}}.Validate())
	u, err := promql.NewUpstream(promql.UpstreamConfig{URL: "https://user:secret@mimir.example/prometheus/"}, promql.UpstreamOptions{})
	require.NoError(t, err)
	require.Equal(t, "https://user:xxxxx@mimir.example/prometheus", u.String(), "no password in errors and logs")
}

// TestExecLocal: Request.Local evaluates over the local store, never the
// upstream; without it, Exec goes to the upstream.
func TestExecLocal(t *testing.T) {
	up := newFakeUpstream(t, answerJSON(200, `{"status":"success","data":{"resultType":"scalar","result":[1000,"7"]}}`))
	_, a := startProxy(t, promql.Config{}, promql.UpstreamConfig{URL: up.URL}, promql.Options{})
	res, err := a.Exec(context.Background(), promql.Request{Query: "vector(1)", End: time.Unix(1000, 0), Local: true})
	require.NoError(t, err)
	require.Equal(t, "{} => 1 @[1000000]", res.Value.String())
	res.Close()
	require.Zero(t, up.count())
	res, err = a.Exec(context.Background(), promql.Request{Query: "vector(1)", End: time.Unix(1000, 0)})
	require.NoError(t, err)
	require.Equal(t, "scalar: 7 @[1000000]", res.Value.String())
	res.Close()
	require.Equal(t, 1, up.count())
}

// BenchmarkUpstreamForward: what the proxy adds to a range query's
// answer of series=N × 1,441 points (a day at 60 s), against the same
// request sent to the upstream directly, on loopback.
func BenchmarkUpstreamForward(b *testing.B) {
	for _, n := range []int{1, 20} {
		var sb strings.Builder
		sb.WriteString(`{"status":"success","data":{"resultType":"matrix","result":[`)
		for i := range n {
			if i > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, `{"metric":{"source":"s%d"},"values":[`, i)
			for k := range 1441 {
				if k > 0 {
					sb.WriteByte(',')
				}
				fmt.Fprintf(&sb, `[%d,"%g"]`, 1700000000+60*k, float64(k)*1.5)
			}
			sb.WriteString(`]}`)
		}
		sb.WriteString(`]}}`)
		body := sb.String()
		up := newFakeUpstream(b, answerJSON(200, body))
		srv, _ := startProxy(b, promql.Config{}, promql.UpstreamConfig{URL: up.URL}, promql.Options{})
		form := url.Values{"query": {"sum by (source) (rate(proxy_requests_total[5m]))"}, "start": {"1700000000"}, "end": {"1700086400"}, "step": {"60"}}
		for _, c := range []struct{ name, base string }{{"direct", up.URL}, {"proxied", srv.URL}} {
			b.Run(fmt.Sprintf("series=%d/%s", n, c.name), func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(body)))
				for b.Loop() {
					resp, err := http.PostForm(c.base+"/api/v1/query_range", form)
					if err != nil {
						b.Fatal(err)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		}
		up.mu.Lock()
		up.reqs, up.form = nil, nil // the fake keeps what it got
		up.mu.Unlock()
	}
}
