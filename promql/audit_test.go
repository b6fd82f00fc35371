package promql_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/promql"
)

// TestAuditHook: every query and lookup is reported once answered, with
// its action, query or selectors, range, result count, time taken and
// error; other endpoints are not.
func TestAuditHook(t *testing.T) {
	s := openStore(t)
	fillFixture(t, s)
	var mu sync.Mutex
	var got []promql.Access
	a := promql.New(promql.Config{}, s, promql.Options{
		Metadata: fixtureMetadata,
		Audit: func(_ context.Context, acc promql.Access) {
			mu.Lock()
			got = append(got, acc)
			mu.Unlock()
		},
	})
	defer a.Close()
	mux := http.NewServeMux()
	a.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	start, end := t0.Unix(), t0.Add(time.Hour).Unix()
	for _, req := range []struct{ method, path, form string }{
		{"GET", "/api/v1/query?query=proxy_requests_total&time=" + itoa(end), ""},
		{"POST", "/api/v1/query_range", "query=sum(rate(proxy_requests_total[5m]))&start=" + itoa(start) + "&end=" + itoa(end) + "&step=60"},
		{"GET", "/api/v1/series?match[]=proxy_requests_total&start=" + itoa(start) + "&end=" + itoa(end), ""},
		{"GET", "/api/v1/labels", ""},
		{"GET", "/api/v1/label/source/values", ""},
		{"GET", "/api/v1/metadata", ""},
		{"GET", "/api/v1/query?query=sum((", ""},
		{"GET", "/api/v1/status/buildinfo", ""},
		{"GET", "/api/v1/format_query?query=up", ""},
	} {
		var resp *http.Response
		var err error
		if req.method == "POST" {
			resp, err = http.Post(srv.URL+req.path, "application/x-www-form-urlencoded", strings.NewReader(req.form))
		} else {
			resp, err = http.Get(srv.URL + req.path)
		}
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, 7)
	n := len(fixtureSources) * 2
	for i, want := range []struct {
		action, query string
		results       int
		err           bool
	}{
		{"query", "proxy_requests_total", n, false},
		{"query_range", "sum(rate(proxy_requests_total[5m]))", 1, false},
		{"series", "proxy_requests_total", n, false},
		{"labels", "", 3, false},
		{"label_values", "source", len(fixtureSources), false},
		{"metadata", "", 4, false},
		{"query", "sum((", 0, true},
	} {
		g := got[i]
		require.Equal(t, want.action, g.Action, i)
		require.Equal(t, want.query, g.Query, i)
		require.Equal(t, want.results, g.Results, "%d %s", i, g.Action)
		require.Equal(t, want.err, g.Err != "", i)
		require.Positive(t, g.Took)
	}
	rfc := func(v int64) string { return time.Unix(v, 0).UTC().Format(time.RFC3339) }
	require.Equal(t, rfc(end), got[0].Start, "an instant query's time is its range")
	require.Equal(t, rfc(start), got[1].Start)
	require.Equal(t, rfc(end), got[1].End)
}

func itoa(v int64) string { return url.QueryEscape(time.Unix(v, 0).UTC().Format(time.RFC3339)) }
