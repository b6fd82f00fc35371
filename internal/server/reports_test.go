package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/proxylens/proxylens/internal/export"
	"github.com/proxylens/proxylens/internal/report"
	"github.com/proxylens/proxylens/internal/report/reporttest"
	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
)

// promVector runs an instant query over HTTP as token and returns its
// answer keyed by the label name's values.
func promVector(t *testing.T, s *Server, token, q string, at time.Time, label string) map[string]float64 {
	t.Helper()
	var data struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	path := "/api/v1/query?" + url.Values{"query": {q}, "time": {strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)}}.Encode()
	code, body := call(t, s, http.MethodGet, path, token, "", &data)
	require.Equal(t, http.StatusOK, code, body)
	out := map[string]float64{}
	for _, r := range data.Result {
		v, err := strconv.ParseFloat(r.Value[1].(string), 64)
		require.NoError(t, err)
		out[r.Metric[label]] = v
	}
	return out
}

// TestReports: an analyst's report job answers with an id, runs in the
// background and gives an HTML and a PDF file whose figures are the query
// API's answers for the job's range; a viewer is refused, bad requests
// name the field, and every report is audited.
func TestReports(t *testing.T) {
	cfg := adminConfig(t)
	const analystToken, viewerToken = "analyst-token-0123456789", "viewer-token-0123456789"
	sumA, sumV := sha256.Sum256([]byte(analystToken)), sha256.Sum256([]byte(viewerToken))
	cfg.Auth = AuthConfig{Tokens: []AuthToken{
		{Name: "ann", Role: RoleAnalyst, TokenSHA256: hex.EncodeToString(sumA[:])},
		{Name: "vera", Role: RoleViewer, TokenSHA256: hex.EncodeToString(sumV[:])},
	}}
	now := time.Now().UTC()
	// brightdata is priced per request in USD, spys-one by an EUR
	// subscription: the report's spend is both, allocated to price-monitor.
	from := now.Add(-48 * time.Hour)
	perRequest, subscription := 0.002, 30.0
	cfg.FlushInterval = 15 * time.Second // the event-time grid: figures at now see spans until now
	cfg.Costs = []otelanalytics.CostModel{
		{Source: "brightdata", Model: otelanalytics.CostModelPerRequest, PerRequest: &perRequest, From: from},
		{Source: "spys-one", Model: otelanalytics.CostModelSubscription, Currency: "EUR", Subscription: &subscription, Period: "day", From: from},
	}
	require.NoError(t, cfg.Validate())
	s := start(t, cfg, Options{})
	var stubs []tracetest.SpanStub
	for i := range 300 {
		var attrs []attribute.KeyValue
		if i%2 == 1 && i%5 == 0 {
			attrs = append(attrs, attribute.Int("http.response.status_code", 502), attribute.String("error.type", "502"))
		}
		stubs = append(stubs, proxySpan(i, now.Add(-time.Duration(i+1)*10*time.Second), attrs...))
	}
	exportGRPC(t, s, stubs...)
	require.NoError(t, s.Pipeline().Flush())
	require.NoError(t, s.Pipeline().Flush()) // the finished hours' subscriptions allocated

	post := func(token, body string) (int, string) {
		return call(t, s, http.MethodPost, "/api/v1/reports", token, body, nil)
	}
	code, _ := post(viewerToken, `{"range": "24h", "format": "html"}`)
	require.Equal(t, http.StatusForbidden, code, "a viewer may not")
	for body, msg := range map[string]string{
		`{"range": "24h", "format": "docx"}`:                  `format: "docx" is not html or pdf`,
		`{"range": "1y", "format": "pdf"}`:                    `range: "1y" is not 24h, 7d, 30d`,
		`{"range": "24h", "format": "pdf", "colour": "blue"}`: `unknown field "colour"`,
		`{"range": "24h", "format": "pdf", "sources": [""]}`:  `sources[0]: empty`,
	} {
		code, resp := post(analystToken, body)
		require.Equal(t, http.StatusBadRequest, code, body)
		require.Contains(t, resp, msg)
	}

	files := map[string][]byte{}
	var job export.Job
	for _, format := range []string{"html", "pdf"} {
		b, j, h := jobAndDownload(t, s, "reports", analystToken, `{"range": "24h", "format": "`+format+`"}`, 60*time.Second)
		files[format], job = b, j
		require.Equal(t, map[string]string{"html": "text/html; charset=utf-8", "pdf": "application/pdf"}[format], h.Get("Content-Type"))
		require.Regexp(t, `^attachment; filename="proxylens-report-\d{4}-\d\d-\d\d-[0-9a-f]{16}\.`+format+`"$`, h.Get("Content-Disposition"))
		require.Equal(t, "ann", j.User)
		require.Equal(t, "report", j.Kind)
	}
	require.True(t, bytes.HasPrefix(files["pdf"], []byte("%PDF-")))
	dir := t.TempDir()
	if d := os.Getenv("PROXYLENS_REPORT_OUT"); d != "" {
		dir = d
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "server-report.html"), files["html"], 0o640))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "server-report.pdf"), files["pdf"], 0o640))

	// The figures printed are the query API's answers at the job's end.
	at := job.End
	reqs := promVector(t, s, analystToken, `sum by (source) (increase(proxy_requests_total[1d]))`, at, "source")
	succ := promVector(t, s, analystToken, `sum by (source) (increase(proxy_requests_total{outcome="success"}[1d]))`, at, "source")
	spend := promVector(t, s, analystToken, `sum by (currency) (increase(proxy_cost_allocated_total[1d]))`, at, "currency")
	app := promVector(t, s, analystToken, `sum by (application) (increase(proxy_cost_allocated_total{currency="USD"}[1d]))`, at, "application")
	require.Len(t, reqs, 2)
	require.Less(t, succ["spys-one"], reqs["spys-one"], "some failures")
	require.Len(t, spend, 2)
	html := string(files["html"])
	text := reporttest.PDFText(t, files["pdf"])
	for src, n := range reqs {
		tier := map[string]string{"brightdata": "premium", "spys-one": "free"}[src]
		want := "<tr><td>" + src + "</td><td>" + tier + "</td><td>" + report.Count(n) + "</td>"
		require.Contains(t, html, want)
		require.Contains(t, html, "<td>"+report.Percent(succ[src]/n)+"</td>")
		require.Regexp(t, `(?m)^\s*`+regexp.QuoteMeta(src)+`\s+`+tier+`\s+`+regexp.QuoteMeta(report.Count(n))+`\s`, text)
	}
	for cur, v := range spend {
		require.Contains(t, html, "<tr><td>Spend ("+cur+")</td><td>"+report.Amount(v, cur)+"</td>")
		require.Regexp(t, `Spend \(`+cur+`\)\s+`+regexp.QuoteMeta(report.Amount(v, cur)), text)
	}
	require.Contains(t, html, "<tr><td>price-monitor</td>")
	require.Contains(t, html, report.Amount(app["price-monitor"], "USD"))

	// Audited: each report, who asked, and each download.
	var entries []pebblestore.AuditEntry
	code, body := call(t, s, http.MethodGet, "/api/v1/audit", testAdminToken, "", &entries)
	require.Equal(t, http.StatusOK, code, body)
	var reports, downloads int
	for _, e := range entries {
		switch e.Action {
		case "report":
			reports++
			require.Equal(t, "ann", e.User)
			require.True(t, e.Success)
			require.Contains(t, e.Resource, "report.")
		case "report.download":
			downloads++
		}
	}
	require.Equal(t, 2, reports)
	require.Equal(t, 2, downloads)
}
