package server

import (
	"fmt"
	"net/http"

	"github.com/proxylens/proxylens/internal/export"
	"github.com/proxylens/proxylens/internal/report"
)

// reportsHandler serves /api/v1/reports: formatted reports (HTML or PDF)
// run as jobs of the export queue, with the exports' roles and audit.
func (s *Server) reportsHandler() http.Handler {
	return s.jobsHandler(jobRoutes{
		kind: "report", path: "/api/v1/reports", jobs: s.reports,
		submit: func(r *http.Request) (export.Job, error) {
			var req report.Request
			if err := decodeStrict(r, &req); err != nil {
				return export.Job{}, err
			}
			user := adminUser(r)
			task, err := report.Task(req, s.queryAs, user, s.opts.Now().UTC())
			if err != nil {
				return export.Job{}, err
			}
			return s.reports.SubmitTask(task, user)
		},
		file: func(j export.Job) (string, string) {
			contentType := "text/html; charset=utf-8"
			if j.Format == report.PDF {
				contentType = "application/pdf"
			}
			return contentType, fmt.Sprintf("proxylens-report-%s-%s.%s", j.End.Format("2006-01-02"), j.ID, j.Format)
		},
	})
}
