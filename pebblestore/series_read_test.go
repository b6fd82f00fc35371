package pebblestore

import (
	"context"
	"math"
	"testing"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/stretchr/testify/require"
)

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
