package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"golang.org/x/crypto/bcrypt"

	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
)

func bcryptHash(t *testing.T, pass string) string {
	h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	require.NoError(t, err)
	return string(h)
}

// TestUsersAndRoles: with users configured every endpoint but the health
// ones needs a credential (basic auth or a bearer token): 401 with
// WWW-Authenticate without one or with a wrong one, 403 for a role that
// may not, and the role's endpoints otherwise; each user sees their own
// audit entries, an admin everyone's.
func TestUsersAndRoles(t *testing.T) {
	cfg := adminConfig(t)
	const viewerToken = "viewer-token-0123456789"
	sum := sha256.Sum256([]byte(viewerToken))
	cfg.Auth = AuthConfig{
		Users: []AuthUser{
			{Name: "vera", Role: RoleViewer, PasswordHash: bcryptHash(t, "vera-pass")},
			{Name: "ann", Role: RoleAnalyst, PasswordHash: bcryptHash(t, "ann-pass")},
			{Name: "root", Role: RoleAdmin, PasswordHash: bcryptHash(t, "root-pass")},
		},
		Tokens: []AuthToken{{Name: "grafana", Role: RoleViewer, TokenSHA256: hex.EncodeToString(sum[:])}},
	}
	require.NoError(t, cfg.Validate())
	s := start(t, cfg, Options{})
	base := "http://" + s.HTTPAddr().String()
	do := func(method, path, user, pass, bearer string) (int, http.Header) {
		req, err := http.NewRequestWithContext(t.Context(), method, base+path, strings.NewReader(""))
		require.NoError(t, err)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode, resp.Header
	}
	for _, p := range []string{"/-/healthy", "/-/ready"} {
		code, _ := do("GET", p, "", "", "")
		require.Equal(t, http.StatusOK, code, p)
	}
	for _, c := range []struct{ user, pass, bearer string }{
		{"", "", ""}, {"vera", "wrong", ""}, {"nobody", "vera-pass", ""}, {"", "", "not-a-token-0123456789"},
	} {
		code, h := do("GET", "/api/v1/query?query=1", c.user, c.pass, c.bearer)
		require.Equal(t, http.StatusUnauthorized, code, "%+v", c)
		require.Equal(t, []string{`Basic realm="proxylens"`, `Bearer realm="proxylens"`}, h.Values("WWW-Authenticate"))
	}
	for _, c := range []struct {
		method, path, user, pass, bearer string
		want                             int
	}{
		{"GET", "/api/v1/query?query=1", "vera", "vera-pass", "", 200},
		{"GET", "/api/v1/query?query=1", "vera", "vera-pass", "", 200}, // remembered: no second bcrypt
		{"GET", "/api/v1/labels", "", "", viewerToken, 200},
		{"GET", "/metrics", "", "", viewerToken, 200},
		{"GET", "/api/v1/admin/retention", "vera", "vera-pass", "", 403},
		{"GET", "/api/v1/admin/retention", "ann", "ann-pass", "", 403},
		{"GET", "/api/v1/exports/x", "vera", "vera-pass", "", 403},
		{"GET", "/api/v1/admin/retention", "root", "root-pass", "", 200},
		{"GET", "/api/v1/admin/retention", "", "", testAdminToken, 200}, // the bootstrap admin
		{"DELETE", "/api/v1/admin/retention", "root", "root-pass", "", 405},
		{"PUT", "/api/v1/admin/sampling", "root", "root-pass", "", 400}, // empty body
	} {
		code, _ := do(c.method, c.path, c.user, c.pass, c.bearer)
		require.Equal(t, c.want, code, "%+v", c)
	}

	// Exports: an analyst may, a viewer may not; a job is its owner's.
	exportAs := func(user, pass string) (int, string) {
		req, err := http.NewRequestWithContext(t.Context(), "POST", base+"/api/v1/exports", strings.NewReader(`{"range": "24h", "format": "csv", "dataset": "records"}`))
		require.NoError(t, err)
		req.SetBasicAuth(user, pass)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var created struct {
			ID string `json:"id"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&created)
		return resp.StatusCode, created.ID
	}
	code, _ := exportAs("vera", "vera-pass")
	require.Equal(t, http.StatusForbidden, code)
	code, id := exportAs("ann", "ann-pass")
	require.Equal(t, http.StatusAccepted, code)
	code, _ = do("GET", "/api/v1/exports/"+id, "ann", "ann-pass", "")
	require.Equal(t, http.StatusOK, code)
	code, _ = do("GET", "/api/v1/exports/"+id, "root", "root-pass", "")
	require.Equal(t, http.StatusOK, code, "an admin sees every job")
	code, _ = do("GET", "/api/v1/exports/"+id, "", "", viewerToken)
	require.Equal(t, http.StatusForbidden, code)

	// Audit: vera sees her own entries only, root everyone's.
	require.NoError(t, s.Store().Audit(pebblestore.AuditEntry{User: "vera", Action: "export", Success: true}))
	require.NoError(t, s.Store().Audit(pebblestore.AuditEntry{User: "ann", Action: "export", Success: true}))
	auditAs := func(user, pass string) []string {
		req, err := http.NewRequestWithContext(t.Context(), "GET", base+"/api/v1/audit", nil)
		require.NoError(t, err)
		req.SetBasicAuth(user, pass)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var env struct {
			Data []pebblestore.AuditEntry `json:"data"`
		}
		require.NoError(t, decodeJSON(resp, &env))
		var users []string
		for _, e := range env.Data {
			users = append(users, e.User)
		}
		return users
	}
	vera := auditAs("vera", "vera-pass")
	require.Len(t, vera, 7, "her two queries, the entry above, her wrong password and her three refusals")
	for _, u := range vera {
		require.Equal(t, "vera", u)
	}
	all := auditAs("root", "root-pass")
	require.Contains(t, all, "ann")
	require.Contains(t, all, "grafana", "the token's lookups")

	// Every query and lookup is audited: who, what, the range, how many
	// results, how long, from where.
	entries, err := s.Store().AuditEntries(pebblestore.AuditFilter{Users: []string{"vera"}, Actions: []string{"query"}})
	require.NoError(t, err)
	require.Len(t, entries, 2)
	e := entries[0]
	require.Equal(t, "1", e.Resource)
	require.EqualValues(t, 1, e.Results)
	require.True(t, e.Success)
	require.Equal(t, "127.0.0.1", e.ClientIP)
	require.Equal(t, "Go-http-client/1.1", e.UserAgent)
	require.Positive(t, e.Duration)
	// Refusals are audited: a known user's wrong password (an unknown
	// name or token is not attributable), and each 403 with what it
	// asked for.
	entries, err = s.Store().AuditEntries(pebblestore.AuditFilter{Actions: []string{"auth.failed"}})
	require.NoError(t, err)
	require.Len(t, entries, 1)
	require.Equal(t, "vera", entries[0].User)
	require.Equal(t, "wrong password", entries[0].Error)
	require.False(t, entries[0].Success)
	entries, err = s.Store().AuditEntries(pebblestore.AuditFilter{Actions: []string{"access.denied"}})
	require.NoError(t, err)
	var denied []string
	for _, e := range entries {
		require.False(t, e.Success)
		require.Equal(t, "127.0.0.1", e.ClientIP)
		require.Contains(t, e.Error, "may not use")
		denied = append(denied, e.User+" "+e.Resource)
	}
	require.ElementsMatch(t, []string{"vera GET /api/v1/admin/retention", "ann GET /api/v1/admin/retention", "vera GET /api/v1/exports/x",
		"vera POST /api/v1/exports", "grafana GET /api/v1/exports/" + id}, denied)

	// A manual enforcement is audited with what it did.
	code, _ = do("POST", "/api/v1/admin/retention/enforce", "root", "root-pass", "")
	require.Equal(t, http.StatusOK, code)
	entries, err = s.Store().AuditEntries(pebblestore.AuditFilter{Actions: []string{"retention.enforce"}})
	require.NoError(t, err)
	require.Len(t, entries, 1)
	require.Equal(t, "root", entries[0].User)
	require.True(t, entries[0].Success)
	require.Contains(t, entries[0].Detail, `"raw_series_before"`)

	n, err := s.Store().VerifyAudit()
	require.NoError(t, err)
	require.GreaterOrEqual(t, n, 5, "vera's two queries, the token's lookup, the two entries above, and ann's export once it ran")
}

func TestAuthConfigValidate(t *testing.T) {
	c := AuthConfig{
		Users:  []AuthUser{{Name: "a", Role: "boss", PasswordHash: "plain"}, {Name: "a", Role: RoleViewer, PasswordHash: bcryptHash(t, "x")}},
		Tokens: []AuthToken{{Name: "", Role: RoleAdmin, TokenSHA256: "abc"}},
	}
	require.EqualError(t, c.Validate(), strings.Join([]string{
		`auth.users[0].role: must be viewer, analyst, admin or writer, got "boss"`,
		`auth.users[0].password_hash: not a bcrypt hash (crypto/bcrypt: hashedSecret too short to be a bcrypted password)`,
		`auth.users[1].name: "a" is already auth.users[0]`,
		`auth.tokens[0].name: must be a non-empty name without ':', got ""`,
		`auth.tokens[0].token_sha256: must be 64 hex digits (the SHA-256 of the token), got 3 characters`,
	}, "\n"))
}

func decodeJSON(resp *http.Response, v any) error {
	return json.NewDecoder(resp.Body).Decode(v)
}

// TestOTLPIngestToken: with auth.otlp_require_token, OTLP exports over
// gRPC and HTTP need a token with the writer (or admin) role; without
// one, with a wrong one or with a viewer's they are refused
// (Unauthenticated, 401) and nothing is counted.
func TestOTLPIngestToken(t *testing.T) {
	cfg := testConfig(t)
	const ingest, viewer = "ingest-token-0123456789", "viewer-token-0123456789"
	sum := sha256.Sum256([]byte(ingest))
	vsum := sha256.Sum256([]byte(viewer))
	cfg.Auth = AuthConfig{Tokens: []AuthToken{
		{Name: "proxies", Role: RoleWriter, TokenSHA256: hex.EncodeToString(sum[:])},
		{Name: "grafana", Role: RoleViewer, TokenSHA256: hex.EncodeToString(vsum[:])},
	}, OTLPRequireToken: true}
	require.NoError(t, cfg.Validate())
	s := start(t, cfg, Options{})
	spans := tracetest.SpanStubs{proxySpan(1, time.Now())}.Snapshots()
	for _, headers := range []map[string]string{nil, {"authorization": "Bearer wrong-token-000000"}, {"authorization": "Bearer " + viewer}} {
		g, err := otlptracegrpc.New(t.Context(), otlptracegrpc.WithEndpoint(s.OTLPGRPCAddr().String()), otlptracegrpc.WithInsecure(),
			otlptracegrpc.WithHeaders(headers), otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false}))
		require.NoError(t, err)
		err = g.ExportSpans(t.Context(), spans)
		require.Error(t, err)
		require.Contains(t, err.Error(), "Unauthenticated")
		require.NoError(t, g.Shutdown(context.Background()))
		h, err := otlptracehttp.New(t.Context(), otlptracehttp.WithEndpoint(s.OTLPHTTPAddr().String()), otlptracehttp.WithInsecure(),
			otlptracehttp.WithHeaders(headers), otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}))
		require.NoError(t, err)
		err = h.ExportSpans(t.Context(), spans)
		require.Error(t, err)
		require.Contains(t, err.Error(), "401")
		require.NoError(t, h.Shutdown(context.Background()))
	}
	ok := map[string]string{"authorization": "Bearer " + ingest}
	g, err := otlptracegrpc.New(t.Context(), otlptracegrpc.WithEndpoint(s.OTLPGRPCAddr().String()), otlptracegrpc.WithInsecure(), otlptracegrpc.WithHeaders(ok))
	require.NoError(t, err)
	require.NoError(t, g.ExportSpans(t.Context(), spans))
	require.NoError(t, g.Shutdown(context.Background()))
	h, err := otlptracehttp.New(t.Context(), otlptracehttp.WithEndpoint(s.OTLPHTTPAddr().String()), otlptracehttp.WithInsecure(), otlptracehttp.WithHeaders(ok))
	require.NoError(t, err)
	require.NoError(t, h.ExportSpans(t.Context(), spans))
	require.NoError(t, h.Shutdown(context.Background()))
	_, vals := s.agg.Snapshot(otelanalytics.FamilyRequests)
	total := 0.0
	for _, v := range vals {
		total += v
	}
	require.Equal(t, 2.0, total, "the two accepted spans, and only them")
}
