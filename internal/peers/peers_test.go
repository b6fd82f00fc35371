package peers

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/config"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"

	"github.com/proxylens/proxylens/otelanalytics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func sampleRecords() []otelanalytics.Record {
	return []otelanalytics.Record{
		{EndTime: 1_764_950_400_123_456_789, Duration: 150_000_001, Source: "brightdata", Tier: "premium", Proxy: "gw.example.com:8080",
			Application: "price-monitor", Domain: "shop.example.com", Method: otelanalytics.MethodGet, StatusCode: 200, Success: true,
			BytesSent: 1 << 40, BytesReceived: 17, Weight: 12.345678901234567,
			TraceID: [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, SpanID: [8]byte{0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1}},
		{EndTime: 1, Source: "a \"quoted\"\\ name\n\twith\x01control \u2028 and ünïcode", ErrorType: "timeout",
			Method: otelanalytics.MethodOther, Weight: 1},
		{Source: "unknown", Method: otelanalytics.MethodNone},
	}
}

func TestWireRoundTrip(t *testing.T) {
	var (
		w   wireLine
		got otelanalytics.Record
	)
	for _, r := range sampleRecords() {
		line := AppendRecord(nil, &r)
		require.True(t, strings.HasSuffix(string(line), "}\n"))
		require.Equal(t, 1, strings.Count(string(line), "\n"), "one line")
		kind, _, _, err := decodeLine(line, &w, &got, nil)
		require.NoError(t, err)
		require.Equal(t, lineRecord, kind)
		require.Equal(t, r, got)
		// The fast path reads every line without an escape, the same.
		var fast otelanalytics.Record
		line = line[:len(line)-1] // as the stream's scanner hands it
		require.Equal(t, !strings.Contains(string(line), `\`), fastRecord(line, &fast, interner{}), "%s", line)
		if !strings.Contains(string(line), `\`) {
			require.Equal(t, r, fast)
		}
	}
	kind, n, _, err := decodeLine(AppendEnd(nil, 42), &w, &got, interner{})
	require.NoError(t, err)
	require.Equal(t, lineEnd, kind)
	require.EqualValues(t, 42, n)
	kind, _, msg, err := decodeLine(AppendError(nil, errors.New(`disk "gone"`)), &w, &got, interner{})
	require.NoError(t, err)
	require.Equal(t, lineError, kind)
	require.Equal(t, `disk "gone"`, msg)
	for line, want := range map[string]string{
		`{"d":1}`:                  "no end time (t)",
		`{"t":1,"trace_id":"xyz"}`: `trace_id "xyz" is not 32 hex digits`,
		`{"t":1,"span_id":"00"}`:   `span_id "00" is not 16 hex digits`,
		`<html>`:                   "invalid character",
	} {
		_, _, _, err := decodeLine([]byte(line), &w, &got, interner{})
		require.ErrorIs(t, err, errBadLine, line)
		require.ErrorContains(t, err, want, line)
	}
}

func TestFilterQuery(t *testing.T) {
	yes := false
	f := otelanalytics.RecordFilter{
		Start: time.Date(2026, 12, 1, 0, 0, 0, 1, time.UTC), End: time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC),
		Sources: []string{"a", "b&c"}, Applications: []string{"x"}, Domains: []string{"d.example"},
		StatusCodes: []uint16{0, 503}, Success: &yes, MinDuration: time.Millisecond, MaxDuration: time.Hour + 1,
	}
	got, err := ParseFilter(FilterQuery(f))
	require.NoError(t, err)
	require.Equal(t, f, got)
	got, err = ParseFilter(FilterQuery(otelanalytics.RecordFilter{}))
	require.NoError(t, err)
	require.Equal(t, otelanalytics.RecordFilter{}, got)

	_, err = ParseFilter(map[string][]string{
		"start": {"yesterday"}, "end": {"2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"}, "status_code": {"70000"},
		"success": {"maybe"}, "min_duration_ns": {"-1"}, "local": {"1"},
	})
	for _, want := range []string{
		`start: "yesterday" is not an RFC 3339 time`, "end: given 2 times", `status_code: "70000" is not a status code`,
		`success: "maybe" is not true or false`, `min_duration_ns: "-1" is not a whole number of nanoseconds >= 0`,
		"local: unknown parameter",
	} {
		require.ErrorContains(t, err, want)
	}
	_, err = ParseFilter(map[string][]string{"start": {"2026-01-02T00:00:00Z"}, "end": {"2026-01-01T00:00:00Z"}})
	require.EqualError(t, err, "end: must be after start")
}

func TestValidate(t *testing.T) {
	var cs []Config
	dec := yaml.NewDecoder(strings.NewReader(`
- url: ftp://b:9464
- name: "a,b"
  url: http://c:9464?x=1
  timeout: -1s
- url: http://d:9464
  basic_auth: {username: u, password: p}
  authorization: {credentials: t}
- url: http://d:9464
- name: e
`))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&cs))
	require.True(t, cs[0].HTTPClientConfig.FollowRedirects, "Prometheus' client defaults")
	err := Validate(cs)
	for _, want := range []string{
		`peers[0].url: must be an http or https URL, got "ftp://b:9464"`,
		`peers[1].url: must be the API root, without a query or fragment, got "http://c:9464?x=1"`,
		`peers[1].name: must not hold a comma or a line break, got "a,b"`,
		`peers[1].timeout: must not be negative, got "-1s"`,
		"peers[2]: at most one of basic_auth, oauth2 & authorization must be configured",
		`peers[3]: the same name (or, without one, host:port) as peers[2]: "d:9464"`,
		"peers[4].url: required",
	} {
		require.ErrorContains(t, err, want)
	}
	require.NoError(t, Validate(nil))

	dec = yaml.NewDecoder(strings.NewReader("- {url: http://b:9464, bearer_tokn: x}"))
	dec.KnownFields(true)
	require.ErrorContains(t, dec.Decode(&cs), "field bearer_tokn not found")
}

// slice is a Source over records, counting Close.
type slice struct {
	recs   []otelanalytics.Record
	err    error // after the records
	closed int
}

func (s *slice) Next() (*otelanalytics.Record, error) {
	if len(s.recs) == 0 {
		if s.err != nil {
			return nil, s.err
		}
		return nil, io.EOF
	}
	r := s.recs[0]
	s.recs = s.recs[1:]
	return &r, nil
}

func (s *slice) Close() error { s.closed++; return nil }

func recs(source string, ends ...int64) []otelanalytics.Record {
	var out []otelanalytics.Record
	for _, e := range ends {
		out = append(out, otelanalytics.Record{EndTime: e, Source: source})
	}
	return out
}

func TestMerge(t *testing.T) {
	a, b, c := &slice{recs: recs("a", 1, 3, 3, 9)}, &slice{recs: recs("b", 2, 3, 10)}, &slice{}
	var got []string
	require.NoError(t, Merge([]Source{a, b, c}, func(r *otelanalytics.Record) error {
		got = append(got, fmt.Sprint(r.Source, r.EndTime))
		return nil
	}))
	require.Equal(t, []string{"a1", "b2", "a3", "a3", "b3", "a9", "b10"}, got, "time order; ties in the sources' order")
	require.Equal(t, []int{1, 1, 1}, []int{a.closed, b.closed, c.closed})

	boom := errors.New("boom")
	a, b = &slice{recs: recs("a", 1, 5)}, &slice{recs: recs("b", 2), err: boom}
	n := 0
	err := Merge([]Source{a, b}, func(*otelanalytics.Record) error { n++; return nil })
	require.ErrorIs(t, err, boom)
	require.Equal(t, 2, n, "a1 and b2, then b's error")
	require.Equal(t, 1, a.closed)

	stop := errors.New("stop")
	a = &slice{recs: recs("a", 1, 2)}
	require.ErrorIs(t, Merge([]Source{a}, func(*otelanalytics.Record) error { return stop }), stop)
	require.Equal(t, 1, a.closed)
}

// localScan scans records in memory, reusing its record as the store's
// scan does.
func localScan(rs []otelanalytics.Record, err error) ScanFunc {
	return func(ctx context.Context, f otelanalytics.RecordFilter, fn func(*otelanalytics.Record) error) error {
		var r otelanalytics.Record
		for _, x := range rs {
			if len(f.Sources) > 0 && f.Sources[0] != x.Source {
				continue
			}
			r = x
			if err := fn(&r); err != nil {
				return err
			}
		}
		return err
	}
}

// servePeer answers the peer endpoint with the records of scan, as a
// proxylens does, checking the bearer token.
func servePeer(t testing.TB, token string, scan ScanFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != RecordsPath {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"status":"error","errorType":"unauthorized","error":"a bearer token is required"}`))
			return
		}
		f, err := ParseFilter(r.URL.Query())
		require.NoError(t, err)
		w.Header().Set("Content-Type", ContentType)
		bw := bufio.NewWriter(w)
		var b []byte
		n := int64(0)
		err = scan(r.Context(), f, func(rec *otelanalytics.Record) error {
			b = AppendRecord(b[:0], rec)
			n++
			_, err := bw.Write(b)
			return err
		})
		if err != nil {
			b = AppendError(b[:0], err)
		} else {
			b = AppendEnd(b[:0], n)
		}
		_, _ = bw.Write(b)
		_ = bw.Flush()
	}))
	t.Cleanup(srv.Close)
	return srv
}

func peerConfig(name, url, token string) Config {
	c := Config{Name: name, URL: url, HTTPClientConfig: config.DefaultHTTPClientConfig}
	c.HTTPClientConfig.Authorization = &config.Authorization{Type: "Bearer", Credentials: config.Secret(token)}
	return c
}

func TestScan(t *testing.T) {
	b := servePeer(t, "tb", localScan(append(recs("b", 2, 4), recs("x", 5)...), nil))
	c := servePeer(t, "tc", localScan(recs("b", 1, 4, 8), nil))
	reg := prometheus.NewRegistry()
	ps, err := New([]Config{peerConfig("b", b.URL, "tb"), peerConfig("c", c.URL+"/", "tc")}, Options{Registerer: reg, UserAgent: "test"})
	require.NoError(t, err)
	defer ps.Close()
	require.Equal(t, []string{"b", "c"}, ps.Names())
	var got []string
	err = ps.Scan(t.Context(), localScan(recs("b", 3, 4, 9), nil), otelanalytics.RecordFilter{Sources: []string{"b"}}, func(r *otelanalytics.Record) error {
		got = append(got, fmt.Sprint(r.EndTime))
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, []string{"1", "2", "3", "4", "4", "4", "8", "9"}, got)
	require.InDelta(t, 1, testutil.ToFloat64(ps.metrics.WithLabelValues("b", "success")), 0)
	require.InDelta(t, 1, testutil.ToFloat64(ps.metrics.WithLabelValues("c", "success")), 0)

	// The local scan failing fails the merge and closes the peers' streams.
	err = ps.Scan(t.Context(), localScan(recs("b", 3), errors.New("disk gone")), otelanalytics.RecordFilter{}, func(*otelanalytics.Record) error { return nil })
	require.EqualError(t, err, "this instance's records: disk gone")
	require.InDelta(t, 1, testutil.ToFloat64(ps.metrics.WithLabelValues("b", "canceled")), 0)

	// No peers: the local scan alone.
	var none *Peers
	n := 0
	require.NoError(t, none.Scan(t.Context(), localScan(recs("a", 1, 2), nil), otelanalytics.RecordFilter{}, func(*otelanalytics.Record) error { n++; return nil }))
	require.Equal(t, 2, n)
}

// TestScanFailures: every way a peer fails names it and says how; none
// gives a partial result.
func TestScanFailures(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	down := "http://" + ln.Addr().String()
	require.NoError(t, ln.Close())
	ok := servePeer(t, "t", localScan(recs("a", 1), nil))
	handler := func(h http.HandlerFunc) string {
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return srv.URL
	}
	ndjson := func(w http.ResponseWriter, body string) {
		w.Header().Set("Content-Type", ContentType)
		_, _ = io.WriteString(w, body)
	}
	line := string(AppendRecord(nil, &otelanalytics.Record{EndTime: 5, Source: "a"}))
	for _, c := range []struct {
		name, url, token string
		timeout          time.Duration
		want             []string
		is               error
	}{
		{name: "down", url: down, want: []string{`peer "down" (` + down + `): peer unavailable`, "connection refused"}, is: ErrUnavailable},
		{name: "wrong-token", url: ok.URL, token: "nope", want: []string{`peer "wrong-token"`, "401 Unauthorized: a bearer token is required"}, is: ErrRefused},
		{name: "busy", url: handler(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "overloaded", http.StatusServiceUnavailable)
		}), want: []string{`peer "busy"`, `503 Service Unavailable: "overloaded"`}, is: ErrRefused},
		{name: "not-proxylens", url: handler(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = io.WriteString(w, "<html>")
		}), want: []string{`answered "text/html", not application/x-ndjson`}, is: ErrBroken},
		{name: "cut-short", url: handler(func(w http.ResponseWriter, _ *http.Request) { ndjson(w, line) }),
			want: []string{`peer "cut-short"`, "peer records stream broken after 1 records: unexpected EOF"}, is: ErrBroken},
		{name: "failed", url: handler(func(w http.ResponseWriter, _ *http.Request) {
			ndjson(w, line+string(AppendError(nil, errors.New("scan records: pebble: closed"))))
		}), want: []string{"it failed after 1 records: scan records: pebble: closed"}, is: ErrBroken},
		{name: "miscounted", url: handler(func(w http.ResponseWriter, _ *http.Request) { ndjson(w, line+string(AppendEnd(nil, 2))) }),
			want: []string{"it counted 2 records and sent 1"}, is: ErrBroken},
		{name: "garbled", url: handler(func(w http.ResponseWriter, _ *http.Request) { ndjson(w, line+"{\"d\":1}\n") }),
			want: []string{"line 2: not a line of a peer records stream: no end time (t)"}, is: ErrBroken},
		{name: "silent", timeout: 50 * time.Millisecond, url: handler(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", ContentType)
			w.WriteHeader(http.StatusOK)
			_ = http.NewResponseController(w).Flush()
			<-r.Context().Done()
		}), want: []string{`peer "silent"`, "stream broken after 0 records", "sent nothing for 50ms"}, is: ErrBroken},
	} {
		t.Run(c.name, func(t *testing.T) {
			token := c.token
			if token == "" {
				token = "t"
			}
			pc := peerConfig(c.name, c.url, token)
			pc.Timeout = c.timeout
			ps, err := New([]Config{peerConfig("fine", ok.URL, "t"), pc}, Options{})
			require.NoError(t, err)
			defer ps.Close()
			n := 0
			err = ps.Scan(t.Context(), localScan(nil, nil), otelanalytics.RecordFilter{}, func(*otelanalytics.Record) error { n++; return nil })
			require.ErrorIs(t, err, c.is)
			for _, w := range c.want {
				require.ErrorContains(t, err, w)
			}
			require.NotContains(t, err.Error(), `"fine"`)
		})
	}
}

// FuzzDecodeLine holds the fast path to encoding/json: a line the fast
// path reads, encoding/json reads as the same record.
func FuzzDecodeLine(f *testing.F) {
	for _, r := range sampleRecords() {
		line := AppendRecord(nil, &r)
		f.Add(line[:len(line)-1]) // as the stream's scanner hands it
	}
	f.Add([]byte(`{"t":1,"d":-0,"source":"é","tier":"","proxy":"","application":"","domain":"","method":"get","status_code":65535,"success":false,"error_type":"","bytes_sent":18446744073709551615,"bytes_received":0,"weight":1e400}`))
	f.Add([]byte(`{"t":01,"d":0,"source":"a\u0041","tier":"","proxy":"","application":"","domain":"","method":"","status_code":0,"success":true,"error_type":"","bytes_sent":0,"bytes_received":0,"weight":null,"trace_id":"0102030405060708090A0B0C0D0E0F10"}`))
	f.Add(AppendEnd(nil, 3))
	f.Fuzz(func(t *testing.T, line []byte) {
		var (
			fast, slow otelanalytics.Record
			w          wireLine
		)
		if !fastRecord(line, &fast, interner{}) {
			return
		}
		kind, _, _, err := decodeLine(line, &w, &slow, nil)
		require.NoError(t, err, "the fast path read %q", line)
		require.Equal(t, lineRecord, kind)
		require.Equal(t, slow, fast, "%q", line)
	})
}
