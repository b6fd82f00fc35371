package server

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/xuri/excelize/v2"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/proxylens/proxylens/internal/export"
	"github.com/proxylens/proxylens/pebblestore"
)

// freeAddr returns a loopback address nothing listens on: a port the
// kernel handed out and that was closed again.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// withPeers sets cfg's peers from YAML, as a config file has them.
func withPeers(t *testing.T, cfg Config, peersYAML string) Config {
	t.Helper()
	require.NoError(t, Parse([]byte(peersYAML), &cfg))
	require.NoError(t, cfg.Validate())
	return cfg
}

// submitAndWait creates an export job on s and waits for it to end.
func submitAndWait(t *testing.T, s *Server, body string) export.Job {
	t.Helper()
	var created struct {
		ID string `json:"id"`
	}
	code, resp := call(t, s, http.MethodPost, "/api/v1/exports", testAdminToken, body, &created)
	require.Equal(t, http.StatusAccepted, code, resp)
	var job export.Job
	require.Eventually(t, func() bool {
		code, _ := call(t, s, http.MethodGet, "/api/v1/exports/"+created.ID, testAdminToken, "", &job)
		require.Equal(t, http.StatusOK, code)
		return job.Status == export.Completed || job.Status == export.Failed
	}, 30*time.Second, 20*time.Millisecond)
	return job
}

// peerRecord is what identifies an exported record: its end time and
// span id.
type peerRecord struct{ time, span string }

// TestExportsAcrossPeers: three instances, each with its own store and
// its own records over OTLP; an export of records from A, whose peers are
// B and C, holds every record of the three exactly once, in end-time
// order, in every format. B lists A and a peer that is down: A's export
// still works, because a peer answers from its own store and never asks
// its own peers (no loop), while an export made on B fails naming the
// peer that is down. A peer that refuses the token fails the export with
// its answer. The audit logs name the peers asked and the peer caller.
func TestExportsAcrossPeers(t *testing.T) {
	const peerToken, viewerToken = "pl-peer-a-0123456789", "pl-viewer-0123456789"
	hash := func(tok string) string { sum := sha256.Sum256([]byte(tok)); return hex.EncodeToString(sum[:]) }

	// C has users: A asks it with an analyst token.
	cfgC := adminConfig(t)
	cfgC.Auth.Tokens = []AuthToken{{Name: "peer-a", Role: RoleAnalyst, TokenSHA256: hash(peerToken)}, {Name: "grafana", Role: RoleViewer, TokenSHA256: hash(viewerToken)}}
	c := start(t, cfgC, Options{})

	addrA, dead := freeAddr(t), freeAddr(t)
	b := start(t, withPeers(t, adminConfig(t), fmt.Sprintf(`
peers:
  - {name: a, url: "http://%s", authorization: {credentials: %s}}
  - {name: dead, url: "http://%s", authorization: {credentials: x}, timeout: 5s}
`, addrA, testAdminToken, dead)), Options{})

	cfgA := adminConfig(t)
	cfgA.HTTPAddr = addrA
	a := start(t, withPeers(t, cfgA, fmt.Sprintf(`
peers:
  - {name: b, url: "http://%s/", authorization: {credentials: %s}}
  - {name: c, url: "http://%s", authorization: {type: Bearer, credentials: %s}}
`, b.HTTPAddr(), testAdminToken, c.HTTPAddr(), peerToken)), Options{})

	// Records interleaved in time over the three; the newest minute has
	// one on A and one on B, which come in the peers' order: A first.
	now := time.Now().UTC().Truncate(time.Minute)
	var want []peerRecord
	type ended struct {
		at   time.Time
		inst int
		span string
	}
	var all []ended
	stubs := make([][]tracetest.SpanStub, 3)
	for i := range 90 {
		inst, at := i%3, now.Add(-time.Duration(i+1)*time.Minute)
		if i == 1 {
			inst, at = 1, now.Add(-time.Minute) // the same end time as i = 0 on A
		}
		st := proxySpan(i, at)
		// proxySpan's ids repeat for i and i+1; these do not.
		st.SpanContext = trace.NewSpanContext(trace.SpanContextConfig{TraceID: st.SpanContext.TraceID(), SpanID: trace.SpanID{0, 0, 0, 0, 0, 0, 1, byte(i)}, TraceFlags: trace.FlagsSampled})
		stubs[inst] = append(stubs[inst], st)
		all = append(all, ended{at, inst, st.SpanContext.SpanID().String()})
	}
	for i, s := range []*Server{a, b, c} {
		exportGRPC(t, s, stubs[i]...)
		require.NoError(t, s.Pipeline().Flush())
	}
	slices.SortStableFunc(all, func(x, y ended) int {
		if c := x.at.Compare(y.at); c != 0 {
			return c
		}
		return x.inst - y.inst
	})
	for _, e := range all {
		want = append(want, peerRecord{e.at.Format(time.RFC3339Nano), e.span})
	}

	body := func(format string) string {
		return `{"range": "24h", "format": "` + format + `", "dataset": "records", "fields": ["time", "span_id", "source"]}`
	}
	raw, job := exportAndDownload(t, a, body("csv"))
	require.EqualValues(t, 90, job.Rows)
	rows, err := csv.NewReader(bytes.NewReader(raw)).ReadAll()
	require.NoError(t, err)
	var got []peerRecord
	for _, r := range rows[1:] {
		got = append(got, peerRecord{r[0], r[1]})
	}
	require.Equal(t, want, got, "csv")

	raw, _ = exportAndDownload(t, a, body("json"))
	got = got[:0]
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		var m map[string]string
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m))
		got = append(got, peerRecord{m["time"], m["span_id"]})
	}
	require.Equal(t, want, got, "json")

	raw, _ = exportAndDownload(t, a, body("xlsx"))
	book, err := excelize.OpenReader(bytes.NewReader(raw))
	require.NoError(t, err)
	xrows, err := book.GetRows("data", excelize.Options{RawCellValue: true})
	require.NoError(t, err)
	require.NoError(t, book.Close())
	got = got[:0]
	for _, r := range xrows[1:] {
		got = append(got, peerRecord{r[0], r[1]})
	}
	require.Len(t, got, len(want), "xlsx")
	for i := range want {
		require.Equal(t, want[i].span, got[i].span, "xlsx row %d", i+1)
	}

	// Filters reach the peers: one source, a latency no record has.
	raw, _ = exportAndDownload(t, a, `{"range": "24h", "format": "csv", "dataset": "records", "fields": ["source"], "filters": {"source": ["spys-one"]}}`)
	rows, err = csv.NewReader(bytes.NewReader(raw)).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 1+45)
	for _, r := range rows[1:] {
		require.Equal(t, "spys-one", r[0])
	}
	raw, _ = exportAndDownload(t, a, `{"range": "24h", "format": "csv", "dataset": "records", "filters": {"min_latency_seconds": 1}}`)
	require.Equal(t, 1, bytes.Count(raw, []byte("\n")), "the header only")

	// A peer that is down fails the export, naming it.
	job = submitAndWait(t, b, body("csv"))
	require.Equal(t, export.Failed, job.Status)
	require.Contains(t, job.Error, `peer "dead" (http://`+dead+`)`)
	require.Contains(t, job.Error, "peer unavailable")
	require.Contains(t, job.Error, "connection refused")

	// A peer that refuses the credential fails the export with its answer.
	e := start(t, withPeers(t, adminConfig(t), fmt.Sprintf(`
peers:
  - {name: c-as-viewer, url: "http://%s", authorization: {credentials: %s}}
`, c.HTTPAddr(), viewerToken)), Options{})
	job = submitAndWait(t, e, body("csv"))
	require.Equal(t, export.Failed, job.Status)
	require.Contains(t, job.Error, `peer "c-as-viewer"`)
	require.Contains(t, job.Error, "403 Forbidden: grafana (viewer) may not use /api/v1/peer/records: it needs the analyst role")

	// The audit logs: A's exports name the peers asked, C's the caller.
	var entries []pebblestore.AuditEntry
	code, _ := call(t, a, http.MethodGet, "/api/v1/audit?action=export", testAdminToken, "", &entries)
	require.Equal(t, http.StatusOK, code)
	require.Len(t, entries, 5)
	for _, e := range entries {
		require.Equal(t, "peers: b, c", e.Detail)
		require.True(t, e.Success)
	}
	code, _ = call(t, c, http.MethodGet, "/api/v1/audit?action=export.peer", testAdminToken, "", &entries)
	require.Equal(t, http.StatusOK, code)
	require.Len(t, entries, 5)
	var sent int64
	for _, e := range entries {
		require.Equal(t, "peer-a", e.User)
		sent += e.Results
	}
	require.EqualValues(t, 3*30+15+0, sent, "C's records in three formats, those of one source, none")
	code, _ = call(t, b, http.MethodGet, "/api/v1/audit?action=export", testAdminToken, "", &entries)
	require.Equal(t, http.StatusOK, code)
	require.Len(t, entries, 1)
	require.False(t, entries[0].Success)
	require.Equal(t, "peers: a, dead", entries[0].Detail)
}

// TestPeerRecordsEndpoint: the endpoint a peer asks needs the exports'
// credential, refuses unknown parameters by name, and streams this
// instance's records with an end line that counts them.
func TestPeerRecordsEndpoint(t *testing.T) {
	s := start(t, adminConfig(t), Options{})
	now := time.Now().UTC()
	exportGRPC(t, s, proxySpan(1, now.Add(-2*time.Minute)), proxySpan(2, now.Add(-time.Minute)))
	require.NoError(t, s.Pipeline().Flush())
	get := func(token, query string) (int, string, string) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+s.HTTPAddr().String()+"/api/v1/peer/records?"+query, nil)
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}
	code, _, _ := get("", "")
	require.Equal(t, http.StatusUnauthorized, code)
	code, _, msg := get(testAdminToken, "start=yesterday&limit=3")
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, msg, `start: \"yesterday\" is not an RFC 3339 time`)
	require.Contains(t, msg, "limit: unknown parameter")

	code, ct, out := get(testAdminToken, "start="+now.Add(-time.Hour).Format(time.RFC3339Nano))
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "application/x-ndjson", ct)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.Len(t, lines, 3)
	require.Contains(t, lines[0], fmt.Sprintf(`{"t":%d,"d":150000000,"source":"spys-one"`, now.Add(-2*time.Minute).UnixNano()))
	require.Equal(t, `{"end":{"records":2}}`, lines[2])

	code, _, out = get(testAdminToken, "source=nobody")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "{\"end\":{\"records\":0}}\n", out)
}
