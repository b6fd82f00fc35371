// Package promql serves the Prometheus HTTP query API over proxylens'
// series store, running the official PromQL engine: /api/v1/query,
// /api/v1/query_range, /api/v1/series, /api/v1/labels,
// /api/v1/label/<name>/values, /api/v1/metadata, /api/v1/query_exemplars,
// /api/v1/format_query and /api/v1/status/buildinfo, with Prometheus' paths,
// parameters, JSON shapes, error types and status codes, so that Grafana,
// promtool and client_golang's API client work unchanged.
//
// All methods are safe for concurrent use.
package promql

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/prometheus/prometheus/util/stats"

	"github.com/proxylens/proxylens/pebblestore"
)

// Config sets the query limits. Zero fields take the defaults, Prometheus'
// own.
type Config struct {
	// Timeout is the longest a query may run. Default 2m; a request's
	// timeout parameter can only shorten it.
	Timeout time.Duration `yaml:"timeout"`
	// MaxSamples bounds the samples a query may hold in memory at once.
	// Default 50,000,000.
	MaxSamples int `yaml:"max_samples"`
	// MaxConcurrent bounds the queries running at once; others wait.
	// Default 20.
	MaxConcurrent int `yaml:"max_concurrent"`
	// MaxPoints bounds the points per series of a range query. Default 11,000.
	MaxPoints int `yaml:"max_points_per_series"`
	// MaxQueryLength bounds the time span a query covers (end − start of a
	// range query, plus its longest range). Default 0: no bound.
	MaxQueryLength time.Duration `yaml:"max_query_length"`
	// LookbackDelta is how far back an instant selector looks. Default 5m.
	LookbackDelta time.Duration `yaml:"lookback_delta"`
}

// DefaultConfig returns Prometheus' limits.
func DefaultConfig() Config {
	return Config{Timeout: 2 * time.Minute, MaxSamples: 50_000_000, MaxConcurrent: 20, MaxPoints: 11000, LookbackDelta: 5 * time.Minute}
}

// Validate reports every problem of c at once.
func (c Config) Validate() error {
	var errs []error
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("query.timeout: must not be negative, got %q", c.Timeout.String()))
	}
	if c.MaxSamples < 0 {
		errs = append(errs, fmt.Errorf("query.max_samples: must not be negative, got %d", c.MaxSamples))
	}
	if c.MaxConcurrent < 0 {
		errs = append(errs, fmt.Errorf("query.max_concurrent: must not be negative, got %d", c.MaxConcurrent))
	}
	if c.MaxPoints < 0 {
		errs = append(errs, fmt.Errorf("query.max_points_per_series: must not be negative, got %d", c.MaxPoints))
	}
	if c.MaxQueryLength < 0 {
		errs = append(errs, fmt.Errorf("query.max_query_length: must not be negative, got %q", c.MaxQueryLength.String()))
	}
	if c.LookbackDelta < 0 {
		errs = append(errs, fmt.Errorf("query.lookback_delta: must not be negative, got %q", c.LookbackDelta.String()))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Timeout == 0 {
		c.Timeout = d.Timeout
	}
	if c.MaxSamples == 0 {
		c.MaxSamples = d.MaxSamples
	}
	if c.MaxConcurrent == 0 {
		c.MaxConcurrent = d.MaxConcurrent
	}
	if c.MaxPoints == 0 {
		c.MaxPoints = d.MaxPoints
	}
	if c.LookbackDelta == 0 {
		c.LookbackDelta = d.LookbackDelta
	}
	return c
}

// Metadata describes a metric family for /api/v1/metadata.
type Metadata struct {
	Type string `json:"type"`
	Help string `json:"help"`
	Unit string `json:"unit"`
}

// BuildInfo is what /api/v1/status/buildinfo answers.
type BuildInfo struct {
	Version   string `json:"version"`
	Revision  string `json:"revision"`
	Branch    string `json:"branch"`
	BuildUser string `json:"buildUser"`
	BuildDate string `json:"buildDate"`
	GoVersion string `json:"goVersion"`
}

// API serves the query API.
type API struct {
	cfg       Config
	queryable storage.Queryable
	engine    *promql.Engine
	parser    parser.Parser
	metadata  func() map[string][]Metadata
	build     BuildInfo
	log       *slog.Logger
	now       func() time.Time
	audit     func(*http.Request, Access)
}

// Options are an API's collaborators. Metadata and Logger may be nil.
type Options struct {
	Metadata   func() map[string][]Metadata
	BuildInfo  BuildInfo
	Logger     *slog.Logger
	Registerer prometheus.Registerer // the engine's own metrics
	Now        func() time.Time
	// Audit, if set, is told of every query and series, label and
	// metadata lookup once it is answered.
	Audit func(r *http.Request, a Access)
}

// Access is one answered data request, for the audit log.
type Access struct {
	Action     string // query, query_range, series, labels, label_values, metadata, query_exemplars
	Query      string // the query, the match[] selectors or the label name
	Start, End string // the time range asked for, as given
	Results    int    // series, samples or names answered
	Took       time.Duration
	Err        string // empty on success
}

// New returns an API over q with the limits of cfg.
func New(cfg Config, q storage.Queryable, opts Options) *API {
	cfg = cfg.withDefaults()
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	if opts.BuildInfo.GoVersion == "" {
		opts.BuildInfo.GoVersion = runtime.Version()
	}
	p := parser.NewParser(parser.Options{})
	engine := promql.NewEngine(promql.EngineOpts{
		Logger:                   log,
		Reg:                      opts.Registerer,
		MaxSamples:               cfg.MaxSamples,
		Timeout:                  cfg.Timeout,
		ActiveQueryTracker:       newGate(cfg.MaxConcurrent),
		LookbackDelta:            cfg.LookbackDelta,
		NoStepSubqueryIntervalFn: noStepInterval,
		EnableAtModifier:         true,
		EnableNegativeOffset:     true,
		EnablePerStepStats:       true,
		Parser:                   p,
	})
	return &API{cfg: cfg, queryable: q, engine: engine, parser: p, metadata: opts.Metadata,
		build: opts.BuildInfo, log: log, now: now, audit: opts.Audit}
}

// Close stops the engine.
func (a *API) Close() error { return a.engine.Close() }

// Register adds the API's handlers to mux.
func (a *API) Register(mux *http.ServeMux) {
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		mux.HandleFunc(m+" /api/v1/query", a.audited("query", a.wrap(a.query)))
		mux.HandleFunc(m+" /api/v1/query_range", a.audited("query_range", a.wrap(a.queryRange)))
		mux.HandleFunc(m+" /api/v1/series", a.audited("series", a.wrap(a.series)))
		mux.HandleFunc(m+" /api/v1/labels", a.audited("labels", a.wrap(a.labelNames)))
		mux.HandleFunc(m+" /api/v1/query_exemplars", a.audited("query_exemplars", a.wrap(a.exemplars)))
		mux.HandleFunc(m+" /api/v1/format_query", a.wrap(a.formatQuery))
	}
	mux.HandleFunc("GET /api/v1/label/{name}/values", a.audited("label_values", a.wrap(a.labelValues)))
	mux.HandleFunc("GET /api/v1/metadata", a.audited("metadata", a.wrap(a.metadataHandler)))
	mux.HandleFunc("GET /api/v1/status/buildinfo", a.wrap(a.buildInfo))
	// Grafana asks for rules and alerts when it starts; there are none.
	mux.HandleFunc("GET /api/v1/rules", a.wrap(func(*http.Request) result {
		return result{data: map[string]any{"groups": []any{}}}
	}))
	mux.HandleFunc("GET /api/v1/alerts", a.wrap(func(*http.Request) result {
		return result{data: map[string]any{"alerts": []any{}}}
	}))
}

// Error types, as Prometheus names them.
const (
	errorBadData     = "bad_data"
	errorExec        = "execution"
	errorTimeout     = "timeout"
	errorCanceled    = "canceled"
	errorInternal    = "internal"
	errorNotFound    = "not_found"
	errorUnavailable = "unavailable"
)

var errorStatus = map[string]int{
	errorBadData:     http.StatusBadRequest,
	errorExec:        http.StatusUnprocessableEntity,
	errorTimeout:     http.StatusServiceUnavailable,
	errorCanceled:    499,
	errorInternal:    http.StatusInternalServerError,
	errorNotFound:    http.StatusNotFound,
	errorUnavailable: http.StatusServiceUnavailable,
}

type apiError struct {
	typ string
	err error
}

func (e *apiError) Error() string { return e.err.Error() }

func badData(format string, args ...any) *apiError {
	return &apiError{typ: errorBadData, err: fmt.Errorf(format, args...)}
}

type result struct {
	data     any
	err      *apiError
	warnings annotations.Annotations
	query    string
	finalize func()
}

type response struct {
	Status    string   `json:"status"`
	Data      any      `json:"data,omitempty"`
	ErrorType string   `json:"errorType,omitempty"`
	Error     string   `json:"error,omitempty"`
	Warnings  []string `json:"warnings,omitempty"`
	Infos     []string `json:"infos,omitempty"`
}

// wrap turns a handler into an http.HandlerFunc writing Prometheus'
// envelope.
func (a *API) wrap(f func(*http.Request) result) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			a.write(w, r, result{err: badData("error parsing form values: %v", err)})
			return
		}
		res := f(r)
		if res.finalize != nil {
			defer res.finalize()
		}
		if acc, ok := r.Context().Value(accessKey{}).(*Access); ok {
			acc.Results = resultCount(res.data)
			if res.err != nil {
				acc.Err = res.err.Error()
			}
		}
		a.write(w, r, res)
	}
}

type accessKey struct{}

// audited reports each answered request to Options.Audit.
func (a *API) audited(action string, h http.HandlerFunc) http.HandlerFunc {
	if a.audit == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		_ = r.ParseForm() // here, so that r.Form is read below; wrap reports errors
		acc := &Access{Action: action}
		h(w, r.WithContext(context.WithValue(r.Context(), accessKey{}, acc)))
		acc.Took = time.Since(start)
		acc.Start, acc.End = r.Form.Get("start"), r.Form.Get("end")
		switch {
		case r.Form.Has("query"):
			acc.Query = r.Form.Get("query")
		case len(r.Form["match[]"]) > 0:
			acc.Query = strings.Join(r.Form["match[]"], " ")
		case r.PathValue("name") != "":
			acc.Query = r.PathValue("name")
		}
		if t := r.Form.Get("time"); t != "" && acc.Start == "" {
			acc.Start, acc.End = t, t
		}
		a.audit(r, *acc)
	}
}

// resultCount is how many series, samples or names data holds.
func resultCount(data any) int {
	switch d := data.(type) {
	case queryData:
		switch v := d.Result.(type) {
		case promql.Matrix:
			return len(v)
		case promql.Vector:
			return len(v)
		case nil:
			return 0
		}
		return 1
	case nil:
		return 0
	}
	if v := reflect.ValueOf(data); v.Kind() == reflect.Slice || v.Kind() == reflect.Map {
		return v.Len()
	}
	return 1
}

func (a *API) write(w http.ResponseWriter, _ *http.Request, res result) {
	resp := response{Status: "success", Data: res.data}
	resp.Warnings, resp.Infos = res.warnings.AsStrings(res.query, 10, 10)
	code := http.StatusOK
	if res.err != nil {
		resp = response{Status: "error", ErrorType: res.err.typ, Error: res.err.Error(),
			Warnings: resp.Warnings, Infos: resp.Infos}
		code = errorStatus[res.err.typ]
	}
	var b []byte
	var err error
	if qd, ok := res.data.(queryData); ok && res.err == nil {
		// Query results: written directly, as Prometheus writes them, into
		// a pooled buffer.
		bp := respBufs.Get().(*[]byte)
		defer func() {
			if cap(b) <= maxPooledResp {
				*bp = b[:0]
				respBufs.Put(bp)
			}
		}()
		b = append((*bp)[:0], `{"status":"success","data":`...)
		if b, err = appendQueryData(b, qd); err == nil {
			for _, f := range []struct {
				name string
				list []string
			}{{"warnings", resp.Warnings}, {"infos", resp.Infos}} {
				if len(f.list) == 0 {
					continue
				}
				raw, merr := json.Marshal(f.list)
				if merr != nil {
					err = merr
					break
				}
				b = append(b, `,"`+f.name+`":`...)
				b = append(b, raw...)
			}
			b = append(b, '}')
		}
	} else {
		b, err = json.Marshal(resp)
	}
	if err != nil {
		a.log.Error("encode API response", "err", err)
		http.Error(w, `{"status":"error","errorType":"internal","error":"encode response"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// respBufs holds response buffers for reuse; maxPooledResp bounds the
// ones kept.
var respBufs = sync.Pool{New: func() any { return new([]byte) }}

const maxPooledResp = 16 << 20

// Times and durations, parsed as Prometheus parses them.
var (
	minTime          = time.Unix(math.MinInt64/1000+62135596801, 0).UTC()
	maxTime          = time.Unix(math.MaxInt64/1000-62135596801, 999999999).UTC()
	minTimeFormatted = minTime.Format(time.RFC3339Nano)
	maxTimeFormatted = maxTime.Format(time.RFC3339Nano)
)

func parseTime(s string) (time.Time, error) {
	if t, err := strconv.ParseFloat(s, 64); err == nil {
		sec, ns := math.Modf(t)
		ns = math.Round(ns*1000) / 1000
		return time.Unix(int64(sec), int64(ns*float64(time.Second))).UTC(), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	switch s {
	case minTimeFormatted:
		return minTime, nil
	case maxTimeFormatted:
		return maxTime, nil
	}
	return time.Time{}, fmt.Errorf("cannot parse %q to a valid timestamp", s)
}

func parseDuration(s string) (time.Duration, error) {
	if d, err := strconv.ParseFloat(s, 64); err == nil {
		ts := d * float64(time.Second)
		if ts > float64(math.MaxInt64) || ts < float64(math.MinInt64) {
			return 0, fmt.Errorf("cannot parse %q to a valid duration. It overflows int64", s)
		}
		return time.Duration(ts), nil
	}
	if d, err := model.ParseDuration(s); err == nil {
		return time.Duration(d), nil
	}
	return 0, fmt.Errorf("cannot parse %q to a valid duration", s)
}

func parseTimeParam(r *http.Request, name string, def time.Time) (time.Time, error) {
	v := r.Form.Get(name)
	if v == "" {
		return def, nil
	}
	t, err := parseTime(v)
	if err != nil {
		return time.Time{}, fmt.Errorf("invalid parameter %q: %w", name, err)
	}
	return t, nil
}

func parseLimit(r *http.Request) (int, *apiError) {
	v := r.Form.Get("limit")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, badData("limit must be a non-negative number, got %q", v)
	}
	return n, nil
}

// queryContext applies the request's timeout parameter, which can only
// shorten the configured one (the engine enforces that).
//
// It also applies max_source_resolution (the parameter Thanos' querier
// reads): raw (or 0s) answers from raw samples only, never from the
// window summaries or the daily rollup, where raw samples still exist;
// auto, or empty, lets the store pick the coarsest data that answers
// exactly; 5m and 1h are accepted as auto, the store's choice being at
// least as exact.
func (a *API) queryContext(r *http.Request) (context.Context, context.CancelFunc, *apiError) {
	ctx := r.Context()
	switch v := r.Form.Get("max_source_resolution"); v {
	case "", "auto", "5m", "1h":
	case "raw", "0s", "0":
		ctx = pebblestore.WithRawData(ctx)
	default:
		return nil, nil, badData("invalid parameter %q: %q is not raw, 0s, 5m, 1h or auto", "max_source_resolution", v)
	}
	if v := r.Form.Get("timeout"); v != "" {
		d, err := parseDuration(v)
		if err != nil {
			return nil, nil, badData("invalid parameter %q: %v", "timeout", err)
		}
		c, cancel := context.WithTimeout(ctx, d)
		return c, cancel, nil
	}
	return ctx, func() {}, nil
}

type queryData struct {
	ResultType parser.ValueType `json:"resultType"`
	Result     parser.Value     `json:"result"`
	Stats      stats.QueryStats `json:"stats,omitempty"`
}

func (a *API) query(r *http.Request) result {
	q := r.Form.Get("query")
	ts, err := parseTimeParam(r, "time", a.now())
	if err != nil {
		return result{err: badData("%v", err)}
	}
	limit, aerr := parseLimit(r)
	if aerr != nil {
		return result{err: aerr}
	}
	ctx, cancel, aerr := a.queryContext(r)
	if aerr != nil {
		return result{err: aerr}
	}
	if aerr := a.preflight(q, 0, 0); aerr != nil {
		cancel()
		return result{err: aerr}
	}
	qry, err := a.engine.NewInstantQuery(ctx, a.queryable, promql.NewPrometheusQueryOpts(r.Form.Get("stats") == "all", a.lookback(r), nil), a.pushdown(q), ts)
	if err != nil {
		cancel()
		return result{err: constructionError(ctx, err)}
	}
	return a.exec(ctx, r, qry, q, limit, cancel)
}

func (a *API) lookback(r *http.Request) time.Duration {
	if v := r.Form.Get("lookback_delta"); v != "" {
		if d, err := parseDuration(v); err == nil {
			return d
		}
	}
	return 0
}

func (a *API) queryRange(r *http.Request) result {
	q := r.Form.Get("query")
	start, err := parseTime(r.Form.Get("start"))
	if err != nil {
		return result{err: badData("invalid parameter %q: %v", "start", err)}
	}
	end, err := parseTime(r.Form.Get("end"))
	if err != nil {
		return result{err: badData("invalid parameter %q: %v", "end", err)}
	}
	if end.Before(start) {
		return result{err: badData("end timestamp must not be before start time")}
	}
	step, err := parseDuration(r.Form.Get("step"))
	if err != nil {
		return result{err: badData("invalid parameter %q: %v", "step", err)}
	}
	if step <= 0 {
		return result{err: badData("zero or negative query resolution step widths are not accepted. Try a positive integer")}
	}
	// Like Prometheus, refuse queries that would produce more than
	// MaxPoints points per series.
	if end.Sub(start)/step > time.Duration(a.cfg.MaxPoints) {
		return result{err: badData("exceeded maximum resolution of %s points per timeseries. Try decreasing the query resolution (?step=XX)", thousands(a.cfg.MaxPoints))}
	}
	limit, aerr := parseLimit(r)
	if aerr != nil {
		return result{err: aerr}
	}
	if aerr := a.preflight(q, end.Sub(start), step); aerr != nil {
		return result{err: aerr}
	}
	ctx, cancel, aerr := a.queryContext(r)
	if aerr != nil {
		return result{err: aerr}
	}
	qry, err := a.engine.NewRangeQuery(ctx, a.queryable, promql.NewPrometheusQueryOpts(r.Form.Get("stats") == "all", a.lookback(r), nil), a.pushdown(q), start, end, step)
	if err != nil {
		cancel()
		return result{err: constructionError(ctx, err)}
	}
	return a.exec(ctx, r, qry, q, limit, cancel)
}

// subqueryPointsPerSample bounds, as a multiple of MaxSamples, the points a
// range function may visit for one series of a subquery; see preflight.
const subqueryPointsPerSample = 20

// preflight refuses, before the engine starts, what its limits would not
// stop in time:
//
//   - a query covering more than MaxQueryLength: its evaluation span plus
//     the longest reach of its selectors back in time (ranges, offsets, the
//     lookback, and the ranges and offsets of the subqueries around them);
//   - a subquery of more steps than MaxSamples: the engine evaluates a
//     step-invariant subquery's steps before it counts their samples, so
//     [30d:1ms] would run for minutes and take gigabytes first;
//   - a range function over a subquery that would visit more than
//     20 × MaxSamples points for one series: the engine checks the timeout
//     between series but not between the steps of one series, so
//     max_over_time(max_over_time(x[1d:1s])[7d:1s]) would run for minutes
//     past any timeout.
//
// span is the evaluation range (end − start) and step the resolution of a
// range query; both are 0 for an instant query.
func (a *API) preflight(q string, span, step time.Duration) *apiError {
	expr, err := a.parser.ParseExpr(q)
	if err != nil {
		return nil // the engine reports it
	}
	var aerr *apiError
	parser.Inspect(expr, func(n parser.Node, path []parser.Node) error {
		// The subqueries around n, innermost last, set how far back n
		// reaches and at how many steps n is evaluated.
		var around time.Duration
		steps := int64(1)
		if step > 0 {
			steps = int64(span/step) + 1
		}
		for _, p := range path {
			if sq, ok := p.(*parser.SubqueryExpr); ok {
				around += sq.Range + sq.OriginalOffset
				steps = int64((span+around)/subqueryStep(sq)) + 1
			}
		}
		var reach time.Duration
		switch n := n.(type) {
		case *parser.MatrixSelector:
			reach = n.Range + offsetOf(n.VectorSelector)
		case *parser.VectorSelector:
			reach = a.cfg.LookbackDelta + n.OriginalOffset
		case *parser.SubqueryExpr:
			evaluated := int64((span+around+n.Range)/subqueryStep(n)) + 1
			if evaluated > int64(a.cfg.MaxSamples) {
				aerr = &apiError{typ: errorExec, err: fmt.Errorf("the subquery %s would be evaluated at %s steps, more than the %s samples a query may load; use a longer subquery step",
					n, thousands(evaluated), thousands(int64(a.cfg.MaxSamples)))}
				return aerr
			}
		case *parser.Call:
			for _, arg := range n.Args {
				sq, ok := unparen(arg).(*parser.SubqueryExpr)
				if !ok {
					continue
				}
				window := int64(sq.Range / subqueryStep(sq))
				limit := subqueryPointsPerSample * int64(a.cfg.MaxSamples)
				if window > 0 && steps > limit/window {
					aerr = &apiError{typ: errorExec, err: fmt.Errorf("%s over the subquery %s would visit %s points per series, more than %s (%d × the samples a query may load); use a longer subquery step or a shorter range",
						n.Func.Name, sq, thousands(steps*window), thousands(limit), subqueryPointsPerSample)}
					return aerr
				}
			}
		}
		if a.cfg.MaxQueryLength > 0 && span+around+reach > a.cfg.MaxQueryLength {
			aerr = badData("the query covers %s, more than the limit of %s", model.Duration(span+around+reach), model.Duration(a.cfg.MaxQueryLength))
			return aerr
		}
		return nil
	})
	return aerr
}

// pushdown rewrites every sum [by|without (…)] (rate|increase(sel[r])) of
// q so that the store sums the selected increment series per group before
// the engine takes their rate: the engine then goes through one series per
// group instead of every series, with the same result. The store declines
// where the result would differ (see pebblestore.SumPushdownMatcher), and
// q is left as it is when the store cannot do it at all.
func (a *API) pushdown(q string) string {
	if p, ok := a.queryable.(interface{ SumPushdown() bool }); !ok || !p.SumPushdown() {
		return q
	}
	expr, err := a.parser.ParseExpr(q)
	if err != nil {
		return q
	}
	changed := false
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		agg, ok := n.(*parser.AggregateExpr)
		if !ok || agg.Op != parser.SUM {
			return nil
		}
		call, ok := unparen(agg.Expr).(*parser.Call)
		if !ok || (call.Func.Name != "rate" && call.Func.Name != "increase") || len(call.Args) != 1 {
			return nil
		}
		ms, ok := unparen(call.Args[0]).(*parser.MatrixSelector)
		if !ok {
			return nil
		}
		vs, ok := ms.VectorSelector.(*parser.VectorSelector)
		if !ok || vs.Anchored || vs.Smoothed {
			return nil
		}
		grouping := agg.Grouping
		if !agg.Without {
			grouping = slices.DeleteFunc(slices.Clone(grouping), func(l string) bool { return l == model.MetricNameLabel })
		}
		vs.LabelMatchers = append(vs.LabelMatchers, pebblestore.SumPushdownMatcher(agg.Without, grouping))
		changed = true
		return nil
	})
	if !changed {
		return q
	}
	return expr.String()
}

func subqueryStep(sq *parser.SubqueryExpr) time.Duration {
	if sq.Step > 0 {
		return sq.Step
	}
	return time.Duration(noStepInterval(0)) * time.Millisecond
}

func unparen(e parser.Expr) parser.Expr {
	for {
		p, ok := e.(*parser.ParenExpr)
		if !ok {
			return e
		}
		e = p.Expr
	}
}

// noStepInterval is the step of a subquery without one, as Prometheus'
// default evaluation interval.
func noStepInterval(int64) int64 { return time.Minute.Milliseconds() }

func offsetOf(e parser.Expr) time.Duration {
	if vs, ok := e.(*parser.VectorSelector); ok {
		return vs.OriginalOffset
	}
	return 0
}

func thousands[T int | int64](n T) string {
	s := strconv.FormatInt(int64(n), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// exec runs a query and shapes its result.
func (a *API) exec(ctx context.Context, r *http.Request, qry promql.Query, q string, limit int, cancel context.CancelFunc) result {
	res := qry.Exec(ctx)
	finalize := func() {
		qry.Close()
		cancel()
	}
	if res.Err != nil {
		return result{err: engineError(res.Err), warnings: res.Warnings, query: q, finalize: finalize}
	}
	value := res.Value
	var limitWarn annotations.Annotations
	if limit > 0 {
		switch v := value.(type) {
		case promql.Matrix:
			if len(v) > limit {
				value = v[:limit]
				limitWarn.Add(errors.New("results truncated due to limit"))
			}
		case promql.Vector:
			if len(v) > limit {
				value = v[:limit]
				limitWarn.Add(errors.New("results truncated due to limit"))
			}
		}
	}
	var qs stats.QueryStats
	if r.Form.Get("stats") != "" {
		qs = stats.NewQueryStats(qry.Stats())
	}
	return result{
		data:     queryData{ResultType: value.Type(), Result: value, Stats: qs},
		warnings: res.Warnings.Merge(limitWarn),
		query:    q,
		finalize: finalize,
	}
}

// constructionError maps an error creating a query: a parse error is bad
// data, but the engine also waits there for a query slot, and a request
// that times out or is canceled while it waits is not bad data.
func constructionError(ctx context.Context, err error) *apiError {
	if ctx.Err() != nil {
		return engineError(err)
	}
	return badData("invalid parameter %q: %v", "query", err)
}

// engineError maps the engine's errors to Prometheus' error types.
func engineError(err error) *apiError {
	var (
		eqc promql.ErrQueryCanceled
		eqt promql.ErrQueryTimeout
		es  promql.ErrStorage
	)
	switch {
	case errors.As(err, &eqc), errors.Is(err, context.Canceled):
		return &apiError{typ: errorCanceled, err: err}
	case errors.As(err, &eqt), errors.Is(err, context.DeadlineExceeded):
		return &apiError{typ: errorTimeout, err: err}
	case errors.As(err, &es):
		return &apiError{typ: errorInternal, err: err}
	}
	return &apiError{typ: errorExec, err: err}
}

// matcherSets parses match[] parameters.
func (a *API) matcherSets(r *http.Request) ([][]*labels.Matcher, *apiError) {
	var sets [][]*labels.Matcher
	for _, s := range r.Form["match[]"] {
		ms, err := a.parser.ParseMetricSelector(s)
		if err != nil {
			return nil, badData("invalid parameter %q: %v", "match[]", err)
		}
		sets = append(sets, ms)
	}
	return sets, nil
}

func (a *API) timeRange(r *http.Request) (time.Time, time.Time, *apiError) {
	start, err := parseTimeParam(r, "start", minTime)
	if err != nil {
		return start, start, badData("%v", err)
	}
	end, err := parseTimeParam(r, "end", maxTime)
	if err != nil {
		return start, end, badData("%v", err)
	}
	return start, end, nil
}

func (a *API) series(r *http.Request) result {
	sets, aerr := a.matcherSets(r)
	if aerr != nil {
		return result{err: aerr}
	}
	if len(sets) == 0 {
		return result{err: badData("no match[] parameter provided")}
	}
	start, end, aerr := a.timeRange(r)
	if aerr != nil {
		return result{err: aerr}
	}
	limit, aerr := parseLimit(r)
	if aerr != nil {
		return result{err: aerr}
	}
	q, err := a.queryable.Querier(timestamp.FromTime(start), timestamp.FromTime(end))
	if err != nil {
		return result{err: &apiError{typ: errorInternal, err: err}}
	}
	defer q.Close()
	hints := &storage.SelectHints{Start: timestamp.FromTime(start), End: timestamp.FromTime(end), Func: "series"}
	var sets2 []storage.SeriesSet
	for _, ms := range sets {
		sets2 = append(sets2, q.Select(r.Context(), true, hints, ms...))
	}
	set := storage.NewMergeSeriesSet(sets2, 0, storage.ChainedSeriesMerge)
	metrics := []labels.Labels{}
	var warnings annotations.Annotations
	for set.Next() {
		if limit > 0 && len(metrics) >= limit {
			warnings.Add(errors.New("results truncated due to limit"))
			break
		}
		metrics = append(metrics, set.At().Labels())
	}
	if err := set.Err(); err != nil {
		return result{err: &apiError{typ: errorExec, err: err}}
	}
	return result{data: metrics, warnings: warnings.Merge(set.Warnings())}
}

func (a *API) labelNames(r *http.Request) result {
	return a.labelLookup(r, func(q storage.Querier, ms []*labels.Matcher) ([]string, annotations.Annotations, error) {
		return q.LabelNames(r.Context(), &storage.LabelHints{}, ms...)
	})
}

func (a *API) labelValues(r *http.Request) result {
	name := r.PathValue("name")
	// Prometheus 3 takes UTF-8 names in the path with its U__ escaping.
	if strings.HasPrefix(name, "U__") {
		name = model.UnescapeName(name, model.ValueEncodingEscaping)
	}
	if !model.UTF8Validation.IsValidLabelName(name) {
		return result{err: badData("invalid label name: %q", name)}
	}
	return a.labelLookup(r, func(q storage.Querier, ms []*labels.Matcher) ([]string, annotations.Annotations, error) {
		return q.LabelValues(r.Context(), name, &storage.LabelHints{}, ms...)
	})
}

// labelLookup answers /labels and /label/<name>/values: lookup for each
// match[] set (or none) over the request's time range, the results
// merged, sorted, deduplicated and cut at limit.
func (a *API) labelLookup(r *http.Request, lookup func(storage.Querier, []*labels.Matcher) ([]string, annotations.Annotations, error)) result {
	sets, aerr := a.matcherSets(r)
	if aerr != nil {
		return result{err: aerr}
	}
	start, end, aerr := a.timeRange(r)
	if aerr != nil {
		return result{err: aerr}
	}
	limit, aerr := parseLimit(r)
	if aerr != nil {
		return result{err: aerr}
	}
	q, err := a.queryable.Querier(timestamp.FromTime(start), timestamp.FromTime(end))
	if err != nil {
		return result{err: &apiError{typ: errorInternal, err: err}}
	}
	defer q.Close()
	var out []string
	var warnings annotations.Annotations
	if len(sets) == 0 {
		sets = [][]*labels.Matcher{nil}
	}
	for _, ms := range sets {
		v, w, err := lookup(q, ms)
		if err != nil {
			return result{err: &apiError{typ: errorExec, err: err}}
		}
		out = append(out, v...)
		warnings.Merge(w)
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if out == nil {
		out = []string{}
	}
	if limit > 0 && len(out) > limit {
		out = out[:limit]
		warnings.Add(errors.New("results truncated due to limit"))
	}
	return result{data: out, warnings: warnings}
}

func (a *API) metadataHandler(r *http.Request) result {
	limit, aerr := parseLimit(r)
	if aerr != nil {
		return result{err: aerr}
	}
	perMetric := 0
	if v := r.Form.Get("limit_per_metric"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return result{err: badData("limit_per_metric must be a non-negative number, got %q", v)}
		}
		perMetric = n
	}
	out := map[string][]Metadata{}
	if a.metadata == nil {
		return result{data: out}
	}
	all := a.metadata()
	names := make([]string, 0, len(all))
	for n := range all {
		if m := r.Form.Get("metric"); m == "" || m == n {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		if limit > 0 && len(out) >= limit {
			break
		}
		md := all[n]
		if perMetric > 0 && len(md) > perMetric {
			md = md[:perMetric]
		}
		out[n] = md
	}
	return result{data: out}
}

func (a *API) buildInfo(*http.Request) result { return result{data: a.build} }

func (a *API) exemplars(r *http.Request) result {
	if _, err := a.parser.ParseExpr(r.Form.Get("query")); err != nil {
		return result{err: badData("invalid parameter %q: %v", "query", err)}
	}
	if _, _, aerr := a.timeRange(r); aerr != nil {
		return result{err: aerr}
	}
	// proxylens keeps no exemplars.
	return result{data: []any{}}
}

func (a *API) formatQuery(r *http.Request) result {
	expr, err := a.parser.ParseExpr(r.Form.Get("query"))
	if err != nil {
		return result{err: badData("invalid parameter %q: %v", "query", err)}
	}
	return result{data: expr.Pretty(0)}
}

// gate is the engine's query tracker: it bounds concurrent queries, and
// the others wait for a slot until their context ends.
type gate struct{ slots chan struct{} }

func newGate(n int) *gate { return &gate{slots: make(chan struct{}, n)} }

func (g *gate) GetMaxConcurrent() int { return cap(g.slots) }

func (g *gate) Insert(ctx context.Context, _ string) (int, error) {
	select {
	case g.slots <- struct{}{}:
		return 0, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (g *gate) Delete(int) { <-g.slots }

func (g *gate) Close() error { return nil }
