package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/require"
)

// checkCostAddsUp runs every query of the Cost & ROI dashboard under
// selections of its variables, as Grafana substitutes them, against the
// filled proxylens behind prom: for each source selection (All, single
// sources, two together), the figures of the single applications add up
// to those of All, within 0.5%, and for All applications the figures of
// the single sources add up to those of All. A ratio is checked by its
// numerator and its denominator, each of which must add up; figures that
// cannot add up (quantiles, what-if mixes) are only run.
func checkCostAddsUp(t *testing.T, prom v1.API, end time.Time, rng time.Duration) {
	values := func(label string) []string {
		v, _, _, err := prom.LabelValues(t.Context(), label, []string{"proxy_cost_allocated_total"}, end.Add(-31*24*time.Hour), end.Add(time.Hour))
		require.NoError(t, err)
		out := make([]string, len(v))
		for i, s := range v {
			out[i] = string(s)
		}
		return out
	}
	sources, apps := values("source"), values("application")
	t.Logf("cost dashboard: sources %v, applications %v", sources, apps)
	require.Contains(t, apps, "unallocated")
	require.Greater(t, len(sources), 5)
	sourceSels := []string{".*", "oxylabs", "brightdata", "smartproxy", sources[len(sources)-1], "oxylabs|webshare"}

	d := loadDashboard(t, "../../dashboards/cost-roi.json")
	checked, ran := 0, 0
	for _, p := range d.panels() {
		interval := time.Hour
		if p.Interval != "" {
			iv, err := model.ParseDuration(p.Interval)
			require.NoError(t, err)
			interval = time.Duration(iv)
		}
		for _, tg := range p.Targets {
			parts := additiveParts(t, substitute(tg.Expr, rng, interval))
			if parts == nil {
				ran++
				continue
			}
			for _, part := range parts {
				eval := func(src, app string) map[string]float64 {
					q := strings.NewReplacer(`source=~".*"`, `source=~"`+src+`"`, `application=~".*"`, `application=~"`+app+`"`).Replace(part)
					v, _, _, err := prom.Query(t.Context(), q, end)
					require.NoError(t, err, q)
					out := map[string]float64{}
					for _, s := range v.(model.Vector) {
						if !math.IsNaN(float64(s.Value)) {
							out[s.Metric.String()] += float64(s.Value)
						}
					}
					return out
				}
				where := fmt.Sprintf("panel %q, query %s, part:\n%s", p.Title, tg.RefID, part)
				for _, src := range sourceSels {
					addsUp(t, eval(src, ".*"), apps, func(app string) map[string]float64 { return eval(src, app) }, "sources "+src+", "+where)
				}
				addsUp(t, eval(".*", ".*"), sources, func(src string) map[string]float64 { return eval(src, ".*") }, "all applications, "+where)
				checked++
			}
		}
	}
	require.Greater(t, checked, 15)
	t.Logf("cost dashboard: %d additive figures add up under every selection; %d others run", checked, ran)
}

// addsUp checks that the figures of each value of a variable add up to
// total, label set by label set.
func addsUp(t *testing.T, total map[string]float64, vals []string, eval func(string) map[string]float64, where string) {
	t.Helper()
	sum := map[string]float64{}
	for _, v := range vals {
		for k, x := range eval(v) {
			sum[k] += x
		}
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range total {
			if !yield(k) {
				return
			}
		}
	})
	for _, k := range keys {
		require.InDelta(t, total[k], sum[k], 0.005*math.Abs(total[k])+1e-9, "%s: %s: all %v, sum of the parts %v", where, k, total[k], sum[k])
	}
	for k, x := range sum {
		if _, ok := total[k]; !ok {
			require.InDelta(t, 0, x, 1e-9, "%s: %s in the parts only", where, k)
		}
	}
}

// additiveParts returns the parts of a query that must add up across
// selections: a ratio's numerator and denominator, or the query itself
// if it is a sum. It returns nil for the others.
func additiveParts(t *testing.T, expr string) []string {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	require.NoError(t, err, expr)
	var div *parser.BinaryExpr
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if b, ok := n.(*parser.BinaryExpr); ok && b.Op == parser.DIV && div == nil {
			div = b
		}
		if c, ok := n.(*parser.Call); ok && (c.Func.Name == "histogram_quantile" || c.Func.Name == "label_replace") && div == nil {
			div = &parser.BinaryExpr{} // not additive
		}
		return nil
	})
	switch {
	case div != nil && div.LHS == nil:
		return nil
	case div != nil:
		return []string{div.LHS.String(), div.RHS.String()}
	}
	for {
		switch x := e.(type) {
		case *parser.ParenExpr:
			e = x.Expr
			continue
		case *parser.Call:
			if x.Func.Name == "sort_desc" {
				e = x.Args[0]
				continue
			}
		case *parser.AggregateExpr:
			if x.Op == parser.SUM {
				return []string{expr}
			}
		}
		return nil
	}
}
