package pebblestore

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/storage"

	"github.com/proxylens/proxylens/internal/changes"
)

// Appender implements storage.Appendable.
func (s *SeriesStore) Appender(ctx context.Context) storage.Appender {
	return &appenderV1{a: s.newAppender()}
}

// AppendIncrements adds increments to increment series (creating them as
// needed) and commits them in one synced batch: fill calls add for each
// increment, with a time in milliseconds. Increments at the same time add
// up; they may come in any order and at any age.
func (s *SeriesStore) AppendIncrements(fill func(add func(ls labels.Labels, t int64, v float64) error) error) error {
	app := s.newAppender()
	if err := fill(app.AppendIncrement); err != nil {
		_ = app.Rollback()
		return err
	}
	return app.Commit()
}

// AppenderV2 implements storage.AppendableV2.
func (s *SeriesStore) AppenderV2(ctx context.Context) storage.AppenderV2 {
	return s.newAppender()
}

func (s *SeriesStore) newAppender() *appender {
	return &appender{s: s, staged: map[*memSeries]*staging{}}
}

// appender buffers samples until Commit, which merges them with what is
// committed, under the store's commit lock, and writes them in one synced
// Pebble batch.
type appender struct {
	s       *SeriesStore
	staged  map[*memSeries]*staging
	order   []*memSeries
	pending map[uint64][]*memSeries // new series by label hash, id 0 until written
	touched []*memSeries            // series whose head writer write appended to
	done    bool
	anyAge  bool        // accept samples of any age (the store's own gauges, written per cut interval)
	changed changes.Set // the hours of the samples staged, for SeriesOptions.Changes
	feed    *feedEntry  // the samples written, for the series feed (SeriesOptions.Feed)
	// windows, if set, reads the committed windows that commit rewrites
	// (a cut of history rewrites hundreds per series): one iterator
	// sought forward, instead of a Pebble Get, which opens the levels'
	// iterators anew for each window.
	windows *pebble.Iterator
	bases   *pebble.Iterator // the same for the bases (writeBasesLocked), bounds set there
}

// staging is what an appender holds for one series.
type staging struct {
	samples []sample // new samples, in append order
	maxT    int64    // newest sample, committed (when first seen) or new
	// The series' newest committed sample when first seen: the
	// out-of-order window counts back from it.
	committedMaxT int64
	committedLast sample
	// For samples at or before maxT (KindSamples series): the committed
	// samples of the windows they fall in, and the new samples by time, to
	// refuse conflicting duplicates at Append.
	committed map[int64][]sample
	newAt     map[int64]int
}

// Append implements storage.AppenderV2. A sample older than the series'
// newest by more than the out-of-order window is refused with
// storage.ErrTooOldSample; one at the timestamp of another with a different
// value with storage.ErrDuplicateSampleForTimestamp; an exact duplicate is
// accepted and changes nothing.
func (a *appender) Append(ref storage.SeriesRef, ls labels.Labels, st, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, _ storage.AppendV2Options) (storage.SeriesRef, error) {
	smp := sample{st: st, t: t, f: v}
	switch {
	case fh != nil:
		smp = sample{st: st, t: t, fh: fh.Copy()}
	case h != nil:
		smp = sample{st: st, t: t, h: h.Copy()}
	}
	ms, err := a.series(ls, KindSamples)
	if err != nil {
		return 0, err
	}
	if ms.kind != KindSamples {
		return 0, fmt.Errorf("series %s holds increments, not samples", ls)
	}
	return storage.SeriesRef(ms.id), a.add(ms, smp)
}

// AppendIncrement adds v to the increment series ls at t (creating the
// series as KindIncrements if needed).
func (a *appender) AppendIncrement(ls labels.Labels, t int64, v float64) error {
	ms, err := a.series(ls, KindIncrements)
	if err != nil {
		return err
	}
	if ms.kind != KindIncrements {
		return fmt.Errorf("series %s holds samples, not increments", ls)
	}
	return a.add(ms, sample{t: t, f: v})
}

// series returns the series of ls: one this appender is creating, a
// committed one, or a new one, which enters the index only when a commit
// writes it (so a refused request leaves no series behind).
func (a *appender) series(ls labels.Labels, kind SeriesKind) (*memSeries, error) {
	if a.done {
		return nil, errors.New("appender used after Commit or Rollback")
	}
	h := ls.Hash()
	for _, c := range a.pending[h] {
		if labels.Equal(c.lset, ls) {
			return c, nil
		}
	}
	if ms := a.s.lookup(ls, h); ms != nil {
		return ms, nil
	}
	if ls.IsEmpty() {
		return nil, errors.New("series without labels")
	}
	if dup, ok := ls.HasDuplicateLabelNames(); ok {
		return nil, fmt.Errorf("label name %q repeated", dup)
	}
	ms := newMemSeries(0, ls.Copy(), kind)
	if a.pending == nil {
		a.pending = map[uint64][]*memSeries{}
	}
	a.pending[h] = append(a.pending[h], ms)
	return ms, nil
}

func (a *appender) add(ms *memSeries, smp sample) error {
	if a.s.changes != nil {
		a.changed.Add(smp.t)
	}
	st := a.staged[ms]
	if st == nil {
		a.s.commitMu.Lock()
		st = &staging{maxT: ms.maxT, committedMaxT: ms.maxT, committedLast: ms.last}
		a.s.commitMu.Unlock()
		a.staged[ms] = st
		a.order = append(a.order, ms)
	}
	if ms.kind == KindIncrements {
		st.samples = append(st.samples, smp)
		return nil
	}
	if smp.t > st.maxT { // newer than anything committed or staged
		st.maxT = smp.t
		if st.newAt != nil {
			st.newAt[smp.t] = len(st.samples)
		}
		st.samples = append(st.samples, smp)
		return nil
	}
	if !a.anyAge && st.committedMaxT != math.MinInt64 && smp.t < st.committedMaxT-a.s.ooo {
		return storage.ErrTooOldSample
	}
	// At or before the newest sample: compare with what this appender
	// holds at that time, and with what is committed.
	if st.newAt == nil {
		st.newAt = make(map[int64]int, len(st.samples))
		for i := range st.samples {
			st.newAt[st.samples[i].t] = i
		}
	}
	if i, found := st.newAt[smp.t]; found {
		if sameValue(&st.samples[i], &smp) {
			return nil
		}
		return storage.ErrDuplicateSampleForTimestamp
	}
	switch {
	case smp.t == st.committedMaxT:
		if sameValue(&st.committedLast, &smp) {
			return nil
		}
		return storage.ErrDuplicateSampleForTimestamp
	case smp.t < st.committedMaxT:
		w := windowOf(smp.t)
		if st.committed == nil {
			st.committed = map[int64][]sample{}
		}
		committed, ok := st.committed[w]
		if !ok {
			var err error
			if committed, err = a.s.readWindow(ms, w); err != nil {
				return err
			}
			st.committed[w] = committed
		}
		if i, found := slices.BinarySearchFunc(committed, smp.t, func(s sample, t int64) int { return cmp.Compare(s.t, t) }); found {
			if sameValue(&committed[i], &smp) {
				return nil
			}
			return storage.ErrDuplicateSampleForTimestamp
		}
	}
	st.newAt[smp.t] = len(st.samples)
	st.samples = append(st.samples, smp)
	return nil
}

// readWindowLocked is SeriesStore.readWindowLocked through a.windows, if
// set; the caller holds commitMu.
func (a *appender) readWindowLocked(ms *memSeries, w int64) ([]sample, error) {
	if a.windows == nil || (ms.head != nil && ms.headWindow == w) {
		return a.s.readWindowLocked(ms, w)
	}
	key := chunkKey(ms.id, w)
	if !a.windows.SeekGE(key) || !bytes.Equal(a.windows.Key(), key) {
		if err := a.windows.Error(); err != nil {
			return nil, fmt.Errorf("read window: %w", err)
		}
		return nil, nil
	}
	v, err := a.windows.ValueAndErr()
	if err != nil {
		return nil, fmt.Errorf("read window: %w", err)
	}
	chunks, err := decodeWindow(v, nil)
	if err != nil {
		return nil, err
	}
	return windowSamples(chunks, nil)
}

// readWindow returns the committed samples of one window of a series.
func (s *SeriesStore) readWindow(ms *memSeries, w int64) ([]sample, error) {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	return s.readWindowLocked(ms, w)
}

func (s *SeriesStore) readWindowLocked(ms *memSeries, w int64) ([]sample, error) {
	if ms.head != nil && ms.headWindow == w {
		return windowSamples(ms.head.chunks, nil)
	}
	v, closer, err := s.db.Get(chunkKey(ms.id, w))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read window: %w", err)
	}
	defer closer.Close()
	chunks, err := decodeWindow(v, nil)
	if err != nil {
		return nil, err
	}
	return windowSamples(chunks, nil)
}

// Rollback implements storage.AppenderTransaction.
func (a *appender) Rollback() error {
	a.done = true
	a.staged, a.order = nil, nil
	return nil
}

// appenderV1 adapts the appender to storage.Appender; exemplars, metadata
// and start timestamps are not stored.
type appenderV1 struct{ a *appender }

func (v *appenderV1) Append(ref storage.SeriesRef, l labels.Labels, t int64, f float64) (storage.SeriesRef, error) {
	return v.a.Append(ref, l, 0, t, f, nil, nil, storage.AppendV2Options{})
}

func (v *appenderV1) AppendHistogram(ref storage.SeriesRef, l labels.Labels, t int64, h *histogram.Histogram, fh *histogram.FloatHistogram) (storage.SeriesRef, error) {
	return v.a.Append(ref, l, 0, t, 0, h, fh, storage.AppendV2Options{})
}

func (v *appenderV1) AppendHistogramSTZeroSample(ref storage.SeriesRef, _ labels.Labels, _, _ int64, _ *histogram.Histogram, _ *histogram.FloatHistogram) (storage.SeriesRef, error) {
	return ref, nil
}

func (v *appenderV1) AppendSTZeroSample(ref storage.SeriesRef, _ labels.Labels, _, _ int64) (storage.SeriesRef, error) {
	return ref, nil
}

func (v *appenderV1) AppendExemplar(ref storage.SeriesRef, _ labels.Labels, _ exemplar.Exemplar) (storage.SeriesRef, error) {
	return ref, nil
}

func (v *appenderV1) UpdateMetadata(ref storage.SeriesRef, _ labels.Labels, _ metadata.Metadata) (storage.SeriesRef, error) {
	return ref, nil
}

func (v *appenderV1) SetOptions(*storage.AppendOptions) {}

func (v *appenderV1) Commit() error { return v.a.Commit() }

func (v *appenderV1) Rollback() error { return v.a.Rollback() }
