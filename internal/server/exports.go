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

// startExporter starts the export jobs in <data-dir>/exports and the
// report jobs in <data-dir>/reports. Their queries go through the query
// API's entry point on behalf of the job's owner, with the API's limits,
// gate and audit.
func (s *Server) startExporter() error {
	opts := export.Options{
		Dir:     filepath.Join(s.cfg.DataDir, "exports"),
		Logger:  s.log,
		Now:     s.opts.Now,
		Records: s.scanFleet,
		Peers:   s.peers.Names(),
		Query:   s.queryAs,
		Costs:   func() []otelanalytics.CostModel { return s.costs.Book().Models() },
		Audit:   s.store.Audit,
	}
	jobs, err := export.Start(opts)
	if err != nil {
		return err
	}
	s.exports = jobs
	opts.Dir, opts.Records, opts.Peers = filepath.Join(s.cfg.DataDir, "reports"), nil, nil
	if s.reports, err = export.Start(opts); err != nil {
		return fmt.Errorf("start report jobs: %w", err)
	}
	return nil
}

// queryAs runs a query through the query API's entry point as user.
func (s *Server) queryAs(ctx context.Context, user string, req promql.Request) (*promql.Result, error) {
	return s.api.Exec(withIdentity(ctx, identity{name: user}), req)
}

// defaultDataset is what an export without a dataset holds: the sampled
// records, as `proxylens export` without --dataset (docs/exports.md).
const defaultDataset = "records"

// exportsHandler serves /api/v1/exports.
func (s *Server) exportsHandler() http.Handler {
	return s.jobsHandler(jobRoutes{
		kind: "export", path: "/api/v1/exports", jobs: s.exports,
		submit: func(r *http.Request) (export.Job, error) {
			var req export.Request
			if err := decodeStrict(r, &req); err != nil {
				return export.Job{}, err
			}
			if req.Dataset == "" {
				req.Dataset = defaultDataset
			}
			return s.exports.Submit(req, adminUser(r))
		},
		file: func(j export.Job) (string, string) {
			format, _ := export.ParseFormat(j.Format)
			return format.ContentType(), fmt.Sprintf("proxylens-%s-%s%s", j.Dataset, j.ID, format.Extension())
		},
	})
}

// jobRoutes describe the endpoints of a kind of job: POST path to create
// one, GET path/{id} for its status, GET path/{id}/download for its file.
type jobRoutes struct {
	kind, path string
	jobs       *export.Jobs
	// submit reads a request and queues its job; its errors are the
	// caller's (400) but export.ErrBusy (503).
	submit func(r *http.Request) (export.Job, error)
	// file is a completed job's content type and download name.
	file func(export.Job) (contentType, name string)
}

// jobsHandler serves a kind of job's endpoints.
func (s *Server) jobsHandler(jr jobRoutes) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+jr.path, func(w http.ResponseWriter, r *http.Request) {
		j, err := jr.submit(r)
		switch {
		case errors.Is(err, export.ErrBusy):
			w.Header().Set("Retry-After", "10")
			writeAdminError(w, http.StatusServiceUnavailable, "unavailable", err)
		case err != nil:
			writeAdminError(w, http.StatusBadRequest, "bad_data", err)
		default:
			w.Header().Set("Location", jr.path+"/"+j.ID)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusAccepted)
			_ = json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": map[string]string{"id": j.ID}, "id": j.ID})
		}
	})
	get := func(w http.ResponseWriter, r *http.Request) (export.Job, bool) {
		j, ok := jr.jobs.Get(r.PathValue("id"))
		if !ok || !s.mayRead(r, j) {
			writeAdminError(w, http.StatusNotFound, "not_found", fmt.Errorf("no %s %q", jr.kind, r.PathValue("id")))
			return export.Job{}, false
		}
		return j, true
	}
	mux.HandleFunc("GET "+jr.path+"/{id}", func(w http.ResponseWriter, r *http.Request) {
		if j, ok := get(w, r); ok {
			writeAdminJSON(w, j)
		}
	})
	mux.HandleFunc("GET "+jr.path+"/{id}/download", func(w http.ResponseWriter, r *http.Request) {
		j, ok := get(w, r)
		if !ok {
			return
		}
		if j.Status != export.Completed {
			writeAdminError(w, http.StatusConflict, "conflict", fmt.Errorf("%s %s is %s", jr.kind, j.ID, j.Status))
			return
		}
		f, err := os.Open(jr.jobs.Path(j))
		if err != nil {
			writeAdminError(w, http.StatusGone, "not_found", fmt.Errorf("%s %s: the file expired", jr.kind, j.ID))
			return
		}
		defer f.Close()
		contentType, name := jr.file(j)
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s"`, name))
		w.Header().Set("Content-Length", fmt.Sprint(j.Size))
		n, _ := io.Copy(w, f)
		_ = s.store.Audit(pebblestore.AuditEntry{Time: s.opts.Now(), User: adminUser(r), Action: jr.kind + ".download", Resource: j.ID,
			ClientIP: clientIP(r), UserAgent: r.UserAgent(), Results: j.Rows, Success: n == j.Size})
	})
	return mux
}

// mayRead reports whether the caller may see job j: its owner or an admin.
func (s *Server) mayRead(r *http.Request, j export.Job) bool {
	id, ok := identityOf(r)
	return !ok || id.role == RoleAdmin || id.name == j.User
}
