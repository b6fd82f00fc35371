package export

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
	"github.com/proxylens/proxylens/promql"
)

// The export jobs: a bounded queue, run two at a time into a directory,
// each written to a .partial file then renamed into place, its
// description kept beside it so that a restart still knows it.

// Export limits.
const (
	maxJobs      = 2   // run at once
	maxQueued    = 100 // waiting; past it a new job is refused (503)
	maxRangeDays = 400 // days
)

// Status is an export job's state.
type Status string

// The states of an export job.
const (
	Queued     Status = "queued"
	Processing Status = "processing"
	Completed  Status = "completed"
	Failed     Status = "failed"
)

// Request is an export as POST /api/v1/exports asks for it.
type Request struct {
	Range   json.RawMessage `json:"range"`
	Format  string          `json:"format"`
	Dataset string          `json:"dataset"`
	Fields  []string        `json:"fields"`
	Filters Filters         `json:"filters"`
}

// Filters select what an export holds.
type Filters struct {
	Source      []string `json:"source"`
	Application []string `json:"application"`
	Domain      []string `json:"domain"`
	StatusCode  []uint16 `json:"status_code"`
	Success     *bool    `json:"success"`
	// Latency bounds in seconds, inclusive.
	MinLatency float64 `json:"min_latency_seconds"`
	MaxLatency float64 `json:"max_latency_seconds"`
}

// Job is an export and its progress, as GET /api/v1/exports/{id}
// answers.
type Job struct {
	ID       string    `json:"id"`
	Status   Status    `json:"status"`
	Progress float64   `json:"progress"` // 0 to 1
	Rows     int64     `json:"rows"`
	Size     int64     `json:"size"` // bytes of the file
	Error    string    `json:"error,omitempty"`
	Format   string    `json:"format"`
	Dataset  string    `json:"dataset"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	Created  time.Time `json:"created"`
	User     string    `json:"user"`
	// Kind is the kind of a job that is not a dataset export: "report".
	Kind string `json:"kind,omitempty"`

	fields []string
	filter Filters
	path   string
	write  func(ctx context.Context, w io.Writer, progress func(float64)) (int64, error)
}

// Task is a job of another kind than a dataset export, a report: it runs
// through the same queue, files, audit and expiry as exports.
type Task struct {
	Kind       string // the job's kind and audit action: "report"
	Format     string // the file's extension, without the dot: "html", "pdf"
	Start, End time.Time
	Filters    Filters // what the task selects, for the audit log
	// Write writes the file to w, reporting its progress from 0 to 1, and
	// returns the rows (table lines) it wrote.
	Write func(ctx context.Context, w io.Writer, progress func(float64)) (int64, error)
}

// Options are the jobs' directory and collaborators.
type Options struct {
	// Dir holds the export files and the finished jobs' descriptions.
	Dir    string
	Logger *slog.Logger // nil: discarded
	Now    func() time.Time
	// Records scans the stored records a filter selects, in end-time
	// order (the records dataset): this instance's, merged with those of
	// the Peers.
	Records func(ctx context.Context, f otelanalytics.RecordFilter, fn func(*otelanalytics.Record) error) error
	// Peers names the other instances Records asks (the peers: of the
	// config), for the audit log of exports of records. Nil: none.
	Peers []string
	// Query runs a PromQL query on behalf of user through the query
	// API's entry point, with its limits, gate and audit (the hourly and
	// daily datasets).
	Query func(ctx context.Context, user string, req promql.Request) (*promql.Result, error)
	// Costs returns the cost models, every validity period of every
	// source, sorted by source then from (the costs dataset). Nil: none.
	Costs func() []otelanalytics.CostModel
	// Audit records every job that ends.
	Audit func(pebblestore.AuditEntry) error
}

// Jobs runs export jobs, a bounded number at once, into Options.Dir. All
// methods are safe for concurrent use.
type Jobs struct {
	opts Options

	mu    sync.Mutex
	jobs  map[string]*Job
	queue chan *Job
	wg    sync.WaitGroup
	stop  context.CancelFunc
}

// Start loads the jobs of earlier runs from opts.Dir, removing what jobs
// cut short left behind, and starts the workers.
func Start(opts Options) (*Jobs, error) {
	if err := os.MkdirAll(opts.Dir, 0o750); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	ctx, stop := context.WithCancel(context.Background())
	e := &Jobs{opts: opts, jobs: map[string]*Job{}, queue: make(chan *Job, maxQueued), stop: stop}
	if err := e.load(); err != nil {
		stop()
		return nil, fmt.Errorf("load export jobs: %w", err)
	}
	for range maxJobs {
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
	return e, nil
}

// Path returns the file of a completed job.
func (e *Jobs) Path(j Job) string { return j.path }

// ParseRange reads a job's range, "24h", "7d", "30d" (up to now) or
// {"start": …, "end": …} in RFC 3339.
func ParseRange(raw json.RawMessage, now time.Time) (time.Time, time.Time, error) {
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
	if r.End.Sub(r.Start) > maxRangeDays*24*time.Hour {
		return time.Time{}, time.Time{}, fmt.Errorf("range: at most %d days", maxRangeDays)
	}
	return r.Start.UTC(), r.End.UTC(), nil
}

// Close stops the workers; a job being written is cut short and its
// partial file removed at the next Start.
func (e *Jobs) Close() {
	e.stop()
	e.wg.Wait()
}

// Submit validates a request and queues its job, owned by user. A full
// queue refuses it with ErrBusy.
func (e *Jobs) Submit(req Request, user string) (Job, error) {
	now := e.opts.Now().UTC()
	start, end, err := ParseRange(req.Range, now)
	if err != nil {
		return Job{}, err
	}
	if _, err := ParseFormat(req.Format); err != nil {
		return Job{}, fmt.Errorf("format: %w", err)
	}
	cols, ok := datasets[req.Dataset]
	if !ok {
		return Job{}, fmt.Errorf("dataset: %q is not records, hourly, daily or costs", req.Dataset)
	}
	fields := req.Fields
	if len(fields) == 0 {
		for _, c := range cols {
			fields = append(fields, c.Name)
		}
	}
	for i, f := range fields {
		if !slices.ContainsFunc(cols, func(c Column) bool { return c.Name == f }) {
			return Job{}, fmt.Errorf("fields[%d]: %q is not a field of %s (%s)", i, f, req.Dataset, columnNames(cols))
		}
	}
	if f := req.Filters; f.MinLatency < 0 || f.MaxLatency < 0 || (f.MaxLatency > 0 && f.MaxLatency < f.MinLatency) {
		return Job{}, errors.New("filters: min_latency_seconds and max_latency_seconds must be >= 0, max at least min")
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	j := &Job{
		ID: hex.EncodeToString(id[:]), Status: Queued, Format: req.Format, Dataset: req.Dataset,
		Start: start, End: end, Created: now, User: user, fields: fields, filter: req.Filters,
	}
	f, _ := ParseFormat(req.Format)
	j.path = filepath.Join(e.opts.Dir, j.ID+f.Extension())
	return e.enqueue(j)
}

// SubmitTask queues a job of another kind, owned by user. A full queue
// refuses it with ErrBusy.
func (e *Jobs) SubmitTask(t Task, user string) (Job, error) {
	if t.Kind == "" || t.Format == "" || t.Write == nil {
		return Job{}, errors.New("a task needs a kind, a format and a writer")
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	j := &Job{
		ID: hex.EncodeToString(id[:]), Status: Queued, Kind: t.Kind, Format: t.Format,
		Start: t.Start, End: t.End, Created: e.opts.Now().UTC(), User: user, filter: t.Filters, write: t.Write,
	}
	j.path = filepath.Join(e.opts.Dir, j.ID+"."+t.Format)
	return e.enqueue(j)
}

func (e *Jobs) enqueue(j *Job) (Job, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	select {
	case e.queue <- j:
	default:
		return Job{}, ErrBusy
	}
	e.jobs[j.ID] = j
	return *j, nil
}

// ErrBusy refuses a job when the queue is full: retry later.
var ErrBusy = errors.New("too many export jobs queued; retry later")

// Get returns a copy of a job.
func (e *Jobs) Get(id string) (Job, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	j, ok := e.jobs[id]
	if !ok {
		return Job{}, false
	}
	return *j, true
}

func (e *Jobs) update(j *Job, fn func(*Job)) {
	e.mu.Lock()
	fn(j)
	e.mu.Unlock()
}

// run writes a job's file, then renames it into place.
func (e *Jobs) run(ctx context.Context, j *Job) {
	e.update(j, func(j *Job) { j.Status = Processing })
	start := time.Now()
	rows, size, err := e.write(ctx, j)
	e.update(j, func(j *Job) {
		j.Rows, j.Size = rows, size
		if err != nil {
			j.Status, j.Error = Failed, err.Error()
			return
		}
		j.Status, j.Progress = Completed, 1
	})
	action, what := "export", j.Dataset
	if j.Kind != "" {
		action, what = j.Kind, j.Kind
	}
	entry := pebblestore.AuditEntry{
		Time: e.opts.Now(), User: j.User, Action: action, Resource: what + "." + j.Format + " " + j.ID,
		Start: j.Start.Format(time.RFC3339), End: j.End.Format(time.RFC3339), Filters: filtersString(j.filter),
		Results: rows, Duration: time.Since(start).Seconds(), Success: err == nil,
	}
	if err != nil {
		entry.Error = err.Error()
	}
	if j.Kind == "" && j.Dataset == "records" && len(e.opts.Peers) > 0 {
		entry.Detail = "peers: " + strings.Join(e.opts.Peers, ", ")
	}
	if err := e.opts.Audit(entry); err != nil {
		e.opts.Logger.Warn("audit a job, going on", "action", action, "id", j.ID, "err", err)
	}
	if err := e.save(j); err != nil {
		e.opts.Logger.Warn("save job description, going on", "action", action, "id", j.ID, "err", err)
	}
}

// jobFile is where a finished job's description is kept, beside its file,
// so that a restart still knows it.
func (e *Jobs) jobFile(id string) string { return filepath.Join(e.opts.Dir, id+".job.json") }

// save writes a finished job's description.
func (e *Jobs) save(j *Job) error {
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
func (e *Jobs) load() error {
	ents, err := os.ReadDir(e.opts.Dir)
	if err != nil {
		return err
	}
	for _, ent := range ents {
		name := ent.Name()
		switch {
		case strings.HasSuffix(name, ".partial"):
			_ = os.Remove(filepath.Join(e.opts.Dir, name))
		case strings.HasSuffix(name, ".job.json"):
			b, err := os.ReadFile(filepath.Join(e.opts.Dir, name))
			if err != nil {
				return err
			}
			var j Job
			if err := json.Unmarshal(b, &j); err != nil || j.ID == "" {
				e.opts.Logger.Warn("unreadable export job description; removed", "file", name)
				_ = os.Remove(filepath.Join(e.opts.Dir, name))
				continue
			}
			if f, err := ParseFormat(j.Format); err == nil && j.Kind == "" {
				j.path = filepath.Join(e.opts.Dir, j.ID+f.Extension())
			} else if j.Kind != "" {
				j.path = filepath.Join(e.opts.Dir, j.ID+"."+j.Format)
			}
			e.jobs[j.ID] = &j
		}
	}
	return nil
}

func filtersString(f Filters) string {
	b, _ := json.Marshal(f)
	return string(b)
}

// write writes a job's file to a .partial file, then renames it into
// place; it returns the rows and the file's size.
func (e *Jobs) write(ctx context.Context, j *Job) (int64, int64, error) {
	tmp := j.path + ".partial"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return 0, 0, err
	}
	defer os.Remove(tmp)
	bw := bufio.NewWriterSize(f, 1<<20)
	var rows int64
	if j.write != nil {
		progress := func(p float64) { e.update(j, func(j *Job) { j.Progress = min(p, 0.99) }) }
		rows, err = j.write(ctx, bw, progress)
	} else {
		rows, err = e.writeExport(ctx, j, bw)
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
		return rows, 0, err
	}
	st, err := os.Stat(tmp)
	if err != nil {
		return rows, 0, err
	}
	return rows, st.Size(), os.Rename(tmp, j.path)
}

// writeExport writes a dataset export's rows to out.
func (e *Jobs) writeExport(ctx context.Context, j *Job, out io.Writer) (int64, error) {
	cols := selectColumns(datasets[j.Dataset], j.fields)
	format, _ := ParseFormat(j.Format)
	w, err := NewWriter(out, format, cols)
	if err != nil {
		return 0, err
	}
	progress := func(p float64) { e.update(j, func(j *Job) { j.Progress = p; j.Rows = w.Rows() }) }
	switch j.Dataset {
	case "records":
		err = e.writeRecords(ctx, j, w, progress)
	case "costs":
		err = e.writeCosts(j, w)
	default:
		err = e.writeSummaries(ctx, j, w, progress)
	}
	if err == nil {
		err = w.Close()
	}
	return w.Rows(), err
}

// Expire deletes the jobs and files older than keep (export_days).
func (e *Jobs) Expire(keep time.Duration) {
	cutoff := e.opts.Now().Add(-keep)
	e.mu.Lock()
	for id, j := range e.jobs {
		if j.Created.Before(cutoff) && (j.Status == Completed || j.Status == Failed) {
			_ = os.Remove(j.path)
			_ = os.Remove(e.jobFile(id))
			delete(e.jobs, id)
		}
	}
	e.mu.Unlock()
	// Files of jobs from before a restart.
	ents, err := os.ReadDir(e.opts.Dir)
	if err != nil {
		return
	}
	for _, ent := range ents {
		if info, err := ent.Info(); err == nil && info.ModTime().Before(cutoff) {
			_ = os.Remove(filepath.Join(e.opts.Dir, ent.Name()))
		}
	}
}
