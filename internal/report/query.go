package report

import (
	"context"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	promqlengine "github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/proxylens/proxylens/promql"
)

// The report's queries. Each selector gets the report's source and
// application matchers, each range ([1h]) becomes the period's length (or
// the trend's step), and each offset becomes the period's length: the
// previous period. Instant queries run at the period's end, and again at
// its start for the previous period.
const (
	qRequests       = `sum(increase(proxy_requests_total[1h]))`
	qSuccesses      = `sum(increase(proxy_requests_total{outcome="success"}[1h]))`
	qMeanLatency    = `sum(increase(proxy_request_duration_seconds_sum[1h])) / sum(increase(proxy_request_duration_seconds_count[1h]))`
	qP95Latency     = `histogram_quantile(0.95, sum by (le) (increase(proxy_request_duration_seconds_bucket[1h])))`
	qBytes          = `sum by (direction) (increase(proxy_transfer_bytes_total[1h]))`
	qSpend          = `sum by (currency, component) (increase(proxy_cost_allocated_total[1h]))`
	qCostPerSuccess = `sum by (currency) (increase(proxy_cost_allocated_total[1h])) / on () group_left () sum(increase(proxy_requests_total{outcome="success"}[1h]))`

	qSourceRequests       = `sum by (source) (increase(proxy_requests_total[1h]))`
	qSourceSuccesses      = `sum by (source) (increase(proxy_requests_total{outcome="success"}[1h]))`
	qSourceMeanLatency    = `sum by (source) (increase(proxy_request_duration_seconds_sum[1h])) / sum by (source) (increase(proxy_request_duration_seconds_count[1h]))`
	qSourceP95Latency     = `histogram_quantile(0.95, sum by (source, le) (increase(proxy_request_duration_seconds_bucket[1h])))`
	qSourceSpend          = `sum by (source, currency) (increase(proxy_cost_allocated_total[1h]))`
	qSourceCostPerSuccess = `sum by (source, currency) (increase(proxy_cost_allocated_total[1h])) / on (source) group_left () sum by (source) (increase(proxy_requests_total{outcome="success"}[1h]))`

	qAppRequests  = `sum by (application) (increase(proxy_requests_total[1h]))`
	qAppSuccesses = `sum by (application) (increase(proxy_requests_total{outcome="success"}[1h]))`
	qAppSpend     = `sum by (application, currency, component) (increase(proxy_cost_allocated_total[1h]))`

	qTierRequests   = `sum by (tier) (increase(proxy_requests_total[1h]))`
	qTierSuccesses  = `sum by (tier) (increase(proxy_requests_total{outcome="success"}[1h]))`
	qTierP95Latency = `histogram_quantile(0.95, sum by (tier, le) (increase(proxy_request_duration_seconds_bucket[1h])))`
	// A source's spend goes to the tiers in proportion to its requests
	// (Build), from qSourceSpend and qSourceTierRequests.
	qSourceTierRequests = `sum by (source, tier) (increase(proxy_requests_total[1h]))`

	qTopDomains      = `topk(10, sum by (domain) (increase(proxy_requests_total[1h])))`
	qDomainSuccesses = `sum by (domain) (increase(proxy_requests_total{outcome="success"}[1h]))`

	// A source is degraded when its success rate fell by at least
	// degradedDrop (5 percentage points) from the previous period, with
	// at least degradedMin (50) requests in each.
	qDegraded = `(
    sum by (source) (increase(proxy_requests_total{outcome="success"}[1h] offset 1h)) / sum by (source) (increase(proxy_requests_total[1h] offset 1h))
  - sum by (source) (increase(proxy_requests_total{outcome="success"}[1h])) / sum by (source) (increase(proxy_requests_total[1h]))
) >= 0.05
and on (source) sum by (source) (increase(proxy_requests_total[1h] offset 1h)) >= 50
and on (source) sum by (source) (increase(proxy_requests_total[1h])) >= 50`
)

// Query returns the PromQL of one of the report's queries (the q…
// constants) for the spec's filters, with every range rng: what the
// report runs, and what a test or an analyst runs to check its figures.
func Query(tmpl string, spec Spec, rng time.Duration) (string, error) {
	expr, err := parser.NewParser(parser.Options{}).ParseExpr(tmpl)
	if err != nil {
		return "", fmt.Errorf("parse report query: %w", err)
	}
	ms, err := matchers(spec)
	if err != nil {
		return "", err
	}
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			n.LabelMatchers = append(n.LabelMatchers, ms...)
			if n.OriginalOffset != 0 {
				n.OriginalOffset = rng
			}
		case *parser.MatrixSelector:
			n.Range = rng
		}
		return nil
	})
	return expr.String(), nil
}

// matchers are the spec's filters as label matchers.
func matchers(spec Spec) ([]*labels.Matcher, error) {
	var ms []*labels.Matcher
	for _, f := range []struct {
		name string
		vals []string
	}{{"source", spec.Sources}, {"application", spec.Applications}} {
		if len(f.vals) == 0 {
			continue
		}
		quoted := make([]string, len(f.vals))
		for i, v := range f.vals {
			quoted[i] = regexp.QuoteMeta(v)
		}
		m, err := labels.NewMatcher(labels.MatchRegexp, f.name, strings.Join(quoted, "|"))
		if err != nil {
			return nil, fmt.Errorf("%ss: %w", f.name, err)
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// runner runs a report's queries as its user and counts them for the
// progress.
type runner struct {
	ctx      context.Context
	query    QueryFunc
	user     string
	spec     Spec
	done     int
	progress func(float64)
	// answers keeps the answers of the instant queries: some figures
	// share one.
	answers map[answerKey]map[string]float64
}

type answerKey struct {
	tmpl string
	t    time.Time
	rng  time.Duration
	by   string
}

// totalQueries is how many queries a report runs, for its progress.
const totalQueries = 37

// vector runs an instant query at t over the range rng, and returns its
// answer keyed by the values of the labels by, joined with "/".
func (r *runner) vector(tmpl string, t time.Time, rng time.Duration, by ...string) (map[string]float64, error) {
	k := answerKey{tmpl, t, rng, strings.Join(by, ",")}
	if v, ok := r.answers[k]; ok {
		return v, nil
	}
	q, err := Query(tmpl, r.spec, rng)
	if err != nil {
		return nil, err
	}
	res, err := r.query(r.ctx, r.user, promql.Request{Query: q, End: t})
	defer res.Close()
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", q, err)
	}
	r.tick()
	out := map[string]float64{}
	switch v := res.Value.(type) {
	case promqlengine.Vector:
		for _, s := range v {
			if !math.IsNaN(s.F) && !math.IsInf(s.F, 0) {
				out[key(s.Metric, by)] = s.F
			}
		}
	case promqlengine.Scalar:
		out[""] = v.V
	default:
		return nil, fmt.Errorf("query %s answered a %s", q, res.Value.Type())
	}
	if r.answers == nil {
		r.answers = map[answerKey]map[string]float64{}
	}
	r.answers[k] = out
	return out, nil
}

// matrix runs a range query at every step in (start, end], with every
// range step, and returns its points keyed as vector does.
func (r *runner) matrix(tmpl string, start, end time.Time, step time.Duration, by ...string) (map[string]map[int64]float64, error) {
	q, err := Query(tmpl, r.spec, step)
	if err != nil {
		return nil, err
	}
	res, err := r.query(r.ctx, r.user, promql.Request{Query: q, Start: start, End: end, Step: step})
	defer res.Close()
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", q, err)
	}
	r.tick()
	m, ok := res.Value.(promqlengine.Matrix)
	if !ok {
		return nil, fmt.Errorf("query %s answered a %s", q, res.Value.Type())
	}
	out := map[string]map[int64]float64{}
	for _, s := range m {
		k := key(s.Metric, by)
		if out[k] == nil {
			out[k] = map[int64]float64{}
		}
		for _, p := range s.Floats {
			if !math.IsNaN(p.F) {
				out[k][p.T] = p.F
			}
		}
	}
	return out, nil
}

func (r *runner) tick() {
	r.done++
	if r.progress != nil {
		r.progress(min(1, float64(r.done)/totalQueries))
	}
}

func key(ls labels.Labels, by []string) string {
	vals := make([]string, len(by))
	for i, n := range by {
		vals[i] = ls.Get(n)
	}
	return strings.Join(vals, "/")
}

// money reads an answer keyed by currency (and more labels after it)
// into an amount per currency, summing what the other labels split.
func money(m map[string]float64) Money {
	out := Money{}
	for k, v := range m {
		cur, _, _ := strings.Cut(k, "/")
		out[cur] += v
	}
	return out
}

// sortedKeys returns the keys of the maps, sorted and deduplicated.
func sortedKeys[V any](ms ...map[string]V) []string {
	set := map[string]bool{}
	for _, m := range ms {
		for k := range m {
			set[k] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}
