package pebblestore_test

import (
	"context"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/internal/traffic"
	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
	plpromql "github.com/proxylens/proxylens/promql"
)

// TestCostHistory: 30 days of backfilled traffic through the real
// pipeline and store, priced by per-request, per-GB, subscription and
// hybrid models with a price change on day 12, and a source idle for two
// days. The spend of every window (1, 7 and 30 days, ending now and ending
// 20 days ago at midnight) read from proxy_cost_allocated_total by PromQL
// equals a bill computed independently from the models and the spans,
// within 0.5%, before and after retention is enforced (raw samples then
// exist for 7 days only, and in a last check hourly ones for 10 days only,
// so that the windows ending 20 days ago lie wholly in the daily rollup);
// the applications' shares add up to the total and follow each
// application's requests.
func TestCostHistory(t *testing.T) {
	if raceDetector {
		// One goroutine's arithmetic over 30 days (3 minutes under the
		// race detector): CI runs it in the plain test step.
		t.Skip("an accuracy test with no concurrency of its own")
	}
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
	gen := traffic.NewGenerator(traffic.NewModel(5), 3)
	rnd := rand.New(rand.NewPCG(1, 2))
	sources := []string{"perreq", "pergb", "sub", "hyb", "free"}
	apps := []string{"checkout", "search", "crawler", "reports"}
	appWeight := []int{1, 2, 3, 4} // crawler and reports use more
	var recs []otelanalytics.Record
	spike := now.Truncate(day).Add(-3 * day) // a day of heavy per-request traffic
	for len(recs) < 66000 {
		end := start.Add(time.Duration(rnd.Int64N(int64(30 * day))))
		src := sources[rnd.IntN(len(sources))]
		if len(recs) >= 60000 {
			end, src = spike.Add(-time.Duration(rnd.Int64N(int64(day)))), "perreq"
		}
		if src == "sub" && !end.Before(idleFrom) && end.Before(idleTo) {
			continue
		}
		req := gen.Next(end)
		r := req.Record()
		r.Source, r.Tier = src, "premium"
		if src == "free" {
			r.Tier = "free"
		}
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
		if i == 30000 { // one cut halfway: usage of an hour can come in two cuts
			clock = clock.Add(15 * time.Second)
			require.NoError(t, pipe.Flush())
		}
	}
	clock = now
	for range 8 { // the history's accrual, a bounded part a cut
		require.NoError(t, pipe.Flush())
	}

	s := db.Series()
	// The queries go through the product's query API, as Grafana's do
	// (its sums of increase() are read exactly from the store).
	api := plpromql.New(plpromql.Config{MaxSamples: 50_000_000, Timeout: time.Hour}, s, plpromql.Options{})
	defer api.Close()
	spend := func(q string, at time.Time) map[string]float64 {
		out := map[string]float64{}
		for _, sr := range instant(t, api, q, at) {
			key := sr.Metric.Get("currency")
			if app := sr.Metric.Get("application"); app != "" || sr.Metric.Has("application") {
				key += "/" + app
			}
			out[key] = sr.Floats[0].F
		}
		return out
	}
	midnight := now.Truncate(day).Add(-20 * day)
	check := func(phase string, ends ...time.Time) {
		for _, end := range ends {
			for _, days := range []int{1, 7, 30} {
				from := end.Add(-time.Duration(days) * day)
				want := bill(book, recs, from, end, now)
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
		// and the hour not over yet, stay unallocated. The idle day: a whole UTC day inside the idle stretch, which the
		// daily rollup answers exactly when nothing finer is left.
		idleDay := [2]time.Time{idleFrom.Truncate(day).Add(day), idleFrom.Truncate(day).Add(2 * day)}
		for _, w := range [][2]time.Time{{now.Add(-7 * day), now}, idleDay, {midnight.Add(-7 * day), midnight}} {
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
		idle := expectAllocation(book, recs, "sub", idleDay[0], idleDay[1], now)
		require.Equal(t, []string{otelanalytics.UnallocatedApplication}, slices.Collect(maps.Keys(idle)))
		require.InEpsilon(t, 600.0/30, idle[otelanalytics.UnallocatedApplication], 1e-6)
	}
	check("raw data", now, midnight)
	checkDocumented(t, api, book, recs, now)

	_, err = db.EnforceRetention(context.Background(), pebblestore.DefaultRetention(), now, true)
	require.NoError(t, err)
	check("after retention", now, midnight)
	checkDocumented(t, api, book, recs, now)

	// With the hourly rollup kept 10 days only, the windows that end 20
	// days ago lie wholly in the daily rollup.
	tight := pebblestore.DefaultRetention()
	tight.RawRecordsDays, tight.RawSeriesDays, tight.HourlyDays = 3, 3, 10
	_, err = db.EnforceRetention(context.Background(), tight, now, true)
	require.NoError(t, err)
	check("daily rollup only past 10 days", now, midnight)
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

// documentedQueries are the queries of docs/analytics.md, which shows them
// verbatim: TestCostHistory checks each against an independent figure.
var documentedQueries = map[string]string{
	"spend":                         `sum by (currency) (increase(proxy_cost_allocated_total[30d]))`,
	"spend by source and component": `sum by (source, component, currency) (increase(proxy_cost_allocated_total[30d]))`,
	"spend by application":          `sum by (application, currency) (increase(proxy_cost_allocated_total[30d]))`,
	"cost per request": `  sum by (currency) (increase(proxy_cost_allocated_total[30d]))
/
  sum by (currency) (
      sum by (source) (increase(proxy_requests_total[30d]))
    * on (source) group_left (currency)
      group by (source, currency) (increase(proxy_cost_allocated_total[30d]))
  )`,
	"cost per success": `  sum by (currency) (increase(proxy_cost_allocated_total[30d]))
/
  sum by (currency) (
      sum by (source) (increase(proxy_requests_total{outcome="success"}[30d]))
    * on (source) group_left (currency)
      group by (source, currency) (increase(proxy_cost_allocated_total[30d]))
  )`,
	"spend by day": `sum by (currency) (increase(proxy_cost_allocated_total[1d]))`,
	"spike days": `  sum by (currency) (increase(proxy_cost_allocated_total[1d]))
>
  1.5 * sum by (currency) (increase(proxy_cost_allocated_total[30d])) / 30`,
	"tier cost per success": `  sum by (tier, currency) (
      sum by (source, currency) (increase(proxy_cost_allocated_total[30d]))
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
      group by (source, currency) (increase(proxy_cost_allocated_total[30d]))
  )`,
	"tier success rate": `  sum by (tier) (increase(proxy_requests_total{tier=~"free|premium", outcome="success"}[30d]))
/
  sum by (tier) (increase(proxy_requests_total{tier=~"free|premium"}[30d]))`,
	"tier extra attempts": `  sum by (tier) (increase(proxy_requests_total{tier=~"free|premium", outcome="failure"}[30d]))
/
  sum by (tier) (increase(proxy_requests_total{tier=~"free|premium", outcome="success"}[30d]))`,
	"tier seconds lost": `  sum by (tier) (increase(proxy_request_duration_seconds_sum{tier=~"free|premium", outcome="failure"}[30d]))
/
  sum by (tier) (increase(proxy_requests_total{tier=~"free|premium", outcome="success"}[30d]))`,
}

// checkDocumented evaluates every query of docs/analytics.md at now and
// compares it with figures computed from the spans and the models.
func checkDocumented(t *testing.T, api *plpromql.API, book *otelanalytics.CostBook, recs []otelanalytics.Record, now time.Time) {
	doc, err := os.ReadFile("../docs/analytics.md")
	require.NoError(t, err)
	blocks := regexp.MustCompile("(?s)```promql\n(.*?)\n```").FindAllStringSubmatch(string(doc), -1)
	documented := map[string]bool{}
	for _, b := range blocks {
		documented[b[1]] = true
	}
	for name, q := range documentedQueries {
		require.True(t, documented[q], "docs/analytics.md lacks the %s query:\n%s", name, q)
		delete(documented, q)
	}
	require.Empty(t, documented, "docs/analytics.md shows untested queries")

	day := 24 * time.Hour
	from := now.Add(-30 * day)
	query := func(name string, at time.Time, key ...string) map[string]float64 {
		out := map[string]float64{}
		for _, sr := range instant(t, api, documentedQueries[name], at) {
			var k []string
			for _, l := range key {
				k = append(k, sr.Metric.Get(l))
			}
			out[strings.Join(k, "/")] = sr.Floats[0].F
		}
		return out
	}
	near := func(want, got map[string]float64, tol float64, msg string) {
		t.Helper()
		for k, v := range want {
			require.InDelta(t, v, got[k], tol*math.Abs(v)+1e-9, "%s, %s: want %v, got %v", msg, k, v, got[k])
		}
		for k, v := range got {
			if _, ok := want[k]; !ok {
				require.InDelta(t, 0, v, 1e-9, "%s: %s not expected", msg, k)
			}
		}
	}

	// Independent figures: usage by source, application and tier from the
	// spans; subscriptions from the models, allocated hour by hour.
	usage := map[[3]string]float64{} // source, application, currency
	type tierFig struct{ reqs, succ, fail, lost float64 }
	tiers := map[string]*tierFig{}
	srcReqs, srcSucc := map[string]float64{}, map[string]float64{}
	for _, r := range recs {
		end := time.Unix(0, r.EndTime)
		if end.Before(from) || !end.Before(now) {
			continue
		}
		m := book.Lookup(r.Source, end.UnixMilli())
		v := 0.0
		if m.PerRequest != nil {
			v += r.Weight * *m.PerRequest
		}
		if m.PerGB != nil {
			v += r.Weight * float64(r.BytesSent+r.BytesReceived) / 1e9 * *m.PerGB
		}
		usage[[3]string{r.Source, r.Application, m.Currency}] += v
		tf := tiers[r.Tier]
		if tf == nil {
			tf = &tierFig{}
			tiers[r.Tier] = tf
		}
		tf.reqs += r.Weight
		srcReqs[r.Source] += r.Weight
		if r.Success {
			tf.succ += r.Weight
			srcSucc[r.Source] += r.Weight
		} else {
			tf.fail += r.Weight
			tf.lost += r.Weight * float64(r.Duration) / 1e9
		}
	}
	currencyOf := map[string]string{}
	for _, m := range book.Models() {
		currencyOf[m.Source] = m.Currency
	}
	spend, bySrcComp, byApp := map[string]float64{}, map[string]float64{}, map[string]float64{}
	for k, v := range usage {
		spend[k[2]] += v
		bySrcComp[k[0]+"/usage/"+k[2]] += v
		byApp[k[1]+"/"+k[2]] += v
	}
	for _, src := range []string{"sub", "hyb"} {
		for app, v := range expectAllocation(book, recs, src, from, now, now) {
			cur := currencyOf[src]
			spend[cur] += v
			bySrcComp[src+"/subscription/"+cur] += v
			byApp[app+"/"+cur] += v
		}
	}
	near(spend, query("spend", now, "currency"), 0.005, "spend")
	near(bySrcComp, query("spend by source and component", now, "source", "component", "currency"), 0.005, "spend by source and component")
	near(byApp, query("spend by application", now, "application", "currency"), 0.005, "spend by application")

	perReq, perSucc := map[string]float64{}, map[string]float64{}
	for cur, v := range spend {
		var n, ns float64
		for src, c := range currencyOf {
			if c == cur {
				n, ns = n+srcReqs[src], ns+srcSucc[src]
			}
		}
		perReq[cur], perSucc[cur] = v/n, v/ns
	}
	near(perReq, query("cost per request", now, "currency"), 0.005, "cost per request")
	near(perSucc, query("cost per success", now, "currency"), 0.005, "cost per success")

	// Tiers: every source serves one tier, so its spend is its tier's.
	tierSpend := map[string]float64{}
	for k, v := range bySrcComp {
		parts := strings.Split(k, "/")
		tier := "premium"
		if parts[0] == "free" {
			tier = "free"
		}
		tierSpend[tier+"/"+parts[2]] += v
	}
	tierPerSucc, rate, extra, lost := map[string]float64{}, map[string]float64{}, map[string]float64{}, map[string]float64{}
	for k, v := range tierSpend {
		tier, cur := strings.Split(k, "/")[0], strings.Split(k, "/")[1]
		var ns float64
		for src, c := range currencyOf {
			if c == cur && (src == "free") == (tier == "free") {
				ns += srcSucc[src]
			}
		}
		tierPerSucc[k] = v / ns
	}
	for tier, tf := range tiers {
		rate[tier], extra[tier], lost[tier] = tf.succ/tf.reqs, tf.fail/tf.succ, tf.lost/tf.succ
	}
	near(tierPerSucc, query("tier cost per success", now, "tier", "currency"), 0.005, "tier cost per success")
	near(rate, query("tier success rate", now, "tier"), 0.005, "tier success rate")
	near(extra, query("tier extra attempts", now, "tier"), 0.005, "tier extra attempts")
	near(lost, query("tier seconds lost", now, "tier"), 0.005, "tier seconds lost")

	// Days, at midnight: each day's bill; a spike day is over 1.5× the
	// average of the 30 days up to it.
	midnight, spikes := now.Truncate(day), 0
	for d := midnight.Add(-10 * day); !d.After(midnight); d = d.Add(day) {
		want := bill(book, recs, d.Add(-day), d, now)
		near(want, query("spend by day", d, "currency"), 0.005, "spend of the day to "+d.String())
		month := bill(book, recs, d.Add(-30*day), d, now)
		over := map[string]float64{}
		for cur, v := range want {
			if v > 1.5*month[cur]/30*1.01 {
				over[cur] = v
			}
		}
		got := query("spike days", d, "currency")
		for cur, v := range want {
			if v > 1.5*month[cur]/30*0.99 && v < 1.5*month[cur]/30*1.01 {
				delete(got, cur) // too close to the threshold to tell
			}
		}
		near(over, got, 0.005, "spike on the day to "+d.String())
		spikes += len(over)
	}
	require.NotZero(t, spikes, "the heavy day is a spike")
}

// bill is the independent bill of [from, to): usage by the model valid at
// each span's end, subscriptions by the time each is in force, up to now.
func bill(book *otelanalytics.CostBook, recs []otelanalytics.Record, from, to, now time.Time) map[string]float64 {
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

// instant runs q at at through api and returns its vector as series.
func instant(t *testing.T, api *plpromql.API, q string, at time.Time) promql.Matrix {
	t.Helper()
	res, err := api.Exec(context.Background(), plpromql.Request{Query: q, Start: at, End: at})
	require.NoError(t, err, q)
	defer res.Close()
	var out promql.Matrix
	for _, smp := range res.Value.(promql.Vector) {
		out = append(out, promql.Series{Metric: smp.Metric, Floats: []promql.FPoint{{T: smp.T, F: smp.F}}})
	}
	return out
}
