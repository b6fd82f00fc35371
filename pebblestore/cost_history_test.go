package pebblestore_test

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/internal/traffic"
	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
)

// TestCostHistory: 30 days of backfilled traffic through the real
// pipeline and store, priced by per-request, per-GB, subscription and
// hybrid models with a price change on day 12, and a source idle for two
// days. The spend of every window (1, 7 and 30 days, ending now and ending
// 20 days ago at midnight) read from proxy_cost_allocated_total by PromQL
// equals a bill computed independently from the models and the spans,
// within 0.5%, before and after retention is enforced (raw samples then
// exist for 7 days only); the applications' shares add up to the total and
// follow each application's requests.
func TestCostHistory(t *testing.T) {
	day := 24 * time.Hour
	now := time.Date(2026, 12, 1, 10, 0, 7, 0, time.UTC)
	start := now.Add(-30 * day)
	change := start.Add(12 * day)
	idleFrom := start.Truncate(time.Hour).Add(5 * day) // "sub" has no traffic for two days
	idleTo := idleFrom.Add(2 * day)
	p := func(v float64) *float64 { return &v }
	models := []otelanalytics.CostModel{
		{Source: "perreq", Model: "per_request", PerRequest: p(0.002), From: start, Until: &change},
		{Source: "perreq", Model: "per_request", PerRequest: p(0.003), From: change},
		{Source: "pergb", Model: "data_transfer", Currency: "EUR", PerGB: p(8), From: start},
		{Source: "sub", Model: "subscription", Subscription: p(600), Period: "month", From: start, Until: &change},
		{Source: "sub", Model: "subscription", Subscription: p(900), Period: "month", From: change},
		{Source: "hyb", Model: "hybrid", PerRequest: p(0.001), Subscription: p(50), Period: "week", From: start},
		{Source: "free", Model: "per_request", PerRequest: p(0), From: start},
	}
	book, err := otelanalytics.NewCostBook(models)
	require.NoError(t, err)
	costs := &otelanalytics.Costs{}
	costs.Set(book)

	db, err := pebblestore.Open(t.TempDir(), pebblestore.Options{Series: pebblestore.SeriesOptions{IncrementInterval: 15 * time.Second}})
	require.NoError(t, err)
	defer db.Close()
	dict := otelanalytics.NewDict(0)
	agg := otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, 15*time.Second, nil)
	next, err := otelanalytics.Restore(db, dict, agg)
	require.NoError(t, err)
	clock := now.Add(-2 * time.Minute) // the backfill's cuts come before now
	pipe := otelanalytics.NewPipeline(otelanalytics.PipelineConfig{FlushInterval: 15 * time.Second, Costs: costs}, dict,
		otelanalytics.NewSampler(otelanalytics.DefaultSamplingConfig()), agg, db, next, nil, nil, func() time.Time { return clock })

	// Spans in random order over 30 days, as a backfill sends them.
	gen := traffic.NewGenerator(traffic.NewModel(50), 3)
	rnd := rand.New(rand.NewPCG(1, 2))
	sources := []string{"perreq", "pergb", "sub", "hyb", "free"}
	apps := []string{"checkout", "search", "crawler", "reports"}
	appWeight := []int{1, 2, 3, 4} // crawler and reports use more
	var recs []otelanalytics.Record
	for len(recs) < 60000 {
		end := start.Add(time.Duration(rnd.Int64N(int64(30 * day))))
		src := sources[rnd.IntN(len(sources))]
		if src == "sub" && !end.Before(idleFrom) && end.Before(idleTo) {
			continue
		}
		req := gen.Next(end)
		r := req.Record()
		r.Source = src
		k := rnd.IntN(10)
		for i, w := range appWeight {
			if k < w {
				r.Application = apps[i]
				break
			}
			k -= w
		}
		r.Weight = 1 + float64(rnd.IntN(2))
		recs = append(recs, r)
	}
	for i := 0; i < len(recs); i += 2000 {
		batch := append([]otelanalytics.Record(nil), recs[i:min(i+2000, len(recs))]...)
		require.NoError(t, pipe.Consume(context.Background(), batch))
		if i%10000 == 0 {
			clock = clock.Add(15 * time.Second)
			require.NoError(t, pipe.Flush())
		}
	}
	clock = now
	for range 8 { // the history's accrual, a bounded part a cut
		require.NoError(t, pipe.Flush())
	}

	// The independent bill of [from, to): usage by the model valid at each
	// span's end, subscriptions by the time each is in force.
	bill := func(from, to time.Time) map[string]float64 {
		out := map[string]float64{}
		for _, r := range recs {
			end := time.Unix(0, r.EndTime)
			if end.Before(from) || !end.Before(to) {
				continue
			}
			m := book.Lookup(r.Source, end.UnixMilli())
			if m.PerRequest != nil {
				out[m.Currency] += r.Weight * *m.PerRequest
			}
			if m.PerGB != nil {
				out[m.Currency] += r.Weight * float64(r.BytesSent+r.BytesReceived) / 1e9 * *m.PerGB
			}
		}
		for _, m := range book.Models() {
			if m.Subscription == nil {
				continue
			}
			lo, hi := maxTime(from, m.From), to
			if m.Until != nil && m.Until.Before(hi) {
				hi = *m.Until
			}
			hi = minTime(hi, now)
			if hi.After(lo) {
				out[m.Currency] += *m.Subscription / m.PeriodSeconds() * hi.Sub(lo).Seconds()
			}
		}
		return out
	}

	s := db.Series()
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 50_000_000, Timeout: time.Hour, Parser: parser.NewParser(parser.Options{})})
	spend := func(q string, at time.Time) map[string]float64 {
		out := map[string]float64{}
		for _, sr := range runQuery(t, engine, s, context.Background(), q, 0, at.UnixMilli(), 0) {
			key := sr.Metric.Get("currency")
			if app := sr.Metric.Get("application"); app != "" || sr.Metric.Has("application") {
				key += "/" + app
			}
			out[key] = sr.Floats[0].F
		}
		return out
	}
	midnight := now.Truncate(day).Add(-20 * day)
	check := func(phase string) {
		for _, end := range []time.Time{now, midnight} {
			for _, days := range []int{1, 7, 30} {
				from := end.Add(-time.Duration(days) * day)
				want := bill(from, end)
				got := spend(fmt.Sprintf(`sum by (currency) (increase(proxy_cost_allocated_total[%dd]))`, days), end)
				msg := fmt.Sprintf("%s: %d days to %s", phase, days, end.Format(time.RFC3339))
				require.Len(t, got, len(want), msg)
				for cur, v := range want {
					require.InEpsilon(t, v, got[cur], 0.005, "%s, %s: bill %.4f, PromQL %.4f", msg, cur, v, got[cur])
				}
			}
		}
		// Applications: each one's share of a subscription is what its
		// requests in each hour make it, hour by hour; hours nobody used,
		// and the hour not over yet, stay unallocated.
		for _, w := range [][2]time.Time{{now.Add(-7 * day), now}, {idleFrom, idleTo}, {midnight.Add(-7 * day), midnight}} {
			want := expectAllocation(book, recs, "sub", w[0], w[1], now)
			got := spend(fmt.Sprintf(`sum by (currency, application) (increase(proxy_cost_allocated_total{source="sub",component="subscription"}[%ds]))`,
				int(w[1].Sub(w[0]).Seconds())), w[1])
			var sum float64
			for app, v := range want {
				sum += v
				require.InDelta(t, v, got["USD/"+app], 0.005*v+1e-9, "%s: %s's share of sub in (%s, %s]", phase, app, w[0], w[1])
			}
			for app, v := range got {
				if _, ok := want[strings.TrimPrefix(app, "USD/")]; !ok {
					require.Zero(t, v, "%s: %s got a share of nothing", phase, app)
				}
			}
			total := spend(fmt.Sprintf(`sum by (currency) (increase(proxy_cost_allocated_total{source="sub",component="subscription"}[%ds]))`,
				int(w[1].Sub(w[0]).Seconds())), w[1])["USD"]
			require.InEpsilon(t, sum, total, 0.005, phase)
		}
		// Moves never make a counter go down.
		resets := spend(`sum by (currency) (resets(proxy_cost_allocated_total[31d]))`, now)
		require.Equal(t, map[string]float64{"USD": 0, "EUR": 0}, resets, phase)
		idle := expectAllocation(book, recs, "sub", idleFrom, idleTo, now)
		require.Equal(t, []string{otelanalytics.UnallocatedApplication}, slices.Collect(maps.Keys(idle)))
		require.InEpsilon(t, 600.0/30*2, idle[otelanalytics.UnallocatedApplication], 1e-6)
	}
	check("raw data")

	_, err = db.EnforceRetention(context.Background(), pebblestore.DefaultRetention(), now, true)
	require.NoError(t, err)
	check("after retention")
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// expectAllocation computes independently what source's subscription
// allocates in (from, to] to each application: every minute's accrual
// (price ÷ period × 60 s, the model valid at its end; the minute before
// now's is the last) shared by the applications' weighted requests in its
// hour, (end−1h, end]; minutes of hours with none, or of the hour not
// over at now, to unallocated.
func expectAllocation(book *otelanalytics.CostBook, recs []otelanalytics.Record, source string, from, to, now time.Time) map[string]float64 {
	const res = int64(60000)
	through := now.UnixMilli()/res*res - res
	hours := map[int64]map[string]float64{}
	for _, r := range recs {
		if r.Source != source {
			continue
		}
		t := (r.EndTime/1e6 + 14999) / 15000 * 15000 // its flush interval's end
		h := (t + 3599999) / 3600000 * 3600000
		if hours[h] == nil {
			hours[h] = map[string]float64{}
		}
		hours[h][r.Application] += r.Weight
	}
	out := map[string]float64{}
	for t := (from.UnixMilli()/res + 1) * res; t <= to.UnixMilli() && t <= through; t += res {
		m := book.Lookup(source, t)
		if m == nil || m.Subscription == nil {
			continue
		}
		amount := *m.Subscription / m.PeriodSeconds() * float64(res) / 1000
		h := (t + 3599999) / 3600000 * 3600000
		var all float64
		for _, w := range hours[h] {
			all += w
		}
		if all == 0 || h > through {
			out[otelanalytics.UnallocatedApplication] += amount
			continue
		}
		for app, w := range hours[h] {
			out[app] += amount * w / all
		}
	}
	return out
}
