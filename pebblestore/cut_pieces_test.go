package pebblestore

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/internal/race"
	"github.com/proxylens/proxylens/otelanalytics"
)

var errCrash = errors.New("crash")

// historySize is the records of a batch of history in the cut tests:
// fewer under -race, where Pebble's invariant checks make every
// iterator twenty times dearer, still cut into dozens of pieces.
var historySize = race.Pick(1500, 500)

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
	out := queryState(t, db)
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
	t.Parallel() // among the slowest under -race: CI runs them side by side
	batches := [][]otelanalytics.Record{history(historySize, 11), history(historySize, 12)}
	spans := float64(2 * historySize)
	want := reference(t, batches)
	var n float64
	for ls, st := range want {
		if strings.HasPrefix(ls, `{__name__="proxy_requests_total",`) {
			n += st.last
		}
	}
	require.Equal(t, spans, n, "every span counted")
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
			require.Equal(t, spans, sum)
		})
	}
}

// TestCutPiecesRetried: a piece that fails in a running process is
// applied by the next cut, before that cut's own samples.
func TestCutPiecesRetried(t *testing.T) {
	t.Parallel() // among the slowest under -race: CI runs them side by side
	batches := [][]otelanalytics.Record{history(historySize, 21), history(historySize, 22)}
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

// TestQueryMidCutReadsBefore: queries run between every two pieces of a
// cut of history, from inside the cut (a query that waited for the cut
// would hang the test), over a store that already holds an older cut.
// The overlay holds the cut's increments until WriteCut returns, as the
// aggregator does: every answer, through the series iterators and
// through the PromQL engine, equals the answer after the cut, never
// half of it and never the cut counted twice; a series remote-written
// mid-cut is read at once.
func TestQueryMidCutReadsBefore(t *testing.T) {
	t.Parallel() // among the slowest under -race: CI runs them side by side
	e := openPieced(t, t.TempDir())
	defer func() { require.NoError(t, e.db.Close()) }()
	older, newer := history(historySize*2/3, 41), history(historySize, 42)
	e.commit(t, older, nil, 1)
	e.cut(t)
	e.commit(t, newer, nil, 1)
	e.db.pieces.samples, e.db.pieces.series = 8000*historySize/1500, 800*historySize/1500 // about ten pieces

	ov := &cutOverlay{}
	e.db.Series().SetOverlay(ov)
	sealed, err := e.db.Seal()
	require.NoError(t, err)
	c := &recordingCut{Cut: otelanalytics.NewStoreCut(e.agg.Cut(), e.dict, nil, e.next-1), ov: ov, sealed: sealed}

	type answer struct {
		series map[string]seriesState
		promql []float64
	}
	ask := func() answer {
		return answer{queryState(t, e.db), promqlSums(t, e.db)}
	}
	var mid []answer
	rw := labels.FromStrings("__name__", "remote_written", "source", "a")
	e.db.pieces.fail = func(n int) error {
		if n == 0 {
			return nil // staging
		}
		if n == 2 {
			app := e.db.Series().Appender(context.Background())
			_, err := app.Append(0, rw, t0.UnixMilli(), 7)
			require.NoError(t, err)
			require.NoError(t, app.Commit())
		}
		a := ask()
		if n >= 2 {
			require.Equal(t, seriesState{last: 7, points: 1}, a.series[rw.String()], "remote-written mid-cut, read at once")
		}
		delete(a.series, rw.String())
		mid = append(mid, a)
		return nil
	}
	require.NoError(t, e.db.WriteCut(sealed, c))
	ov.set(nil) // cutWritten: the store serves the cut now
	e.db.pieces.fail = nil
	require.Greater(t, len(mid), 5, "queries between many pieces")
	t.Logf("%d pieces", len(mid))

	after := ask()
	delete(after.series, rw.String())
	for i, a := range mid {
		require.Equal(t, len(after.series), len(a.series), "query %d: series", i)
		for ls, w := range after.series {
			g := a.series[ls]
			require.Equal(t, w.points, g.points, "query %d: points of %s", i, ls)
			require.InDelta(t, w.last, g.last, 1e-9*math.Abs(w.last), "query %d: counter of %s", i, ls)
		}
		require.Len(t, a.promql, len(after.promql))
		for j, w := range after.promql {
			require.InDelta(t, w, a.promql[j], 1e-9*math.Abs(w), "query %d: PromQL answer %d", i, j)
		}
	}
	// And the cut is the spans' own: the same as one store given them all
	// in one cut.
	want := reference(t, [][]otelanalytics.Record{older, newer})
	got := storedSeries(t, e.db)
	delete(got, rw.String())
	requireSameSeries(t, want, got)
}

// cutOverlay is the aggregator's overlay as the store sees it while a
// cut is written: the cut's increments, in a part sealed by it.
type cutOverlay struct {
	mu    sync.Mutex
	parts []OverlayPart
}

func (o *cutOverlay) OverlayView() []OverlayPart {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.parts
}

func (o *cutOverlay) set(parts []OverlayPart) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.parts = parts
}

// recordingCut hands over Cut's increments to the overlay as they are
// written, before anything is committed.
type recordingCut struct {
	Cut
	ov     *cutOverlay
	sealed uint64
}

func (c *recordingCut) MinTime() int64 { return c.Cut.(interface{ MinTime() int64 }).MinTime() }

func (c *recordingCut) Write(totals func(key, value []byte) error, increment, sample func(ls labels.Labels, t int64, v float64) error) error {
	type ser struct {
		ls labels.Labels
		at map[int64]float64
	}
	byKey := map[string]*ser{}
	err := c.Cut.Write(totals, func(ls labels.Labels, t int64, v float64) error {
		k := ls.String()
		s := byKey[k]
		if s == nil {
			s = &ser{ls: ls.Copy(), at: map[int64]float64{}}
			byKey[k] = s
		}
		s.at[t] += v
		return increment(ls, t, v)
	}, sample)
	if err != nil {
		return err
	}
	type flat struct {
		ls labels.Labels
		t  []int64
		v  []float64
	}
	var all []flat
	for _, s := range byKey {
		f := flat{ls: s.ls}
		for t := range s.at {
			f.t = append(f.t, t)
		}
		slices.Sort(f.t)
		for _, t := range f.t {
			f.v = append(f.v, s.at[t])
		}
		all = append(all, f)
	}
	c.ov.set([]OverlayPart{{Sealed: c.sealed, Series: func(_ []*labels.Matcher, fn func(labels.Labels, []int64, []float64)) {
		for _, f := range all {
			fn(f.ls, f.t, f.v)
		}
	}}})
	return nil
}

// queryState is what the store's series iterators answer for every
// series: the counter at its newest point and the number of points.
func queryState(t *testing.T, db *DB) map[string]seriesState {
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
	return out
}

var eng = promql.NewEngine(promql.EngineOpts{MaxSamples: 50_000_000, Timeout: time.Minute})

// promqlSums runs dashboard-shaped queries through the PromQL engine:
// daily increases over 30 days (the pushed-down counter reads) and an
// instant 31-day maximum; it returns every value of every answer.
func promqlSums(t *testing.T, db *DB) []float64 {
	t.Helper()
	ctx := context.Background()
	end := t0.Truncate(24 * time.Hour)
	var out []float64
	rq, err := eng.NewRangeQuery(ctx, db.Series(), nil, `sum by (source) (increase(proxy_requests_total[1d]))`, end.Add(-30*24*time.Hour), end, 24*time.Hour)
	require.NoError(t, err)
	res := rq.Exec(ctx)
	require.NoError(t, res.Err)
	m, err := res.Matrix()
	require.NoError(t, err)
	slices.SortFunc(m, func(a, b promql.Series) int { return labels.Compare(a.Metric, b.Metric) })
	for _, s := range m {
		for _, p := range s.Floats {
			out = append(out, p.F)
		}
	}
	rq.Close()
	iq, err := eng.NewInstantQuery(ctx, db.Series(), nil, `sum(max_over_time(proxy_requests_total[31d]))`, t0)
	require.NoError(t, err)
	res = iq.Exec(ctx)
	require.NoError(t, res.Err)
	v, err := res.Vector()
	require.NoError(t, err)
	require.Len(t, v, 1)
	out = append(out, v[0].F)
	iq.Close()
	require.NotEmpty(t, out)
	return out
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
