package pebblestore

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
)

// The sum pushdown, both halves: the query API asks the store to rewrite
// each query it runs (PushDown), which marks the selectors the store can
// sum per group; Select finds the mark (splitPushdown) and answers with
// the sums (sumSelect), or without it where the result would differ.

// sumPushdownLabel names the matcher with which a query asks the store to
// sum, per group, the increment series a selector matches, before the
// engine applies rate() or increase() to them (see PushDown).
const sumPushdownLabel = "__proxylens_sum__"

// subqueryLabel names the matcher with which PushDown marks a selector
// inside a subquery. The engine gives such a selector the subquery's step
// but not its grid: a subquery evaluates at multiples of its step, while
// the hints start from the outer query's start. The mark carries the
// selector's own offset in milliseconds, from which Select places the
// windows on the subquery's grid; or "raw" under an @ modifier, where
// Select answers with the selector's true points only.
const subqueryLabel = "__proxylens_subquery__"

// maxPushdownPoints bounds the points a pushed-down sum holds (groups ×
// window boundaries); beyond it the store answers series by series.
const maxPushdownPoints = 20_000_000

// PushDown rewrites every sum [by|without (…)] (rate|increase(sel[r])) of
// expr so that the store sums the selected increment series per group
// before the engine takes their rate: the engine then goes through one
// series per group instead of every series, with the same result. It
// marks each such selector with a matcher on sumPushdownLabel that
// carries the grouping; Select honours the mark only where the result is
// the same (see sumSelect). It reports whether it changed expr.
func (s *SeriesStore) PushDown(expr parser.Expr) bool {
	changed := false
	parser.Inspect(expr, func(n parser.Node, path []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok && inSubquery(path) && !slices.ContainsFunc(vs.LabelMatchers, isSubqueryMark) {
			mark := strconv.FormatInt(vs.OriginalOffset.Milliseconds(), 10)
			if vs.Timestamp != nil || vs.StartOrEnd != 0 || atInPath(path) {
				mark = "raw"
			}
			vs.LabelMatchers = append(vs.LabelMatchers, labels.MustNewMatcher(labels.MatchEqual, subqueryLabel, mark))
			changed = true
			return nil
		}
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
		if !inSubquery(path) && !atInPath(path) && s.rewriteRate(agg, call, ms, vs) {
			changed = true
			return nil
		}
		grouping := agg.Grouping
		if !agg.Without {
			grouping = slices.DeleteFunc(slices.Clone(grouping), func(l string) bool { return l == model.MetricNameLabel })
		}
		vs.LabelMatchers = append(vs.LabelMatchers, sumMatcher(agg.Without, grouping))
		changed = true
		return nil
	})
	return changed
}

// inSubquery reports whether a node under path is evaluated by a
// subquery.
func inSubquery(path []parser.Node) bool {
	return slices.ContainsFunc(path, func(n parser.Node) bool {
		_, ok := n.(*parser.SubqueryExpr)
		return ok
	})
}

// atInPath reports whether a subquery of path has an @ modifier.
func atInPath(path []parser.Node) bool {
	return slices.ContainsFunc(path, func(n parser.Node) bool {
		sq, ok := n.(*parser.SubqueryExpr)
		return ok && (sq.Timestamp != nil || sq.StartOrEnd != 0)
	})
}

func isSubqueryMark(m *labels.Matcher) bool { return m.Name == subqueryLabel }

// subqueryGrid removes the subquery mark from ms. For a marked selector
// it returns hints moved onto the subquery's grid (windows ending at
// multiples of the step, less the selector's offset), or ok false where
// they cannot be (an @ modifier): then only true points answer.
func subqueryGrid(ms []*labels.Matcher, hints *storage.SelectHints) (rest []*labels.Matcher, moved *storage.SelectHints, sub, ok bool) {
	i := slices.IndexFunc(ms, isSubqueryMark)
	if i < 0 {
		return ms, hints, false, true
	}
	rest = append(slices.Clone(ms[:i]), ms[i+1:]...)
	offset, err := strconv.ParseInt(ms[i].Value, 10, 64)
	if err != nil || hints == nil || hints.Step <= 0 {
		return rest, hints, true, err == nil
	}
	h := *hints
	first := h.Start + h.Range - 1 // the earliest window end the hints allow
	end := first + mod(mod(-offset, h.Step)-first, h.Step)
	h.Start = end - h.Range + 1
	return rest, &h, true, true
}

func mod(a, b int64) int64 { return (a%b + b) % b }

// sumMatcher is the mark that asks for the sum by (or without) the
// grouping labels; splitPushdown reads it back.
func sumMatcher(without bool, grouping []string) *labels.Matcher {
	b, _ := json.Marshal(grouping)
	mark := "by"
	if without {
		mark = "without"
	}
	return labels.MustNewMatcher(labels.MatchEqual, sumPushdownLabel, mark+string(b))
}

func unparen(e parser.Expr) parser.Expr {
	for p, ok := e.(*parser.ParenExpr); ok; p, ok = e.(*parser.ParenExpr) {
		e = p.Expr
	}
	return e
}

type (
	rawDataKey      struct{}
	iteratorOnlyKey struct{} // tests: answer series by series from the raw windows
)

// WithRawData returns a context under which the store answers queries from
// raw samples only, never from window summaries or the daily rollup, where
// raw samples still exist (the query API's max_source_resolution=raw).
func (s *SeriesStore) WithRawData(ctx context.Context) context.Context {
	return context.WithValue(ctx, rawDataKey{}, true)
}

// rawData reports whether ctx asks for raw samples only.
func rawData(ctx context.Context) bool {
	raw, _ := ctx.Value(rawDataKey{}).(bool)
	return raw
}

// splitPushdown removes the pushdown matcher from ms and parses it.
func splitPushdown(ms []*labels.Matcher) (rest []*labels.Matcher, without bool, grouping []string, ok bool) {
	i := slices.IndexFunc(ms, func(m *labels.Matcher) bool { return m.Name == sumPushdownLabel })
	if i < 0 {
		return ms, false, nil, false
	}
	rest = append(slices.Clone(ms[:i]), ms[i+1:]...)
	v := ms[i].Value
	switch {
	case strings.HasPrefix(v, "by"):
		v = v[2:]
	case strings.HasPrefix(v, "without"):
		v, without = v[7:], true
	default:
		return rest, false, nil, false
	}
	if err := json.Unmarshal([]byte(v), &grouping); err != nil {
		return rest, false, nil, false
	}
	return rest, without, grouping, true
}

// sumSelect answers a selector under rate() or increase() inside a sum
// with one series per group: the sum of the group's increment series, at
// the window boundaries only. rate() and increase() of such a sum equal the
// sum of the series' rates and increases: the counters never reset, and
// every series has its points at the same times, so the engine's
// extrapolation is the same for all. It returns nil where that does not
// hold (a matched series that is not an increment series, series of
// several names), and the caller answers series by series.
func (q *querier) sumSelect(ctx context.Context, hints *storage.SelectHints, mint, maxt int64, without bool, grouping []string, ms []*labels.Matcher) storage.SeriesSet {
	if hints == nil || hints.Range <= 0 || hints.Step < 0 || (hints.Func != "rate" && hints.Func != "increase") {
		return nil
	}
	series, ov := q.selectSeries(mint, maxt, ms)
	if len(series) == 0 {
		return nil
	}
	name := series[0].lset.Get(model.MetricNameLabel)
	for _, s := range series {
		if s.kind != KindIncrements || s.lset.Get(model.MetricNameLabel) != name {
			return nil
		}
	}
	bounds := boundsIn(hints, mint, maxt)
	if len(bounds) == 0 {
		return nil
	}
	// Group the series by their labels once grouped as the sum will.
	var b labels.Builder
	groupOf := make([]int, len(series))
	var groups []labels.Labels
	index := map[uint64][]int{}
	for i, s := range series {
		b.Reset(s.lset)
		if without {
			b.Del(grouping...)
		} else {
			b.Keep(append(grouping, model.MetricNameLabel)...)
		}
		b.Set(model.MetricNameLabel, name)
		ls := b.Labels()
		h := ls.Hash()
		g := -1
		for _, j := range index[h] {
			if labels.Equal(groups[j], ls) {
				g = j
				break
			}
		}
		if g < 0 {
			g = len(groups)
			groups = append(groups, ls)
			index[h] = append(index[h], g)
		}
		groupOf[i] = g
	}
	if len(groups)*len(bounds) > maxPushdownPoints {
		return nil
	}
	sums, present, err := q.sumGroups(ctx, series, ov, groupOf, len(groups), bounds, mint, maxt)
	if err != nil {
		return storage.ErrSeriesSet(err)
	}
	set := &pointSeriesSet{i: -1}
	for g, ls := range groups {
		if present[g] {
			set.series = append(set.series, &pointSeries{lset: ls, t: bounds, f: sums[g]})
		}
	}
	slices.SortFunc(set.series, func(a, b *pointSeries) int { return labels.Compare(a.lset, b.lset) })
	return set
}

// pointSelect answers a selector under rate(), increase() or delta() that
// matches increment series only with each series' counter at the window
// boundaries, read as sumSelect reads them: from the window summaries and
// the daily rollup where the boundaries allow. The series iterator gives
// the same points from the raw windows alone. It returns nil where a
// series is not an increment series, or the points would be too many.
func (q *querier) pointSelect(ctx context.Context, hints *storage.SelectHints, mint, maxt int64, series []*memSeries, ov []*ovSeries) storage.SeriesSet {
	if hints == nil || hints.Range <= 0 || hints.Step < 0 || !boundedFuncs[hints.Func] || len(series) == 0 || ctx.Value(iteratorOnlyKey{}) != nil {
		return nil
	}
	for _, s := range series {
		if s.kind != KindIncrements {
			return nil
		}
	}
	bounds := boundsIn(hints, mint, maxt)
	if len(bounds) == 0 || len(series)*len(bounds) > maxPushdownPoints {
		return nil
	}
	groupOf := make([]int, len(series))
	for i := range groupOf {
		groupOf[i] = i
	}
	sums, present, err := q.sumGroups(ctx, series, ov, groupOf, len(series), bounds, mint, maxt)
	if err != nil {
		return storage.ErrSeriesSet(err)
	}
	set := &pointSeriesSet{i: -1}
	for i, ms := range series { // sorted by labels
		if present[i] {
			set.series = append(set.series, &pointSeries{lset: ms.lset, t: bounds, f: sums[i]})
		}
	}
	return set
}
