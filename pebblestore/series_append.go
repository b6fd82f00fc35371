package pebblestore

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"

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
	created []*memSeries            // the same in creation order: a pendingRef indexes it
	// The series of the previous Append, for the next one of the same
	// series: the ref and labels it was called with, and its staging.
	lastRef storage.SeriesRef
	lastLs  labels.Labels
	last    *memSeries
	lastSt  *staging
	// slab holds the staged samples of series appended one after the
	// other (see push), instead of a slice grown per series.
	slab    []sample
	slabs   []*[]sample  // the slabs from slabPool, to put back when done
	touched []*memSeries // series whose head writer write appended to
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
	ms, ref, err := a.seriesByRef(ref, ls)
	if err != nil {
		return 0, err
	}
	if ms.kind != KindSamples {
		return 0, fmt.Errorf("series %s holds increments, not samples", ls)
	}
	return ref, a.add(ms, smp)
}

// pendingRef marks the refs Append returns for series the appender is
// creating, which have no id yet: pendingRef | (index in created + 1).
// The ref of a committed series is its id, which stays below it.
const pendingRef = storage.SeriesRef(1) << 63

// seriesByRef returns the series of ls, and its ref, as series does; a
// ref from an earlier Append saves the lookup by label hash. A ref is
// only a hint, as in Prometheus' head: it is checked against ls, and one
// that does not match (from another appender, or of a series retention
// deleted) is ignored.
func (a *appender) seriesByRef(ref storage.SeriesRef, ls labels.Labels) (*memSeries, storage.SeriesRef, error) {
	if a.done {
		return nil, 0, errors.New("appender used after Commit or Rollback")
	}
	if ref != 0 && a.last != nil && ref == a.lastRef && labels.Equal(a.lastLs, ls) {
		return a.last, ref, nil
	}
	var ms *memSeries
	switch {
	case ref == 0:
	case ref&pendingRef != 0:
		if i := int(ref &^ pendingRef); i > 0 && i <= len(a.created) && labels.Equal(a.created[i-1].lset, ls) {
			ms = a.created[i-1]
		}
	default:
		a.s.mu.RLock()
		c := a.s.byID[uint64(ref)]
		a.s.mu.RUnlock()
		if c != nil && labels.Equal(c.lset, ls) {
			ms = c
		}
	}
	if ms == nil {
		var err error
		if ms, err = a.series(ls, KindSamples); err != nil {
			return nil, 0, err
		}
		ref = a.refOf(ms)
	}
	a.last, a.lastRef, a.lastLs, a.lastSt = ms, ref, ls, nil
	return ms, ref, nil
}

// refOf returns the ref Append returns for ms: its id, or a pendingRef.
func (a *appender) refOf(ms *memSeries) storage.SeriesRef {
	if ms.id != 0 {
		return storage.SeriesRef(ms.id)
	}
	for i := len(a.created) - 1; i >= 0; i-- {
		if a.created[i] == ms {
			return pendingRef | storage.SeriesRef(i+1)
		}
	}
	return 0
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
	a.created = append(a.created, ms)
	return ms, nil
}

func (a *appender) add(ms *memSeries, smp sample) error {
	if a.s.changes != nil {
		a.changed.Add(smp.t)
	}
	st := a.lastSt
	if ms != a.last || st == nil {
		st = a.staged[ms]
	}
	if st == nil {
		a.s.commitMu.Lock()
		st = &staging{maxT: ms.maxT, committedMaxT: ms.maxT, committedLast: ms.last}
		a.s.commitMu.Unlock()
		a.staged[ms] = st
		a.order = append(a.order, ms)
	}
	if ms == a.last {
		a.lastSt = st
	}
	if ms.kind == KindIncrements {
		a.push(st, smp)
		return nil
	}
	if smp.t > st.maxT { // newer than anything committed or staged
		st.maxT = smp.t
		if st.newAt != nil {
			st.newAt[smp.t] = len(st.samples)
		}
		a.push(st, smp)
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
	a.push(st, smp)
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

// slabSamples is the size of an appender's slabs of staged samples.
const slabSamples = 4096

// slabPool keeps slabs for the next appenders: fresh memory for every
// request's samples cost more than filling it.
var slabPool sync.Pool

// releaseSlabs puts the appender's slabs back in slabPool; its staged
// samples must not be used after.
func (a *appender) releaseSlabs() {
	for _, p := range a.slabs {
		clear((*p)[:cap(*p)]) // no histogram outlives its appender
		*p = (*p)[:0]
		slabPool.Put(p)
	}
	a.slabs, a.slab = nil, nil
}

// push appends smp to st's samples. The samples of a series appended
// after the previous series' (as remote write and a cut send them) go to
// the appender's slab, which they share with the series before and after
// them: a series' samples stay contiguous, as it has the slab's end until
// another series appends, and a series that appends again later, or
// outgrows a quarter of a slab, gets a slice of its own. That saves the
// half-dozen allocations of growing each series' slice from nothing.
func (a *appender) push(st *staging, smp sample) {
	n := len(st.samples)
	if n < cap(st.samples) {
		st.samples = append(st.samples, smp)
		return
	}
	atEnd := n == 0 || (len(a.slab) > 0 && &st.samples[n-1] == &a.slab[len(a.slab)-1])
	switch {
	case atEnd && len(a.slab) < cap(a.slab):
	case atEnd && n < slabSamples/4:
		// Move the series to a new slab.
		p, _ := slabPool.Get().(*[]sample)
		if p == nil {
			s := make([]sample, 0, slabSamples)
			p = &s
		}
		a.slabs = append(a.slabs, p)
		a.slab = append((*p)[:0], st.samples...)
	default:
		st.samples = append(st.samples, smp)
		return
	}
	start := len(a.slab) - n
	a.slab = append(a.slab, smp)
	st.samples = a.slab[start:len(a.slab):len(a.slab)]
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
	a.last, a.lastSt = nil, nil
	a.releaseSlabs()
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
