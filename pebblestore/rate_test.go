package pebblestore_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/internal/race"
	"github.com/proxylens/proxylens/pebblestore"
)

// rateSample is one sample of the rate pushdown tests' data.
type rateSample struct {
	s int
	t int64
	f float64
	h *histogram.Histogram
}

// rateData makes three days of remote-written counters that have what
// real ones have: resets, gaps of hours, stale markers, irregular
// intervals, non-integer values, a NaN, and native histograms (a series
// of their own and one that turns from floats to histograms).
func rateData(start, end int64) ([]labels.Labels, []rateSample) {
	rnd := rand.New(rand.NewPCG(16, 5))
	var series []labels.Labels
	for i := range 10 {
		series = append(series, labels.FromStrings("__name__", "x_total", "g", fmt.Sprint(i%3), "i", fmt.Sprint(i)))
	}
	hist := len(series)
	series = append(series, labels.FromStrings("__name__", "h_total", "g", "0"))
	mixed := len(series)
	series = append(series, labels.FromStrings("__name__", "x_total", "g", "1", "i", "mixed"))
	var out []rateSample
	vals := make([]float64, len(series))
	for si := range series {
		step := int64(60000)
		if si%4 == 1 {
			step = 15000
		}
		gapFrom := start + int64(rnd.IntN(60))*3600000
		gapTo := gapFrom + int64(1+rnd.IntN(8))*3600000
		for t := start + int64(si)*1000; t <= end; t += step {
			if si%5 == 2 {
				t += int64(rnd.IntN(2000)) - 1000 // jitter
			}
			if t > gapFrom && t < gapTo {
				continue
			}
			switch r := rnd.IntN(2000); {
			case r == 0:
				vals[si] = 0 // reset
			case r == 1:
				vals[si] /= 3 // a drop that does not reach zero
			case r == 2:
				out = append(out, rateSample{s: si, t: t, f: math.Float64frombits(value.StaleNaN)})
				continue
			case r == 3 && si == 3:
				out = append(out, rateSample{s: si, t: t, f: math.NaN()})
				continue
			}
			if si == 0 && t%7200000 == 60000 && t/7200000%3 == 0 {
				vals[si] = 0 // a drop between a window's first two samples
			}
			inc := float64(rnd.IntN(100))
			if si%3 == 2 {
				inc += rnd.Float64() // not an integer
			}
			vals[si] += inc
			smp := rateSample{s: si, t: t, f: vals[si]}
			if si == hist || (si == mixed && t > start+(end-start)*2/3) {
				smp.h = &histogram.Histogram{Count: uint64(vals[si]), Sum: vals[si] * 0.5, Schema: 0,
					PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}}, PositiveBuckets: []int64{int64(vals[si])}}
				if r := rnd.IntN(300); r == 0 {
					vals[si] = 0
				}
			}
			out = append(out, smp)
		}
	}
	return series, out
}

// TestRatePushdownMatchesEngine: sum by (…) (rate|increase(…)) over sample
// series, rewritten by PushDown and answered by the store (from counter
// summaries over long ranges, from samples over short ones), gives the
// engine's answers over the raw samples to the bit, for ranges within a
// window and across many, aligned and unaligned, with offsets and
// instant queries; the data is appended out of order and across a
// restart, so that closed windows are rewritten and summarized again.
func TestRatePushdownMatchesEngine(t *testing.T) {
	t.Parallel() // among the slowest under -race: CI runs them side by side
	dir := t.TempDir()
	open := func() *pebblestore.DB {
		db, err := pebblestore.Open(dir, pebblestore.Options{Series: pebblestore.SeriesOptions{OutOfOrderWindow: 3 * time.Hour}})
		require.NoError(t, err)
		return db
	}
	db := open()
	end := int64(1_800_000_000_000) / 3600000 * 3600000
	start := end - 3*24*3600000
	series, samples := rateData(start, end)
	slices.SortStableFunc(samples, func(a, b rateSample) int { return int(min(max(a.t-b.t, -1), 1)) })
	rnd := rand.New(rand.NewPCG(3, 4))
	// Half an hour at a time, a tenth held back and appended up to two
	// hours late (into windows already closed).
	var late []rateSample
	var restarted bool
	for lo := 0; lo < len(samples); {
		hi := lo
		for hi < len(samples) && samples[hi].t < samples[lo].t+1800000 {
			hi++
		}
		app := db.Series().Appender(context.Background())
		var keep []rateSample
		for _, smp := range late {
			if smp.t < samples[lo].t-2*3600000+int64(rnd.IntN(3600000)) {
				appendRate(t, app, series, smp)
			} else {
				keep = append(keep, smp)
			}
		}
		late = keep
		for _, smp := range samples[lo:hi] {
			if rnd.IntN(10) == 0 && smp.h == nil {
				late = append(late, smp)
				continue
			}
			appendRate(t, app, series, smp)
		}
		require.NoError(t, app.Commit())
		if !restarted && samples[lo].t > start+(end-start)/2 {
			require.NoError(t, db.Close())
			db, restarted = open(), true
		}
		lo = hi
	}
	app := db.Series().Appender(context.Background())
	for _, smp := range late {
		appendRate(t, app, series, smp)
	}
	require.NoError(t, app.Commit())
	defer db.Close()
	s := db.Series()
	require.Greater(t, pebblestore.CounterSummaries(t, s), 300, "closed windows carry summaries")

	p := parser.NewParser(parser.Options{})
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 50_000_000, Timeout: time.Hour, Parser: p, EnableAtModifier: true})
	checked := 0
	for qi, q := range []string{
		`sum by (g, i) (increase(x_total[1d]))`,
		`sum by (g) (increase(x_total[1d]))`,
		`sum by (g) (rate(x_total[5m]))`,
		`sum by (g, i) (increase(x_total[4h]))`,
		`sum by (g) (rate(x_total[10h] offset 3h))`,
		`sum(increase(x_total{g!="0"}[3d]))`,
		`sum by (i) (increase(x_total[1h]))`,
		`sum by (g) (rate(h_total[6h]))`,
		`sum by (g) (rate(h_total[5m]))`,
		`sum by (i) (increase(x_total{i="mixed"}[5h]))`,
	} {
		expr, err := p.ParseExpr(q)
		require.NoError(t, err)
		s.PushDown(expr)
		pushed := expr.String()
		require.Contains(t, pushed, "last_over_time", q)
		for ri, rng := range []struct {
			from, to int64
			step     time.Duration
		}{
			{start + 24*3600000, end, 24 * time.Hour},               // daily, aligned
			{start + 17*60000 + 123, end - 3600000, 24 * time.Hour}, // daily, off every window
			{start + 3600000, end, time.Hour},                       // hourly
			{end - 12*3600000, end, time.Minute},                    // minutes
			{end - 6*3600000 + 5000, end, 7 * time.Minute},          // off the grid
			{0, end, 0},                        // instant at the end
			{0, start + 40*3600000 + 33333, 0}, // instant in the middle
		} {
			if skipUnderRace(qi, ri) {
				continue
			}
			want := runQueryAll(t, engine, s, q, rng.from, rng.to, rng.step)
			got := runQueryAll(t, engine, s, pushed, rng.from, rng.to, rng.step)
			checked += requireIdentical(t, want, got, fmt.Sprintf("%s %v", q, rng))
		}
	}
	require.Greater(t, checked, race.Pick(3000, 1200))

	// Summaries written before they held the second sample: a range that
	// starts at a window's first sample reads it from the chunk.
	require.Greater(t, pebblestore.DropSecondSamples(t, s), 300)
	for _, q := range []string{`sum by (g, i) (increase(x_total[1d]))`, `sum by (g) (rate(x_total[10h] offset 3h))`} {
		expr, err := p.ParseExpr(q)
		require.NoError(t, err)
		s.PushDown(expr)
		want := runQueryAll(t, engine, s, q, start+24*3600000, end, 2*time.Hour)
		got := runQueryAll(t, engine, s, expr.String(), start+24*3600000, end, 2*time.Hour)
		requireIdentical(t, want, got, q)
	}
}

// TestRatePushdownManySeries checks the short ranges' sums over more
// series than one batch of the workers holds: each group's series are
// spread over several batches and computed by different workers, and the
// sums must still be added in the engine's order, to the bit.
func TestRatePushdownManySeries(t *testing.T) {
	t.Parallel()
	db, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	require.NoError(t, err)
	defer db.Close()
	s := db.Series()
	end := int64(1_800_000_000_000) / 3600000 * 3600000
	start := end - 8*3600000
	rnd := rand.New(rand.NewPCG(7, 11))
	app := s.Appender(context.Background())
	for i := range 300 {
		ls := labels.FromStrings("__name__", "c_total", "g", fmt.Sprint(i%7), "i", fmt.Sprint(i))
		v := 0.0
		for ts := start + int64(i)*100; ts <= end; ts += 30000 {
			switch r := rnd.IntN(500); {
			case r == 0:
				v = 0
			case r == 1:
				_, err := app.Append(0, ls, ts, math.Float64frombits(value.StaleNaN))
				require.NoError(t, err)
				continue
			}
			v += float64(rnd.IntN(50)) + rnd.Float64()
			if i%10 == 0 {
				v += 1e15 * rnd.Float64() // sums whose last bits depend on their order
			}
			_, err := app.Append(0, ls, ts, v)
			require.NoError(t, err)
		}
	}
	require.NoError(t, app.Commit())
	p := parser.NewParser(parser.Options{})
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 50_000_000, Timeout: time.Hour, Parser: p})
	for _, q := range []string{
		`sum by (g) (rate(c_total[5m]))`,
		`sum(increase(c_total[90s]))`,
		`sum by (g) (increase(c_total{i!="3"}[1h]))`,
	} {
		expr, err := p.ParseExpr(q)
		require.NoError(t, err)
		require.True(t, s.PushDown(expr), q)
		for _, step := range []time.Duration{time.Minute, 13 * time.Minute} {
			want := runQueryAll(t, engine, s, q, start+3600000, end, step)
			got := runQueryAll(t, engine, s, expr.String(), start+3600000, end, step)
			require.Greater(t, requireIdentical(t, want, got, fmt.Sprintf("%s step %v", q, step)), 30)
		}
	}
}

func appendRate(t *testing.T, app storage.Appender, series []labels.Labels, smp rateSample) {
	t.Helper()
	var err error
	if smp.h != nil {
		_, err = app.AppendHistogram(0, series[smp.s], smp.t, smp.h, nil)
	} else {
		_, err = app.Append(0, series[smp.s], smp.t, smp.f)
	}
	require.NoError(t, err)
}

// runQueryAll is runQuery keeping histogram points too.
func runQueryAll(t *testing.T, engine *promql.Engine, s storage.Queryable, q string, from, to int64, step time.Duration) promql.Matrix {
	t.Helper()
	ctx := context.Background()
	var qry promql.Query
	var err error
	if step == 0 {
		qry, err = engine.NewInstantQuery(ctx, s, nil, q, time.UnixMilli(to))
	} else {
		qry, err = engine.NewRangeQuery(ctx, s, nil, q, time.UnixMilli(from), time.UnixMilli(to), step)
	}
	require.NoError(t, err)
	defer qry.Close()
	res := qry.Exec(ctx)
	require.NoError(t, res.Err, q)
	var out promql.Matrix
	switch v := res.Value.(type) {
	case promql.Matrix:
		for _, sr := range v {
			out = append(out, promql.Series{Metric: sr.Metric, Floats: slices.Clone(sr.Floats), Histograms: slices.Clone(sr.Histograms)})
		}
	case promql.Vector:
		for _, smp := range v {
			sr := promql.Series{Metric: smp.Metric}
			if smp.H != nil {
				sr.Histograms = []promql.HPoint{{T: smp.T, H: smp.H}}
			} else {
				sr.Floats = []promql.FPoint{{T: smp.T, F: smp.F}}
			}
			out = append(out, sr)
		}
	}
	slices.SortFunc(out, func(a, b promql.Series) int { return labels.Compare(a.Metric, b.Metric) })
	return out
}

// requireIdentical compares two results point by point, bit for bit
// (NaN included), and returns the points compared.
func requireIdentical(t *testing.T, want, got promql.Matrix, msg string) int {
	t.Helper()
	require.Equal(t, len(want), len(got), msg)
	n := 0
	for i := range want {
		require.Equal(t, want[i].Metric, got[i].Metric, msg)
		require.Equal(t, len(want[i].Floats), len(got[i].Floats), "%s %s", msg, want[i].Metric)
		for j, w := range want[i].Floats {
			g := got[i].Floats[j]
			require.Equal(t, w.T, g.T, msg)
			require.Equal(t, math.Float64bits(w.F), math.Float64bits(g.F), "%s %s at %d: %v != %v", msg, want[i].Metric, w.T, w.F, g.F)
			n++
		}
		require.Equal(t, len(want[i].Histograms), len(got[i].Histograms), "%s %s", msg, want[i].Metric)
		for j, w := range want[i].Histograms {
			g := got[i].Histograms[j]
			require.Equal(t, w.T, g.T, msg)
			require.True(t, w.H.Equals(g.H), "%s %s at %d: %v != %v", msg, want[i].Metric, w.T, w.H, g.H)
			n++
		}
	}
	return n
}
