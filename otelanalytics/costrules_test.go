package otelanalytics_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/util/teststorage"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/internal/traffic"
	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
)

// costQuery is one query of docs/analytics.md, stored once here: the tests
// check that the document shows it verbatim and evaluate it.
type costQuery struct {
	name  string // the figure, as the tests name it
	expr  string
	daily bool // a range query over the 30 days at a one-day step
}

// valueTemplate is the value (success rate ÷ cost per success) of the tier
// TIER, per currency.
const valueTemplate = `(
    sum by (tier) (increase(proxy_requests_total{tier="TIER", outcome="success"}[30d]))
  / sum by (tier) (increase(proxy_requests_total{tier="TIER"}[30d]))
  / on (tier) group_right ()
    (
        sum by (tier, currency) (
            sum by (source, currency) (
                increase(proxy_cost_total[30d])
              or
                avg_over_time(proxy_subscription_cost[30d]) / avg_over_time(proxy_subscription_period_seconds[30d]) * 30 * 86400
            )
          * on (source) group_right (currency)
            (
                sum by (source, tier) (increase(proxy_requests_total{tier="TIER"}[30d]))
              / on (source) group_left
                sum by (source) (increase(proxy_requests_total[30d]))
            )
        )
      /
        sum by (tier, currency) (
            sum by (source, tier) (increase(proxy_requests_total{tier="TIER", outcome="success"}[30d]))
          * on (source) group_left (currency)
            group by (source, currency) (increase(proxy_cost_total[30d]) or avg_over_time(proxy_subscription_cost[30d]))
        )
    )
)`

// ruleValueTemplate is valueTemplate on the recording rules.
const ruleValueTemplate = `(
    sum by (tier) (sum_over_time(source_tier_outcome:proxy_requests:increase1h{tier="TIER", outcome="success"}[30d]))
  / sum by (tier) (sum_over_time(source_tier_outcome:proxy_requests:increase1h{tier="TIER"}[30d]))
  / on (tier) group_right ()
    (
        sum by (tier, currency) (
            sum_over_time(source:proxy_spend:increase1h[30d])
          * on (source) group_right (currency)
            (
                sum by (source, tier) (sum_over_time(source_tier_outcome:proxy_requests:increase1h{tier="TIER"}[30d]))
              / on (source) group_left
                sum by (source) (sum_over_time(source_tier_outcome:proxy_requests:increase1h[30d]))
            )
        )
      /
        sum by (tier, currency) (
            sum by (source, tier) (sum_over_time(source_tier_outcome:proxy_requests:increase1h{tier="TIER", outcome="success"}[30d]))
          * on (source) group_left (currency)
            group by (source, currency) (sum_over_time(source:proxy_spend:increase1h[30d]))
        )
    )
)`

func valueRatio(template string) string {
	return strings.ReplaceAll(template, "TIER", "premium") + "\n/ ignoring (tier)\n" + strings.ReplaceAll(template, "TIER", "free")
}

// costQueries are the figures of docs/analytics.md, from the raw series
// and (rules/…) from the recording rules of docs/rules/proxylens-cost.rules.yml.
var costQueries = []costQuery{
	{name: "spend", expr: `sum by (currency) (
    increase(proxy_cost_total[30d])
  or
    avg_over_time(proxy_subscription_cost[30d]) / avg_over_time(proxy_subscription_period_seconds[30d]) * 30 * 86400
)`},
	{name: "spend by source", expr: `sum by (source, currency) (
    increase(proxy_cost_total[30d])
  or
    avg_over_time(proxy_subscription_cost[30d]) / avg_over_time(proxy_subscription_period_seconds[30d]) * 30 * 86400
)`},
	{name: "cost per request", expr: `  sum by (currency) (
      increase(proxy_cost_total[30d])
    or
      avg_over_time(proxy_subscription_cost[30d]) / avg_over_time(proxy_subscription_period_seconds[30d]) * 30 * 86400
  )
/
  sum by (currency) (
      sum by (source) (increase(proxy_requests_total[30d]))
    * on (source) group_left (currency)
      group by (source, currency) (increase(proxy_cost_total[30d]) or avg_over_time(proxy_subscription_cost[30d]))
  )`},
	{name: "cost per success", expr: `  sum by (currency) (
      increase(proxy_cost_total[30d])
    or
      avg_over_time(proxy_subscription_cost[30d]) / avg_over_time(proxy_subscription_period_seconds[30d]) * 30 * 86400
  )
/
  sum by (currency) (
      sum by (source) (increase(proxy_requests_total{outcome="success"}[30d]))
    * on (source) group_left (currency)
      group by (source, currency) (increase(proxy_cost_total[30d]) or avg_over_time(proxy_subscription_cost[30d]))
  )`},
	{name: "cost per request by source", expr: `  sum by (source, currency) (
      increase(proxy_cost_total[30d])
    or
      avg_over_time(proxy_subscription_cost[30d]) / avg_over_time(proxy_subscription_period_seconds[30d]) * 30 * 86400
  )
/ on (source) group_left
  sum by (source) (increase(proxy_requests_total[30d]))`},
	{name: "cost per success by source", expr: `  sum by (source, currency) (
      increase(proxy_cost_total[30d])
    or
      avg_over_time(proxy_subscription_cost[30d]) / avg_over_time(proxy_subscription_period_seconds[30d]) * 30 * 86400
  )
/ on (source) group_left
  sum by (source) (increase(proxy_requests_total{outcome="success"}[30d]))`},
	{name: "spend by application", expr: `sum by (application, currency) (
    increase(proxy_cost_total[30d])
  or
    (
      avg_over_time(proxy_subscription_cost[30d]) / avg_over_time(proxy_subscription_period_seconds[30d]) * 30 * 86400
    )
  * on (source) group_right (currency, period)
    (
        sum by (source, application) (increase(proxy_requests_total[30d]))
      / on (source) group_left
        sum by (source) (increase(proxy_requests_total[30d]))
    )
)`},
	{name: "spend by day", daily: true, expr: `sum by (currency) (
    increase(proxy_cost_total[1d])
  or
    avg_over_time(proxy_subscription_cost[1d]) / avg_over_time(proxy_subscription_period_seconds[1d]) * 86400
)`},
	{name: "spike days", daily: true, expr: `  sum by (currency) (
      increase(proxy_cost_total[1d])
    or
      avg_over_time(proxy_subscription_cost[1d]) / avg_over_time(proxy_subscription_period_seconds[1d]) * 86400
  )
> 1.5 / 30 *
  sum by (currency) (
      increase(proxy_cost_total[30d] @ end())
    or
      avg_over_time(proxy_subscription_cost[30d] @ end()) / avg_over_time(proxy_subscription_period_seconds[30d] @ end()) * 30 * 86400
  )`},
	{name: "tier success rate", expr: `  sum by (tier) (increase(proxy_requests_total{tier=~"free|premium", outcome="success"}[30d]))
/
  sum by (tier) (increase(proxy_requests_total{tier=~"free|premium"}[30d]))`},
	{name: "tier mean latency", expr: `  sum by (tier) (increase(proxy_request_duration_seconds_sum{tier=~"free|premium"}[30d]))
/
  sum by (tier) (increase(proxy_request_duration_seconds_count{tier=~"free|premium"}[30d]))`},
	{name: "tier p95 latency", expr: `histogram_quantile(0.95,
  sum by (tier, le) (increase(proxy_request_duration_seconds_bucket{tier=~"free|premium"}[30d]))
)`},
	{name: "tier cost per success", expr: `  sum by (tier, currency) (
      sum by (source, currency) (
          increase(proxy_cost_total[30d])
        or
          avg_over_time(proxy_subscription_cost[30d]) / avg_over_time(proxy_subscription_period_seconds[30d]) * 30 * 86400
      )
    * on (source) group_right (currency)
      (
          sum by (source, tier) (increase(proxy_requests_total{tier=~"free|premium"}[30d]))
        / on (source) group_left
          sum by (source) (increase(proxy_requests_total[30d]))
      )
  )
/
  sum by (tier, currency) (
      sum by (source, tier) (increase(proxy_requests_total{tier=~"free|premium", outcome="success"}[30d]))
    * on (source) group_left (currency)
      group by (source, currency) (increase(proxy_cost_total[30d]) or avg_over_time(proxy_subscription_cost[30d]))
  )`},
	{name: "tier value ratio", expr: valueRatio(valueTemplate)},

	{name: "rules/spend", expr: `sum by (currency) (sum_over_time(source:proxy_spend:increase1h[30d]))`},
	{name: "rules/spend by source", expr: `sum_over_time(source:proxy_spend:increase1h[30d])`},
	{name: "rules/cost per request", expr: `  sum by (currency) (sum_over_time(source:proxy_spend:increase1h[30d]))
/
  sum by (currency) (
      sum by (source) (sum_over_time(source_tier_outcome:proxy_requests:increase1h[30d]))
    * on (source) group_left (currency)
      group by (source, currency) (sum_over_time(source:proxy_spend:increase1h[30d]))
  )`},
	{name: "rules/cost per success", expr: `  sum by (currency) (sum_over_time(source:proxy_spend:increase1h[30d]))
/
  sum by (currency) (
      sum by (source) (sum_over_time(source_tier_outcome:proxy_requests:increase1h{outcome="success"}[30d]))
    * on (source) group_left (currency)
      group by (source, currency) (sum_over_time(source:proxy_spend:increase1h[30d]))
  )`},
	{name: "rules/cost per request by source", expr: `  sum_over_time(source:proxy_spend:increase1h[30d])
/ on (source) group_left
  sum by (source) (sum_over_time(source_tier_outcome:proxy_requests:increase1h[30d]))`},
	{name: "rules/cost per success by source", expr: `  sum_over_time(source:proxy_spend:increase1h[30d])
/ on (source) group_left
  sum by (source) (sum_over_time(source_tier_outcome:proxy_requests:increase1h{outcome="success"}[30d]))`},
	{name: "rules/spend by application", expr: `sum by (application, currency) (
    sum_over_time(source_application:proxy_cost:increase1h[30d])
  or
    sum_over_time(source_period:proxy_subscription_cost:amortised1h[30d])
  * on (source) group_right (currency, period)
    (
        sum_over_time(source_application:proxy_requests:increase1h[30d])
      / on (source) group_left
        sum by (source) (sum_over_time(source_application:proxy_requests:increase1h[30d]))
    )
)`},
	{name: "rules/spend by day", daily: true, expr: `sum by (currency) (sum_over_time(source:proxy_spend:increase1h[1d]))`},
	{name: "rules/spike days", daily: true, expr: `  sum by (currency) (sum_over_time(source:proxy_spend:increase1h[1d]))
> 1.5 / 30 * sum by (currency) (sum_over_time(source:proxy_spend:increase1h[30d] @ end()))`},
	{name: "rules/tier success rate", expr: `  sum by (tier) (sum_over_time(source_tier_outcome:proxy_requests:increase1h{tier=~"free|premium", outcome="success"}[30d]))
/
  sum by (tier) (sum_over_time(source_tier_outcome:proxy_requests:increase1h{tier=~"free|premium"}[30d]))`},
	{name: "rules/tier mean latency", expr: `  sum_over_time(tier:proxy_request_duration_seconds_sum:increase1h{tier=~"free|premium"}[30d])
/
  sum_over_time(tier:proxy_request_duration_seconds_count:increase1h{tier=~"free|premium"}[30d])`},
	{name: "rules/tier p95 latency", expr: `histogram_quantile(0.95,
  sum_over_time(tier_le:proxy_request_duration_seconds_bucket:increase1h{tier=~"free|premium"}[30d])
)`},
	{name: "rules/tier cost per success", expr: `  sum by (tier, currency) (
      sum_over_time(source:proxy_spend:increase1h[30d])
    * on (source) group_right (currency)
      (
          sum by (source, tier) (sum_over_time(source_tier_outcome:proxy_requests:increase1h{tier=~"free|premium"}[30d]))
        / on (source) group_left
          sum by (source) (sum_over_time(source_tier_outcome:proxy_requests:increase1h[30d]))
      )
  )
/
  sum by (tier, currency) (
      sum by (source, tier) (sum_over_time(source_tier_outcome:proxy_requests:increase1h{tier=~"free|premium", outcome="success"}[30d]))
    * on (source) group_left (currency)
      group by (source, currency) (sum_over_time(source:proxy_spend:increase1h[30d]))
  )`},
	{name: "rules/tier value ratio", expr: valueRatio(ruleValueTemplate)},
}

const ruleFile = "../docs/rules/proxylens-cost.rules.yml"

// prodParser parses PromQL as proxylens' query API does.
var prodParser = parser.NewParser(parser.Options{})

func loadCostRules(t *testing.T) *rulefmt.RuleGroups {
	t.Helper()
	groups, errs := rulefmt.ParseFile(ruleFile, false, model.LegacyValidation, prodParser, slog.New(slog.DiscardHandler))
	require.Empty(t, errs)
	return groups
}

// TestCostRuleFile: the rule file is valid in Prometheus' format, its
// expressions parse, and its names follow level:metric:operations.
func TestCostRuleFile(t *testing.T) {
	groups := loadCostRules(t)
	require.Len(t, groups.Groups, 1)
	g := groups.Groups[0]
	require.Equal(t, "proxylens-cost", g.Name)
	require.Equal(t, model.Duration(time.Hour), g.Interval, "the rules record hours: sum_over_time adds them up")
	name := regexp.MustCompile(`^[a-z]+(_[a-z]+)*:[a-z_]+:[a-z0-9]+$`)
	var records []string
	for _, r := range g.Rules {
		require.Empty(t, r.Alert)
		require.Regexp(t, name, r.Record)
		_, err := prodParser.ParseExpr(r.Expr)
		require.NoError(t, err, r.Record)
		records = append(records, r.Record)
	}
	require.Equal(t, []string{
		"source_application:proxy_cost:increase1h",
		"source_period:proxy_subscription_cost:amortised1h",
		"source:proxy_spend:increase1h",
		"source_application:proxy_requests:increase1h",
		"source_tier_outcome:proxy_requests:increase1h",
		"tier:proxy_request_duration_seconds_sum:increase1h",
		"tier:proxy_request_duration_seconds_count:increase1h",
		"tier_le:proxy_request_duration_seconds_bucket:increase1h",
	}, records)
}

// TestCostQueriesDocumented: docs/analytics.md shows every query verbatim,
// and every PromQL block it shows is one of them, so that all are tested.
func TestCostQueriesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/analytics.md")
	require.NoError(t, err)
	known := map[string]bool{}
	for _, q := range costQueries {
		_, err := prodParser.ParseExpr(q.expr)
		require.NoError(t, err, q.name)
		require.True(t, strings.Contains(string(doc), "```promql\n"+q.expr+"\n```\n"), "docs/analytics.md lacks the query %q:\n%s", q.name, q.expr)
		known[q.expr] = true
	}
	blocks := regexp.MustCompile("(?s)```promql\n(.*?)\n```").FindAllStringSubmatch(string(doc), -1)
	require.NotEmpty(t, blocks)
	for _, b := range blocks {
		require.True(t, known[b[1]], "docs/analytics.md shows an untested query:\n%s", b[1])
	}
	rules, err := os.ReadFile(ruleFile)
	require.NoError(t, err)
	require.Contains(t, string(doc), string(rules), "docs/analytics.md shows the rule file as it is")
}

// newCostEngine returns an engine with the options of proxylens' query API.
func newCostEngine(t *testing.T) *promql.Engine {
	return promqltest.NewTestEngineWithOpts(t, promql.EngineOpts{
		MaxSamples:               50_000_000,
		Timeout:                  time.Minute,
		LookbackDelta:            5 * time.Minute,
		NoStepSubqueryIntervalFn: func(int64) int64 { return time.Minute.Milliseconds() },
		EnableAtModifier:         true,
		EnableNegativeOffset:     true,
		Parser:                   prodParser,
	})
}

// outOfOrder lets the rules' results, computed after the data is loaded,
// be appended at the data's times.
func outOfOrder(o *tsdb.Options) { o.OutOfOrderTimeWindow = (60 * 24 * time.Hour).Milliseconds() }

// evalRules evaluates the rule file as a ruler would, every group interval
// from start to end, rule after rule, and appends the results.
func evalRules(t *testing.T, ng *promql.Engine, st storage.Storage, start, end time.Time) {
	ctx := context.Background()
	for _, g := range loadCostRules(t).Groups {
		for _, r := range g.Rules {
			q, err := ng.NewRangeQuery(ctx, st, nil, r.Expr, start, end, time.Duration(g.Interval))
			require.NoError(t, err)
			res := q.Exec(ctx)
			require.NoError(t, res.Err, r.Record)
			m, err := res.Matrix()
			require.NoError(t, err)
			require.NotEmpty(t, m, "rule %s recorded nothing", r.Record)
			app := st.Appender(ctx)
			for _, s := range m {
				ls := labels.NewBuilder(s.Metric).Set(model.MetricNameLabel, r.Record).Labels()
				var ref storage.SeriesRef
				for _, p := range s.Floats {
					ref, err = app.Append(ref, ls, p.T, p.F)
					require.NoError(t, err)
				}
			}
			require.NoError(t, app.Commit())
			q.Close()
		}
	}
}

// figures are a query's results: by the series' labels, its value at the
// evaluation time, or, for a daily query, its value per day (1 to 30).
type figures map[string]map[int]float64

func instant(v map[string]float64) figures {
	f := figures{}
	for k, x := range v {
		f[k] = map[int]float64{0: x}
	}
	return f
}

func key(kv ...string) string { return labels.FromStrings(kv...).String() }

// evalFigure runs a query over the 30 days that end at end.
func evalFigure(t *testing.T, ng *promql.Engine, st storage.Storage, q costQuery, end time.Time) figures {
	ctx := context.Background()
	got := figures{}
	if !q.daily {
		qry, err := ng.NewInstantQuery(ctx, st, nil, q.expr, end)
		require.NoError(t, err)
		defer qry.Close()
		res := qry.Exec(ctx)
		require.NoError(t, res.Err, q.name)
		vec, err := res.Vector()
		require.NoError(t, err, q.name)
		for _, s := range vec {
			got[s.Metric.String()] = map[int]float64{0: s.F}
		}
		return got
	}
	qry, err := ng.NewRangeQuery(ctx, st, nil, q.expr, end.Add(-29*24*time.Hour), end, 24*time.Hour)
	require.NoError(t, err)
	defer qry.Close()
	res := qry.Exec(ctx)
	require.NoError(t, res.Err, q.name)
	m, err := res.Matrix()
	require.NoError(t, err, q.name)
	for _, s := range m {
		days := map[int]float64{}
		for _, p := range s.Floats {
			days[30-int(end.Sub(time.UnixMilli(p.T))/(24*time.Hour))] = p.F
		}
		got[s.Metric.String()] = days
	}
	return got
}

// requireFigures compares a query's results with the expected ones, within
// a relative error.
func requireFigures(t *testing.T, name string, want, got figures, rel float64) {
	t.Helper()
	require.Len(t, got, len(want), "%s: got %v", name, got)
	for k, days := range want {
		require.Contains(t, got, k, name)
		require.Len(t, got[k], len(days), "%s %s: got %v", name, k, got[k])
		for d, v := range days {
			require.Contains(t, got[k], d, "%s %s day %d", name, k, d)
			require.LessOrEqual(t, math.Abs(got[k][d]-v), rel*math.Max(math.Abs(v), 1e-12),
				"%s %s day %d: got %v, want %v", name, k, d, got[k][d], v)
		}
	}
}

// figureName is the figure a query computes, from raw series or rules.
func figureName(q costQuery) string { return strings.TrimPrefix(q.name, "rules/") }

// handScript is a month of traffic at a 30-minute resolution, with every
// rate constant within a day so that Prometheus' extrapolation is exact:
//
//   - prem (premium, USD, hybrid: 0.002 per request, 72 a month): 150
//     requests an hour, 100 of application a (98 successes) costing 0.2,
//     50 of b (45 successes) costing 0.1;
//   - eu (premium, EUR, subscription of 600 a year): 10 requests an hour of
//     b, all successes;
//   - cheap (free, USD, data transfer): 200 requests an hour of a, half of
//     them successes, costing 1 an hour times the day's factor below;
//   - nomodel (free, no cost model): 30 requests an hour of a, half of them
//     successes.
//
// cheap's daily factor is 1, but 0 on days 5, 15 and 25, 3 on day 10 and 2
// on day 20: its mean is 1, as is the first day's.
func handScript() string {
	var b strings.Builder
	b.WriteString("load 30m\n")
	line := func(series string, perHour float64) {
		fmt.Fprintf(&b, "  %s 0+%gx1440\n", series, perHour/2)
	}
	req := `proxy_requests_total{source="%s", tier="%s", application="%s", outcome="%s"}`
	line(fmt.Sprintf(req, "prem", "premium", "a", "success"), 98)
	line(fmt.Sprintf(req, "prem", "premium", "a", "failure"), 2)
	line(fmt.Sprintf(req, "prem", "premium", "b", "success"), 45)
	line(fmt.Sprintf(req, "prem", "premium", "b", "failure"), 5)
	line(fmt.Sprintf(req, "eu", "premium", "b", "success"), 10)
	line(fmt.Sprintf(req, "cheap", "free", "a", "success"), 100)
	line(fmt.Sprintf(req, "cheap", "free", "a", "failure"), 100)
	line(fmt.Sprintf(req, "nomodel", "free", "a", "success"), 15)
	line(fmt.Sprintf(req, "nomodel", "free", "a", "failure"), 15)

	line(`proxy_cost_total{source="prem", application="a", currency="USD", component="request"}`, 0.2)
	line(`proxy_cost_total{source="prem", application="b", currency="USD", component="request"}`, 0.1)
	vals := []string{"0"}
	var cum float64
	for k := 1; k <= 1440; k++ {
		cum += 0.5 * handDayFactor((k-1)/48+1)
		vals = append(vals, strconv.FormatFloat(cum, 'g', -1, 64))
	}
	fmt.Fprintf(&b, "  %s %s\n", `proxy_cost_total{source="cheap", application="a", currency="USD", component="transfer"}`, strings.Join(vals, " "))

	fmt.Fprintf(&b, "  %s 72+0x1440\n", `proxy_subscription_cost{source="prem", currency="USD", period="month"}`)
	fmt.Fprintf(&b, "  %s 2592000+0x1440\n", `proxy_subscription_period_seconds{source="prem", currency="USD", period="month"}`)
	fmt.Fprintf(&b, "  %s 600+0x1440\n", `proxy_subscription_cost{source="eu", currency="EUR", period="year"}`)
	fmt.Fprintf(&b, "  %s 31536000+0x1440\n", `proxy_subscription_period_seconds{source="eu", currency="EUR", period="year"}`)

	// Latency: prem 0.3 s, eu 0.5 s, cheap 1.2 s, nomodel 2 s on average.
	for _, s := range []struct {
		source, tier string
		count, sum   float64
		buckets      [6]float64 // cumulative, le 0.1 0.25 0.5 1.0 2.5 +Inf
	}{
		{"prem", "premium", 150, 45, [6]float64{0, 100, 150, 150, 150, 150}},
		{"eu", "premium", 10, 5, [6]float64{0, 10, 10, 10, 10, 10}},
		{"cheap", "free", 200, 240, [6]float64{0, 0, 50, 120, 200, 200}},
		{"nomodel", "free", 30, 60, [6]float64{0, 0, 0, 0, 30, 30}},
	} {
		line(fmt.Sprintf(`proxy_request_duration_seconds_count{source="%s", tier="%s"}`, s.source, s.tier), s.count)
		line(fmt.Sprintf(`proxy_request_duration_seconds_sum{source="%s", tier="%s"}`, s.source, s.tier), s.sum)
		for i, le := range []string{"0.1", "0.25", "0.5", "1.0", "2.5", "+Inf"} {
			line(fmt.Sprintf(`proxy_request_duration_seconds_bucket{source="%s", tier="%s", le="%s"}`, s.source, s.tier, le), s.buckets[i])
		}
	}
	return b.String()
}

func handDayFactor(day int) float64 {
	switch day {
	case 5, 15, 25:
		return 0
	case 10:
		return 3
	case 20:
		return 2
	}
	return 1
}

// TestCostFiguresHand evaluates every query of docs/analytics.md, on the
// raw series and on the recording rules, against figures worked out by
// hand from handScript.
func TestCostFiguresHand(t *testing.T) {
	st := promqltest.LoadedStorage(t, handScript(), outOfOrder)
	ng := newCostEngine(t)
	end := time.Unix(0, 0).UTC().Add(30 * 24 * time.Hour)
	evalRules(t, ng, st, time.Unix(0, 0).Add(time.Hour), end)

	const (
		hours    = 720.0
		euMonth  = 600 * 30 / 365.0 // eu's subscription over the 30 days
		premCost = 0.3*hours + 72   // prem's requests and subscription
		cheapUSD = 1 * hours        // cheap's transfer: its factor averages 1
		premReq  = 150 * hours
		premSucc = 143 * hours
		euReq    = 10 * hours
	)
	usd, eur := key("currency", "USD"), key("currency", "EUR")
	spendDays := func(d int) float64 { return 0.3*24 + 2.4 + 24*handDayFactor(d) }
	byDay, spikes := figures{usd: {}, eur: {}}, figures{usd: {}}
	for d := 1; d <= 30; d++ {
		byDay[usd][d] = spendDays(d)
		byDay[eur][d] = 600 / 365.0
		if spendDays(d) > 1.5*(premCost+cheapUSD)/30 {
			spikes[usd][d] = spendDays(d)
		}
	}
	require.Equal(t, map[int]float64{10: 81.6, 20: 57.6}, spikes[usd])
	premRate, freeRate := 153/160.0, 0.5
	premCPS, freeCPS := premCost/premSucc, cheapUSD/(100*hours)
	want := map[string]figures{
		"spend": instant(map[string]float64{usd: premCost + cheapUSD, eur: euMonth}),
		"spend by source": instant(map[string]float64{
			key("source", "prem", "currency", "USD"):  premCost,
			key("source", "cheap", "currency", "USD"): cheapUSD,
			key("source", "eu", "currency", "EUR"):    euMonth,
		}),
		"cost per request": instant(map[string]float64{usd: 1008 / (premReq + 200*hours), eur: euMonth / euReq}),
		"cost per success": instant(map[string]float64{usd: 1008 / (premSucc + 100*hours), eur: euMonth / euReq}),
		"cost per request by source": instant(map[string]float64{
			key("source", "prem", "currency", "USD"):  premCost / premReq,
			key("source", "cheap", "currency", "USD"): 0.005,
			key("source", "eu", "currency", "EUR"):    euMonth / euReq,
		}),
		"cost per success by source": instant(map[string]float64{
			key("source", "prem", "currency", "USD"):  premCost / premSucc,
			key("source", "cheap", "currency", "USD"): 0.01,
			key("source", "eu", "currency", "EUR"):    euMonth / euReq,
		}),
		"spend by application": instant(map[string]float64{
			key("application", "a", "currency", "USD"): 0.2*hours + cheapUSD + 72*100/150.0, // 912
			key("application", "b", "currency", "USD"): 0.1*hours + 72*50/150.0,             // 96
			key("application", "b", "currency", "EUR"): euMonth,
		}),
		"spend by day":      byDay,
		"spike days":        spikes,
		"tier success rate": instant(map[string]float64{key("tier", "premium"): premRate, key("tier", "free"): freeRate}),
		"tier mean latency": instant(map[string]float64{key("tier", "premium"): 50 / 160.0, key("tier", "free"): 300 / 230.0}),
		"tier p95 latency": instant(map[string]float64{
			key("tier", "premium"): 0.25 + 0.25*(152-110)/50.0,
			key("tier", "free"):    1 + 1.5*(218.5-120)/110,
		}),
		"tier cost per success": instant(map[string]float64{
			key("tier", "premium", "currency", "USD"): premCPS,
			key("tier", "premium", "currency", "EUR"): euMonth / euReq,
			key("tier", "free", "currency", "USD"):    freeCPS,
		}),
		// No EUR: the free tier has no EUR source.
		"tier value ratio": instant(map[string]float64{usd: (premRate / premCPS) / (freeRate / freeCPS)}),
	}
	for _, q := range costQueries {
		t.Run(q.name, func(t *testing.T) {
			w, ok := want[figureName(q)]
			require.True(t, ok, "no expected figures")
			requireFigures(t, q.name, w, evalFigure(t, ng, st, q, end), 1e-9)
		})
	}
}

// TestCostFiguresGenerated: on a month of generated traffic with known
// prices, every query of docs/analytics.md, on the raw series and on the
// rules, gives the bill computed independently from the records. The
// contract is 0.5%; the store's exact increase() makes it a rounding error.
//
// The series are what the store writes from each cut: the cut's
// increments (Cut.Increments), their cost (Cut.CostIncrements) and the
// subscriptions at every interval end (CostBook.SubscriptionSamples),
// read back as counters. The test storage reads a counter from its
// samples, so each interval end t gets the running total at t and again
// at t+1ms, as the store's answers to increase() do: the value just
// inside the open start of the next window.
func TestCostFiguresGenerated(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	end := start.Add(30 * day)
	p := func(v float64) *float64 { return &v }
	change := start.Add(15 * day)
	models := []otelanalytics.CostModel{
		{Source: "brightdata", Model: "hybrid", PerRequest: p(0.15), Subscription: p(300), Period: "month",
			From: start.Add(-day), Until: &change},
		{Source: "brightdata", Model: "hybrid", PerRequest: p(0.18), Subscription: p(360), Period: "month", From: change},
		{Source: "oxylabs", Model: "hybrid", Currency: "eur", PerGB: p(3.5), Subscription: p(1000), Period: "90d", From: start},
		{Source: "freeproxy-list", Model: "per_request", PerRequest: p(0), From: start},
		{Source: "spys-one", Model: "data_transfer", PerGB: p(200), From: start},
		// proxyscrape has no model.
	}
	book, err := otelanalytics.NewCostBook(models)
	require.NoError(t, err)

	m := traffic.NewModel(5)
	byName := map[string]*traffic.Source{}
	for _, s := range m.Sources {
		byName[s.Name] = s
	}
	m.Sources = []*traffic.Source{byName["brightdata"], byName["oxylabs"], byName["freeproxy-list"], byName["spys-one"], byName["proxyscrape"]}
	m.Applications = m.Applications[:3]
	gen := traffic.NewGenerator(m, 7)
	var recs []otelanalytics.Record
	for h := range 30 * 24 {
		n := 20
		switch h/24 + 1 {
		case 10:
			n *= 3
		case 20:
			n = n * 5 / 2
		}
		for i := range n {
			off := time.Duration(1 + gen.Rand().Int64N(int64(time.Hour)-1))
			req := gen.Next(start.Add(time.Duration(h)*time.Hour + off))
			r := req.Record()
			r.Weight = 1 + float64(i%2)/2
			recs = append(recs, r)
		}
	}

	// The series, as the store would write them.
	agg := otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, time.Hour, nil)
	dict := otelanalytics.NewDict(0)
	refs := make([]otelanalytics.Refs, len(recs))
	dict.MarkDurable(dict.Intern(recs, refs, nil))
	agg.Apply(recs, refs)
	cut := agg.Cut()
	type series struct {
		ls   labels.Labels
		incs map[int64]float64
	}
	counters := map[string]*series{}
	add := func(ls labels.Labels, tMs int64, v float64) error {
		// Only the labels the queries group by: the sums are the same.
		switch ls.Get(model.MetricNameLabel) {
		case "proxy_requests_total":
			ls = labels.NewBuilder(ls).Keep(model.MetricNameLabel, "source", "tier", "application", "outcome").Labels()
		case "proxy_request_duration_seconds_sum", "proxy_request_duration_seconds_count":
			ls = labels.NewBuilder(ls).Keep(model.MetricNameLabel, "source", "tier").Labels()
		case "proxy_request_duration_seconds_bucket":
			ls = labels.NewBuilder(ls).Keep(model.MetricNameLabel, "tier", "le").Labels()
		case "proxy_cost_total":
		default:
			return nil
		}
		s := counters[ls.String()]
		if s == nil {
			s = &series{ls: ls, incs: map[int64]float64{}}
			counters[ls.String()] = s
		}
		s.incs[tMs] += v
		return nil
	}
	require.NoError(t, cut.Increments(dict, add))
	require.NoError(t, cut.CostIncrements(dict, book, add))

	st := teststorage.New(t, outOfOrder)
	app := st.Appender(context.Background())
	for _, s := range counters {
		var cum float64
		for h := 0; h <= 30*24; h++ {
			tMs := start.Add(time.Duration(h) * time.Hour).UnixMilli()
			cum += s.incs[tMs]
			_, err := app.Append(0, s.ls, tMs, cum)
			require.NoError(t, err)
			_, err = app.Append(0, s.ls, tMs+1, cum)
			require.NoError(t, err)
		}
	}
	for h := 0; h <= 30*24; h++ {
		tMs := start.Add(time.Duration(h) * time.Hour).UnixMilli()
		require.NoError(t, book.SubscriptionSamples(tMs, func(ls labels.Labels, v float64) error {
			_, err := app.Append(0, ls, tMs, v)
			return err
		}))
	}
	require.NoError(t, app.Commit())
	ng := newCostEngine(t)
	evalRules(t, ng, st, start.Add(time.Hour), end)

	// The bill, from the records: each request priced by the model valid
	// at the end of its interval, each subscription hour by the model
	// valid at the hour's end.
	type srcApp struct{ source, app string }
	type srcTier struct{ source, tier string }
	var (
		spend    = map[string]float64{}         // by currency
		srcSpend = map[string]float64{}         // by source
		srcCur   = map[string]string{}          // the currency of a priced source
		subs     = map[string]float64{}         // subscription by source
		usageApp = map[[2]string]float64{}      // usage by application and currency
		daySpend = map[string]map[int]float64{} // by currency, day
		reqs     = map[srcApp]float64{}         // requests
		tierReqs = map[srcTier]float64{}        // requests
		tierSucc = map[srcTier]float64{}        // successes
		tierDur  = map[string]float64{}         // duration by tier, s
		hourMs   = time.Hour.Milliseconds()
		dayOf    = func(tMs int64) int { return int((tMs-start.UnixMilli()-1)/day.Milliseconds()) + 1 }
		addSpend = func(src, cur string, tMs int64, v float64) {
			spend[cur] += v
			srcSpend[src] += v
			srcCur[src] = cur
			if daySpend[cur] == nil {
				daySpend[cur] = map[int]float64{}
			}
			daySpend[cur][dayOf(tMs)] += v
		}
	)
	for i := range recs {
		r := &recs[i]
		tMs := agg.IntervalEnd(r.EndTime) / 1e6
		reqs[srcApp{r.Source, r.Application}] += r.Weight
		tierReqs[srcTier{r.Source, r.Tier}] += r.Weight
		if r.Success {
			tierSucc[srcTier{r.Source, r.Tier}] += r.Weight
		}
		tierDur[r.Tier] += r.Weight * float64(r.Duration) / 1e9
		cm := book.Lookup(r.Source, tMs)
		if cm == nil {
			continue
		}
		var v float64
		if cm.PerRequest != nil {
			v += r.Weight * *cm.PerRequest
		}
		if cm.PerGB != nil {
			v += r.Weight * float64(r.BytesSent+r.BytesReceived) / 1e9 * *cm.PerGB
		}
		addSpend(r.Source, cm.Currency, tMs, v)
		usageApp[[2]string{r.Application, cm.Currency}] += v
	}
	for h := 1; h <= 30*24; h++ {
		tMs := start.UnixMilli() + int64(h)*hourMs
		for _, src := range []string{"brightdata", "oxylabs", "freeproxy-list", "spys-one", "proxyscrape"} {
			if cm := book.Lookup(src, tMs); cm != nil && cm.Subscription != nil {
				v := *cm.Subscription / cm.PeriodSeconds() * 3600
				addSpend(src, cm.Currency, tMs, v)
				subs[src] += v
			}
		}
	}

	want := map[string]figures{}
	total := func(f func(srcTier) bool, m map[srcTier]float64) float64 {
		var n float64
		for k, v := range m {
			if f(k) {
				n += v
			}
		}
		return n
	}
	srcReqs := func(src string) float64 { return total(func(k srcTier) bool { return k.source == src }, tierReqs) }
	srcSucc := func(src string) float64 { return total(func(k srcTier) bool { return k.source == src }, tierSucc) }
	perCur := func(f func(src string) float64) map[string]float64 {
		out := map[string]float64{}
		for src, cur := range srcCur {
			out[cur] += f(src)
		}
		return out
	}
	v := map[string]float64{}
	for cur, x := range spend {
		v[key("currency", cur)] = x
	}
	want["spend"] = instant(v)
	v = map[string]float64{}
	for src, x := range srcSpend {
		v[key("source", src, "currency", srcCur[src])] = x
	}
	want["spend by source"] = instant(v)
	for _, c := range []struct {
		name string
		n    func(string) float64
	}{{"cost per request", srcReqs}, {"cost per success", srcSucc}} {
		v = map[string]float64{}
		for cur, n := range perCur(c.n) {
			v[key("currency", cur)] = spend[cur] / n
		}
		want[c.name] = instant(v)
		v = map[string]float64{}
		for src, x := range srcSpend {
			v[key("source", src, "currency", srcCur[src])] = x / c.n(src)
		}
		want[c.name+" by source"] = instant(v)
	}
	v = map[string]float64{}
	for k, x := range usageApp {
		v[key("application", k[0], "currency", k[1])] += x
	}
	for src, x := range subs {
		for k, n := range reqs {
			if k.source == src {
				v[key("application", k.app, "currency", srcCur[src])] += x * n / srcReqs(src)
			}
		}
	}
	want["spend by application"] = instant(v)
	byDay, spikes := figures{}, figures{}
	for cur, days := range daySpend {
		byDay[key("currency", cur)] = days
		for d, x := range days {
			if x > 1.5*spend[cur]/30 {
				if spikes[key("currency", cur)] == nil {
					spikes[key("currency", cur)] = map[int]float64{}
				}
				spikes[key("currency", cur)][d] = x
			}
		}
	}
	require.Len(t, byDay[key("currency", "USD")], 30)
	require.Equal(t, []int{10, 20}, slices.Sorted(maps.Keys(spikes[key("currency", "USD")])), "the busy days")
	want["spend by day"], want["spike days"] = byDay, spikes

	rate, cps := map[string]float64{}, map[[2]string]float64{}
	v, w, l := map[string]float64{}, map[string]float64{}, map[string]float64{}
	for _, tier := range []string{"free", "premium"} {
		inTier := func(k srcTier) bool { return k.tier == tier }
		rate[tier] = total(inTier, tierSucc) / total(inTier, tierReqs)
		v[key("tier", tier)] = rate[tier]
		l[key("tier", tier)] = tierDur[tier] / total(inTier, tierReqs)
		tierSpend, tierSuccPriced := map[string]float64{}, map[string]float64{}
		for src, cur := range srcCur {
			tierSpend[cur] += srcSpend[src] * tierReqs[srcTier{src, tier}] / srcReqs(src)
			tierSuccPriced[cur] += tierSucc[srcTier{src, tier}]
		}
		for cur, x := range tierSpend {
			if tierSuccPriced[cur] > 0 {
				cps[[2]string{tier, cur}] = x / tierSuccPriced[cur]
				w[key("tier", tier, "currency", cur)] = cps[[2]string{tier, cur}]
			}
		}
	}
	want["tier success rate"], want["tier mean latency"], want["tier cost per success"] = instant(v), instant(l), instant(w)
	v = map[string]float64{}
	for _, cur := range []string{"USD", "EUR"} {
		p, okP := cps[[2]string{"premium", cur}]
		f, okF := cps[[2]string{"free", cur}]
		if okP && okF {
			v[key("currency", cur)] = (rate["premium"] / p) / (rate["free"] / f)
		}
	}
	require.Len(t, v, 1, "USD only: no free source bills in EUR")
	want["tier value ratio"] = instant(v)

	results := map[string]figures{}
	for _, q := range costQueries {
		t.Run(q.name, func(t *testing.T) {
			got := evalFigure(t, ng, st, q, end)
			results[q.name] = got
			if figureName(q) == "tier p95 latency" {
				// An estimate from the buckets, not a bill: the premium
				// tier is the faster one.
				require.Len(t, got, 2)
				require.Less(t, got[key("tier", "premium")][0], got[key("tier", "free")][0])
				return
			}
			w, ok := want[figureName(q)]
			require.True(t, ok, "no expected figures")
			requireFigures(t, q.name, w, got, 1e-6)
		})
	}
	// The rules give the raw queries' answers.
	for _, q := range costQueries {
		if raw, ok := results[figureName(q)]; ok && q.name != figureName(q) {
			// Each hourly increase() is extrapolated over the millisecond
			// between its window's open start and its first point.
			requireFigures(t, q.name+" against "+figureName(q), raw, results[q.name], 1e-6)
		}
	}

	// The same history in proxylens' own store, as increments, read as
	// the store reads them (window boundaries, the daily rollup): every
	// figure equals the bill there too.
	db, err := pebblestore.Open(t.TempDir(), pebblestore.Options{Series: pebblestore.SeriesOptions{IncrementInterval: time.Hour}})
	require.NoError(t, err)
	defer func() { require.NoError(t, db.Close()) }()
	ps := db.Series()
	require.NoError(t, ps.AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
		for _, s := range counters {
			for tMs, v := range s.incs {
				if err := add(s.ls, tMs, v); err != nil {
					return err
				}
			}
		}
		return nil
	}))
	papp := ps.Appender(context.Background())
	for h := 0; h <= 30*24; h++ {
		tMs := start.Add(time.Duration(h) * time.Hour).UnixMilli()
		require.NoError(t, book.SubscriptionSamples(tMs, func(ls labels.Labels, v float64) error {
			_, err := papp.Append(0, ls, tMs, v)
			return err
		}))
	}
	require.NoError(t, papp.Commit())
	evalRules(t, ng, ps, start.Add(time.Hour), end)
	for _, q := range costQueries {
		t.Run("pebblestore/"+q.name, func(t *testing.T) {
			got := evalFigure(t, ng, ps, q, end)
			if figureName(q) == "tier p95 latency" {
				requireFigures(t, q.name, results[q.name], got, 1e-6)
				return
			}
			requireFigures(t, q.name, want[figureName(q)], got, 1e-6)
		})
	}
}
