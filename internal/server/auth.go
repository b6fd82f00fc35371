package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/proxylens/proxylens/pebblestore"
	"golang.org/x/crypto/bcrypt"
)

// The reading roles, each allowed what the one before is and more, and
// the writer role beside them: it may write series (remote write, OTLP
// metrics) and OTLP ingest with otlp_require_token, and read nothing. An
// admin may do everything, writing series too.
const (
	RoleViewer  = "viewer"  // queries and dashboards
	RoleAnalyst = "analyst" // also exports and reports
	RoleAdmin   = "admin"   // also retention, sampling, costs, backups, pprof, everyone's audit log; writes series
	RoleWriter  = "writer"  // writes series and OTLP ingest; reads nothing
)

// roleRank orders the reading roles; the writer role has none.
var roleRank = map[string]int{RoleViewer: 1, RoleAnalyst: 2, RoleAdmin: 3}

// validRole reports whether role is one of the roles above.
func validRole(role string) bool { return roleRank[role] > 0 || role == RoleWriter }

// mayUse reports whether role may use what needs the role need.
func mayUse(role, need string) bool {
	switch {
	case role == RoleAdmin:
		return true
	case need == RoleWriter, role == RoleWriter:
		return role == need
	}
	return roleRank[role] >= roleRank[need]
}

// AuthConfig is the auth section of the config file: who may use the HTTP
// endpoints. With no users and no tokens, the read and write endpoints are
// open, and the admin API and /debug/pprof need the bootstrap admin token
// (admin_token_file). Names proxylens writes itself are refused to every
// writer either way (receiver.ReservedName).
type AuthConfig struct {
	Users  []AuthUser  `yaml:"users"`
	Tokens []AuthToken `yaml:"tokens"`
	// OTLPRequireToken makes OTLP ingest (traces and metrics, gRPC and
	// HTTP) require a token with the writer or admin role, or the
	// bootstrap admin token, as Authorization: Bearer.
	OTLPRequireToken bool `yaml:"otlp_require_token"`
}

// AuthUser signs in with HTTP basic auth.
type AuthUser struct {
	Name string `yaml:"name"`
	Role string `yaml:"role"`
	// PasswordHash is the bcrypt hash of the password (htpasswd -nBC 10
	// NAME, or any bcrypt tool), as Prometheus' web config takes them.
	PasswordHash string `yaml:"password_hash"`
}

// AuthToken signs in with Authorization: Bearer TOKEN.
type AuthToken struct {
	Name string `yaml:"name"`
	Role string `yaml:"role"`
	// TokenSHA256 is the hex SHA-256 of the token (sha256sum), so the file
	// holds no usable secret.
	TokenSHA256 string `yaml:"token_sha256"`
}

// hasAdmin reports whether a user or token has the admin role.
func (c AuthConfig) hasAdmin() bool {
	for _, u := range c.Users {
		if u.Role == RoleAdmin {
			return true
		}
	}
	for _, tk := range c.Tokens {
		if tk.Role == RoleAdmin {
			return true
		}
	}
	return false
}

// hasIngestToken reports whether a token may OTLP ingest: one with the
// writer or admin role.
func (c AuthConfig) hasIngestToken() bool {
	for _, tk := range c.Tokens {
		if tk.Role == RoleAdmin || tk.Role == RoleWriter {
			return true
		}
	}
	return false
}

// Enabled reports whether any user or token is configured.
func (c AuthConfig) Enabled() bool { return len(c.Users)+len(c.Tokens) > 0 }

// Validate reports every problem at once, each naming the field.
func (c AuthConfig) Validate() error {
	var errs []error
	names := map[string]string{}
	check := func(path, name, role string) {
		if strings.TrimSpace(name) == "" || strings.ContainsAny(name, ":\n") {
			errs = append(errs, fmt.Errorf("%s.name: must be a non-empty name without ':', got %q", path, name))
		} else if prev, dup := names[name]; dup {
			errs = append(errs, fmt.Errorf("%s.name: %q is already %s", path, name, prev))
		} else {
			names[name] = path
		}
		if !validRole(role) {
			errs = append(errs, fmt.Errorf("%s.role: must be viewer, analyst, admin or writer, got %q", path, role))
		}
	}
	for i, u := range c.Users {
		path := fmt.Sprintf("auth.users[%d]", i)
		check(path, u.Name, u.Role)
		if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
			errs = append(errs, fmt.Errorf("%s.password_hash: not a bcrypt hash (%v)", path, err))
		}
	}
	for i, tk := range c.Tokens {
		path := fmt.Sprintf("auth.tokens[%d]", i)
		check(path, tk.Name, tk.Role)
		if b, err := hex.DecodeString(tk.TokenSHA256); err != nil || len(b) != sha256.Size {
			errs = append(errs, fmt.Errorf("%s.token_sha256: must be 64 hex digits (the SHA-256 of the token), got %d characters", path, len(tk.TokenSHA256)))
		}
	}
	return errors.Join(errs...)
}

// identity is who a request is from.
type identity struct {
	name, role string
}

type identityKey struct{}

func identityOf(r *http.Request) (identity, bool) { return identityFrom(r.Context()) }

// identityFrom returns the identity ctx carries: the authenticated caller
// of an HTTP request, or the user on whose behalf proxylens itself works
// (an export job's owner).
func identityFrom(ctx context.Context) (identity, bool) {
	id, ok := ctx.Value(identityKey{}).(identity)
	return id, ok
}

func withIdentity(ctx context.Context, id identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// requester is where an HTTP request came from, for the audit log.
type requester struct{ clientIP, userAgent string }

type requesterKey struct{}

// withRequester puts every request's client address and user agent in
// its context, so that what audits it deeper down (the query API's hook)
// needs only the context.
func withRequester(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rq := requester{clientIP: clientIP(r), userAgent: r.UserAgent()}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requesterKey{}, rq)))
	})
}

func requesterFrom(ctx context.Context) requester {
	rq, _ := ctx.Value(requesterKey{}).(requester)
	return rq
}

// authenticator checks the credentials of every HTTP request but the
// health endpoints, and the role each path needs.
type authenticator struct {
	users  map[string]AuthUser
	tokens []AuthToken // hashes decoded once
	hashes [][sha256.Size]byte
	admin  *[sha256.Size]byte // the bootstrap admin token, if any
	dummy  []byte             // a bcrypt hash for unknown users: the same work as a wrong password

	mu     sync.Mutex
	passed map[[sha256.Size]byte]struct{} // user:password pairs bcrypt accepted, bounded

	// audit records the refusals of a known user: a wrong password (401)
	// and a role that may not (403). nil: not recorded.
	audit func(pebblestore.AuditEntry)
	now   func() time.Time
}

// maxPassed bounds the remembered accepted passwords (bcrypt costs tens of
// milliseconds; Grafana sends the credentials with every query).
const maxPassed = 1024

func newAuthenticator(c AuthConfig, admin *[sha256.Size]byte) *authenticator {
	a := &authenticator{users: map[string]AuthUser{}, admin: admin, passed: map[[sha256.Size]byte]struct{}{}}
	for _, u := range c.Users {
		a.users[u.Name] = u
	}
	for _, tk := range c.Tokens {
		var h [sha256.Size]byte
		b, _ := hex.DecodeString(tk.TokenSHA256)
		copy(h[:], b)
		a.tokens, a.hashes = append(a.tokens, tk), append(a.hashes, h)
	}
	cost := bcrypt.DefaultCost
	for _, u := range c.Users {
		if n, err := bcrypt.Cost([]byte(u.PasswordHash)); err == nil {
			cost = n
			break
		}
	}
	a.dummy, _ = bcrypt.GenerateFromPassword([]byte("proxylens-no-such-user"), cost)
	return a
}

// identify returns the request's identity, or false for no or wrong
// credentials.
func (a *authenticator) identify(r *http.Request) (identity, bool) {
	if name, pass, ok := r.BasicAuth(); ok {
		u, known := a.users[name]
		key := sha256.Sum256([]byte(name + ":" + pass + ":" + u.PasswordHash))
		a.mu.Lock()
		_, cached := a.passed[key]
		a.mu.Unlock()
		if known && cached {
			return identity{name, u.Role}, true
		}
		hash := a.dummy
		if known {
			hash = []byte(u.PasswordHash)
		}
		if bcrypt.CompareHashAndPassword(hash, []byte(pass)) != nil || !known {
			return identity{}, false
		}
		a.mu.Lock()
		if len(a.passed) >= maxPassed {
			clear(a.passed)
		}
		a.passed[key] = struct{}{}
		a.mu.Unlock()
		return identity{name, u.Role}, true
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return identity{}, false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	found := -1
	for i := range a.hashes { // every hash compared: the time does not say which matched
		if subtle.ConstantTimeCompare(sum[:], a.hashes[i][:]) == 1 {
			found = i
		}
	}
	if found >= 0 {
		return identity{a.tokens[found].Name, a.tokens[found].Role}, true
	}
	if a.admin != nil && subtle.ConstantTimeCompare(sum[:], a.admin[:]) == 1 {
		return identity{"admin", RoleAdmin}, true
	}
	return identity{}, false
}

// ingestAllowed reports whether an OTLP request's Authorization header
// holds a token that may write: the writer or admin role, or the
// bootstrap admin token. OTLP ingest writes counters and, for OTLP
// metrics, series: a viewer's token (Grafana's) may not.
func (a *authenticator) ingestAllowed(authorization string) bool {
	r := http.Request{Header: http.Header{"Authorization": {authorization}}}
	if _, _, basic := r.BasicAuth(); basic {
		return false // tokens only: bcrypt per export request would cost too much
	}
	id, ok := a.identify(&r)
	return ok && mayUse(id.role, RoleWriter)
}

// writePaths are the endpoints of the HTTP API that write series.
var writePaths = []string{"/api/v1/write", "/api/v1/otlp/v1/metrics"}

// requiredRole is the role a path needs.
func requiredRole(path string) string {
	for _, p := range writePaths {
		if path == p {
			return RoleWriter
		}
	}
	switch {
	case strings.HasPrefix(path, "/api/v1/admin/"), path == "/debug/pprof" || strings.HasPrefix(path, "/debug/pprof/"):
		return RoleAdmin
	case strings.HasPrefix(path, "/api/v1/exports"), strings.HasPrefix(path, "/api/v1/reports"), strings.HasPrefix(path, "/api/v1/peer/"):
		return RoleAnalyst
	}
	return RoleViewer
}

// wrap requires a credential on every path but /-/healthy and /-/ready:
// 401 with WWW-Authenticate for none or a wrong one, 403 for a role that
// may not.
func (a *authenticator) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/-/healthy" || r.URL.Path == "/-/ready" {
			next.ServeHTTP(w, r)
			return
		}
		id, ok := a.identify(r)
		if !ok {
			if name, _, basic := r.BasicAuth(); basic && a.users[name].Name != "" {
				a.refused(r, name, "auth.failed", "wrong password")
			}
			w.Header().Add("WWW-Authenticate", `Basic realm="proxylens"`)
			w.Header().Add("WWW-Authenticate", `Bearer realm="proxylens"`)
			writeAdminError(w, http.StatusUnauthorized, "unauthorized", errors.New("a user name and password (basic auth) or a bearer token is required"))
			return
		}
		if need := requiredRole(r.URL.Path); !mayUse(id.role, need) {
			if need == RoleWriter {
				need = RoleWriter + " or " + RoleAdmin
			}
			err := fmt.Errorf("%s (%s) may not use %s: it needs the %s role", id.name, id.role, r.URL.Path, need)
			a.refused(r, id.name, "access.denied", err.Error())
			writeAdminError(w, http.StatusForbidden, "forbidden", err)
			return
		}
		next.ServeHTTP(w, r.WithContext(withIdentity(r.Context(), id)))
	})
}

// refused audits a refusal of user's request.
func (a *authenticator) refused(r *http.Request, user, action, why string) {
	if a.audit == nil {
		return
	}
	a.audit(pebblestore.AuditEntry{Time: a.now(), User: user, Action: action, Resource: r.Method + " " + r.URL.Path, ClientIP: clientIP(r), Error: why})
}

// TLSConfig is the tls section of the config file: one certificate for
// every listener (OTLP/gRPC, OTLP/HTTP and the HTTP API).
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Enabled reports whether TLS is configured.
func (c TLSConfig) Enabled() bool { return c.CertFile != "" || c.KeyFile != "" }

// Load returns the server TLS configuration: TLS 1.2 at least.
func (c TLSConfig) Load() (*tls.Config, error) {
	if c.CertFile == "" || c.KeyFile == "" {
		return nil, errors.New("tls: cert_file and key_file go together")
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: load cert_file %s and key_file %s: %w", c.CertFile, c.KeyFile, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}
