package pebblestore_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/pebblestore"
)

// fakeOverlay serves fixed parts.
type fakeOverlay []pebblestore.OverlayPart

func (f fakeOverlay) OverlayView() []pebblestore.OverlayPart { return f }

type ovSeries struct {
	ls labels.Labels
	t  []int64
	v  []float64
}

func part(sealed uint64, series ...ovSeries) pebblestore.OverlayPart {
	return pebblestore.OverlayPart{Sealed: sealed, Series: func(_ []*labels.Matcher, fn func(labels.Labels, []int64, []float64)) {
		for _, s := range series {
			fn(s.ls, s.t, s.v)
		}
	}}
}

// TestOverlayOverStore: the overlay's increments join the stored ones in
// every read path — raw selectors, boundary points, pushed-down sums, the
// series and label lists — also for a series whose stored windows all lie
// before the query range and for one the store has never seen; two parts
// with the same series add up; a sample series ignores increments.
func TestOverlayOverStore(t *testing.T) {
	st := openStore(t, t.TempDir())
	defer func() { require.NoError(t, st.db.Close()) }()
	s := st.db.Series()
	end := int64(1_800_000_000_000) / 3600000 * 3600000
	const m = int64(60000)
	a := labels.FromStrings("__name__", "x_total", "s", "a")
	b := labels.FromStrings("__name__", "x_total", "s", "b")
	y := labels.FromStrings("__name__", "y", "s", "a")
	require.NoError(t, s.AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
		return add(a, end-72*60*m, 5) // three days before: no window in the last hours
	}))
	app := s.AppenderV2(context.Background())
	_, err := app.Append(0, y, 0, end-10*m, 1, nil, nil, storage.AppendV2Options{})
	require.NoError(t, err)
	require.NoError(t, app.Commit())
	s.SetOverlay(fakeOverlay{
		part(0, ovSeries{a, []int64{end - 10*m, end - 5*m}, []float64{2, 1}}, ovSeries{b, []int64{end - 5*m}, []float64{3}},
			ovSeries{y, []int64{end - 5*m}, []float64{100}}),
		part(7, ovSeries{b, []int64{end - 5*m, end - m}, []float64{4, 1}}), // a cut not committed: checkpoint 0
	})

	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1_000_000, Timeout: time.Minute, Parser: parser.NewParser(parser.Options{})})
	ctx := context.Background()
	at := func(q string, ts int64) map[string]float64 {
		out := map[string]float64{}
		for _, sr := range runQuery(t, engine, s, ctx, q, 0, ts, 0) {
			out[sr.Metric.Get("s")] = sr.Floats[0].F
		}
		return out
	}
	pushed := func(q string) string {
		expr, err := parser.NewParser(parser.Options{}).ParseExpr(q)
		require.NoError(t, err)
		require.True(t, s.PushDown(expr))
		return expr.String()
	}
	near := func(want, got map[string]float64) {
		t.Helper()
		require.Len(t, got, len(want))
		for k, w := range want {
			require.InDelta(t, w, got[k], 1e-6*math.Max(1, w), k)
		}
	}

	require.Equal(t, map[string]float64{"a": 8, "b": 8}, at(`last_over_time(x_total[1h])`, end))
	require.Equal(t, map[string]float64{"b": 8}, at(`x_total`, end), "a's newest increment is 5 minutes old: out of the lookback")
	require.Equal(t, map[string]float64{"a": 5}, at(`last_over_time(x_total[1d])`, end-71*60*m), "before the overlay's increments")
	near(map[string]float64{"a": 3, "b": 8}, at(`increase(x_total[1h])`, end))
	near(map[string]float64{"": 11}, at(`sum(increase(x_total[1h]))`, end))
	near(map[string]float64{"": 11}, at(pushed(`sum(increase(x_total[1h]))`), end))
	near(map[string]float64{"a": 3, "b": 8}, at(pushed(`sum by (s) (increase(x_total[1h]))`), end))
	require.Equal(t, map[string]float64{"": 0}, at(`sum(resets(x_total[4d]))`, end))
	require.Equal(t, map[string]float64{"a": 1}, at(`last_over_time(y[1h])`, end), "a sample series takes no increments")

	// The counter over a range, step by step.
	rng := runQuery(t, engine, s, ctx, `x_total{s="a"}`, end-12*m, end, time.Minute)
	require.Len(t, rng, 1)
	var got []float64
	for _, p := range rng[0].Floats {
		got = append(got, p.F)
	}
	// From the first increment on, until the newest leaves the lookback.
	require.Equal(t, []float64{7, 7, 7, 7, 7, 8, 8, 8, 8, 8}, got)
	require.Equal(t, end-10*m, rng[0].Floats[0].T)

	q, err := s.Querier(end-time.Hour.Milliseconds(), end)
	require.NoError(t, err)
	defer func() { require.NoError(t, q.Close()) }()
	vals, _, err := q.LabelValues(ctx, "s", nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "x_total"))
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b"}, vals)
	set := q.Select(ctx, true, &storage.SelectHints{Start: end - time.Hour.Milliseconds(), End: end, Func: "series"}, labels.MustNewMatcher(labels.MatchEqual, "__name__", "x_total"))
	var listed []string
	for set.Next() {
		listed = append(listed, set.At().Labels().String())
	}
	require.NoError(t, set.Err())
	require.Equal(t, []string{a.String(), b.String()}, listed)
	names, _, err := q.LabelNames(ctx, nil)
	require.NoError(t, err)
	require.Equal(t, []string{"__name__", "s"}, names)
}
