package export

import (
	"bytes"
	"context"
	"encoding/csv"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	promqlengine "github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/promql"
)

// TestSummaryQuery: a summary figure's query gets the filters as matchers
// on every selector (the source only where the family has no application
// label) and the period as every range; values are matched exactly, not
// as patterns. The cost columns are one query, by currency and component.
func TestSummaryQuery(t *testing.T) {
	f := Filters{Source: []string{"bright.data", "oxy"}, Application: []string{"crawler"}}
	for _, tc := range []struct {
		field, step, want string
	}{
		{"requests", "1h", `sum by (source, application) (increase(proxy_requests_total{application=~"crawler",source=~"bright\\.data|oxy"}[1h]))`},
		{"successes", "1d", `sum by (source, application) (increase(proxy_requests_total{application=~"crawler",outcome="success",source=~"bright\\.data|oxy"}[1d]))`},
		{"avg_latency_seconds", "1h", `sum by (source, application) (increase(proxy_request_duration_seconds_sum{application=~"crawler",source=~"bright\\.data|oxy"}[1h])) / sum by (source, application) (increase(proxy_request_duration_seconds_count{application=~"crawler",source=~"bright\\.data|oxy"}[1h]))`},
		{"cost", "1d", `sum by (source, application, currency, component) (increase(proxy_cost_allocated_total{application=~"crawler",source=~"bright\\.data|oxy"}[1d]))`},
		{"sample_adjusted", "1d", `sum by (source) (increase(proxy_sample_adjusted_requests_total{source=~"bright\\.data|oxy"}[1d])) > 0`},
	} {
		step := map[string]time.Duration{"1h": time.Hour, "1d": 24 * time.Hour}[tc.step]
		q, err := summaryQuery(tc.field, f, step)
		require.NoError(t, err)
		require.Equal(t, tc.want, q, tc.field)
		_, err = parser.NewParser(parser.Options{}).ParseExpr(q)
		require.NoError(t, err)
	}
	// Without filters the queries are the fields' own, at the period.
	q, err := summaryQuery("distinct_domains", Filters{}, time.Hour)
	require.NoError(t, err)
	require.Equal(t, `count by (source, application) (sum by (source, application, domain) (increase(proxy_requests_total[1h])) > 0)`, q)
	q, err = summaryQuery("cost", Filters{Source: []string{"oxy"}}, time.Hour)
	require.NoError(t, err)
	require.Equal(t, `sum by (source, application, currency, component) (increase(proxy_cost_allocated_total{source=~"oxy"}[1h]))`, q)
	for name := range summaryFigures {
		_, err := summaryQuery(name, f, time.Hour)
		require.NoError(t, err, name)
	}
}

// fakeQuery answers the summary figures' range queries with the series
// of answers, by figure, checking that each asks for the periods wanted.
func fakeQuery(t *testing.T, f Filters, step time.Duration, first, last time.Time, answers map[string]promqlengine.Matrix) func(context.Context, string, promql.Request) (*promql.Result, error) {
	queries := map[string]string{}
	for figure := range summaryFigures {
		q, err := summaryQuery(figure, f, step)
		require.NoError(t, err)
		queries[q] = figure
	}
	return func(_ context.Context, user string, req promql.Request) (*promql.Result, error) {
		require.Equal(t, "analyst", user)
		figure, ok := queries[req.Query]
		require.True(t, ok, req.Query)
		require.Equal(t, promql.Request{Query: req.Query, Start: first, End: last, Step: step}, req)
		m := answers[figure]
		if m == nil {
			m = promqlengine.Matrix{}
		}
		return &promql.Result{Value: m}, nil
	}
}

// series is a range query's series with one point per (ms, value) pair.
func series(ls labels.Labels, pts ...float64) promqlengine.Series {
	s := promqlengine.Series{Metric: ls}
	for i := 0; i < len(pts); i += 2 {
		s.Floats = append(s.Floats, promqlengine.FPoint{T: int64(pts[i]), F: pts[i+1]})
	}
	return s
}

// TestWriteSummaries: the rows are per period, source and application;
// the cost columns come from the cost figure's series by component, in
// the currency they were spent in. A row with spend but no requests
// (unallocated) counts 0 requests and has no latency; a source without a
// model has no cost columns, one that priced it at 0 has 0 in its
// currency; a period spent in two currencies gives a row per currency
// (none for a currency with no spend), the figures without currency in
// the first only; a figure
// without application (sample_adjusted) is in each row of its source.
func TestWriteSummaries(t *testing.T) {
	h := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	t1, t2 := float64(h.Add(time.Hour).UnixMilli()), float64(h.Add(2*time.Hour).UnixMilli())
	cost := func(src, app, cur, comp string) labels.Labels {
		ls := labels.NewBuilder(labels.FromStrings("source", src, "currency", cur, "component", comp))
		if app != "" {
			ls.Set("application", app)
		}
		return ls.Labels()
	}
	answers := map[string]promqlengine.Matrix{
		"requests": {
			series(labels.FromStrings("source", "a", "application", "x"), t1, 10, t2, 0),
			series(labels.FromStrings("source", "b", "application", "y"), t1, 5),
			series(labels.FromStrings("source", "c"), t1, 4),
			series(labels.FromStrings("source", "d", "application", "w"), t1, 2),
		},
		"successes":           {series(labels.FromStrings("source", "a", "application", "x"), t1, 9)},
		"avg_latency_seconds": {series(labels.FromStrings("source", "a", "application", "x"), t1, 0.25)},
		"bytes_sent":          {series(labels.FromStrings("source", "c"), t1, 100)},
		"distinct_domains":    {series(labels.FromStrings("source", "a", "application", "x"), t1, 3)},
		"sample_adjusted":     {series(labels.FromStrings("source", "a"), t1, 1)},
		costFigure: {
			series(cost("a", "x", "USD", "usage"), t1, 1, t2, 0),
			series(cost("a", "x", "USD", "subscription"), t1, 2, t2, 0),
			series(cost("a", "unallocated", "USD", "subscription"), t1, 0.5, t2, 0),
			series(cost("c", "", "EUR", "usage"), t1, 0.75),
			series(cost("c", "", "USD", "subscription"), t1, 0.25),
			series(cost("a", "x", "EUR", "usage"), t1, 0), // a currency not spent in
			series(cost("d", "w", "USD", "usage"), t1, 0), // a free source
		},
	}
	f := Filters{Source: []string{"a", "b", "c", "d"}}
	start, end := h.Add(-time.Minute), h.Add(2*time.Hour+time.Minute)
	e := &Jobs{opts: Options{Query: fakeQuery(t, f, time.Hour, h, h.Add(2*time.Hour), answers)}}
	var fields []string
	for _, c := range summaryColumns {
		fields = append(fields, c.Name)
	}
	j := &Job{Dataset: "hourly", Start: start, End: end, User: "analyst", fields: fields, filter: f}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, CSV, summaryColumns)
	require.NoError(t, err)
	require.NoError(t, e.writeSummaries(t.Context(), j, w, func(float64) {}))
	require.NoError(t, w.Close())
	rows, err := csv.NewReader(&buf).ReadAll()
	require.NoError(t, err)
	require.Equal(t, fields, rows[0])
	p0, p1 := h.Format(time.RFC3339), h.Add(time.Hour).Format(time.RFC3339)
	require.Equal(t, [][]string{
		// period_start, period_end, source, application, requests, successes, failures, avg, p50, p95,
		// bytes_sent, bytes_received, distinct_domains, sample_adjusted, cost_usage, cost_subscription, cost_total, currency
		{p0, p1, "a", "unallocated", "0", "0", "0", "", "", "", "0", "0", "0", "true", "0", "0.5", "0.5", "USD"},
		{p0, p1, "a", "x", "10", "9", "0", "0.25", "", "", "0", "0", "3", "true", "1", "2", "3", "USD"},
		{p0, p1, "b", "y", "5", "0", "0", "", "", "", "0", "0", "0", "false", "", "", "", ""},
		{p0, p1, "c", "", "4", "0", "0", "", "", "", "100", "0", "0", "false", "0.75", "0", "0.75", "EUR"},
		{p0, p1, "c", "", "", "", "", "", "", "", "", "", "", "", "0", "0.25", "0.25", "USD"},
		{p0, p1, "d", "w", "2", "0", "0", "", "", "", "0", "0", "0", "false", "0", "0", "0", "USD"},
	}, rows[1:], "the second hour had neither requests nor spend")

	// A selection of fields, in the order asked.
	j.fields = []string{"currency", "application", "cost_total"}
	buf.Reset()
	w, err = NewWriter(&buf, CSV, selectColumns(summaryColumns, j.fields))
	require.NoError(t, err)
	require.NoError(t, e.writeSummaries(t.Context(), j, w, func(float64) {}))
	require.NoError(t, w.Close())
	require.Equal(t, "currency,application,cost_total\nUSD,unallocated,0.5\nUSD,x,3\n,y,\nEUR,,0.75\nUSD,,0.25\nUSD,w,0\n", buf.String())
}

// TestWriteCosts: the costs dataset lists the models whose validity
// [from, until) overlaps the range, of the sources filtered, by source
// then from, with empty cells for the prices a model has not and the
// until of a model still valid; the other filters are ignored.
func TestWriteCosts(t *testing.T) {
	day := func(d int) time.Time { return time.Date(2026, 11, d, 0, 0, 0, 0, time.UTC) }
	ptr := func(v float64) *float64 { return &v }
	until := func(d int) *time.Time { u := day(d); return &u }
	models := []otelanalytics.CostModel{
		{Source: "oxy", Model: "per_request", Currency: "EUR", From: day(1), Until: until(10), PerRequest: ptr(0.001)},
		{Source: "oxy", Model: "hybrid", Currency: "EUR", From: day(10), PerGB: ptr(3), Subscription: ptr(300), Period: "month"},
		{Source: "brightdata", Model: "data_transfer", Currency: "USD", From: day(1), Until: until(5), PerGB: ptr(4)},
		{Source: "brightdata", Model: "per_request", Currency: "USD", From: day(5), Until: until(8), PerRequest: ptr(0)},
		{Source: "brightdata", Model: "subscription", Currency: "USD", From: day(8), Subscription: ptr(10), Period: "day"},
	}
	export := func(start, end time.Time, f Filters) string {
		t.Helper()
		e := &Jobs{opts: Options{Costs: func() []otelanalytics.CostModel { return slices.Clone(models) }}}
		var fields []string
		for _, c := range costColumns {
			fields = append(fields, c.Name)
		}
		var buf bytes.Buffer
		w, err := NewWriter(&buf, CSV, costColumns)
		require.NoError(t, err)
		require.NoError(t, e.writeCosts(&Job{Dataset: "costs", Start: start, End: end, fields: fields, filter: f}, w))
		require.NoError(t, w.Close())
		return buf.String()
	}
	const header = "source,model,currency,from,until,per_request,per_gb,subscription,period\n"
	require.Equal(t, header+
		"brightdata,per_request,USD,2026-11-05T00:00:00Z,2026-11-08T00:00:00Z,0,,,\n"+
		"brightdata,subscription,USD,2026-11-08T00:00:00Z,,,,10,day\n"+
		"oxy,per_request,EUR,2026-11-01T00:00:00Z,2026-11-10T00:00:00Z,0.001,,,\n",
		export(day(5), day(9), Filters{}), "until is exclusive: the data_transfer model ended as the range began")
	require.Equal(t, header+
		"oxy,per_request,EUR,2026-11-01T00:00:00Z,2026-11-10T00:00:00Z,0.001,,,\n"+
		"oxy,hybrid,EUR,2026-11-10T00:00:00Z,,,3,300,month\n",
		export(day(9), day(11), Filters{Source: []string{"oxy"}, Application: []string{"crawler"}, Domain: []string{"x"}}))
	require.Equal(t, header, export(day(1), day(10), Filters{Source: []string{"nobody"}}))
	require.Equal(t, header+"brightdata,data_transfer,USD,2026-11-01T00:00:00Z,2026-11-05T00:00:00Z,,4,,\n",
		export(day(4), day(5), Filters{Source: []string{"brightdata"}}), "the range ends as the per_request model begins")
}
