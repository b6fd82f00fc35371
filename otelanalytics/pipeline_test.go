package otelanalytics_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/internal/traffic"
	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
)

var now = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

type stack struct {
	dir  string
	db   *pebblestore.DB
	dict *otelanalytics.Dict
	agg  *otelanalytics.Aggregator
	s    *otelanalytics.Sampler
	p    *otelanalytics.Pipeline
}

// newStack opens a real store in dir and wires a pipeline over store
// (db itself unless a wrapper is given).
func newStack(t *testing.T, dir string, cfg otelanalytics.PipelineConfig, wrap func(otelanalytics.Store) otelanalytics.Store) *stack {
	return newStackClock(t, dir, cfg, wrap, ticker(time.Millisecond))
}

func newStackClock(t *testing.T, dir string, cfg otelanalytics.PipelineConfig, wrap func(otelanalytics.Store) otelanalytics.Store, clock func() time.Time) *stack {
	t.Helper()
	db, err := pebblestore.Open(dir, pebblestore.Options{})
	require.NoError(t, err)
	st := &stack{dir: dir, db: db, dict: otelanalytics.NewDict(0),
		agg: otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, time.Second, nil),
		s:   otelanalytics.NewSampler(otelanalytics.DefaultSamplingConfig())}
	next, err := otelanalytics.Restore(db, st.dict, st.agg)
	require.NoError(t, err)
	var store otelanalytics.Store = db
	if wrap != nil {
		store = wrap(db)
	}
	st.p = otelanalytics.NewPipeline(cfg, st.dict, st.s, st.agg, store, next, nil, nil, clock)
	return st
}

// ticker is a clock that advances by step each time it is read, so the
// sampler sees batches arrive over time.
func ticker(step time.Duration) func() time.Time {
	var mu sync.Mutex
	at := now
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		at = at.Add(step)
		return at
	}
}

func (st *stack) close(t testing.TB) {
	t.Helper()
	require.NoError(t, st.p.Shutdown(context.Background()))
	require.NoError(t, st.db.Close())
}

func batch(n int, seed uint64) []otelanalytics.Record {
	g := traffic.NewGenerator(traffic.NewModel(100), seed)
	out := make([]otelanalytics.Record, n)
	for i := range out {
		r := g.Next(now.Add(-time.Duration(g.Rand().IntN(3600)) * time.Second))
		out[i] = r.Record()
	}
	return out
}

func requestsTotal(agg *otelanalytics.Aggregator) float64 {
	_, vals := agg.Snapshot(otelanalytics.FamilyRequests)
	var sum float64
	for _, v := range vals {
		sum += v
	}
	return sum
}

func countRecords(t *testing.T, st *stack) (n int, weight float64) {
	t.Helper()
	require.NoError(t, otelanalytics.ScanRecords(context.Background(), st.db, st.dict, otelanalytics.RecordFilter{}, func(r *otelanalytics.Record) error {
		n++
		weight += r.Weight
		return nil
	}))
	return n, weight
}

// TestConsumeIsDurable: what Consume acknowledged is in the aggregates and,
// after a stop without a final cut (kill -9), back after a restart.
func TestConsumeIsDurable(t *testing.T) {
	dir := t.TempDir()
	// A batch of 100 every second: 6,000 spans a minute, below the threshold.
	st := newStackClock(t, dir, otelanalytics.PipelineConfig{}, nil, ticker(time.Second))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 10 {
				require.NoError(t, st.p.Consume(context.Background(), batch(100, uint64(g*100+i))))
			}
		})
	}
	wg.Wait()
	require.Equal(t, 8000.0, requestsTotal(st.agg))
	n, _ := countRecords(t, st)
	require.Zero(t, n, "records reach the database at the next cut; until then they are in the journal")

	// Crash: close the store without the pipeline's final cut.
	require.NoError(t, st.db.Close())
	st2 := newStack(t, dir, otelanalytics.PipelineConfig{}, nil)
	require.Equal(t, 8000.0, requestsTotal(st2.agg), "the journal brings back every acknowledged span")
	require.NoError(t, st2.p.Consume(context.Background(), batch(10, 999)))
	require.NoError(t, st2.p.Flush())
	n, w := countRecords(t, st2)
	require.Equal(t, 8010, n, "low traffic keeps every record, replayed ones included")
	require.Equal(t, 8010.0, w)
	st2.close(t)

	st3 := newStack(t, dir, otelanalytics.PipelineConfig{}, nil)
	defer st3.close(t)
	require.Equal(t, 8010.0, requestsTotal(st3.agg))
	n, _ = countRecords(t, st3)
	require.Equal(t, 8010, n, "a cut writes each record once")
}

// TestSampledWeights: at high traffic the pipeline keeps a fraction of the
// records, and their weights estimate the total.
func TestSampledWeights(t *testing.T) {
	st := newStack(t, t.TempDir(), otelanalytics.PipelineConfig{}, nil)
	defer st.close(t)
	// The sampler sees 20,000 spans within a millisecond-scale window.
	for i := range 40 {
		require.NoError(t, st.p.Consume(context.Background(), batch(500, uint64(i))))
	}
	require.Equal(t, 0.1, st.s.LastProbability())
	require.NoError(t, st.p.Flush())
	n, w := countRecords(t, st)
	require.Less(t, n, 20000)
	require.InEpsilon(t, 20000, w, 0.1)
	require.Equal(t, 20000.0, requestsTotal(st.agg), "aggregates count every span, sampled or not")
}

// blockingStore holds CommitBatch until released, to put batches in flight.
type blockingStore struct {
	otelanalytics.Store
	entered chan struct{}
	release chan struct{}
}

func (b *blockingStore) CommitBatch(entry []byte, written func()) error {
	b.entered <- struct{}{}
	<-b.release
	return b.Store.CommitBatch(entry, written)
}

func TestAdmissionAndShutdown(t *testing.T) {
	bs := &blockingStore{entered: make(chan struct{}), release: make(chan struct{})}
	st := newStack(t, t.TempDir(), otelanalytics.PipelineConfig{MaxInflightRecords: 100},
		func(s otelanalytics.Store) otelanalytics.Store { bs.Store = s; return bs })
	require.NoError(t, st.p.Start(context.Background()))

	// A batch larger than the bound is taken when nothing else is in flight.
	errc := make(chan error, 1)
	go func() { errc <- st.p.Consume(context.Background(), batch(150, 1)) }()
	<-bs.entered
	require.ErrorIs(t, st.p.Consume(context.Background(), batch(1, 2)), otelanalytics.ErrOverloaded)

	// Shutdown waits for the batch in flight and refuses new ones.
	shut := make(chan error, 1)
	go func() { shut <- st.p.Shutdown(context.Background()) }()
	require.Eventually(t, func() bool {
		return errors.Is(st.p.Consume(context.Background(), batch(1, 3)), otelanalytics.ErrStopped)
	}, 5*time.Second, time.Millisecond)
	select {
	case <-shut:
		t.Fatal("Shutdown returned while a batch was in flight")
	default:
	}
	close(bs.release)
	require.NoError(t, <-errc)
	require.NoError(t, <-shut)
	require.NoError(t, st.p.Shutdown(context.Background()), "Shutdown twice")
	require.ErrorIs(t, st.p.Start(context.Background()), otelanalytics.ErrStopped)
	require.Equal(t, 150.0, requestsTotal(st.agg))
	require.NoError(t, st.db.Close())
}

func TestShutdownDeadline(t *testing.T) {
	bs := &blockingStore{entered: make(chan struct{}), release: make(chan struct{})}
	st := newStack(t, t.TempDir(), otelanalytics.PipelineConfig{},
		func(s otelanalytics.Store) otelanalytics.Store { bs.Store = s; return bs })
	errc := make(chan error, 1)
	go func() { errc <- st.p.Consume(context.Background(), batch(5, 1)) }()
	<-bs.entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, st.p.Shutdown(ctx), context.Canceled)
	close(bs.release)
	require.NoError(t, <-errc)
	st.close(t)
}

func TestConsumeCanceledAndEmpty(t *testing.T) {
	st := newStack(t, t.TempDir(), otelanalytics.PipelineConfig{}, nil)
	defer st.close(t)
	require.NoError(t, st.p.Consume(context.Background(), nil))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, st.p.Consume(ctx, batch(3, 1)), context.Canceled)
	require.Zero(t, requestsTotal(st.agg))
}

// failingStore fails its next n commits or cuts.
type failingStore struct {
	otelanalytics.Store
	mu          sync.Mutex
	failCommits int
	failCuts    int
	cuts        chan struct{}
}

func (f *failingStore) CommitBatch(entry []byte, written func()) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failCommits > 0 {
		f.failCommits--
		return errors.New("disk full")
	}
	return f.Store.CommitBatch(entry, written)
}

func (f *failingStore) WriteCut(sealed uint64, c otelanalytics.StoreCut) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failCuts > 0 {
		f.failCuts--
		return errors.New("disk full")
	}
	err := f.Store.WriteCut(sealed, c)
	if f.cuts != nil {
		f.cuts <- struct{}{}
	}
	return err
}

func TestStoreFailures(t *testing.T) {
	dir := t.TempDir()
	fs := &failingStore{failCommits: 1, failCuts: 1}
	st := newStack(t, dir, otelanalytics.PipelineConfig{}, func(s otelanalytics.Store) otelanalytics.Store { fs.Store = s; return fs })
	err := st.p.Consume(context.Background(), batch(10, 1))
	require.ErrorContains(t, err, "disk full")
	require.Zero(t, requestsTotal(st.agg), "a refused batch is not counted")

	require.NoError(t, st.p.Consume(context.Background(), batch(10, 2)))
	require.ErrorContains(t, st.p.Flush(), "disk full")
	require.NoError(t, st.p.Flush(), "the failed cut is carried to the next one")
	require.NoError(t, st.p.Flush(), "nothing left to cut")
	st.close(t)

	st2 := newStack(t, dir, otelanalytics.PipelineConfig{}, nil)
	defer st2.close(t)
	require.Equal(t, 10.0, requestsTotal(st2.agg))
}

// TestFlushLoopCutsEarly: when increments pile up past their bound, the
// flush loop cuts without waiting for the interval.
func TestFlushLoopCutsEarly(t *testing.T) {
	dir := t.TempDir()
	fs := &failingStore{cuts: make(chan struct{}, 10)}
	db, err := pebblestore.Open(dir, pebblestore.Options{})
	require.NoError(t, err)
	dict := otelanalytics.NewDict(0)
	agg := otelanalytics.NewAggregator(otelanalytics.AggregationConfig{MaxPendingIncrements: 1000}, time.Second, nil)
	next, err := otelanalytics.Restore(db, dict, agg)
	require.NoError(t, err)
	fs.Store = db
	p := otelanalytics.NewPipeline(otelanalytics.PipelineConfig{FlushInterval: time.Hour}, dict,
		otelanalytics.NewSampler(otelanalytics.DefaultSamplingConfig()), agg, fs, next, nil, nil, nil)
	require.NoError(t, p.Start(context.Background()))
	require.NoError(t, p.Start(context.Background()), "Start twice is harmless")
	require.NoError(t, p.Consume(context.Background(), batch(2000, 1))) // spans over an hour: > 1000 increments
	<-fs.cuts
	require.Less(t, agg.Pending(), 1000)
	require.NoError(t, p.Shutdown(context.Background()))
	require.NoError(t, db.Close())
}

// TestShutdownWritesReplayedBatches: a restart after a crash replays the
// journal; the final cut of the next stop writes the replayed records even
// when no new batch came in between.
func TestShutdownWritesReplayedBatches(t *testing.T) {
	dir := t.TempDir()
	st := newStack(t, dir, otelanalytics.PipelineConfig{}, nil)
	require.NoError(t, st.p.Consume(context.Background(), batch(25, 1)))
	require.NoError(t, st.db.Close()) // crash

	st2 := newStack(t, dir, otelanalytics.PipelineConfig{}, nil)
	st2.close(t)
	st3 := newStack(t, dir, otelanalytics.PipelineConfig{}, nil)
	defer st3.close(t)
	n, _ := countRecords(t, st3)
	require.Equal(t, 25, n)
}

// noteRecorder records the ranges a pipeline notes.
type noteRecorder struct {
	mu     sync.Mutex
	ranges [][2]int64
}

func (n *noteRecorder) Note(minMs, maxMs int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.ranges = append(n.ranges, [2]int64{minMs, maxMs})
}

// TestConsumeNotesChanges: each batch tells the change tracker the hours
// of its increments' times, the ends of their flush intervals (1 s here),
// after it is in the aggregates: a late span adds its own hour, not every
// hour since.
func TestConsumeNotesChanges(t *testing.T) {
	rec := &noteRecorder{}
	st := newStack(t, t.TempDir(), otelanalytics.PipelineConfig{FlushInterval: time.Hour, Changes: rec}, nil)
	defer st.close(t)
	recs := batch(50, 7)
	recs[3].EndTime = now.Add(-48*time.Hour + 300*time.Millisecond).UnixNano() // a late span
	recs[9].EndTime = now.Add(1500 * time.Millisecond).UnixNano()
	require.NoError(t, st.p.Consume(context.Background(), recs))
	hour := time.Hour.Milliseconds()
	late, last := now.Add(-48*time.Hour).UnixMilli(), now.UnixMilli()
	require.Equal(t, [][2]int64{{late, late + hour - 1}, {last - hour, last + hour - 1}}, rec.ranges, "the late span's hour, and the hours of the others")
}

// TestPendingIncrementsBound: spans spread over an hour of event time at a
// one-second resolution make an increment each; past twice
// MaxPendingIncrements the pipeline refuses batches until a cut takes them.
func TestPendingIncrementsBound(t *testing.T) {
	db, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	require.NoError(t, err)
	dict := otelanalytics.NewDict(0)
	agg := otelanalytics.NewAggregator(otelanalytics.AggregationConfig{MaxPendingIncrements: 1000}, time.Second, nil)
	next, err := otelanalytics.Restore(db, dict, agg)
	require.NoError(t, err)
	p := otelanalytics.NewPipeline(otelanalytics.PipelineConfig{}, dict, otelanalytics.NewSampler(otelanalytics.DefaultSamplingConfig()), agg, db, next, nil, nil, ticker(time.Millisecond))
	defer func() { require.NoError(t, errors.Join(p.Shutdown(context.Background()), db.Close())) }()

	ctx := context.Background()
	accepted := 0
	for i := range 100 {
		err := p.Consume(ctx, batch(100, uint64(i)))
		if errors.Is(err, otelanalytics.ErrOverloaded) {
			break
		}
		require.NoError(t, err)
		accepted += 100
	}
	require.Less(t, accepted, 10000, "refused before every batch was taken")
	require.GreaterOrEqual(t, agg.Pending(), 2000)
	require.Less(t, agg.Pending(), 2000+100*5, "at most one batch past the bound")
	require.True(t, p.Saturated())
	require.NoError(t, p.Flush())
	require.False(t, p.Saturated())
	require.NoError(t, p.Consume(ctx, batch(100, 1000)), "taken again once a cut took the increments")
	require.Equal(t, float64(accepted+100), requestsTotal(agg))
}
