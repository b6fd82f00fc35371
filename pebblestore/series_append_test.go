package pebblestore

import (
	"cmp"
	"context"
	"math"
	"slices"
	"testing"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/stretchr/testify/require"
)

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
