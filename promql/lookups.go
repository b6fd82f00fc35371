package promql

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
)

// lookupParams are the parameters the series and label endpoints share.
type lookupParams struct {
	sets       [][]*labels.Matcher // match[]
	start, end time.Time
	limit      int
}

// lookup parses the series and label endpoints' parameters (match[],
// required when needMatch; start, end, limit) and calls fn with a querier
// over the range.
func (a *API) lookup(r *http.Request, needMatch bool, fn func(storage.Querier, lookupParams) result) result {
	var p lookupParams
	var aerr *apiError
	if p.sets, aerr = a.matcherSets(r); aerr != nil {
		return result{err: aerr}
	}
	if needMatch && len(p.sets) == 0 {
		return result{err: badData("no match[] parameter provided")}
	}
	if p.start, p.end, aerr = a.timeRange(r); aerr != nil {
		return result{err: aerr}
	}
	if p.limit, aerr = parseLimit(r); aerr != nil {
		return result{err: aerr}
	}
	q, err := a.queryable.Querier(timestamp.FromTime(p.start), timestamp.FromTime(p.end))
	if err != nil {
		return result{err: &apiError{typ: errorInternal, err: err}}
	}
	defer q.Close()
	return fn(q, p)
}

func (a *API) series(r *http.Request) result {
	return a.lookup(r, true, func(q storage.Querier, p lookupParams) result {
		hints := &storage.SelectHints{Start: timestamp.FromTime(p.start), End: timestamp.FromTime(p.end), Func: "series"}
		var sets []storage.SeriesSet
		for _, ms := range p.sets {
			sets = append(sets, q.Select(r.Context(), true, hints, ms...))
		}
		set := storage.NewMergeSeriesSet(sets, 0, storage.ChainedSeriesMerge)
		metrics := []labels.Labels{}
		var warnings annotations.Annotations
		for set.Next() {
			if p.limit > 0 && len(metrics) >= p.limit {
				warnings.Add(errors.New("results truncated due to limit"))
				break
			}
			metrics = append(metrics, set.At().Labels())
		}
		if err := set.Err(); err != nil {
			return result{err: &apiError{typ: errorExec, err: err}}
		}
		return result{data: metrics, warnings: warnings.Merge(set.Warnings())}
	})
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
	return a.lookup(r, false, func(q storage.Querier, p lookupParams) result {
		var out []string
		var warnings annotations.Annotations
		sets := p.sets
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
		if p.limit > 0 && len(out) > p.limit {
			out = out[:p.limit]
			warnings.Add(errors.New("results truncated due to limit"))
		}
		return result{data: out, warnings: warnings}
	})
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
	out := map[string][]metadata.Metadata{}
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
	if _, aerr := a.parseQuery(r.Form.Get("query")); aerr != nil {
		return result{err: aerr}
	}
	if _, _, aerr := a.timeRange(r); aerr != nil {
		return result{err: aerr}
	}
	// proxylens keeps no exemplars.
	return result{data: []any{}}
}

// formatQuery pretty-prints the query, unless that would cost more than
// maxFormatCost (Expr.Pretty's time grows with the cube of the depth).
func (a *API) formatQuery(r *http.Request) result {
	expr, aerr := a.parseQuery(r.Form.Get("query"))
	if aerr != nil {
		return result{err: aerr}
	}
	if formatCost(expr) > maxFormatCost {
		a.refused.WithLabelValues("format_cost").Inc()
		return result{err: badData("invalid parameter %q: the query is too large and deeply nested to format (more than %s steps of work); format a part of it",
			"query", thousands(int64(maxFormatCost)))}
	}
	return result{data: expr.Pretty(0)}
}
