package pebblestore_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/internal/race"
	"github.com/proxylens/proxylens/pebblestore"
)

// TestSumPushdown: sum by/without (rate|increase(…)) answered by the store
// summing each group first — from raw increments or from the per-minute
// summaries of closed windows — equals the engine summing series by series,
// for aligned and unaligned steps, offsets, instant queries, late data and
// after a restart.
func TestSumPushdown(t *testing.T) {
	t.Parallel() // among the slowest under -race: CI runs them side by side
	dir := t.TempDir()
	open := func() (*pebblestore.DB, *pebblestore.SeriesStore) {
		st := openStore(t, dir)
		return st.db, st.db.Series()
	}
	db, s := open()
	const iv = int64(15000)
	end := int64(1_800_000_000_000) / 3600000 * 3600000
	start := end - 12*3600000
	rnd := rand.New(rand.NewPCG(8, 9))
	var series []labels.Labels
	for i := range 12 {
		series = append(series, labels.FromStrings("__name__", "x_total", "g", fmt.Sprint(i%3), "h", fmt.Sprint(i%2), "i", fmt.Sprint(i)))
	}
	type inc struct {
		s int
		t int64
		v float64
	}
	var incs []inc
	for t := start + iv; t <= end; t += iv {
		for si := range series {
			if rnd.IntN(3) > 0 {
				incs = append(incs, inc{si, t, float64(rnd.IntN(5))})
			}
		}
	}
	// In time order in cuts, as live traffic, with a tenth held back and
	// sent late, across a restart.
	var late []inc
	write := func(batch []inc) {
		require.NoError(t, s.AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
			for _, x := range batch {
				if err := add(series[x.s], x.t, x.v); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	for i := 0; i < len(incs); i += 40 {
		var batch []inc
		for _, x := range incs[i:min(i+40, len(incs))] {
			if rnd.IntN(10) == 0 {
				late = append(late, x)
			} else {
				batch = append(batch, x)
			}
		}
		write(batch)
		if i == len(incs)/2/40*40 {
			require.NoError(t, db.Close())
			db, s = open()
		}
	}
	rnd.Shuffle(len(late), func(i, j int) { late[i], late[j] = late[j], late[i] })
	write(late)
	defer db.Close()

	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 50_000_000, Timeout: 30 * time.Minute, Parser: parser.NewParser(parser.Options{}), EnableAtModifier: true})
	marker := func(without bool, g ...string) string {
		m := pebblestore.SumPushdownMatcher(without, g)
		return fmt.Sprintf("%s=%q", m.Name, m.Value)
	}
	checked := 0
	for qi, tc := range []struct {
		pushed, plain string
	}{
		{`sum by (g) (rate(x_total{` + marker(false, "g") + `}[5m]))`, `sum by (g) (rate(x_total[5m]) * 1)`},
		{`sum by (g, h) (increase(x_total{` + marker(false, "g", "h") + `}[1h]))`, `sum by (g, h) (increase(x_total[1h]) * 1)`},
		{`sum without (i) (rate(x_total{` + marker(true, "i") + `}[10m] offset 1h))`, `sum without (i) (rate(x_total[10m] offset 1h) * 1)`},
		{`sum(increase(x_total{h="1",` + marker(false) + `}[2h]))`, `sum(increase(x_total{h="1"}[2h]) * 1)`},
	} {
		for ri, rng := range []struct {
			from, to int64
			step     time.Duration
		}{
			{start + 3600000, end, time.Minute},                          // on the minute grid: summaries
			{start + 3600000 + 15000, end - 7000, 45 * time.Second},      // off it: raw increments
			{start, end + 3600000, 20 * time.Minute},                     // past both ends: 5-minute summaries
			{start + 3600000, end, time.Hour},                            // hourly summaries
			{0, end - 5*3600000, 0},                                      // instant
			{end - 3600000*3/2 + 1234, end - 3600000*3/2 + 1234, 0},      // instant, off the grid
			{start + 2*3600000, start + 4*3600000, 2 * time.Hour / 7200}, // one-second steps
		} {
			if skipUnderRace(qi, ri) {
				continue
			}
			want := runQuery(t, engine, s, pebblestore.IteratorOnly(context.Background()), tc.plain, rng.from, rng.to, rng.step)
			got := runQuery(t, engine, s, context.Background(), tc.pushed, rng.from, rng.to, rng.step)
			require.Equal(t, len(want), len(got), "%s %v", tc.pushed, rng)
			for i := range want {
				require.Equal(t, want[i].Metric, got[i].Metric)
				require.Equal(t, len(want[i].Floats), len(got[i].Floats), "%s %s", tc.pushed, want[i].Metric)
				for j, w := range want[i].Floats {
					g := got[i].Floats[j]
					require.Equal(t, w.T, g.T)
					// The engine extrapolates over the window's first
					// millisecond for each series or for their sum: the
					// results differ below 1e-6 of the value.
					require.InDelta(t, w.F, g.F, 1e-6*math.Max(1, math.Abs(w.F)), "%s %s at %d", tc.pushed, want[i].Metric, w.T)
					checked++
				}
			}
		}
	}
	require.Greater(t, checked, race.Pick(5000, 2000))
}

// skipUnderRace says whether the race run leaves out the pair (query i,
// range j) of a test that checks every pair: it runs every other pair,
// each query and each range still among them, for the PromQL engine
// runs up to ten times slower under -race. The plain run checks all.
func skipUnderRace(i, j int) bool {
	return race.Enabled && (i+j)%2 == 1
}

// runQuery runs an instant (step 0, at to) or range query and returns its
// series sorted by labels.
func runQuery(t *testing.T, engine *promql.Engine, s storage.Queryable, ctx context.Context, q string, from, to int64, step time.Duration) promql.Matrix {
	t.Helper()
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
			out = append(out, promql.Series{Metric: sr.Metric, Floats: slices.Clone(sr.Floats)})
		}
	case promql.Vector:
		for _, smp := range v {
			out = append(out, promql.Series{Metric: smp.Metric, Floats: []promql.FPoint{{T: smp.T, F: smp.F}}})
		}
	}
	slices.SortFunc(out, func(a, b promql.Series) int { return labels.Compare(a.Metric, b.Metric) })
	return out
}

// requireSameResults compares two query results within relative tolerance
// tol and returns the points compared.
func requireSameResults(t *testing.T, want, got promql.Matrix, tol float64, msg string) int {
	t.Helper()
	require.Equal(t, len(want), len(got), msg)
	n := 0
	for i := range want {
		require.Equal(t, want[i].Metric, got[i].Metric, msg)
		require.Equal(t, len(want[i].Floats), len(got[i].Floats), "%s %s", msg, want[i].Metric)
		for j, w := range want[i].Floats {
			g := got[i].Floats[j]
			require.Equal(t, w.T, g.T, msg)
			require.InDelta(t, w.F, g.F, tol*math.Max(1, math.Abs(w.F)), "%s %s at %d", msg, want[i].Metric, w.T)
			n++
		}
	}
	return n
}

// TestSumPushdownDeclines: series that are not increments, or of several
// names, are answered series by series, with the marker ignored.
func TestSumPushdownDeclines(t *testing.T) {
	db, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	require.NoError(t, err)
	defer db.Close()
	s := db.Series()
	app := s.Appender(context.Background())
	for i := range 20 {
		_, err := app.Append(0, labels.FromStrings("__name__", "c_total", "g", "a", "i", fmt.Sprint(i%2)), int64(i)*15000, float64(i*(i%7))) // resets
		require.NoError(t, err)
	}
	require.NoError(t, app.Commit())
	require.NoError(t, s.AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
		return add(labels.FromStrings("__name__", "d_total", "g", "a"), 60000, 5)
	}))
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1_000_000, Timeout: 30 * time.Minute, Parser: parser.NewParser(parser.Options{})})
	m := pebblestore.SumPushdownMatcher(false, []string{"g"})
	for _, pair := range [][2]string{
		{fmt.Sprintf(`sum by (g) (increase(c_total{%s=%q}[5m]))`, m.Name, m.Value), `sum by (g) (increase(c_total[5m]))`},
		{fmt.Sprintf(`sum by (g) (increase({__name__=~"[cd]_total",%s=%q}[5m]))`, m.Name, m.Value), `sum by (g) (increase({__name__=~"[cd]_total"}[5m]))`},
	} {
		var vals [2]float64
		for k, q := range pair {
			qry, err := engine.NewInstantQuery(context.Background(), s, nil, q, time.UnixMilli(5*60000))
			require.NoError(t, err)
			res := qry.Exec(context.Background())
			require.NoError(t, res.Err)
			v, err := res.Vector()
			require.NoError(t, err)
			require.Len(t, v, 1, q)
			vals[k] = v[0].F
			qry.Close()
		}
		require.Equal(t, vals[1], vals[0], pair[0])
	}
	var _ storage.Queryable = s
}

// TestSubqueryWindows: a selector inside a subquery is evaluated on the
// subquery's grid (multiples of its step, less the selector's offset),
// which the engine's hints do not give; the store places its windows
// there, so increase() inside a subquery is exact, with or without the
// sum pushdown, at any outer time, as computed here from the increments.
func TestSubqueryWindows(t *testing.T) {
	db, err := pebblestore.Open(t.TempDir(), pebblestore.Options{Series: pebblestore.SeriesOptions{IncrementInterval: 15 * time.Second}})
	require.NoError(t, err)
	defer db.Close()
	s := db.Series()
	const iv = int64(15000)
	end := int64(1_800_000_000_000) / 3600000 * 3600000
	start := end - 6*3600000
	rnd := rand.New(rand.NewPCG(4, 2))
	type inc struct {
		t int64
		v float64
	}
	var incs [3][]inc
	require.NoError(t, s.AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
		for t := start + iv; t <= end; t += iv {
			for i := range incs {
				if rnd.IntN(4) == 0 {
					continue
				}
				v := float64(1 + rnd.IntN(9))
				incs[i] = append(incs[i], inc{t, v})
				if err := add(labels.FromStrings("__name__", "x_total", "i", fmt.Sprint(i)), t, v); err != nil {
					return err
				}
			}
		}
		return nil
	}))
	// sumIn is the increments of the series in (from, to].
	sumIn := func(series []int, from, to int64) float64 {
		var n float64
		for _, i := range series {
			for _, x := range incs[i] {
				if x.t > from && x.t <= to {
					n += x.v
				}
			}
		}
		return n
	}
	p := parser.NewParser(parser.Options{})
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 50_000_000, Timeout: time.Minute, Parser: p})
	checked := 0
	for _, tc := range []struct {
		q              string
		bySeries       bool
		window, offset int64
	}{
		{`max_over_time(sum(increase(x_total[5m]))[1h:7m])`, false, 300000, 0},
		{`max_over_time((sum by (i) (increase(x_total[10m] offset 3m)))[50m:4m])`, true, 600000, 180000},
		{`max_over_time(sum(increase(x_total[5m]) * 1)[1h:7m])`, false, 300000, 0}, // no pushdown: series by series
	} {
		expr, err := p.ParseExpr(tc.q)
		require.NoError(t, err)
		require.True(t, s.PushDown(expr), "the selector is marked")
		sub := unparenSubquery(t, p, tc.q)
		step, rng := sub.Step.Milliseconds(), sub.Range.Milliseconds()
		for _, at := range []int64{end - 1234, end - 3600000 - 77777, end - 2*3600000} {
			got := runQuery(t, engine, s, context.Background(), expr.String(), 0, at, 0)
			groups := [][]int{{0, 1, 2}}
			if tc.bySeries {
				groups = [][]int{{0}, {1}, {2}}
			}
			require.Len(t, got, len(groups), "%s at %d", tc.q, at)
			for gi, g := range groups {
				// The subquery evaluates at the multiples of its step in
				// (at − range, at]: the maximum of the exact increases.
				want := math.Inf(-1)
				for e := (at - rng) / step * step; e <= at; e += step {
					if e > at-rng {
						want = math.Max(want, sumIn(g, e-tc.offset-tc.window, e-tc.offset))
					}
				}
				require.InDelta(t, want, got[gi].Floats[0].F, want*1e-4, "%s at %d, group %v", tc.q, at, g)
				checked++
			}
		}
	}
	require.Equal(t, 15, checked)
}

// unparenSubquery returns the subquery that is the argument of q's outer
// function.
func unparenSubquery(t *testing.T, p parser.Parser, q string) *parser.SubqueryExpr {
	t.Helper()
	e, err := p.ParseExpr(q)
	require.NoError(t, err)
	sq, ok := e.(*parser.Call).Args[0].(*parser.SubqueryExpr)
	require.True(t, ok)
	return sq
}
