package pebblestore

import (
	"context"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/stretchr/testify/require"
)

func openStore(t *testing.T, dir string) (*DB, *SeriesStore) {
	t.Helper()
	db, err := Open(dir, Options{Series: SeriesOptions{OutOfOrderWindow: time.Hour}})
	require.NoError(t, err)
	return db, db.Series()
}

type point struct {
	T int64
	V float64
}

// read returns the samples of every series matching ms in [mint, maxt].
func read(t *testing.T, s *SeriesStore, mint, maxt int64, ms ...*labels.Matcher) map[string][]point {
	t.Helper()
	q, err := s.Querier(mint, maxt)
	require.NoError(t, err)
	defer func() { require.NoError(t, q.Close()) }()
	ss := q.Select(context.Background(), true, nil, ms...)
	out := map[string][]point{}
	for ss.Next() {
		series := ss.At()
		it := series.Iterator(nil)
		var pts []point
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			require.Equal(t, chunkenc.ValFloat, vt)
			ts, v := it.At()
			pts = append(pts, point{ts, v})
		}
		require.NoError(t, it.Err())
		out[series.Labels().String()] = pts
	}
	require.NoError(t, ss.Err())
	return out
}

func eq(name, value string) *labels.Matcher {
	return labels.MustNewMatcher(labels.MatchEqual, name, value)
}

const h = int64(time.Hour / time.Millisecond)

func TestAppendOrderAndRules(t *testing.T) {
	db, s := openStore(t, t.TempDir())
	defer db.Close()
	ls := labels.FromStrings("__name__", "m", "job", "a")
	app := s.AppenderV2(context.Background())
	for i := range 10 {
		_, err := app.Append(0, ls, 0, 3*h+int64(i)*60000, float64(i), nil, nil, storage.AppendV2Options{})
		require.NoError(t, err)
	}
	require.NoError(t, app.Commit())
	require.Error(t, app.Commit(), "an appender commits once")

	app = s.AppenderV2(context.Background())
	newest := 3*h + 9*60000
	// Exact duplicate: accepted, no change. Different value: refused.
	_, err := app.Append(0, ls, 0, newest, 9, nil, nil, storage.AppendV2Options{})
	require.NoError(t, err)
	_, err = app.Append(0, ls, 0, newest, 99, nil, nil, storage.AppendV2Options{})
	require.ErrorIs(t, err, storage.ErrDuplicateSampleForTimestamp)
	// Out of order within the window: accepted, between two others.
	_, err = app.Append(0, ls, 0, 3*h+30000, 0.5, nil, nil, storage.AppendV2Options{})
	require.NoError(t, err)
	// ... and in an older window, still within an hour of the newest.
	_, err = app.Append(0, ls, 0, 3*h-1, -1, nil, nil, storage.AppendV2Options{})
	require.NoError(t, err)
	// A conflict with a committed out-of-order sample.
	_, err = app.Append(0, ls, 0, 3*h+60000, 7, nil, nil, storage.AppendV2Options{})
	require.ErrorIs(t, err, storage.ErrDuplicateSampleForTimestamp)
	// Too old: more than the window before the newest.
	_, err = app.Append(0, ls, 0, newest-h-1, 1, nil, nil, storage.AppendV2Options{})
	require.ErrorIs(t, err, storage.ErrTooOldSample)
	require.NoError(t, app.Commit())

	got := read(t, s, math.MinInt64, math.MaxInt64, eq("job", "a"))[ls.String()]
	require.Len(t, got, 12)
	require.Equal(t, point{3*h - 1, -1}, got[0])
	require.Equal(t, point{3 * h, 0}, got[1])
	require.Equal(t, point{3*h + 30000, 0.5}, got[2])
	require.Equal(t, point{newest, 9}, got[11])

	// A time range reads only its part.
	got = read(t, s, 3*h+60000, 3*h+120000, eq("job", "a"))[ls.String()]
	require.Equal(t, []point{{3*h + 60000, 1}, {3*h + 120000, 2}}, got)
	require.NoError(t, app.Rollback())
}

// TestIncrements: increments at one time add up, late ones land in their
// windows, and reads give the running sum, whatever the order of arrival.
func TestIncrements(t *testing.T) {
	dir := t.TempDir()
	db, s := openStore(t, dir)
	ls := labels.FromStrings("__name__", "proxy_requests_total", "source", "x")
	inc := func(ts int64, v float64) {
		app := s.newAppender()
		require.NoError(t, app.AppendIncrement(ls, ts, v))
		require.NoError(t, app.Commit())
	}
	inc(10*h, 1)
	inc(10*h, 2)          // same interval, later arrival
	inc(10*h+15000, 4)    // next interval
	inc(2*h, 10)          // eight hours late, another window
	inc(9*h+59*60000, 20) // late, the window before
	const iv = 15000
	got := read(t, s, math.MinInt64, math.MaxInt64, eq("source", "x"))[ls.String()]
	require.Equal(t, []point{{2 * h, 10}, {9*h + 59*60000, 30}, {10 * h, 33}, {10*h + iv, 37}}, got)
	// A range in the middle still counts everything before it.
	got = read(t, s, 10*h, 11*h, eq("source", "x"))[ls.String()]
	require.Equal(t, []point{{10 * h, 33}, {10*h + iv, 37}}, got)

	// A KindSamples appender refuses an increment series and back.
	_, err := s.AppenderV2(context.Background()).Append(0, ls, 0, 11*h, 1, nil, nil, storage.AppendV2Options{})
	require.Error(t, err)
	g := labels.FromStrings("__name__", "g")
	sa := s.AppenderV2(context.Background())
	_, err = sa.Append(0, g, 0, 1, 1, nil, nil, storage.AppendV2Options{})
	require.NoError(t, err)
	require.NoError(t, sa.Commit())
	require.Error(t, s.newAppender().AppendIncrement(g, 2, 1))
	require.NoError(t, db.Close())

	// After a restart the series and its head are back.
	db, s = openStore(t, dir)
	defer db.Close()
	inc(10*h+30000, 5)
	got = read(t, s, 10*h, 11*h, eq("source", "x"))[ls.String()]
	require.Equal(t, []point{{10 * h, 33}, {10*h + iv, 37}, {10*h + 30000, 42}}, got)
	require.Equal(t, 2, s.NumSeries())
}

// TestIncrementBases: increments over ten days arrive in random batches, late
// and early mixed, across a restart; a read starting anywhere returns the
// same counter as a read from the series' start, because each window's
// base is kept up to date.
func TestIncrementBases(t *testing.T) {
	dir := t.TempDir()
	db, s := openStore(t, dir)
	ls := labels.FromStrings("__name__", "c")
	rnd := rand.New(rand.NewPCG(3, 4))
	const span = 10 * 24 * h
	type inc struct {
		t int64
		v float64
	}
	var incs []inc
	for range 5000 {
		incs = append(incs, inc{rnd.Int64N(span/15000) * 15000, float64(rnd.IntN(4))}) // zeros too
	}
	for i := 0; i < len(incs); {
		n := min(len(incs)-i, 1+rnd.IntN(400))
		app := s.newAppender()
		for _, x := range incs[i : i+n] {
			require.NoError(t, app.AppendIncrement(ls, x.t, x.v))
		}
		require.NoError(t, app.Commit())
		i += n
		if i > len(incs)/2 && i-n <= len(incs)/2 { // restart halfway
			require.NoError(t, db.Close())
			db, s = openStore(t, dir)
		}
	}
	defer db.Close()
	// Then two days of live traffic: in order, an increment a cut.
	for ts := int64(span); ts < span+2*24*h; ts += 15000 * int64(1+rnd.IntN(40)) {
		x := inc{ts, float64(1 + rnd.IntN(3))}
		incs = append(incs, x)
		app := s.newAppender()
		require.NoError(t, app.AppendIncrement(ls, x.t, x.v))
		require.NoError(t, app.Commit())
	}
	// The counter at each increment time.
	byT := map[int64]float64{}
	for _, x := range incs {
		byT[x.t] += x.v
	}
	times := slices.Sorted(maps.Keys(byT))
	want := map[int64]float64{}
	var sum float64
	for _, ts := range times {
		sum += byT[ts]
		want[ts] = sum
	}
	full := read(t, s, math.MinInt64, math.MaxInt64)[ls.String()]
	require.Len(t, full, len(times))
	for _, p := range full {
		require.InDelta(t, want[p.T], p.V, 1e-9, "at %d", p.T)
	}
	for range 50 {
		mint := rnd.Int64N(span+2*24*h+4*h) - 2*h
		got := read(t, s, mint, math.MaxInt64)[ls.String()]
		for _, p := range got {
			require.GreaterOrEqual(t, p.T, mint)
			require.InDelta(t, want[p.T], p.V, 1e-9, "at %d reading from %d", p.T, mint)
		}
		require.Len(t, got, len(times)-sort.Search(len(times), func(i int) bool { return times[i] >= mint }))
	}
}

func TestMatchersAndLabels(t *testing.T) {
	db, s := openStore(t, t.TempDir())
	defer db.Close()
	app := s.AppenderV2(context.Background())
	for _, ls := range []labels.Labels{
		labels.FromStrings("__name__", "up", "job", "api", "env", "prod"),
		labels.FromStrings("__name__", "up", "job", "api", "env", "dev"),
		labels.FromStrings("__name__", "up", "job", "db"),
		labels.FromStrings("__name__", "down", "job", "db", "env", "prod"),
	} {
		_, err := app.Append(0, ls, 0, 1000, 1, nil, nil, storage.AppendV2Options{})
		require.NoError(t, err)
	}
	require.NoError(t, app.Commit())
	count := func(ms ...*labels.Matcher) int { return len(read(t, s, 0, 2000, ms...)) }
	re := func(n, v string) *labels.Matcher { return labels.MustNewMatcher(labels.MatchRegexp, n, v) }
	ne := func(n, v string) *labels.Matcher { return labels.MustNewMatcher(labels.MatchNotEqual, n, v) }
	nre := func(n, v string) *labels.Matcher { return labels.MustNewMatcher(labels.MatchNotRegexp, n, v) }
	require.Equal(t, 3, count(eq("__name__", "up")))
	require.Equal(t, 2, count(eq("__name__", "up"), eq("job", "api")))
	require.Equal(t, 1, count(eq("__name__", "up"), eq("env", "")), "env=\"\" selects series without env")
	require.Equal(t, 2, count(eq("__name__", "up"), ne("env", "prod")), "absent env differs from prod")
	require.Equal(t, 2, count(re("env", "pr.*")))
	require.Equal(t, 4, count(re("job", ".*")))
	require.Equal(t, 1, count(eq("__name__", "up"), nre("env", ".+")))
	require.Equal(t, 0, count(eq("__name__", "none")))
	require.Equal(t, 0, count(eq("__name__", "up"), eq("job", "none")))

	q, err := s.Querier(0, 2000)
	require.NoError(t, err)
	defer q.Close()
	ctx := context.Background()
	names, _, err := q.LabelNames(ctx, nil)
	require.NoError(t, err)
	require.Equal(t, []string{"__name__", "env", "job"}, names)
	names, _, err = q.LabelNames(ctx, nil, eq("job", "db"), eq("__name__", "up"))
	require.NoError(t, err)
	require.Equal(t, []string{"__name__", "job"}, names)
	vals, _, err := q.LabelValues(ctx, "env", nil)
	require.NoError(t, err)
	require.Equal(t, []string{"dev", "prod"}, vals)
	vals, _, err = q.LabelValues(ctx, "job", &storage.LabelHints{Limit: 1}, eq("env", "prod"))
	require.NoError(t, err)
	require.Equal(t, []string{"api"}, vals)
	ss := q.Select(ctx, true, &storage.SelectHints{Start: 0, End: 2000, Limit: 2}, eq("__name__", "up"))
	n := 0
	for ss.Next() {
		n++
	}
	require.Equal(t, 2, n)
	cq, err := s.ChunkQuerier(0, 2000)
	require.NoError(t, err)
	cs := cq.Select(ctx, true, nil, eq("job", "api"))
	n = 0
	for cs.Next() {
		n++
	}
	require.Equal(t, 2, n)
	require.NoError(t, cq.Close())
}

// TestConcurrentAppenders: appenders committing to the same series and
// windows at the same time lose nothing.
func TestConcurrentAppenders(t *testing.T) {
	db, s := openStore(t, t.TempDir())
	defer db.Close()
	ls := labels.FromStrings("__name__", "c")
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 50 {
				app := s.newAppender()
				require.NoError(t, app.AppendIncrement(ls, int64(i%5)*15000, 1))
				require.NoError(t, app.AppendIncrement(ls, int64(g)*h, 1))
				require.NoError(t, app.Commit())
			}
		})
	}
	wg.Wait()
	got := read(t, s, math.MinInt64, math.MaxInt64, eq("__name__", "c"))[ls.String()]
	require.Equal(t, 400.0, got[len(got)-1].V)
	require.Len(t, got, 8, "one point for each distinct time")
}

// TestHistogramsAndMixedTypes: a window holding floats then histograms
// keeps both, and histograms come back equal.
func TestHistogramsAndMixedTypes(t *testing.T) {
	db, s := openStore(t, t.TempDir())
	defer db.Close()
	ls := labels.FromStrings("__name__", "mixed")
	hist := &histogram.Histogram{Count: 3, Sum: 4.5, Schema: 0, PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []int64{1, 1}}
	app := s.AppenderV2(context.Background())
	_, err := app.Append(0, ls, 0, 1000, 1, nil, nil, storage.AppendV2Options{})
	require.NoError(t, err)
	_, err = app.Append(0, ls, 0, 2000, 0, hist, nil, storage.AppendV2Options{})
	require.NoError(t, err)
	_, err = app.Append(0, ls, 0, 3000, 0, nil, hist.ToFloat(nil), storage.AppendV2Options{})
	require.NoError(t, err)
	require.NoError(t, app.Commit())
	// An out-of-order float rewrites the window, types and all.
	app = s.AppenderV2(context.Background())
	_, err = app.Append(0, ls, 0, 1500, 2, nil, nil, storage.AppendV2Options{})
	require.NoError(t, err)
	require.NoError(t, app.Commit())

	q, err := s.Querier(0, 5000)
	require.NoError(t, err)
	defer q.Close()
	ss := q.Select(context.Background(), true, nil, eq("__name__", "mixed"))
	require.True(t, ss.Next())
	it := ss.At().Iterator(nil)
	var types []chunkenc.ValueType
	for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
		types = append(types, vt)
		if vt == chunkenc.ValHistogram {
			_, got := it.AtHistogram(nil)
			require.Equal(t, hist.Count, got.Count)
			require.Equal(t, hist.Sum, got.Sum)
		}
	}
	require.Equal(t, []chunkenc.ValueType{chunkenc.ValFloat, chunkenc.ValFloat, chunkenc.ValHistogram, chunkenc.ValFloatHistogram}, types)
	require.Equal(t, chunkenc.ValNone, it.Seek(10000))
}
