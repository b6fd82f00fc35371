package pebblestore

import (
	"cmp"
	"context"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
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

func TestSeekAndWindows(t *testing.T) {
	db, s := openStore(t, t.TempDir())
	defer db.Close()
	ls := labels.FromStrings("__name__", "w")
	app := s.AppenderV2(context.Background())
	// Negative times and several windows.
	for ts := -3 * h; ts <= 5*h; ts += h / 2 {
		_, err := app.Append(0, ls, 0, ts, float64(ts), nil, nil, storage.AppendV2Options{})
		require.NoError(t, err)
	}
	require.NoError(t, app.Commit())
	q, err := s.Querier(math.MinInt64, math.MaxInt64)
	require.NoError(t, err)
	defer q.Close()
	ss := q.Select(context.Background(), true, nil, eq("__name__", "w"))
	require.True(t, ss.Next())
	it := ss.At().Iterator(nil)
	require.Equal(t, chunkenc.ValFloat, it.Seek(-h+1))
	ts, v := it.At()
	require.Equal(t, -h/2, ts)
	require.Equal(t, float64(-h/2), v)
	require.Equal(t, chunkenc.ValFloat, it.Seek(-h), "Seek never goes back")
	require.Equal(t, int64(-h/2), it.AtT())
	require.Equal(t, chunkenc.ValFloat, it.Seek(4*h))
	require.Equal(t, 4*h, it.AtT())
	require.Equal(t, chunkenc.ValNone, it.Seek(6*h))
	require.Equal(t, chunkenc.ValNone, it.Next())
	require.NoError(t, it.Err())
	require.Equal(t, int64(-4*h), windowOf(-3*h-1))
	require.Equal(t, int64(-4*h), windowOf(-4*h))
	require.Equal(t, int64(0), windowOf(1))
}

func TestSeriesErrors(t *testing.T) {
	db, s := openStore(t, t.TempDir())
	defer db.Close()
	app := s.AppenderV2(context.Background())
	_, err := app.Append(0, labels.EmptyLabels(), 0, 1, 1, nil, nil, storage.AppendV2Options{})
	require.Error(t, err)
	require.NoError(t, app.Rollback())
	_, err = app.Append(0, labels.FromStrings("a", "b"), 0, 1, 1, nil, nil, storage.AppendV2Options{})
	require.Error(t, err, "appender used after Rollback")
	start, err := s.StartTime()
	require.NoError(t, err)
	require.Equal(t, int64(math.MinInt64), start)
	require.NoError(t, s.Close())

	q, err := s.Querier(0, 1)
	require.NoError(t, err)
	require.NoError(t, q.Close())
	require.NoError(t, q.Close(), "Close twice")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	q, err = s.Querier(0, 1)
	require.NoError(t, err)
	defer q.Close()
	require.Error(t, q.Select(ctx, true, nil, eq("a", "b")).Err())
	_, _, err = q.LabelNames(ctx, nil)
	require.Error(t, err)
	_, _, err = q.LabelValues(ctx, "a", nil)
	require.Error(t, err)

	// The V1 appender adapter stores samples and ignores the rest.
	v1 := s.Appender(context.Background())
	ls := labels.FromStrings("__name__", "v1")
	_, err = v1.Append(0, ls, 5, 1)
	require.NoError(t, err)
	_, err = v1.AppendHistogram(0, labels.FromStrings("__name__", "v1h"), 6, &histogram.Histogram{Count: 1, Sum: 1, PositiveSpans: []histogram.Span{{Length: 1}}, PositiveBuckets: []int64{1}}, nil)
	require.NoError(t, err)
	_, err = v1.AppendExemplar(0, ls, exemplar.Exemplar{})
	require.NoError(t, err)
	v1.SetOptions(nil)
	require.NoError(t, v1.Commit())
	require.Len(t, read(t, s, 0, 10, eq("__name__", "v1")), 1)
}

// TestTimeFiltering: series, label names and label values answer for the
// series with samples in the querier's range, at the granularity of the
// two-hour windows, as Prometheus answers at the granularity of blocks.
func TestTimeFiltering(t *testing.T) {
	dir := t.TempDir()
	db, s := openStore(t, dir)
	app := s.AppenderV2(context.Background())
	old := labels.FromStrings("__name__", "m", "job", "old", "only_old", "x")
	recent := labels.FromStrings("__name__", "m", "job", "recent")
	for _, x := range []struct {
		ls labels.Labels
		t  int64
	}{{old, h}, {old, 3 * h}, {recent, 100 * h}} {
		_, err := app.Append(0, x.ls, 0, x.t, 1, nil, nil, storage.AppendV2Options{})
		require.NoError(t, err)
	}
	require.NoError(t, app.Commit())
	require.NoError(t, s.AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
		return add(labels.FromStrings("__name__", "inc", "job", "late"), 50*h, 1)
	}))
	check := func(s *SeriesStore) {
		for _, tc := range []struct {
			mint, maxt int64
			jobs       []string
			names      []string
		}{
			{math.MinInt64, math.MaxInt64, []string{"late", "old", "recent"}, []string{"__name__", "job", "only_old"}},
			{90 * h, 110 * h, []string{"recent"}, []string{"__name__", "job"}},
			{0, 2 * h, []string{"old"}, []string{"__name__", "job", "only_old"}},
			{5 * h, 6 * h, nil, nil},
			{49 * h, 50 * h, []string{"late"}, []string{"__name__", "job"}},
		} {
			q, err := s.Querier(tc.mint, tc.maxt)
			require.NoError(t, err)
			vals, _, err := q.LabelValues(context.Background(), "job", nil)
			require.NoError(t, err)
			require.Equal(t, tc.jobs, vals, "%d–%d", tc.mint, tc.maxt)
			vals, _, err = q.LabelValues(context.Background(), "job", nil, labels.MustNewMatcher(labels.MatchRegexp, "job", ".+"))
			require.NoError(t, err)
			require.Equal(t, tc.jobs, vals)
			names, _, err := q.LabelNames(context.Background(), nil)
			require.NoError(t, err)
			require.Equal(t, tc.names, names)
			ss := q.Select(context.Background(), true, &storage.SelectHints{Start: tc.mint, End: tc.maxt, Func: "series"}, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
			n := 0
			for ss.Next() {
				n++
			}
			require.Equal(t, len(tc.jobs), n)
			require.NoError(t, q.Close())
		}
	}
	check(s)
	require.NoError(t, db.Close())
	db, s = openStore(t, dir) // the windows are known again after a restart
	defer db.Close()
	check(s)
}

func TestMetadata(t *testing.T) {
	dir := t.TempDir()
	db, s := openStore(t, dir)
	require.Empty(t, s.Metadata())
	require.NoError(t, s.SetMetadata(map[string]metadata.Metadata{
		"up":                {Type: "gauge", Help: "Up."},
		"http_requests":     {Type: "counter", Help: "Requests.", Unit: "requests"},
		"":                  {Type: "gauge"}, // ignored
		"no_change_written": {},              // empty: nothing to write
	}))
	require.NoError(t, s.SetMetadata(map[string]metadata.Metadata{"up": {Type: "gauge", Help: "Up."}})) // unchanged
	require.NoError(t, db.Close())
	db, s = openStore(t, dir)
	defer db.Close()
	require.Equal(t, map[string]metadata.Metadata{
		"up":            {Type: "gauge", Help: "Up."},
		"http_requests": {Type: "counter", Help: "Requests.", Unit: "requests"},
	}, s.Metadata())
}

// TestConcurrentCreation: two appenders create the same series; the second
// commit merges into the series the first created, and one of another
// kind is refused with nothing written.
func TestConcurrentCreation(t *testing.T) {
	db, s := openStore(t, t.TempDir())
	defer db.Close()
	ls := labels.FromStrings("__name__", "m")
	a1, a2 := s.AppenderV2(context.Background()), s.AppenderV2(context.Background())
	_, err := a1.Append(0, ls, 0, 1000, 1, nil, nil, storage.AppendV2Options{})
	require.NoError(t, err)
	_, err = a2.Append(0, ls, 0, 2000, 2, nil, nil, storage.AppendV2Options{})
	require.NoError(t, err)
	require.NoError(t, a1.Commit())
	require.NoError(t, a2.Commit())
	require.Equal(t, map[string][]point{ls.String(): {{1000, 1}, {2000, 2}}}, read(t, s, math.MinInt64, math.MaxInt64))
	require.Equal(t, 1, s.NumSeries())

	other := labels.FromStrings("__name__", "n")
	a3 := s.AppenderV2(context.Background())
	_, err = a3.Append(0, other, 0, 1000, 1, nil, nil, storage.AppendV2Options{})
	require.NoError(t, err)
	require.NoError(t, s.AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
		return add(other, 1000, 5)
	}))
	require.ErrorContains(t, a3.Commit(), "another writer created it with samples of another kind")
	require.Equal(t, []point{{1000, 5}}, read(t, s, math.MinInt64, math.MaxInt64, eq("__name__", "n"))[other.String()])

	// A rolled-back appender leaves no series behind.
	a4 := s.AppenderV2(context.Background())
	_, err = a4.Append(0, labels.FromStrings("__name__", "gone"), 0, 1000, 1, nil, nil, storage.AppendV2Options{})
	require.NoError(t, err)
	require.NoError(t, a4.Rollback())
	require.Equal(t, 2, s.NumSeries())
}

// TestAppenderV1: the storage.Appender adapter stores samples and
// histograms, and accepts what it does not store.
func TestAppenderV1(t *testing.T) {
	db, s := openStore(t, t.TempDir())
	defer db.Close()
	app := s.Appender(context.Background())
	ls := labels.FromStrings("__name__", "h")
	ref, err := app.AppendHistogram(0, ls, 1000, &histogram.Histogram{Count: 1, PositiveSpans: []histogram.Span{{Length: 1}}, PositiveBuckets: []int64{1}}, nil)
	require.NoError(t, err)
	_, err = app.AppendHistogramSTZeroSample(ref, ls, 1000, 500, nil, nil)
	require.NoError(t, err)
	_, err = app.AppendSTZeroSample(ref, ls, 1000, 500)
	require.NoError(t, err)
	_, err = app.AppendExemplar(ref, ls, exemplar.Exemplar{})
	require.NoError(t, err)
	_, err = app.UpdateMetadata(ref, ls, metadata.Metadata{})
	require.NoError(t, err)
	app.SetOptions(nil)
	require.NoError(t, app.Commit())
	q, err := s.Querier(0, 2000)
	require.NoError(t, err)
	defer q.Close()
	ss := q.Select(context.Background(), false, nil, eq("__name__", "h"))
	require.True(t, ss.Next())
	it := ss.At().Iterator(nil)
	require.Equal(t, chunkenc.ValHistogram, it.Next())
	_, h := it.AtHistogram(nil)
	require.Equal(t, uint64(1), h.Count)
	require.NoError(t, s.Appender(context.Background()).Rollback())
}

// TestHeadWindowAppends: flushes append to a series' newest window as
// Merge operands, not by rewriting it; the window is written whole again
// every mergeLimit operands, when a batch changes samples already in it,
// and when it closes. Reads see every sample throughout, across a restart.
func TestHeadWindowAppends(t *testing.T) {
	dir := t.TempDir()
	db, s := openStore(t, dir)
	ls := labels.FromStrings("__name__", "proxy_requests_total", "source", "x")
	g := labels.FromStrings("__name__", "gauge")
	const iv = 15000
	var incs, wantG []point // the increments appended; the gauge's samples
	inc := func(ts int64, v float64) {
		t.Helper()
		app := s.newAppender()
		require.NoError(t, app.AppendIncrement(ls, ts, v))
		_, err := app.Append(0, g, 0, ts, -v, nil, nil, storage.AppendV2Options{})
		require.NoError(t, err)
		require.NoError(t, app.Commit())
		incs = append(incs, point{ts, v})
		wantG = append(wantG, point{ts, -v})
	}
	// fragments returns the chunks of a series' stored window: one per
	// Merge operand, after those of its last whole write.
	fragments := func(l labels.Labels, w int64) int {
		t.Helper()
		ms := s.lookup(l, l.Hash())
		v, closer, err := db.db.Get(chunkKey(ms.id, w))
		require.NoError(t, err)
		defer closer.Close()
		chunks, err := decodeWindow(v, nil)
		require.NoError(t, err)
		return len(chunks)
	}
	check := func() {
		t.Helper()
		slices.SortStableFunc(incs, func(a, b point) int { return cmp.Compare(a.T, b.T) })
		var want []point
		sum := 0.0
		for _, p := range incs {
			sum += p.V
			want = append(want, point{p.T, sum})
		}
		require.Equal(t, want, read(t, s, math.MinInt64, math.MaxInt64, eq("source", "x"))[ls.String()])
		require.Equal(t, wantG, read(t, s, math.MinInt64, math.MaxInt64, eq("__name__", "gauge"))[g.String()])
	}

	w := 10 * h
	ts := w
	inc(ts, 1)
	require.Equal(t, 1, fragments(ls, w), "a new window is written whole")
	for i := range 5 {
		ts += iv
		inc(ts, float64(i+2))
	}
	require.Equal(t, 6, fragments(ls, w), "five flushes appended five operands")
	require.Equal(t, 6, fragments(g, w))
	check()

	// A late sample rewrites the window whole.
	late := w + iv/2
	app := s.newAppender()
	require.NoError(t, app.AppendIncrement(ls, late, 100))
	require.NoError(t, app.Commit())
	incs = append(incs, point{late, 100})
	require.Equal(t, 1, fragments(ls, w))
	check()

	// The limit: written whole again after mergeLimit operands.
	id := s.lookup(ls, ls.Hash()).id
	for range mergeLimit(id) {
		ts += iv
		inc(ts, 1)
	}
	require.Equal(t, 1+mergeLimit(id), fragments(ls, w))
	ts += iv
	inc(ts, 1)
	require.Equal(t, 1, fragments(ls, w), "the operand past the limit rewrote the window")
	ts += iv
	inc(ts, 1)
	require.Equal(t, 2, fragments(ls, w))
	check()

	// After a restart appends go on as operands.
	require.NoError(t, db.Close())
	db, s = openStore(t, dir)
	defer db.Close()
	check()
	ts += iv
	inc(ts, 7)
	require.Equal(t, 3, fragments(ls, w))
	check()

	// A flush into the next window closes this one: written whole.
	inc(w+windowMs, 3)
	require.Equal(t, 1, fragments(ls, w))
	require.Equal(t, 1, fragments(ls, w+windowMs))
	check()
}
