package upstreamtest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
	"github.com/stretchr/testify/require"
)

// Request is one HTTP request to a Prometheus API: a GET sends Form in
// the query string, a POST as a form body.
type Request struct {
	Method, Path string
	Form         url.Values
}

// FixtureSources are the sources of Fixture, in order.
var FixtureSources = []string{"alpha", "beta", "gamma"}

// Fixture is what GrafanaRequests ask about: two hours of
// proxy_requests_total at 60 s resolution from start, where source i of
// FixtureSources grows by i+1 requests a second in application "web" and
// by 1 in "batch". total is sum(proxy_requests_total) at start + 2h.
func Fixture(start time.Time) (series []prompb.TimeSeries, total float64) {
	for i, src := range FixtureSources {
		for _, app := range []string{"web", "batch"} {
			perSec := 1.0
			if app == "web" {
				perSec = float64(i + 1)
			}
			ts := prompb.TimeSeries{Labels: []prompb.Label{
				{Name: "__name__", Value: "proxy_requests_total"}, {Name: "application", Value: app}, {Name: "source", Value: src},
			}}
			for k := 0; k <= 120; k++ {
				ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: start.Add(time.Duration(k) * time.Minute).UnixMilli(), Value: perSec * 60 * float64(k)})
			}
			series = append(series, ts)
			total += perSec * 7200
		}
	}
	return series, total
}

// GrafanaRequests are the requests Grafana's Prometheus data source sends
// (/work/shared/FACTS.md): Save & test, the start-up probes, the metric
// browser, variables and a step-aligned dashboard range query over
// proxy_requests_total, over the two hours from start. Index 6 is the
// dashboard's range query.
func GrafanaRequests(start time.Time) []Request {
	sec := func(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }
	ms := func(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }
	from, to := start.Add(30*time.Minute), start.Add(2*time.Hour)
	return []Request{
		{http.MethodPost, "/api/v1/query", url.Values{"query": {"1+1"}, "time": {"4"}}},
		{http.MethodGet, "/api/v1/query_exemplars", url.Values{"query": {"proxy_requests_total"}, "start": {ms(from)}, "end": {ms(to)}}},
		{http.MethodGet, "/api/v1/label/__name__/values", url.Values{"start": {sec(from.Truncate(time.Minute))}, "end": {sec(to.Truncate(time.Minute))}, "limit": {"40000"}}},
		{http.MethodGet, "/api/v1/label/source/values", url.Values{"match[]": {`proxy_requests_total{application="web"}`}, "start": {sec(from)}, "end": {sec(to)}}},
		{http.MethodPost, "/api/v1/labels", url.Values{"match[]": {"proxy_requests_total"}, "start": {sec(from)}, "end": {sec(to)}}},
		{http.MethodPost, "/api/v1/series", url.Values{"match[]": {`proxy_requests_total{source=~"al.*|beta",application!="batch"}`}, "start": {sec(from)}, "end": {sec(to)}}},
		{http.MethodPost, "/api/v1/query_range", url.Values{
			"query": {`sum by (source) (rate(proxy_requests_total{application="web"}[5m]))`},
			"start": {sec(start.Add(time.Hour))}, "end": {sec(start.Add(90 * time.Minute))}, "step": {"60"}}},
		{http.MethodPost, "/api/v1/query", url.Values{"query": {`sum by (application) (increase(proxy_requests_total[1h]))`}, "time": {sec(to)}}},
		{http.MethodGet, "/api/v1/metadata", url.Values{"limit": {"10"}}},
		// An error the engine finds when it runs the query (the regular
		// expression is a string argument, not checked by the parser).
		{http.MethodPost, "/api/v1/query", url.Values{"query": {`label_replace(proxy_requests_total, "a", "$1", "source", "(")`}, "time": {sec(to)}}},
	}
}

// Do sends one request to u with header added and returns the status,
// the content type and the body.
func Do(t testing.TB, method, u string, form url.Values, header http.Header) (status int, contentType, body string) {
	t.Helper()
	var rd io.Reader
	if method == http.MethodPost {
		rd = strings.NewReader(form.Encode())
	} else if form != nil {
		u += "?" + form.Encode()
	}
	req, err := http.NewRequest(method, u, rd)
	require.NoError(t, err)
	if rd != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

// SameAnswer sends r to the proxy and to the engine directly (API roots)
// and requires the same status, content type and JSON, field by field,
// but for the engine's own timing (stats.executionTimeMsec). It returns
// the proxy's body.
func SameAnswer(t testing.TB, proxy, direct string, r Request) string {
	t.Helper()
	pc, pct, pbody := Do(t, r.Method, proxy+r.Path, r.Form, nil)
	dc, dct, dbody := Do(t, r.Method, direct+r.Path, r.Form, nil)
	require.Equal(t, dc, pc, "%s %s: status; direct %s, proxied %s", r.Method, r.Path, dbody, pbody)
	require.Equal(t, dct, pct, "%s %s: content type", r.Method, r.Path)
	t.Logf("%s %s → %d %.200s", r.Method, r.Path, pc, pbody)
	var p, d map[string]any
	require.NoError(t, json.Unmarshal([]byte(pbody), &p), pbody)
	require.NoError(t, json.Unmarshal([]byte(dbody), &d), dbody)
	for _, m := range []map[string]any{p, d} {
		if st, ok := m["stats"].(map[string]any); ok {
			delete(st, "executionTimeMsec")
		}
	}
	require.Equal(t, d, p, "%s %s", r.Method, r.Path)
	return pbody
}
