package server

import (
	"encoding/csv"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// withoutAttr drops an attribute of a span stub, so that the mapping reads
// the next one (server.address hides url.full).
func withoutAttr(s tracetest.SpanStub, key attribute.Key) tracetest.SpanStub {
	s.Attributes = slices.DeleteFunc(slices.Clone(s.Attributes), func(kv attribute.KeyValue) bool { return kv.Key == key })
	return s
}

// labelValues returns the values of label in an exposition text.
func labelValues(text, label string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`[{,]`+label+`="([^"]*)"`).FindAllStringSubmatch(text, -1) {
		if !slices.Contains(out, m[1]) {
			out = append(out, m[1])
		}
	}
	slices.Sort(out)
	return out
}

// TestAmbiguousProxyURLsLeakNothing is attack 4 of issue 17 against the
// server: spans whose proxy.url and url.full hold userinfo with an
// unescaped '#' or '?' ("http://user:12345#f@10.9.9.9:3128" used to give
// the proxy label "user:12345", "http://s3cretUSERtok?@…" gave
// "s3cretusertok:80") are exported over OTLP/gRPC and OTLP/HTTP. They are
// accepted, with empty proxy and domain labels, and counted in
// proxylens_span_hosts_dropped_total; neither the password nor the user
// name appears in /metrics, the series and label values of the query API,
// a records export or the data files, and the well-formed spans beside
// them keep their labels.
func TestAmbiguousProxyURLsLeakNothing(t *testing.T) {
	cfg := adminConfig(t)
	s := start(t, cfg, Options{DisableCompression: true})
	end := time.Now().Add(-time.Second)
	attacks := [][2]string{ // proxy.url, url.full
		{"http://user:12345#f@10.9.9.9:3128", "https://user:12345#f@shop.example.com/cart"},
		{"http://s3cretUSERtok?@10.9.9.9:3128", "http://s3cretUSERtok?@shop.example.com/"},
		{"socks5://s3cretUSERtok:pw/x@10.9.9.9:3128", "https://s3cretUSERtok:p#w@shop.example.com"},
	}
	var grpcSpans, httpSpans []tracetest.SpanStub
	for i := range 10 {
		a := attacks[i%len(attacks)]
		kv := []attribute.KeyValue{attribute.String("proxy.url", a[0]), attribute.String("url.full", a[1])}
		grpcSpans = append(grpcSpans, withoutAttr(proxySpan(i, end, kv...), "server.address"))
		httpSpans = append(httpSpans, withoutAttr(proxySpan(100+i, end, kv...), "server.address"))
	}
	good := []attribute.KeyValue{attribute.String("proxy.url", "http://user:s3cret@10.9.9.9:3128")}
	grpcSpans = append(grpcSpans, proxySpan(50, end, good...))
	httpSpans = append(httpSpans, proxySpan(150, end, good...))
	exportGRPC(t, s, grpcSpans...)
	exportHTTP(t, s, httpSpans...)
	require.NoError(t, s.Pipeline().Flush())
	require.NoError(t, s.Store().Flush())

	leaks := func(what, text string) {
		t.Helper()
		lower := strings.ToLower(text)
		for _, secret := range []string{"s3cret", "12345#", "user:12345", "user:"} {
			if i := strings.Index(lower, secret); i >= 0 {
				t.Fatalf("%s holds %q of a credential: …%s…", what, secret, text[max(0, i-60):min(len(text), i+60)])
			}
		}
	}

	base := "http://" + s.HTTPAddr().String()
	code, metrics, _ := get(t, base+"/metrics")
	require.Equal(t, http.StatusOK, code)
	leaks("/metrics", metrics)
	require.Equal(t, []string{"", "10.9.9.9:3128"}, labelValues(metrics, "proxy"))
	require.Equal(t, []string{"", "shop.example.com"}, labelValues(metrics, "domain"))
	require.Contains(t, metrics, `proxylens_span_hosts_dropped_total{label="proxy"} 20`)
	require.Contains(t, metrics, `proxylens_span_hosts_dropped_total{label="domain"} 20`)

	var series []map[string]string
	code, msg := call(t, s, http.MethodGet, "/api/v1/series?match[]=proxy_endpoint_requests_total&match[]=proxy_requests_total", testAdminToken, "", &series)
	require.Equal(t, http.StatusOK, code, msg)
	require.NotEmpty(t, series)
	for _, ls := range series {
		for name, v := range ls {
			leaks("series label "+name, v)
		}
	}
	for _, label := range []string{"proxy", "domain"} {
		var values []string
		code, msg := call(t, s, http.MethodGet, "/api/v1/label/"+label+"/values", testAdminToken, "", &values)
		require.Equal(t, http.StatusOK, code, msg)
		leaks(label+" values", strings.Join(values, "\n"))
		require.NotEmpty(t, values)
	}

	b, job := exportAndDownload(t, s, `{"range": "24h", "format": "csv", "dataset": "records"}`)
	require.EqualValues(t, 22, job.Rows)
	leaks("records export", string(b))
	rows, err := csv.NewReader(strings.NewReader(string(b))).ReadAll()
	require.NoError(t, err)
	proxies, domains := map[string]int{}, map[string]int{}
	for _, r := range rows[1:] {
		proxies[r[4]]++
		domains[r[6]]++
	}
	require.Equal(t, map[string]int{"": 20, "10.9.9.9:3128": 2}, proxies)
	require.Equal(t, map[string]int{"": 20, "shop.example.com": 2}, domains)

	requireNoSecret(t, cfg.DataDir)
	code, _, _ = get(t, base+"/-/ready")
	require.Equal(t, http.StatusOK, code, "the server still answers")
}
