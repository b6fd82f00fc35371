package promql

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/prometheus/prometheus/util/stats"
)

// Request is one PromQL query: an instant query at End when Step is 0,
// else a range query from Start to End at every Step.
type Request struct {
	Query      string
	Start, End time.Time
	Step       time.Duration
	// LookbackDelta, if not 0, replaces the configured one.
	LookbackDelta time.Duration
	// Stats asks for per-step statistics (Result.Stats).
	Stats bool
	// RawData asks the store to answer from raw samples only, never from
	// rollups (max_source_resolution=raw).
	RawData bool
	// noCache evaluates a range query without the result cache (an HTTP
	// query asking for stats, which come from one evaluation).
	noCache bool
	// Unaudited leaves the query out of the audit hook: rule
	// evaluations, which run every evaluation interval.
	Unaudited bool
	// Local evaluates the query over the local queryable even when an
	// upstream answers the others: for what judges this instance's own
	// traffic (the degradation detector's baselines).
	Local bool
}

// Result is a query's answer. Close it once done with Value: the engine
// reuses its memory.
type Result struct {
	Value    parser.Value
	Warnings annotations.Annotations
	qry      promql.Query
}

// Stats returns the query's statistics (per step if Request.Stats).
func (r *Result) Stats() stats.QueryStats {
	if r.qry == nil {
		return nil
	}
	return stats.NewQueryStats(r.qry.Stats())
}

// Close releases the result's memory. It may be called on a failed
// query's result, and more than once.
func (r *Result) Close() {
	if r.qry != nil {
		r.qry.Close()
		r.qry = nil
	}
}

// Exec runs one query with everything an HTTP query gets: the configured
// limits and those the engine lacks (see preflight), the concurrency gate,
// the store's pushdown, and a report to the audit hook with ctx (which
// says who asked). ctx bounds the query, and the configured timeout
// applies on top. The result is never nil: close it, also when err is not
// nil (it may carry warnings).
func (a *API) Exec(ctx context.Context, req Request) (*Result, error) {
	start := time.Now()
	res, err := a.exec(ctx, req)
	if a.audit != nil && !req.Unaudited {
		acc := Access{Action: "query", Query: req.Query, Start: req.End.UTC().Format(time.RFC3339Nano), Took: time.Since(start)}
		if req.Step > 0 {
			acc.Action, acc.Start = "query_range", req.Start.UTC().Format(time.RFC3339Nano)
		}
		acc.End = req.End.UTC().Format(time.RFC3339Nano)
		if err != nil {
			acc.Err = err.Error()
		} else {
			acc.Results = valueCount(res.Value)
		}
		a.audit(ctx, acc)
	}
	return res, err
}

// exec is Exec without the audit: the HTTP handlers audit the whole
// request instead (see audited). Its errors are *apiError.
//
// The query is parsed once, after checkQuerySize, and everything after
// the parse (the preflight, the cache's plan, the wait for a query slot,
// the store's pushdown, the evaluation) runs under the configured timeout
// and ctx, so that a request the client abandoned stops.
func (a *API) exec(ctx context.Context, req Request) (*Result, error) {
	res := &Result{}
	expr, aerr := a.parseQuery(req.Query)
	if aerr != nil {
		return res, aerr
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	span := time.Duration(0)
	if req.Step > 0 {
		span = req.End.Sub(req.Start)
	}
	if aerr := a.preflight(expr, span, req.Step); aerr != nil {
		return res, aerr
	}
	if a.upstream != nil && !req.Local {
		return a.execUpstream(ctx, req)
	}
	if a.cache != nil && req.Step > 0 && !req.Stats && !req.noCache {
		if p, ok := a.planCached(req, expr); ok {
			return a.execCached(ctx, req, p)
		}
	}
	return a.run(ctx, req, a.queryable, expr)
}

// run evaluates req over q (the store, or the cache's view of it) with
// the engine, limits and gate, without the cache. expr is req's parse,
// which run changes (the store's pushdown, the engine's preprocessing);
// nil parses req.Query again (a piece of a cached plan, whose tree the
// plan keeps): cheap, as checkQuerySize bounded it.
func (a *API) run(ctx context.Context, req Request, qa storage.Queryable, expr parser.Expr) (*Result, error) {
	res := &Result{}
	if err := ctx.Err(); err != nil {
		return res, engineError(err)
	}
	if expr == nil {
		var aerr *apiError
		if expr, aerr = a.parseQuery(req.Query); aerr != nil {
			return res, aerr
		}
	}
	if s, ok := a.queryable.(rawDataStore); ok && req.RawData {
		ctx = s.WithRawData(ctx)
	}
	opts := promql.NewPrometheusQueryOpts(req.Stats, req.LookbackDelta, nil)
	q := req.Query
	if s, ok := a.queryable.(pushDownStore); ok && s.PushDown(expr) {
		q = expr.String()
	}
	q, done := a.handoff.put(q, expr)
	defer done()
	var err error
	if req.Step > 0 {
		res.qry, err = a.engine.NewRangeQuery(ctx, qa, opts, q, req.Start, req.End, req.Step)
	} else {
		res.qry, err = a.engine.NewInstantQuery(ctx, qa, opts, q, req.End)
	}
	if err != nil {
		return res, constructionError(ctx, err)
	}
	out := res.qry.Exec(ctx)
	res.Value, res.Warnings = out.Value, out.Warnings
	if out.Err != nil {
		return res, engineError(out.Err)
	}
	return res, nil
}

// pushDownStore is a store that rewrites queries into ones it answers
// cheaper with the same result (pebblestore's series store sums increment
// series per group before the engine takes their rate).
type pushDownStore interface {
	PushDown(expr parser.Expr) bool
}

// rawDataStore is a store that can answer from raw samples only.
type rawDataStore interface {
	WithRawData(ctx context.Context) context.Context
}

// queryOptions reads the query parameters that shape the request context
// and the request: the timeout, which can only shorten the configured one
// (the engine enforces that), max_source_resolution (the parameter
// Thanos' querier reads: raw or 0s answers from raw samples only, never
// from the window summaries or the daily rollup, where raw samples still
// exist; auto, or empty, lets the store pick the coarsest data that
// answers exactly; 5m and 1h are accepted as auto, the store's choice
// being at least as exact), lookback_delta and stats.
func (a *API) queryOptions(r *http.Request, req *Request) (context.Context, context.CancelFunc, *apiError) {
	switch v := r.Form.Get("max_source_resolution"); v {
	case "", "auto", "5m", "1h":
	case "raw", "0s", "0":
		req.RawData = true
	default:
		return nil, nil, badData("invalid parameter %q: %q is not raw, 0s, 5m, 1h or auto", "max_source_resolution", v)
	}
	req.LookbackDelta = a.lookback(r)
	req.Stats = r.Form.Get("stats") == "all"
	ctx := r.Context()
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
	ts, err := parseTimeParam(r, "time", a.now())
	if err != nil {
		return result{err: badData("%v", err)}
	}
	return a.serveQuery(r, Request{Query: r.Form.Get("query"), Start: ts, End: ts})
}

func (a *API) queryRange(r *http.Request) result {
	start, end, step, aerr := a.rangeParams(r)
	if aerr != nil {
		return result{err: aerr}
	}
	return a.serveQuery(r, Request{Query: r.Form.Get("query"), Start: start, End: end, Step: step})
}

// rangeParams reads a range query's start, end and step.
func (a *API) rangeParams(r *http.Request) (start, end time.Time, step time.Duration, aerr *apiError) {
	start, err := parseTime(r.Form.Get("start"))
	if err != nil {
		return start, end, step, badData("invalid parameter %q: %v", "start", err)
	}
	end, err = parseTime(r.Form.Get("end"))
	if err != nil {
		return start, end, step, badData("invalid parameter %q: %v", "end", err)
	}
	if end.Before(start) {
		return start, end, step, badData("end timestamp must not be before start time")
	}
	step, err = parseDuration(r.Form.Get("step"))
	if err != nil {
		return start, end, step, badData("invalid parameter %q: %v", "step", err)
	}
	if step <= 0 {
		return start, end, step, badData("zero or negative query resolution step widths are not accepted. Try a positive integer")
	}
	// Like Prometheus, refuse queries that would produce more than
	// MaxPoints points per series.
	if end.Sub(start)/step > time.Duration(a.cfg.MaxPoints) {
		return start, end, step, badData("exceeded maximum resolution of %s points per timeseries. Try decreasing the query resolution (?step=XX)", thousands(a.cfg.MaxPoints))
	}
	return start, end, step, nil
}

// serveQuery runs an HTTP query and shapes its result: the limit
// parameter cuts it, the stats parameter adds statistics.
func (a *API) serveQuery(r *http.Request, req Request) result {
	limit, aerr := parseLimit(r)
	if aerr != nil {
		return result{err: aerr}
	}
	req.noCache = r.Form.Get("stats") != ""
	ctx, cancel, aerr := a.queryOptions(r, &req)
	if aerr != nil {
		return result{err: aerr}
	}
	res, err := a.exec(ctx, req)
	finalize := func() {
		res.Close()
		cancel()
	}
	if err != nil {
		var aerr *apiError
		errors.As(err, &aerr)
		return result{err: aerr, warnings: res.Warnings, query: req.Query, finalize: finalize}
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
		qs = res.Stats()
	}
	return result{
		data:     queryData{ResultType: value.Type(), Result: value, Stats: qs},
		warnings: res.Warnings.Merge(limitWarn),
		query:    req.Query,
		finalize: finalize,
	}
}
