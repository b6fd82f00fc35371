package pebblestore

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/otelanalytics"
)

var errCrash = errors.New("crash")

// history is n records whose end times spread over the 30 days before t0.
func history(n int, seed uint64) []otelanalytics.Record {
	return requests(n, seed, t0.Add(-30*24*time.Hour), 30*24*time.Hour/time.Duration(n))
}

// openPieced opens a store with the series feed on and tiny cut pieces,
// so that a cut of a few thousand records takes dozens of pieces.
func openPieced(t *testing.T, dir string) *env {
	t.Helper()
	db, err := Open(dir, Options{Now: func() time.Time { return t0 }, Series: SeriesOptions{Feed: true, Now: func() time.Time { return t0 }}})
	require.NoError(t, err)
	db.pieces = pieceLimits{stageBytes: 4 << 10, samples: 200, series: 20}
	e := &env{db: db, dict: otelanalytics.NewDict(0), agg: otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, 15*time.Second, nil)}
	e.next, err = otelanalytics.Restore(db, e.dict, e.agg)
	require.NoError(t, err)
	return e
}

// seriesState is what the store answers for every series: the counter's
// value at its newest point and the number of points, and what the series
// feed carried for it in all.
type seriesState struct {
	last   float64
	points int
	feed   float64
}

func storedSeries(t *testing.T, db *DB) map[string]seriesState {
	t.Helper()
	out := map[string]seriesState{}
	q, err := db.Series().Querier(math.MinInt64, math.MaxInt64)
	require.NoError(t, err)
	ss := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	for ss.Next() {
		s := ss.At()
		var st seriesState
		it := s.Iterator(nil)
		for it.Next() == chunkenc.ValFloat {
			_, st.last = it.At()
			st.points++
		}
		require.NoError(t, it.Err())
		out[s.Labels().String()] = st
	}
	require.NoError(t, ss.Err())
	require.NoError(t, q.Close())
	pos := FeedPosition{Seq: 1}
	for {
		r, err := db.Series().ReadFeed(pos, 1<<20)
		require.NoError(t, err)
		if r.Samples == 0 {
			break
		}
		for _, fs := range r.Series {
			st := out[fs.Labels.String()]
			for _, smp := range fs.Samples {
				st.feed += smp.F
			}
			out[fs.Labels.String()] = st
		}
		pos = r.Next
	}
	return out
}

// reference writes the same batches as the crash tests, with no crash.
func reference(t *testing.T, batches [][]otelanalytics.Record) map[string]seriesState {
	t.Helper()
	e := openPieced(t, t.TempDir())
	defer func() { require.NoError(t, e.db.Close()) }()
	for _, b := range batches {
		e.commit(t, b, nil, 1)
	}
	e.cut(t)
	return storedSeries(t, e.db)
}

func requireSameSeries(t *testing.T, want, got map[string]seriesState) {
	t.Helper()
	require.Len(t, got, len(want))
	for ls, w := range want {
		g, ok := got[ls]
		require.True(t, ok, "series %s missing", ls)
		require.Equal(t, w.points, g.points, "points of %s", ls)
		require.InDelta(t, w.last, g.last, 1e-9*math.Abs(w.last), "counter of %s", ls)
		require.InDelta(t, w.feed, g.feed, 1e-9*math.Abs(w.feed), "feed of %s", ls)
	}
}

// TestCutPiecesCrash kills a cut of 30 days of history between two of its
// pieces, and while it stages: after the restart every series answers
// exactly what the same spans give without a crash, and the series feed
// carried every increment once.
func TestCutPiecesCrash(t *testing.T) {
	batches := [][]otelanalytics.Record{history(1500, 11), history(1500, 12)}
	want := reference(t, batches)
	var n float64
	for ls, st := range want {
		if strings.HasPrefix(ls, `{__name__="proxy_requests_total",`) {
			n += st.last
		}
	}
	require.Equal(t, 3000.0, n, "every span counted")
	require.Greater(t, len(want), 200, "enough series for many pieces")

	for _, tc := range []struct {
		name   string
		failAt int // the piece that fails; 0: a staging batch
	}{
		{"while staging", 0},
		{"after the first piece", 2},
		{"in the middle", 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			e := openPieced(t, dir)
			for _, b := range batches {
				e.commit(t, b, nil, 1)
			}
			pieces := 0
			e.db.pieces.fail = func(n int) error {
				if n > 0 {
					pieces = n
				}
				if n == tc.failAt {
					return errCrash
				}
				return nil
			}
			sealed, err := e.db.Seal()
			require.NoError(t, err)
			err = e.db.WriteCut(sealed, otelanalytics.NewStoreCut(e.agg.Cut(), e.dict, nil, e.next-1))
			if tc.failAt == 0 {
				require.ErrorIs(t, err, errCrash, "a cut that fails before its checkpoint fails")
			} else {
				require.NoError(t, err, "a cut past its checkpoint is written, the rest staged")
				require.Equal(t, tc.failAt, pieces)
				pending, err := e.db.stagedPending()
				require.NoError(t, err)
				require.True(t, pending)
			}
			require.NoError(t, e.db.Close()) // the crash: nothing more is written

			e2 := openPieced(t, dir)
			defer func() { require.NoError(t, e2.db.Close()) }()
			require.Equal(t, tc.failAt == 0, e2.db.Replayed(), "the journal is replayed only if the checkpoint was not written")
			if e2.db.Replayed() {
				e2.cut(t)
			}
			pending, err := e2.db.stagedPending()
			require.NoError(t, err)
			require.False(t, pending)
			requireSameSeries(t, want, storedSeries(t, e2.db))
			// And the totals the aggregator restarts from.
			var sum float64
			for _, v := range totals(e2.agg, otelanalytics.FamilyRequests, e2.dict) {
				sum += v[0]
			}
			require.Equal(t, 3000.0, sum)
		})
	}
}

// TestCutPiecesRetried: a piece that fails in a running process is
// applied by the next cut, before that cut's own samples.
func TestCutPiecesRetried(t *testing.T) {
	batches := [][]otelanalytics.Record{history(1500, 21), history(1500, 22)}
	want := reference(t, batches)

	e := openPieced(t, t.TempDir())
	defer func() { require.NoError(t, e.db.Close()) }()
	e.commit(t, batches[0], nil, 1)
	e.db.pieces.fail = func(n int) error {
		if n == 3 {
			return errCrash
		}
		return nil
	}
	e.cut(t)
	e.db.pieces.fail = nil
	e.commit(t, batches[1], nil, 1)
	e.cut(t)
	requireSameSeries(t, want, storedSeries(t, e.db))
}

// TestQueryMidCutWaits: a query whose snapshot falls between two pieces
// of a cut waits for the rest and answers the whole cut, never half of it.
func TestQueryMidCutWaits(t *testing.T) {
	batches := [][]otelanalytics.Record{history(1500, 31)}
	want := reference(t, batches)

	e := openPieced(t, t.TempDir())
	defer func() { require.NoError(t, e.db.Close()) }()
	e.commit(t, batches[0], nil, 1)
	saw := make(chan struct{})
	e.db.series.sawMidCut = func() { close(saw) }
	got := make(chan map[string]seriesState, 1)
	e.db.pieces.fail = func(n int) error {
		if n != 3 {
			return nil
		}
		// Pieces 1 and 2 are written, the rest not: a query now.
		go func() { got <- storedSeries(t, e.db) }()
		select {
		case <-saw: // it saw the cut half written, and waits for the rest
			return nil
		case r := <-got:
			t.Error("the query answered from a cut half written")
			got <- r
			return nil
		}
	}
	e.cut(t)
	requireSameSeries(t, want, <-got)
}

// TestLiveCutWhole: a cut whose samples are all recent and fit in memory
// (a live cut) is written in one batch with its checkpoint, staging
// nothing, and stores what the same spans give through the pieces.
func TestLiveCutWhole(t *testing.T) {
	batches := [][]otelanalytics.Record{requests(300, 21, t0.Add(-10*time.Minute), time.Second)}
	want := reference(t, batches) // tiny stage batches: staged and applied in pieces
	e := openPieced(t, t.TempDir())
	defer func() { require.NoError(t, e.db.Close()) }()
	e.db.pieces.stageBytes = 8 << 20
	calls := 0
	e.db.pieces.fail = func(int) error { calls++; return nil }
	for _, b := range batches {
		e.commit(t, b, nil, 1)
	}
	e.cut(t)
	require.Zero(t, calls, "nothing staged, no piece")
	pending, err := e.db.stagedPending()
	require.NoError(t, err)
	require.False(t, pending)
	requireSameSeries(t, want, storedSeries(t, e.db))

	// The same spans an hour and a half older than the store's clock are
	// history: staged and applied in pieces.
	e2 := openPieced(t, t.TempDir())
	defer func() { require.NoError(t, e2.db.Close()) }()
	e2.db.pieces.stageBytes = 8 << 20
	calls = 0
	e2.db.pieces.fail = func(int) error { calls++; return nil }
	e2.commit(t, requests(300, 21, t0.Add(-90*time.Minute), time.Second), nil, 1)
	e2.cut(t)
	require.Positive(t, calls, "staged")
}
