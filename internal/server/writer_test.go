package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/prompb"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/proxylens/proxylens/pebblestore"
)

// postWrite sends a remote write 1.0 request as Prometheus does, with an
// Authorization header if auth is not empty.
func postWrite(t *testing.T, s *Server, req *prompb.WriteRequest, auth string) (int, string) {
	t.Helper()
	raw, err := req.Marshal()
	require.NoError(t, err)
	r, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+s.HTTPAddr().String()+"/api/v1/write", bytes.NewReader(snappy.Encode(nil, raw)))
	require.NoError(t, err)
	r.Header.Set("Content-Encoding", "snappy")
	r.Header.Set("Content-Type", "application/x-protobuf")
	r.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(r)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, strings.TrimSpace(string(body))
}

func series(name string, kv ...string) []prompb.Label {
	out := []prompb.Label{{Name: "__name__", Value: name}}
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, prompb.Label{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

// requireNoSeries checks that nothing in the store matches sel, at any
// time (the series API reads the index, not the lookback window).
func requireNoSeries(t *testing.T, api v1.API, sel string) {
	t.Helper()
	got, _, _, err := api.Series(t.Context(), []string{sel}, time.Unix(0, 0), time.Now().Add(time.Hour))
	require.NoError(t, err)
	require.Empty(t, got, sel)
}

// TestRemoteWriteReservedNames is attack 2 of issue 17: a remote write of
// proxy_requests_total{source="forged"} = 1,000,000 (and proxy_cost_total,
// and a self-metric) reached every dashboard. The series proxylens owns
// are refused; the good series of the same request are written exactly
// once; the answer is 400 (not retried) naming the first refused series
// and the count; the counters the spans made are unchanged.
func TestRemoteWriteReservedNames(t *testing.T) {
	s := start(t, testConfig(t), Options{})
	api := queryClient(t, s)
	now := time.Now().UTC().Truncate(time.Minute)
	exportGRPC(t, s, proxySpan(1, now.Add(-3*time.Minute)), proxySpan(2, now.Add(-2*time.Minute)))
	require.NoError(t, s.Pipeline().Flush())
	const requests = `sum by (source) (increase(proxy_requests_total[5h]))`
	before := instant(t, s, requests, now.Add(2*time.Hour)).String()
	require.Contains(t, before, "brightdata")

	t0 := now.Add(-5 * time.Minute).UnixMilli()
	req := &prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{
			{Labels: series("node_load1", "instance", "a"), Samples: []prompb.Sample{{Timestamp: t0, Value: 0.5}, {Timestamp: t0 + 60e3, Value: 0.7}}},
			{Labels: series("proxy_requests_total", "source", "forged", "outcome", "success"), Samples: []prompb.Sample{{Timestamp: t0, Value: 1e6}}},
			{Labels: series("proxy_cost_total", "source", "forged", "currency", "USD"), Samples: []prompb.Sample{{Timestamp: t0, Value: 5e5}, {Timestamp: t0 + 60e3, Value: 6e5}}},
			{Labels: series("proxylens_up", "source", "forged"), Samples: []prompb.Sample{{Timestamp: t0, Value: 1}}},
			{Labels: series("jobs_done_total", "job", "b"), Samples: []prompb.Sample{{Timestamp: t0, Value: 1}, {Timestamp: t0 + 60e3, Value: 2}, {Timestamp: t0 + 120e3, Value: 3}}},
		},
		Metadata: []prompb.MetricMetadata{
			{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "proxy_requests_total", Help: "forged help"},
			{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: "node_load1", Help: "1m load average."},
		},
	}
	code, body := postWrite(t, s, req, "")
	require.Equal(t, http.StatusBadRequest, code, body)
	require.Equal(t, `3 series (4 samples) refused: names starting with proxy_ or proxylens_ are written by proxylens only; `+
		`the first: {__name__="proxy_requests_total", outcome="success", source="forged"}; the other 5 samples were written`, body)

	// A sender that retries it anyway: the same answer, nothing doubled.
	code, _ = postWrite(t, s, req, "")
	require.Equal(t, http.StatusBadRequest, code)
	// Only reserved names: nothing written, the same refusal.
	code, body = postWrite(t, s, &prompb.WriteRequest{Timeseries: req.Timeseries[1:2]}, "")
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, body, "1 series (1 samples) refused")

	// The good series are there exactly once, through the PromQL API.
	at := now.Add(time.Minute)
	v := instant(t, s, `count_over_time(node_load1{instance="a"}[10m])`, at)
	require.Len(t, v, 1)
	require.EqualValues(t, 2, v[0].Value)
	v = instant(t, s, `count_over_time(jobs_done_total[10m])`, at)
	require.Len(t, v, 1)
	require.EqualValues(t, 3, v[0].Value)
	// The refused ones nowhere, and the span counters as they were.
	require.Empty(t, instant(t, s, `proxy_requests_total{source="forged"}`, at))
	require.Empty(t, instant(t, s, `{source="forged"}`, at))
	requireNoSeries(t, api, `{source="forged"}`)
	require.Equal(t, before, instant(t, s, requests, now.Add(2*time.Hour)).String())
	md, err := api.Metadata(t.Context(), "", "")
	require.NoError(t, err)
	for _, m := range md["proxy_requests_total"] {
		require.NotEqual(t, "forged help", m.Help)
	}
	require.Equal(t, "1m load average.", md["node_load1"][0].Help)

	require.EqualValues(t, 4+4+1, scrape(t, s, `proxylens_write_refused_samples_total{api="remote_write",reason="reserved_name"}`))
	require.EqualValues(t, 3, scrape(t, s, `proxylens_write_requests_total{api="remote_write",outcome="partial"}`))

	// The server still takes clean writes (the fast path) and answers.
	code, body = postWrite(t, s, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: series("node_load1", "instance", "b"), Samples: []prompb.Sample{{Timestamp: t0, Value: 1}}}}}, "")
	require.Equal(t, http.StatusNoContent, code, body)
	require.Len(t, instant(t, s, `last_over_time(node_load1[10m])`, at), 2)
}

// TestAcceptReservedNames: receiver.accept_reserved_names lets a copy of
// proxylens' own series in, by remote write and OTLP metrics alike.
func TestAcceptReservedNames(t *testing.T) {
	cfg := testConfig(t)
	cfg.Receiver.AcceptReservedNames = true
	s := start(t, cfg, Options{})
	now := time.Now().UTC().Truncate(time.Minute)
	t0 := now.Add(-5 * time.Minute).UnixMilli()
	code, body := postWrite(t, s, &prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{
			{Labels: series("proxy_requests_total", "source", "copied", "outcome", "success"), Samples: []prompb.Sample{{Timestamp: t0, Value: 10}, {Timestamp: t0 + 60e3, Value: 12}}},
		},
		Metadata: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "proxy_requests_total", Help: "copied help"}},
	}, "")
	require.Equal(t, http.StatusNoContent, code, body)
	v := instant(t, s, `proxy_requests_total{source="copied"}`, now)
	require.Len(t, v, 1)
	require.EqualValues(t, 12, v[0].Value)

	conn, err := grpc.NewClient(s.OTLPGRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	resp, err := pmetricotlp.NewGRPCClient(conn).Export(t.Context(), pmetricotlp.NewExportRequestFromMetrics(otlpMetrics(now)))
	require.NoError(t, err)
	require.Zero(t, resp.PartialSuccess().RejectedDataPoints(), resp.PartialSuccess().ErrorMessage())
	at := now.Add(time.Minute)
	require.Len(t, instant(t, s, `proxy_requests_total{job="shop"}`, at), 2)
	require.Len(t, instant(t, s, `proxylens_up{job="shop"}`, at), 1)
}

// otlpMetrics is an OTLP metrics request of service shop: one good gauge
// and metrics whose translated names proxylens owns.
func otlpMetrics(now time.Time) pmetric.Metrics {
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	rm.Resource().Attributes().PutStr("service.name", "shop")
	ms := rm.ScopeMetrics().AppendEmpty().Metrics()
	ts := pcommon.NewTimestampFromTime(now.Add(-time.Minute))
	good := ms.AppendEmpty()
	good.SetName("queue.depth")
	dp := good.SetEmptyGauge().DataPoints().AppendEmpty()
	dp.SetTimestamp(ts)
	dp.SetIntValue(7)
	// proxy.requests, a monotonic sum, becomes proxy_requests_total.
	forged := ms.AppendEmpty()
	forged.SetName("proxy.requests")
	sum := forged.SetEmptySum()
	sum.SetIsMonotonic(true)
	sum.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	for _, src := range []string{"forged", "forged-too"} {
		p := sum.DataPoints().AppendEmpty()
		p.SetTimestamp(ts)
		p.SetDoubleValue(1e6)
		p.Attributes().PutStr("source", src)
	}
	self := ms.AppendEmpty()
	self.SetName("proxylens_up")
	p := self.SetEmptyGauge().DataPoints().AppendEmpty()
	p.SetTimestamp(ts)
	p.SetIntValue(1)
	p.Attributes().PutStr("source", "forged")
	return md
}

// TestOTLPMetricsReservedNames is attack 2 of issue 17 over OTLP metrics:
// Prometheus' path on the query API and MetricsService/Export on the OTLP
// gRPC listener refuse the points of metrics named proxy_* or proxylens_*
// after name translation, in partial_success as the OTLP specification
// says, and write the rest.
func TestOTLPMetricsReservedNames(t *testing.T) {
	s := start(t, testConfig(t), Options{})
	now := time.Now().UTC().Truncate(time.Second)

	body, err := pmetricotlp.NewExportRequestFromMetrics(otlpMetrics(now)).MarshalProto()
	require.NoError(t, err)
	resp, err := http.Post("http://"+s.HTTPAddr().String()+"/api/v1/otlp/v1/metrics", "application/x-protobuf", bytes.NewReader(body))
	require.NoError(t, err)
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, string(raw))
	got := pmetricotlp.NewExportResponse()
	require.NoError(t, got.UnmarshalProto(raw))
	require.EqualValues(t, 3, got.PartialSuccess().RejectedDataPoints())
	msg := got.PartialSuccess().ErrorMessage()
	require.Contains(t, msg, `metric "proxy.requests": the name proxy_requests_total is written by proxylens only`)
	require.Contains(t, msg, `metric "proxylens_up": the name proxylens_up is written by proxylens only`)

	conn, err := grpc.NewClient(s.OTLPGRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	gresp, err := pmetricotlp.NewGRPCClient(conn).Export(t.Context(), pmetricotlp.NewExportRequestFromMetrics(otlpMetrics(now.Add(time.Second))))
	require.NoError(t, err)
	require.EqualValues(t, 3, gresp.PartialSuccess().RejectedDataPoints())

	at := now.Add(time.Minute)
	v := instant(t, s, `count_over_time(queue_depth{job="shop"}[10m])`, at)
	require.Len(t, v, 1)
	require.EqualValues(t, 2, v[0].Value, "the good gauge, once from each request")
	require.Empty(t, instant(t, s, `{source=~"forged.*"}`, at))
	requireNoSeries(t, queryClient(t, s), `{source=~"forged.*"}`)
	require.EqualValues(t, 6, scrape(t, s, `proxylens_write_refused_samples_total{api="otlp",reason="reserved_name"}`))
}

// TestWriterRole is attack 2 of issue 17, the roles: with users, writing
// series needs the writer or admin role. A viewer or an analyst gets 403
// on both write endpoints, audited as access.denied, and writes nothing; a
// writer writes and may not read; with otlp_require_token, OTLP ingest
// takes writer and admin tokens only.
func TestWriterRole(t *testing.T) {
	cfg := adminConfig(t)
	token := func(name, role, secret string) AuthToken {
		sum := sha256.Sum256([]byte(secret))
		return AuthToken{Name: name, Role: role, TokenSHA256: hex.EncodeToString(sum[:])}
	}
	const viewerTok, writerTok = "viewer-token-0123456789", "writer-token-0123456789"
	cfg.Auth = AuthConfig{
		Users: []AuthUser{
			{Name: "vera", Role: RoleViewer, PasswordHash: bcryptHash(t, "vera-pass")},
			{Name: "ann", Role: RoleAnalyst, PasswordHash: bcryptHash(t, "ann-pass")},
			{Name: "wendy", Role: RoleWriter, PasswordHash: bcryptHash(t, "wendy-pass")},
			{Name: "root", Role: RoleAdmin, PasswordHash: bcryptHash(t, "root-pass")},
		},
		Tokens:           []AuthToken{token("grafana", RoleViewer, viewerTok), token("prometheus", RoleWriter, writerTok)},
		OTLPRequireToken: true,
	}
	require.NoError(t, cfg.Validate())
	s := start(t, cfg, Options{})
	basic := func(user, pass string) string {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.SetBasicAuth(user, pass)
		return r.Header.Get("Authorization")
	}
	t0 := time.Now().Add(-time.Minute).UnixMilli()
	write := func(who, auth string) (int, string) {
		return postWrite(t, s, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
			{Labels: series("written_by", "who", who), Samples: []prompb.Sample{{Timestamp: t0, Value: 1}}}}}, auth)
	}
	otlp := func(auth string) int {
		md := pmetric.NewMetrics()
		m := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
		m.SetName("otlp_written")
		dp := m.SetEmptyGauge().DataPoints().AppendEmpty()
		dp.SetTimestamp(pcommon.NewTimestampFromTime(time.UnixMilli(t0)))
		dp.SetIntValue(1)
		body, err := pmetricotlp.NewExportRequestFromMetrics(md).MarshalProto()
		require.NoError(t, err)
		r, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+s.HTTPAddr().String()+"/api/v1/otlp/v1/metrics", bytes.NewReader(body))
		require.NoError(t, err)
		r.Header.Set("Content-Type", "application/x-protobuf")
		r.Header.Set("Authorization", auth)
		resp, err := http.DefaultClient.Do(r)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}

	for _, c := range []struct {
		who, auth string
		want      int
	}{
		{"nobody", "", http.StatusUnauthorized},
		{"vera", basic("vera", "vera-pass"), http.StatusForbidden},
		{"ann", basic("ann", "ann-pass"), http.StatusForbidden},
		{"grafana", "Bearer " + viewerTok, http.StatusForbidden},
		{"wendy", basic("wendy", "wendy-pass"), http.StatusNoContent},
		{"prometheus", "Bearer " + writerTok, http.StatusNoContent},
		{"root", basic("root", "root-pass"), http.StatusNoContent},
		{"admin", "Bearer " + testAdminToken, http.StatusNoContent},
	} {
		code, body := write(c.who, c.auth)
		require.Equal(t, c.want, code, "%s: %s", c.who, body)
		if c.want == http.StatusForbidden {
			require.Contains(t, body, "may not use /api/v1/write: it needs the writer or admin role")
		}
		wantOTLP := c.want
		if wantOTLP == http.StatusNoContent {
			wantOTLP = http.StatusOK
		}
		require.Equal(t, wantOTLP, otlp(c.auth), c.who)
	}

	// What the writers wrote is there for the readers; nothing else.
	vera := queryClientAuth(t, s, basic("vera", "vera-pass"))
	v, _, _, err := vera.Query(t.Context(), `count by (who) (last_over_time(written_by[10m]))`, time.Now())
	require.NoError(t, err)
	var whos []string
	for _, smp := range v.(model.Vector) {
		whos = append(whos, string(smp.Metric["who"]))
	}
	require.ElementsMatch(t, []string{"wendy", "prometheus", "root", "admin"}, whos)
	v, _, _, err = vera.Query(t.Context(), `count_over_time(otlp_written[10m])`, time.Now())
	require.NoError(t, err)
	require.EqualValues(t, 1, v.(model.Vector)[0].Value, "the same point from four writers: stored once")

	// A writer reads nothing.
	for _, p := range []string{"/api/v1/query?query=1", "/api/v1/labels", "/metrics", "/api/v1/exports/x", "/api/v1/admin/retention"} {
		code, body, _ := get(t, "http://"+s.HTTPAddr().String()+p, "Authorization", "Bearer "+writerTok)
		require.Equal(t, http.StatusForbidden, code, p)
		require.Contains(t, body, "prometheus (writer) may not use", p)
	}

	// Each refusal of a known user is audited.
	entries, err := s.Store().AuditEntries(pebblestore.AuditFilter{Actions: []string{"access.denied"}})
	require.NoError(t, err)
	var denied []string
	for _, e := range entries {
		if strings.HasPrefix(e.Resource, "POST ") {
			denied = append(denied, e.User+" "+e.Resource)
		}
	}
	require.ElementsMatch(t, []string{
		"vera POST /api/v1/write", "vera POST /api/v1/otlp/v1/metrics",
		"ann POST /api/v1/write", "ann POST /api/v1/otlp/v1/metrics",
		"grafana POST /api/v1/write", "grafana POST /api/v1/otlp/v1/metrics",
	}, denied)

	// OTLP ingest with otlp_require_token: writer and admin tokens only.
	conn, err := grpc.NewClient(s.OTLPGRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	client := pmetricotlp.NewGRPCClient(conn)
	for tok, ok := range map[string]bool{viewerTok: false, writerTok: true, testAdminToken: true} {
		ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+tok)
		_, err := client.Export(ctx, pmetricotlp.NewExportRequestFromMetrics(pmetric.NewMetrics()))
		if ok {
			require.NoError(t, err)
		} else {
			require.ErrorContains(t, err, "Unauthenticated")
		}
	}
}

// queryClientAuth is queryClient sending an Authorization header.
func queryClientAuth(t *testing.T, s *Server, auth string) v1.API {
	c, err := api.NewClient(api.Config{Address: "http://" + s.HTTPAddr().String(), RoundTripper: withAuth{auth}})
	require.NoError(t, err)
	return v1.NewAPI(c)
}

type withAuth struct{ auth string }

func (a withAuth) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", a.auth)
	return http.DefaultTransport.RoundTrip(r)
}

// TestPprofAdminOnly is attack 7 of issue 17: /debug/pprof was open to
// every viewer and, without users, to anyone. It is an admin's: without
// users it needs the bootstrap admin token (and is off without one), with
// users the admin role; others get 401 or 403 (audited).
func TestPprofAdminOnly(t *testing.T) {
	paths := []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/heap"}
	t.Run("no users, no admin token", func(t *testing.T) {
		s := start(t, testConfig(t), Options{})
		for _, p := range paths {
			code, _, _ := get(t, "http://"+s.HTTPAddr().String()+p)
			require.Equal(t, http.StatusNotFound, code, p)
		}
		code, _, _ := get(t, "http://"+s.HTTPAddr().String()+"/api/v1/query?query=1")
		require.Equal(t, http.StatusOK, code, "the read endpoints stay open")
	})
	t.Run("no users, admin token", func(t *testing.T) {
		s := start(t, adminConfig(t), Options{})
		for _, p := range paths {
			code, _, h := get(t, "http://"+s.HTTPAddr().String()+p)
			require.Equal(t, http.StatusUnauthorized, code, p)
			require.Equal(t, `Bearer realm="proxylens admin"`, h.Get("WWW-Authenticate"))
			code, _, _ = get(t, "http://"+s.HTTPAddr().String()+p, "Authorization", "Bearer not-the-admin-token-0000")
			require.Equal(t, http.StatusUnauthorized, code, p)
			code, body, _ := get(t, "http://"+s.HTTPAddr().String()+p, "Authorization", "Bearer "+testAdminToken)
			require.Equal(t, http.StatusOK, code, p)
			require.NotEmpty(t, body)
		}
		code, body, _ := get(t, "http://"+s.HTTPAddr().String()+"/debug/pprof/goroutine?debug=1", "Authorization", "Bearer "+testAdminToken)
		require.Equal(t, http.StatusOK, code)
		require.Contains(t, body, "goroutine profile:")
	})
	t.Run("users", func(t *testing.T) {
		cfg := adminConfig(t)
		cfg.Auth = AuthConfig{Users: []AuthUser{
			{Name: "vera", Role: RoleViewer, PasswordHash: bcryptHash(t, "vera-pass")},
			{Name: "wendy", Role: RoleWriter, PasswordHash: bcryptHash(t, "wendy-pass")},
			{Name: "root", Role: RoleAdmin, PasswordHash: bcryptHash(t, "root-pass")},
		}}
		s := start(t, cfg, Options{})
		as := func(user, pass, p string) int {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+s.HTTPAddr().String()+p, nil)
			require.NoError(t, err)
			if user != "" {
				req.SetBasicAuth(user, pass)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			return resp.StatusCode
		}
		for _, p := range paths {
			require.Equal(t, http.StatusUnauthorized, as("", "", p), p)
			require.Equal(t, http.StatusForbidden, as("vera", "vera-pass", p), p)
			require.Equal(t, http.StatusForbidden, as("wendy", "wendy-pass", p), p)
			require.Equal(t, http.StatusOK, as("root", "root-pass", p), p)
			code, _, _ := get(t, "http://"+s.HTTPAddr().String()+p, "Authorization", "Bearer "+testAdminToken)
			require.Equal(t, http.StatusOK, code, p)
		}
		require.Equal(t, http.StatusForbidden, as("vera", "vera-pass", "/debug/pprof"), "without the slash too")
		entries, err := s.Store().AuditEntries(pebblestore.AuditFilter{Users: []string{"vera"}, Actions: []string{"access.denied"}})
		require.NoError(t, err)
		require.Len(t, entries, len(paths)+1)
		require.Contains(t, entries[0].Error, "may not use /debug/pprof/: it needs the admin role")
		require.Equal(t, http.StatusOK, as("vera", "vera-pass", "/api/v1/query?query=1"), "the server still answers")
	})
}

// TestOpenWriteWarning: without users, writing series is open like
// reading; a listener off loopback says so at start, and the names
// proxylens owns are refused there all the same.
func TestOpenWriteWarning(t *testing.T) {
	cfg := testConfig(t)
	cfg.HTTPAddr = "0.0.0.0:0"
	logs := &syncBuffer{}
	s := start(t, cfg, Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	require.Contains(t, logs.String(), "anyone who reaches it can query and write series")
	_, port, err := net.SplitHostPort(s.HTTPAddr().String())
	require.NoError(t, err)
	addr := "127.0.0.1:" + port
	raw, err := (&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: series("proxy_requests_total", "source", "forged"), Samples: []prompb.Sample{{Timestamp: time.Now().UnixMilli(), Value: 1e6}}}}}).Marshal()
	require.NoError(t, err)
	resp, err := http.Post("http://"+addr+"/api/v1/write", "application/x-protobuf", bytes.NewReader(snappy.Encode(nil, raw)))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
}
