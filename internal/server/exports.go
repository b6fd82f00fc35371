package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/proxylens/proxylens/internal/export"
	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
	"github.com/proxylens/proxylens/promql"
)

// startExporter starts the export jobs in <data-dir>/exports. Their
// queries go through the query API's entry point on behalf of the job's
// owner, with the API's limits, gate and audit.
func (s *Server) startExporter() error {
	jobs, err := export.Start(export.Options{
		Dir:     filepath.Join(s.cfg.DataDir, "exports"),
		Logger:  s.log,
		Now:     s.opts.Now,
		Records: s.ScanRecords,
		Query: func(ctx context.Context, user string, req promql.Request) (*promql.Result, error) {
			return s.api.Exec(withIdentity(ctx, identity{name: user}), req)
		},
		Costs: func() []otelanalytics.CostModel { return s.costs.Book().Models() },
		Audit: s.store.Audit,
	})
	if err != nil {
		return err
	}
	s.exports = jobs
	return nil
}

// exportsHandler serves /api/v1/exports.
func (s *Server) exportsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/exports", func(w http.ResponseWriter, r *http.Request) {
		var req export.Request
		if err := decodeStrict(r, &req); err != nil {
			writeAdminError(w, http.StatusBadRequest, "bad_data", err)
			return
		}
		j, err := s.exports.Submit(req, adminUser(r))
		switch {
		case errors.Is(err, export.ErrBusy):
			w.Header().Set("Retry-After", "10")
			writeAdminError(w, http.StatusServiceUnavailable, "unavailable", err)
		case err != nil:
			writeAdminError(w, http.StatusBadRequest, "bad_data", err)
		default:
			w.Header().Set("Location", "/api/v1/exports/"+j.ID)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusAccepted)
			_ = json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": map[string]string{"id": j.ID}, "id": j.ID})
		}
	})
	mux.HandleFunc("GET /api/v1/exports/{id}", func(w http.ResponseWriter, r *http.Request) {
		j, ok := s.exports.Get(r.PathValue("id"))
		if !ok || !s.mayRead(r, j) {
			writeAdminError(w, http.StatusNotFound, "not_found", fmt.Errorf("no export %q", r.PathValue("id")))
			return
		}
		writeAdminJSON(w, j)
	})
	mux.HandleFunc("GET /api/v1/exports/{id}/download", func(w http.ResponseWriter, r *http.Request) {
		j, ok := s.exports.Get(r.PathValue("id"))
		if !ok || !s.mayRead(r, j) {
			writeAdminError(w, http.StatusNotFound, "not_found", fmt.Errorf("no export %q", r.PathValue("id")))
			return
		}
		if j.Status != export.Completed {
			writeAdminError(w, http.StatusConflict, "conflict", fmt.Errorf("export %s is %s", j.ID, j.Status))
			return
		}
		f, err := os.Open(s.exports.Path(j))
		if err != nil {
			writeAdminError(w, http.StatusGone, "not_found", fmt.Errorf("export %s: the file expired", j.ID))
			return
		}
		defer f.Close()
		format, _ := export.ParseFormat(j.Format)
		w.Header().Set("Content-Type", format.ContentType())
		w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="proxylens-%s-%s%s"`, j.Dataset, j.ID, format.Extension()))
		w.Header().Set("Content-Length", fmt.Sprint(j.Size))
		n, _ := io.Copy(w, f)
		_ = s.store.Audit(pebblestore.AuditEntry{Time: s.opts.Now(), User: adminUser(r), Action: "export.download", Resource: j.ID,
			ClientIP: clientIP(r), UserAgent: r.UserAgent(), Results: j.Rows, Success: n == j.Size})
	})
	return mux
}

// mayRead reports whether the caller may see job j: its owner or an admin.
func (s *Server) mayRead(r *http.Request, j export.Job) bool {
	id, ok := identityOf(r)
	return !ok || id.role == RoleAdmin || id.name == j.User
}
