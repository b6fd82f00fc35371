package server

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/model"
	promqlengine "github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/proxylens/proxylens/internal/export"
	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
)

// Export limits.
const (
	maxExportJobs     = 2   // run at once
	maxQueuedExports  = 100 // waiting; past it a new job is refused (503)
	maxExportRangeDay = 400 // days
)

// ExportStatus is an export job's state.
type ExportStatus string

// The states of an export job.
const (
	ExportQueued     ExportStatus = "queued"
	ExportProcessing ExportStatus = "processing"
	ExportCompleted  ExportStatus = "completed"
	ExportFailed     ExportStatus = "failed"
)

// exportRequest is POST /api/v1/exports' body.
type exportRequest struct {
	Range   json.RawMessage `json:"range"`
	Format  string          `json:"format"`
	Dataset string          `json:"dataset"`
	Fields  []string        `json:"fields"`
	Filters exportFilters   `json:"filters"`
}

type exportFilters struct {
	Source      []string `json:"source"`
	Application []string `json:"application"`
	Domain      []string `json:"domain"`
	StatusCode  []uint16 `json:"status_code"`
	Success     *bool    `json:"success"`
	// Latency bounds in seconds, inclusive.
	MinLatency float64 `json:"min_latency_seconds"`
	MaxLatency float64 `json:"max_latency_seconds"`
}

// ExportJob is an export and its progress, as GET /api/v1/exports/{id}
// answers.
type ExportJob struct {
	ID       string       `json:"id"`
	Status   ExportStatus `json:"status"`
	Progress float64      `json:"progress"` // 0 to 1
	Rows     int64        `json:"rows"`
	Size     int64        `json:"size"` // bytes of the file
	Error    string       `json:"error,omitempty"`
	Format   string       `json:"format"`
	Dataset  string       `json:"dataset"`
	Start    time.Time    `json:"start"`
	End      time.Time    `json:"end"`
	Created  time.Time    `json:"created"`
	User     string       `json:"user"`

	fields []string
	filter exportFilters
	path   string
}

// exporter runs export jobs, a bounded number at once, into
// <data-dir>/exports.
type exporter struct {
	s   *Server
	dir string

	engine *promqlengine.Engine // the summaries' queries

	mu    sync.Mutex
	jobs  map[string]*ExportJob
	queue chan *ExportJob
	wg    sync.WaitGroup
	stop  context.CancelFunc
}

func (s *Server) startExporter() error {
	dir := filepath.Join(s.cfg.DataDir, "exports")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	ctx, stop := context.WithCancel(context.Background())
	e := &exporter{s: s, dir: dir, jobs: map[string]*ExportJob{}, queue: make(chan *ExportJob, maxQueuedExports), stop: stop,
		engine: promqlengine.NewEngine(promqlengine.EngineOpts{
			MaxSamples: 50_000_000, Timeout: 10 * time.Minute, Parser: parser.NewParser(parser.Options{}),
		})}
	if err := e.load(); err != nil {
		stop()
		return fmt.Errorf("load export jobs: %w", err)
	}
	for range maxExportJobs {
		e.wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-e.queue:
					e.run(ctx, j)
				}
			}
		})
	}
	s.exports = e
	return nil
}

func (e *exporter) close() {
	e.stop()
	e.wg.Wait()
}

// parseExportRange reads "24h", "7d", "30d" or {"start": …, "end": …}.
func parseExportRange(raw json.RawMessage, now time.Time) (time.Time, time.Time, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		d := map[string]time.Duration{"24h": 24 * time.Hour, "7d": 7 * 24 * time.Hour, "30d": 30 * 24 * time.Hour}[s]
		if d == 0 {
			return time.Time{}, time.Time{}, fmt.Errorf("range: %q is not 24h, 7d, 30d or {\"start\": …, \"end\": …}", s)
		}
		return now.Add(-d), now, nil
	}
	var r struct {
		Start time.Time `json:"start"`
		End   time.Time `json:"end"`
	}
	if err := json.Unmarshal(raw, &r); err != nil || r.Start.IsZero() || r.End.IsZero() {
		return time.Time{}, time.Time{}, errors.New(`range: must be "24h", "7d", "30d" or {"start": RFC 3339, "end": RFC 3339}`)
	}
	if !r.End.After(r.Start) {
		return time.Time{}, time.Time{}, errors.New("range: end must be after start")
	}
	if r.End.Sub(r.Start) > maxExportRangeDay*24*time.Hour {
		return time.Time{}, time.Time{}, fmt.Errorf("range: at most %d days", maxExportRangeDay)
	}
	return r.Start.UTC(), r.End.UTC(), nil
}

// submit validates a request and queues its job.
func (e *exporter) submit(req exportRequest, user string) (*ExportJob, error) {
	now := e.s.opts.Now().UTC()
	start, end, err := parseExportRange(req.Range, now)
	if err != nil {
		return nil, err
	}
	if _, err := export.ParseFormat(req.Format); err != nil {
		return nil, fmt.Errorf("format: %w", err)
	}
	cols, ok := exportDatasets[req.Dataset]
	if !ok {
		return nil, fmt.Errorf("dataset: %q is not records, hourly or daily", req.Dataset)
	}
	fields := req.Fields
	if len(fields) == 0 {
		for _, c := range cols {
			fields = append(fields, c.Name)
		}
	}
	for i, f := range fields {
		if !slices.ContainsFunc(cols, func(c export.Column) bool { return c.Name == f }) {
			return nil, fmt.Errorf("fields[%d]: %q is not a field of %s (%s)", i, f, req.Dataset, columnNames(cols))
		}
	}
	if f := req.Filters; f.MinLatency < 0 || f.MaxLatency < 0 || (f.MaxLatency > 0 && f.MaxLatency < f.MinLatency) {
		return nil, errors.New("filters: min_latency_seconds and max_latency_seconds must be >= 0, max at least min")
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	j := &ExportJob{
		ID: hex.EncodeToString(id[:]), Status: ExportQueued, Format: req.Format, Dataset: req.Dataset,
		Start: start, End: end, Created: now, User: user, fields: fields, filter: req.Filters,
	}
	f, _ := export.ParseFormat(req.Format)
	j.path = filepath.Join(e.dir, j.ID+f.Extension())
	e.mu.Lock()
	defer e.mu.Unlock()
	select {
	case e.queue <- j:
	default:
		return nil, errExportsBusy
	}
	e.jobs[j.ID] = j
	return j, nil
}

var errExportsBusy = errors.New("too many export jobs queued; retry later")

// get returns a copy of a job.
func (e *exporter) get(id string) (ExportJob, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	j, ok := e.jobs[id]
	if !ok {
		return ExportJob{}, false
	}
	return *j, true
}

func (e *exporter) update(j *ExportJob, fn func(*ExportJob)) {
	e.mu.Lock()
	fn(j)
	e.mu.Unlock()
}

// run writes a job's file, then renames it into place.
func (e *exporter) run(ctx context.Context, j *ExportJob) {
	e.update(j, func(j *ExportJob) { j.Status = ExportProcessing })
	start := time.Now()
	rows, size, err := e.write(ctx, j)
	e.update(j, func(j *ExportJob) {
		j.Rows, j.Size = rows, size
		if err != nil {
			j.Status, j.Error = ExportFailed, err.Error()
			return
		}
		j.Status, j.Progress = ExportCompleted, 1
	})
	entry := pebblestore.AuditEntry{
		Time: e.s.opts.Now(), User: j.User, Action: "export", Resource: j.Dataset + "." + j.Format + " " + j.ID,
		Start: j.Start.Format(time.RFC3339), End: j.End.Format(time.RFC3339), Filters: filtersString(j.filter),
		Results: rows, Duration: time.Since(start).Seconds(), Success: err == nil,
	}
	if err != nil {
		entry.Error = err.Error()
	}
	_ = e.s.store.Audit(entry)
	if err := e.save(j); err != nil {
		e.s.log.Warn("save export job", "id", j.ID, "err", err)
	}
}

// jobFile is where a finished job's description is kept, beside its file,
// so that a restart still knows it.
func (e *exporter) jobFile(id string) string { return filepath.Join(e.dir, id+".job.json") }

// save writes a finished job's description.
func (e *exporter) save(j *ExportJob) error {
	e.mu.Lock()
	v, err := json.Marshal(j)
	e.mu.Unlock()
	if err != nil {
		return err
	}
	tmp := e.jobFile(j.ID) + ".partial"
	if err := os.WriteFile(tmp, v, 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, e.jobFile(j.ID))
}

// load reads the finished jobs of earlier runs, and removes what jobs cut
// short by a stop left behind.
func (e *exporter) load() error {
	ents, err := os.ReadDir(e.dir)
	if err != nil {
		return err
	}
	for _, ent := range ents {
		name := ent.Name()
		switch {
		case strings.HasSuffix(name, ".partial"):
			_ = os.Remove(filepath.Join(e.dir, name))
		case strings.HasSuffix(name, ".job.json"):
			b, err := os.ReadFile(filepath.Join(e.dir, name))
			if err != nil {
				return err
			}
			var j ExportJob
			if err := json.Unmarshal(b, &j); err != nil || j.ID == "" {
				e.s.log.Warn("unreadable export job description; removed", "file", name)
				_ = os.Remove(filepath.Join(e.dir, name))
				continue
			}
			if f, err := export.ParseFormat(j.Format); err == nil {
				j.path = filepath.Join(e.dir, j.ID+f.Extension())
			}
			e.jobs[j.ID] = &j
		}
	}
	return nil
}

func filtersString(f exportFilters) string {
	b, _ := json.Marshal(f)
	return string(b)
}

func (e *exporter) write(ctx context.Context, j *ExportJob) (int64, int64, error) {
	tmp := j.path + ".partial"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return 0, 0, err
	}
	defer os.Remove(tmp)
	cols := selectColumns(exportDatasets[j.Dataset], j.fields)
	format, _ := export.ParseFormat(j.Format)
	bw := bufio.NewWriterSize(f, 1<<20)
	w, err := export.NewWriter(bw, format, cols)
	if err != nil {
		f.Close()
		return 0, 0, err
	}
	progress := func(p float64) { e.update(j, func(j *ExportJob) { j.Progress = p; j.Rows = w.Rows() }) }
	switch j.Dataset {
	case "records":
		err = e.writeRecords(ctx, j, w, progress)
	default:
		err = e.writeSummaries(ctx, j, w, progress)
	}
	if err == nil {
		err = w.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return w.Rows(), 0, err
	}
	st, err := os.Stat(tmp)
	if err != nil {
		return w.Rows(), 0, err
	}
	return w.Rows(), st.Size(), os.Rename(tmp, j.path)
}

// recordColumns are the records dataset's fields.
var recordColumns = []export.Column{
	{Name: "time", Kind: export.Time},
	{Name: "duration_seconds", Kind: export.Float},
	{Name: "source", Kind: export.String},
	{Name: "tier", Kind: export.String},
	{Name: "proxy", Kind: export.String},
	{Name: "application", Kind: export.String},
	{Name: "domain", Kind: export.String},
	{Name: "method", Kind: export.String},
	{Name: "status_code", Kind: export.Int},
	{Name: "success", Kind: export.Bool},
	{Name: "error_type", Kind: export.String},
	{Name: "bytes_sent", Kind: export.Int},
	{Name: "bytes_received", Kind: export.Int},
	{Name: "weight", Kind: export.Float},
	{Name: "trace_id", Kind: export.String},
	{Name: "span_id", Kind: export.String},
}

var exportDatasets = map[string][]export.Column{
	"records": recordColumns,
	"hourly":  summaryColumns,
	"daily":   summaryColumns,
}

func columnNames(cols []export.Column) string {
	var names []string
	for _, c := range cols {
		names = append(names, c.Name)
	}
	return strings.Join(names, ", ")
}

func selectColumns(cols []export.Column, fields []string) []export.Column {
	out := make([]export.Column, 0, len(fields))
	for _, f := range fields {
		for _, c := range cols {
			if c.Name == f {
				out = append(out, c)
			}
		}
	}
	return out
}

func recordValue(r *otelanalytics.Record, field string) any {
	switch field {
	case "time":
		return time.Unix(0, r.EndTime).UTC()
	case "duration_seconds":
		return float64(r.Duration) / 1e9
	case "source":
		return r.Source
	case "tier":
		return r.Tier
	case "proxy":
		return r.Proxy
	case "application":
		return r.Application
	case "domain":
		return r.Domain
	case "method":
		return r.Method.String()
	case "status_code":
		if r.StatusCode == 0 {
			return nil
		}
		return int64(r.StatusCode)
	case "success":
		return r.Success
	case "error_type":
		return r.ErrorType
	case "bytes_sent":
		return int64(r.BytesSent)
	case "bytes_received":
		return int64(r.BytesReceived)
	case "weight":
		return r.Weight
	case "trace_id":
		if r.TraceID == ([16]byte{}) {
			return nil
		}
		return hex.EncodeToString(r.TraceID[:])
	case "span_id":
		if r.SpanID == ([8]byte{}) {
			return nil
		}
		return hex.EncodeToString(r.SpanID[:])
	}
	return nil
}

func (e *exporter) writeRecords(ctx context.Context, j *ExportJob, w *export.Writer, progress func(float64)) error {
	f := otelanalytics.RecordFilter{
		Start: j.Start, End: j.End, Sources: j.filter.Source, Applications: j.filter.Application,
		Domains: j.filter.Domain, StatusCodes: j.filter.StatusCode, Success: j.filter.Success,
		MinDuration: time.Duration(j.filter.MinLatency * 1e9), MaxDuration: time.Duration(j.filter.MaxLatency * 1e9),
	}
	row := make([]any, len(j.fields))
	span := float64(j.End.Sub(j.Start))
	n := 0
	return e.s.ScanRecords(ctx, f, func(r *otelanalytics.Record) error {
		for i, field := range j.fields {
			row[i] = recordValue(r, field)
		}
		if n++; n%8192 == 0 {
			progress(min(0.99, float64(time.Unix(0, r.EndTime).Sub(j.Start))/span))
		}
		return w.Write(row)
	})
}

// exportsHandler serves /api/v1/exports.
func (s *Server) exportsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/exports", func(w http.ResponseWriter, r *http.Request) {
		var req exportRequest
		if err := decodeStrict(r, &req); err != nil {
			writeAdminError(w, http.StatusBadRequest, "bad_data", err)
			return
		}
		j, err := s.exports.submit(req, adminUser(r))
		switch {
		case errors.Is(err, errExportsBusy):
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
		j, ok := s.exports.get(r.PathValue("id"))
		if !ok || !s.mayRead(r, j) {
			writeAdminError(w, http.StatusNotFound, "not_found", fmt.Errorf("no export %q", r.PathValue("id")))
			return
		}
		writeAdminJSON(w, j)
	})
	mux.HandleFunc("GET /api/v1/exports/{id}/download", func(w http.ResponseWriter, r *http.Request) {
		j, ok := s.exports.get(r.PathValue("id"))
		if !ok || !s.mayRead(r, j) {
			writeAdminError(w, http.StatusNotFound, "not_found", fmt.Errorf("no export %q", r.PathValue("id")))
			return
		}
		if j.Status != ExportCompleted {
			writeAdminError(w, http.StatusConflict, "conflict", fmt.Errorf("export %s is %s", j.ID, j.Status))
			return
		}
		f, err := os.Open(j.path)
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
func (s *Server) mayRead(r *http.Request, j ExportJob) bool {
	id, ok := identityOf(r)
	return !ok || id.role == RoleAdmin || id.name == j.User
}

// summaryColumns are the hourly and daily datasets' fields: the product's
// per-period summaries, read from the rollups, per source.
var summaryColumns = []export.Column{
	{Name: "period_start", Kind: export.Time},
	{Name: "period_end", Kind: export.Time},
	{Name: "source", Kind: export.String},
	{Name: "requests", Kind: export.Float},
	{Name: "successes", Kind: export.Float},
	{Name: "failures", Kind: export.Float},
	{Name: "avg_latency_seconds", Kind: export.Float},
	{Name: "p50_latency_seconds", Kind: export.Float},
	{Name: "p95_latency_seconds", Kind: export.Float},
	{Name: "bytes_sent", Kind: export.Float},
	{Name: "bytes_received", Kind: export.Float},
	{Name: "distinct_domains", Kind: export.Int},
	{Name: "sample_adjusted", Kind: export.Bool},
}

// summaryQueries compute each summary field per source and period; SEL is
// replaced by the filters' matchers and R by the period.
var summaryQueries = map[string]string{
	"requests":            `sum by (source) (increase(proxy_requests_total{SEL}[R]))`,
	"successes":           `sum by (source) (increase(proxy_requests_total{outcome="success",SEL}[R]))`,
	"failures":            `sum by (source) (increase(proxy_requests_total{outcome="failure",SEL}[R]))`,
	"avg_latency_seconds": `sum by (source) (increase(proxy_request_duration_seconds_sum{SEL}[R])) / sum by (source) (increase(proxy_request_duration_seconds_count{SEL}[R]))`,
	"p50_latency_seconds": `histogram_quantile(0.5, sum by (source, le) (increase(proxy_request_duration_seconds_bucket{SEL}[R])))`,
	"p95_latency_seconds": `histogram_quantile(0.95, sum by (source, le) (increase(proxy_request_duration_seconds_bucket{SEL}[R])))`,
	"bytes_sent":          `sum by (source) (increase(proxy_transfer_bytes_total{direction="sent",SEL}[R]))`,
	"bytes_received":      `sum by (source) (increase(proxy_transfer_bytes_total{direction="received",SEL}[R]))`,
	"distinct_domains":    `count by (source) (sum by (source, domain) (increase(proxy_requests_total{SEL}[R])) > 0)`,
	"sample_adjusted":     `sum by (source) (increase(proxy_sample_adjusted_requests_total{SRCSEL}[R])) > 0`,
}

// anyOf is a regex matcher value for a list of exact values.
func anyOf(vals []string) string {
	q := make([]string, len(vals))
	for i, v := range vals {
		q[i] = regexp.QuoteMeta(v)
	}
	return strings.Join(q, "|")
}

func (e *exporter) writeSummaries(ctx context.Context, j *ExportJob, w *export.Writer, progress func(float64)) error {
	step := time.Hour
	if j.Dataset == "daily" {
		step = 24 * time.Hour
	}
	// Periods (t − step, t] with t on the step's grid (UTC), inside the range.
	first, last := j.Start.Truncate(step).Add(step), j.End.Truncate(step)
	if last.Before(first) {
		return nil
	}
	var sel, srcSel []string
	if len(j.filter.Source) > 0 {
		m := fmt.Sprintf("source=~%q", anyOf(j.filter.Source))
		sel, srcSel = append(sel, m), append(srcSel, m)
	}
	if len(j.filter.Application) > 0 {
		sel = append(sel, fmt.Sprintf("application=~%q", anyOf(j.filter.Application)))
	}
	type key struct {
		t      int64
		source string
	}
	rows := map[key]map[string]float64{}
	rng := model.Duration(step).String()
	names := slices.Sorted(maps.Keys(summaryQueries))
	for i, name := range names {
		q := strings.NewReplacer("SEL", strings.Join(sel, ","), "SRCSEL", strings.Join(srcSel, ","), "[R]", "["+rng+"]").Replace(summaryQueries[name])
		q = strings.ReplaceAll(strings.ReplaceAll(q, "{,", "{"), ",}", "}")
		qry, err := e.engine.NewRangeQuery(ctx, e.s.store.Series(), nil, q, first, last, step)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		res := qry.Exec(ctx)
		if res.Err != nil {
			qry.Close()
			return fmt.Errorf("%s: %w", name, res.Err)
		}
		m, err := res.Matrix()
		if err != nil {
			qry.Close()
			return err
		}
		for _, s := range m {
			src := s.Metric.Get("source")
			for _, p := range s.Floats {
				k := key{p.T, src}
				if rows[k] == nil {
					rows[k] = map[string]float64{}
				}
				rows[k][name] = p.F
			}
		}
		qry.Close()
		progress(float64(i+1) / float64(len(names)+1))
	}
	keys := slices.SortedFunc(maps.Keys(rows), func(a, b key) int {
		if a.t != b.t {
			return cmp.Compare(a.t, b.t)
		}
		return strings.Compare(a.source, b.source)
	})
	row := make([]any, len(j.fields))
	for _, k := range keys {
		vals := rows[k]
		if vals["requests"] <= 0 {
			continue // a period without requests has no summary
		}
		end := time.UnixMilli(k.t).UTC()
		for i, f := range j.fields {
			switch f {
			case "period_start":
				row[i] = end.Add(-step)
			case "period_end":
				row[i] = end
			case "source":
				row[i] = k.source
			case "distinct_domains":
				row[i] = int64(vals[f])
			case "sample_adjusted":
				_, adjusted := vals[f]
				row[i] = adjusted
			default:
				if v, ok := vals[f]; ok {
					row[i] = v
				} else {
					row[i] = nil
				}
			}
		}
		if err := w.Write(row); err != nil {
			return err
		}
	}
	return nil
}

// expire deletes the jobs and files older than keep (export_days).
func (e *exporter) expire(keep time.Duration) {
	cutoff := e.s.opts.Now().Add(-keep)
	e.mu.Lock()
	for id, j := range e.jobs {
		if j.Created.Before(cutoff) && (j.Status == ExportCompleted || j.Status == ExportFailed) {
			_ = os.Remove(j.path)
			_ = os.Remove(e.jobFile(id))
			delete(e.jobs, id)
		}
	}
	e.mu.Unlock()
	// Files of jobs from before a restart.
	ents, err := os.ReadDir(e.dir)
	if err != nil {
		return
	}
	for _, ent := range ents {
		if info, err := ent.Info(); err == nil && info.ModTime().Before(cutoff) {
			_ = os.Remove(filepath.Join(e.dir, ent.Name()))
		}
	}
}
