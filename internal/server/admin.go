package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
	"github.com/proxylens/proxylens/promql"
)

// maxAdminBody bounds an admin request's body.
const maxAdminBody = 1 << 20

// readAdminToken reads the bootstrap admin token: the file's content
// without surrounding white space.
func readAdminToken(path string) ([sha256.Size]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return [sha256.Size]byte{}, fmt.Errorf("admin_token_file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < 16 {
		return [sha256.Size]byte{}, fmt.Errorf("admin_token_file: %s holds a token of %d characters; use at least 16", path, len(tok))
	}
	return sha256.Sum256([]byte(tok)), nil
}

// adminHandler serves /api/v1/admin/: 404 without an admin credential
// configured, 401 without the bearer token, and the admin endpoints.
type adminHandler struct {
	s     *Server
	token *[sha256.Size]byte // the bootstrap admin token, if any
	mux   *http.ServeMux
}

func (s *Server) newAdminHandler(token *[sha256.Size]byte) *adminHandler {
	h := &adminHandler{s: s, token: token, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /api/v1/admin/retention", h.getRetention)
	h.mux.HandleFunc("PUT /api/v1/admin/retention", h.putRetention)
	h.mux.HandleFunc("GET /api/v1/admin/sampling", h.getSampling)
	h.mux.HandleFunc("PUT /api/v1/admin/sampling", h.putSampling)
	h.mux.HandleFunc("GET /api/v1/admin/costs", h.getCosts)
	h.mux.HandleFunc("PUT /api/v1/admin/costs", h.putCosts)
	h.mux.HandleFunc("POST /api/v1/admin/rollup", h.rollup)
	h.mux.HandleFunc("POST /api/v1/admin/backup", h.postBackup)
	h.mux.HandleFunc("GET /api/v1/admin/backups", h.listBackups)
	h.mux.HandleFunc("GET /api/v1/admin/audit/verify", h.verifyAudit)
	h.mux.HandleFunc("GET /api/v1/audit", h.getAudit)
	h.mux.HandleFunc("POST /api/v1/admin/retention/enforce", h.enforce)
	h.mux.HandleFunc("GET /api/v1/admin/sources/retired", h.getRetired)
	h.mux.HandleFunc("PUT /api/v1/admin/sources/retired/{source}", h.putRetired)
	h.mux.HandleFunc("DELETE /api/v1/admin/sources/retired/{source}", h.deleteRetired)
	return h
}

func (h *adminHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.s.requireAdmin(h.token, h.mux).ServeHTTP(w, r)
}

// requireAdmin lets a request through when the authenticator identified
// it (users are configured: it checked the credential and the role), or
// when it carries the bootstrap admin token; else 401.
func (s *Server) requireAdmin(token *[sha256.Size]byte, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := identityOf(r); ok {
			next.ServeHTTP(w, r)
			return
		}
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		if !ok || token == nil || subtle.ConstantTimeCompare(sum[:], token[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="proxylens admin"`)
			writeAdminError(w, http.StatusUnauthorized, "unauthorized", errors.New("an admin bearer token is required (Authorization: Bearer …)"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// adminUser names the caller in the audit log: the user or token name, or
// "admin" for the bootstrap admin token.
func adminUser(r *http.Request) string {
	if id, ok := identityOf(r); ok {
		return id.name
	}
	return "admin"
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// The admin API answers in the query API's envelope.
func writeAdminJSON(w http.ResponseWriter, data any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": data})
}

func writeAdminError(w http.ResponseWriter, code int, typ string, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"status": "error", "errorType": typ, "error": err.Error()})
}

// decodeStrict decodes a JSON body into v: unknown fields, trailing data
// and bodies over maxAdminBody are errors.
func decodeStrict(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAdminBody+1))
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if len(body) > maxAdminBody {
		return fmt.Errorf("the body is larger than %d bytes", maxAdminBody)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	if dec.More() {
		return errors.New("invalid JSON: data after the object")
	}
	return nil
}

func (h *adminHandler) getRetention(w http.ResponseWriter, _ *http.Request) {
	p, err := h.s.store.Retention()
	if err != nil {
		writeAdminError(w, http.StatusInternalServerError, "internal", err)
		return
	}
	writeAdminJSON(w, p)
}

// putRetention changes the policy: the body's fields over the current
// policy (a field left out keeps its value; immutable_until: null asks to
// remove the hold). 400 for an invalid policy, 409 for what the
// compliance hold forbids.
func (h *adminHandler) putRetention(w http.ResponseWriter, r *http.Request) {
	p, err := h.s.store.Retention()
	if err != nil {
		writeAdminError(w, http.StatusInternalServerError, "internal", err)
		return
	}
	if err := decodeStrict(r, &p); err != nil {
		writeAdminError(w, http.StatusBadRequest, "bad_data", err)
		return
	}
	if err := h.s.store.SetRetention(p, pebblestore.AuditEntry{Time: h.s.opts.Now(), User: adminUser(r)}); err != nil {
		var he *pebblestore.HoldError
		switch {
		case errors.As(err, &he):
			writeAdminError(w, http.StatusConflict, "conflict", err)
		case p.Validate() != nil:
			writeAdminError(w, http.StatusBadRequest, "bad_data", err)
		default:
			writeAdminError(w, http.StatusInternalServerError, "internal", err)
		}
		return
	}
	h.s.log.Info("retention policy changed", "by", adminUser(r), "client", clientIP(r))
	h.s.kickRetention()
	h.getRetention(w, r)
}

func (h *adminHandler) getSampling(w http.ResponseWriter, _ *http.Request) {
	writeAdminJSON(w, h.s.sampler.Config())
}

// putSampling changes the sampler's thresholds at once (fields left out
// keep their value) and stores them: they outlast a restart for as long
// as the config file's sampling section stays as it was (see
// startSampling).
func (h *adminHandler) putSampling(w http.ResponseWriter, r *http.Request) {
	cfg := h.s.sampler.Config()
	if err := decodeStrict(r, &cfg); err != nil {
		writeAdminError(w, http.StatusBadRequest, "bad_data", err)
		return
	}
	entry := pebblestore.AuditEntry{Time: h.s.opts.Now(), User: adminUser(r), Action: "sampling.update", Resource: "sampling", ClientIP: clientIP(r)}
	if err := cfg.Validate(); err != nil {
		entry.Error = err.Error()
		_ = h.s.store.Audit(entry)
		writeAdminError(w, http.StatusBadRequest, "bad_data", err)
		return
	}
	v, err := json.Marshal(storedSampling{Config: h.s.cfg.Sampling, Sampling: cfg})
	if err == nil {
		err = h.s.store.SetSampling(v, entry)
	}
	if err == nil {
		err = h.s.sampler.SetConfig(cfg)
	}
	if err != nil {
		writeAdminError(w, http.StatusInternalServerError, "internal", err)
		return
	}
	writeAdminJSON(w, cfg)
}

// storedSampling is what the admin API stores: the thresholds it set and
// the config file's sampling section they replaced.
type storedSampling struct {
	Config   otelanalytics.SamplingConfig `json:"config"`
	Sampling otelanalytics.SamplingConfig `json:"sampling"`
}

// startSampling returns the sampling thresholds a start uses: those the
// admin API stored last, unless the config file's sampling section
// changed since (then the file's, as an edit of the file is the newer
// intent).
func (s *Server) startSampling() (otelanalytics.SamplingConfig, error) {
	v, err := s.store.Sampling()
	if err != nil || v == nil {
		return s.cfg.Sampling, err
	}
	var st storedSampling
	if err := json.Unmarshal(v, &st); err != nil {
		return s.cfg.Sampling, fmt.Errorf("stored sampling settings: %w", err)
	}
	if st.Config != s.cfg.Sampling {
		s.log.Info("the config file's sampling section changed since the admin API set the sampling: the file's applies", "api", st.Sampling, "file", s.cfg.Sampling)
		return s.cfg.Sampling, nil
	}
	return st.Sampling, nil
}

// rollupRequest is POST /api/v1/admin/rollup's body.
type rollupRequest struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// rollup summarizes now every closed raw window of the range that has no
// summaries yet, and checks the daily rollup against the raw increments.
func (h *adminHandler) rollup(w http.ResponseWriter, r *http.Request) {
	var req rollupRequest
	if err := decodeStrict(r, &req); err != nil {
		writeAdminError(w, http.StatusBadRequest, "bad_data", err)
		return
	}
	if req.Start.IsZero() || req.End.IsZero() || !req.End.After(req.Start) {
		writeAdminError(w, http.StatusBadRequest, "bad_data", errors.New("start and end: RFC 3339 times with end after start are required"))
		return
	}
	res, err := h.s.store.Series().Rollup(r.Context(), req.Start.UnixMilli(), req.End.UnixMilli())
	entry := pebblestore.AuditEntry{Time: h.s.opts.Now(), User: adminUser(r), Action: "rollup.run", Resource: "rollup", ClientIP: clientIP(r), Success: err == nil}
	if err != nil {
		entry.Error = err.Error()
	}
	_ = h.s.store.Audit(entry)
	if err != nil {
		writeAdminError(w, http.StatusInternalServerError, "internal", err)
		return
	}
	writeAdminJSON(w, res)
}

// enforce runs the retention policy now and answers what it did.
func (h *adminHandler) enforce(w http.ResponseWriter, r *http.Request) {
	e, err := h.s.enforceRetention(r.Context(), true)
	entry := pebblestore.AuditEntry{Time: h.s.opts.Now(), User: adminUser(r), Action: "retention.enforce", Resource: "retention", ClientIP: clientIP(r), Success: err == nil}
	if err != nil {
		entry.Error = err.Error()
	} else if v, err := json.Marshal(e); err == nil {
		entry.Detail = string(v)
	}
	if err := h.s.store.Audit(entry); err != nil {
		h.s.log.Warn("audit retention enforcement", "err", err)
	}
	if err != nil {
		writeAdminError(w, http.StatusInternalServerError, "internal", err)
		return
	}
	writeAdminJSON(w, e)
}

// enforceRetention runs the stored policy once.
func (s *Server) enforceRetention(ctx context.Context, compact bool) (pebblestore.Enforcement, error) {
	s.enforceMu.Lock()
	defer s.enforceMu.Unlock()
	p, err := s.store.Retention()
	if err != nil {
		return pebblestore.Enforcement{}, err
	}
	start := time.Now()
	e, err := s.store.EnforceRetention(ctx, p, s.opts.Now(), compact)
	if err != nil {
		s.log.Error("retention enforcement failed", "err", err)
		return e, err
	}
	s.log.Info("retention enforced", "held", e.Held, "took", time.Since(start).Round(time.Millisecond),
		"summarized_windows", e.Summarized, "live_bytes_before", e.BytesBefore, "live_bytes_after", e.BytesAfter)
	return e, nil
}

// kickRetention asks the retention loop to run soon.
func (s *Server) kickRetention() {
	select {
	case s.retentionKick <- struct{}{}:
	default:
	}
}

// retentionLoop enforces the policy at start and then every interval, and
// when the policy changes; it compacts (to give the space back at once)
// at most once a day.
func (s *Server) retentionLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var compacted time.Time
	for {
		compact := time.Since(compacted) >= 24*time.Hour
		e, err := s.enforceRetention(ctx, compact)
		if err != nil && ctx.Err() != nil {
			return
		}
		if err == nil && e.Compacted {
			compacted = time.Now()
		}
		if s.exports != nil {
			if p, err := s.store.Retention(); err == nil {
				s.exports.Expire(time.Duration(p.ExportDays) * 24 * time.Hour)
				if s.reports != nil {
					s.reports.Expire(time.Duration(p.ExportDays) * 24 * time.Hour)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.retentionKick:
		}
	}
}

// applyConfigRetention applies the config file's retention section, if
// any, as an admin change would be applied.
func (s *Server) applyConfigRetention() error {
	if s.cfg.Retention == nil {
		return nil
	}
	cur, err := s.store.Retention()
	if err != nil {
		return err
	}
	p := *s.cfg.Retention
	if equalPolicies(cur, p) {
		return nil
	}
	if err := s.store.SetRetention(p, pebblestore.AuditEntry{Time: s.opts.Now(), User: "config"}); err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	return nil
}

func equalPolicies(a, b pebblestore.RetentionPolicy) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// loadCosts prices cuts from the config file's cost models, which replace
// the stored ones, or else from the stored ones.
func (s *Server) loadCosts() error {
	models := s.cfg.Costs
	if models == nil {
		var err error
		if models, err = s.storedCostModels(); err != nil {
			return err
		}
	} else {
		stored, err := s.storedCostModels()
		if err != nil {
			return err
		}
		x, _ := json.Marshal(stored)
		y, _ := json.Marshal(models)
		if !bytes.Equal(x, y) {
			if err := s.store.SetCostModels(y, pebblestore.AuditEntry{Time: s.opts.Now(), User: "config"}); err != nil {
				return err
			}
		}
	}
	book, err := otelanalytics.NewCostBook(models)
	if err != nil {
		return fmt.Errorf("cost models: %w", err)
	}
	s.costs.Set(book)
	return nil
}

// storedCostModels returns the cost models the store keeps (none if never
// set), in the admin API's shape.
func (s *Server) storedCostModels() ([]otelanalytics.CostModel, error) {
	v, err := s.store.CostModels()
	if err != nil || v == nil {
		return nil, err
	}
	var models []otelanalytics.CostModel
	if err := json.Unmarshal(v, &models); err != nil {
		return nil, fmt.Errorf("stored cost models: %w", err)
	}
	return models, nil
}

func (h *adminHandler) getCosts(w http.ResponseWriter, _ *http.Request) {
	writeAdminJSON(w, h.s.costs.Book().Models())
}

// putCosts replaces every cost model; an invalid list changes nothing.
// New models price the cuts written from now on: history is not rewritten.
func (h *adminHandler) putCosts(w http.ResponseWriter, r *http.Request) {
	models, err := otelanalytics.DecodeCostModelsJSON(io.LimitReader(r.Body, maxAdminBody))
	if err == nil {
		var book *otelanalytics.CostBook
		if book, err = otelanalytics.NewCostBook(models); err == nil {
			models = book.Models()
			v, _ := json.Marshal(models)
			if err = h.s.store.SetCostModels(v, pebblestore.AuditEntry{Time: h.s.opts.Now(), User: adminUser(r), ClientIP: clientIP(r)}); err != nil {
				writeAdminError(w, http.StatusInternalServerError, "internal", err)
				return
			}
			h.s.costs.Set(book)
			writeAdminJSON(w, models)
			return
		}
	}
	_ = h.s.store.Audit(pebblestore.AuditEntry{Time: h.s.opts.Now(), User: adminUser(r), Action: "costs.update", Resource: "costs", ClientIP: clientIP(r), Error: err.Error()})
	writeAdminError(w, http.StatusBadRequest, "bad_data", err)
}

// getAudit lists audit entries: start and end (RFC 3339 or Unix), user[]
// and action[] filters, limit (the newest; default 1000, at most 10000).
func (h *adminHandler) getAudit(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeAdminError(w, http.StatusBadRequest, "bad_data", err)
		return
	}
	f := pebblestore.AuditFilter{Users: r.Form["user"], Actions: r.Form["action"], Limit: 1000}
	if id, ok := identityOf(r); ok && id.role != RoleAdmin {
		f.Users = []string{id.name} // a user sees their own entries; an admin everyone's
	}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"start", &f.From}, {"end", &f.To}} {
		if v := r.Form.Get(p.name); v != "" {
			t, err := parseAuditTime(v)
			if err != nil {
				writeAdminError(w, http.StatusBadRequest, "bad_data", fmt.Errorf("invalid parameter %q: %w", p.name, err))
				return
			}
			*p.dst = t
		}
	}
	if v := r.Form.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			writeAdminError(w, http.StatusBadRequest, "bad_data", fmt.Errorf("invalid parameter \"limit\": %q is not a number from 1 to 10000", v))
			return
		}
		f.Limit = n
	}
	entries, err := h.s.store.AuditEntries(f)
	if err != nil {
		writeAdminError(w, http.StatusInternalServerError, "internal", err)
		return
	}
	if entries == nil {
		entries = []pebblestore.AuditEntry{}
	}
	writeAdminJSON(w, entries)
}

func parseAuditTime(v string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		return time.Unix(0, int64(f*1e9)).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time or Unix seconds", v)
}

// AuditVerification is what checking the audit log's chain found.
type AuditVerification struct {
	Entries int    `json:"entries"` // entries checked (up to the break)
	Valid   bool   `json:"valid"`
	Break   string `json:"break,omitempty"`
}

// verifyAudit checks the audit log's hash chain.
func (h *adminHandler) verifyAudit(w http.ResponseWriter, _ *http.Request) {
	n, err := h.s.store.VerifyAudit()
	var ab *pebblestore.AuditBreak
	switch {
	case errors.As(err, &ab):
		writeAdminJSON(w, AuditVerification{Entries: n, Break: ab.Error()})
	case err != nil:
		writeAdminError(w, http.StatusInternalServerError, "internal", err)
	default:
		writeAdminJSON(w, AuditVerification{Entries: n, Valid: true})
	}
}

// auditAccess appends an entry for an answered query or lookup. Entries of
// reads are not synced one by one: a crash may lose the newest (the chain
// stays whole); changes are synced.
func (s *Server) auditAccess(ctx context.Context, a promql.Access) {
	user := "anonymous"
	if id, ok := identityFrom(ctx); ok {
		user = id.name
	}
	rq := requesterFrom(ctx)
	e := pebblestore.AuditEntry{
		Time: s.opts.Now(), User: user, Action: a.Action, Resource: a.Query, Start: a.Start, End: a.End,
		ClientIP: rq.clientIP, UserAgent: rq.userAgent, Results: int64(a.Results),
		Duration: a.Took.Seconds(), Success: a.Err == "", Error: a.Err,
	}
	if err := s.store.AuditRead(e); err != nil {
		s.log.Warn("audit a query", "err", err)
	}
	s.self.Histogram(`proxylens_query_duration_seconds{action="`+a.Action+`"}`,
		"Time to answer a query or lookup of the query API, by action (query, query_range, series, labels, label_values, metadata, query_exemplars).",
		queryBuckets).Update(a.Took.Seconds())
}

// queryBuckets are the bounds of proxylens_query_duration_seconds.
var queryBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}
