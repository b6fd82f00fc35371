package pebblestore

import (
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
	"github.com/prometheus/prometheus/tsdb/chunkenc"

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

// Commit implements storage.AppenderTransaction: it writes every staged
// sample and new series in one synced Pebble batch.
func (a *appender) Commit() error {
	if a.done {
		return errors.New("appender already committed or rolled back")
	}
	a.done = true
	if len(a.staged) == 0 {
		return nil
	}
	b := a.s.db.NewBatch()
	defer b.Close()
	if err := a.s.commit(a, b, func() error { return b.Commit(pebble.Sync) }); err != nil {
		return fmt.Errorf("commit samples: %w", err)
	}
	return nil
}

// commit adds what a staged to b, under the commit lock, and calls
// commitBatch to commit b (with whatever else the caller added to it):
// the series heads move on only if it succeeds.
func (s *SeriesStore) commit(a *appender, b *pebble.Batch, commitBatch func() error) error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	apply, err := a.writeLocked(b)
	var feedApply func()
	if err == nil {
		feedApply, err = s.writeFeedLocked(b, a.feed)
	}
	if err == nil {
		err = commitBatch()
	}
	if err != nil {
		a.invalidateLocked()
		return err
	}
	apply()
	feedApply()
	if s.changes != nil {
		a.changed.NoteTo(s.changes)
	}
	return nil
}

// invalidateLocked drops the head writers a failed write appended to, so that
// the next append rebuilds them from what is committed. The caller holds
// commitMu.
func (a *appender) invalidateLocked() {
	for _, ms := range a.touched {
		ms.head = nil
	}
}

// headUpdate is what a write changes in a series' head, applied once its
// batch is committed.
type headUpdate struct {
	ms     *memSeries
	window int64
	head   *chunkWriter
	maxT   int64
	last   sample
	base   windowBase
	day    int64
	dayB   windowBase
	minW   int64
	merges int
}

// writeLocked adds the appender's series and samples to b, merging them with the
// committed windows; the caller holds commitMu. It returns the function
// that updates the series heads once b is committed.
func (a *appender) writeLocked(b *pebble.Batch) (func(), error) {
	created, err := a.writeNewSeriesLocked(b)
	if err != nil {
		return nil, err
	}
	updates := make([]headUpdate, 0, len(a.order))
	fresh := make(map[*memSeries]struct{}, len(created))
	for _, ms := range created {
		fresh[ms] = struct{}{}
	}
	var buf []byte
	// set writes a window; a closed window of an increment series (one
	// the head has moved past) gets its summaries.
	set := func(ms *memSeries, w int64, chunks []timedChunk, closed bool) error {
		if closed && ms.kind == KindIncrements && a.s.summarized() {
			sums, err := summarize(chunks)
			if err != nil {
				return err
			}
			buf = appendSummaries(buf[:0], sums)
			if err := b.Set(summaryKey(ms.id, w), buf, nil); err != nil {
				return err
			}
		}
		buf = appendWindow(buf[:0], chunks)
		return b.Set(chunkKey(ms.id, w), buf, nil)
	}
	for _, ms := range a.order {
		samples := a.staged[ms].samples
		if len(samples) == 0 {
			continue
		}
		slices.SortStableFunc(samples, func(x, y sample) int { return cmp.Compare(x.t, y.t) })
		samples = a.s.dedupe(ms.kind, samples)
		if a.s.feedOn {
			if a.feed == nil {
				a.feed = &feedEntry{}
			}
			if err := a.feed.add(ms.id, samples); err != nil {
				return nil, err
			}
		}
		u := headUpdate{ms: ms, window: ms.headWindow, head: ms.head, maxT: ms.maxT, last: ms.last, base: ms.headBase,
			day: ms.headDay, dayB: ms.dayBase, minW: min(ms.minW.Load(), windowOf(samples[0].t)), merges: ms.merges}
		// whole: the newest window's value is written whole, not appended
		// to: it is new, or this batch changed samples already in it.
		whole := ms.headWindow == math.MinInt64
		if ms.kind == KindIncrements {
			_, isNew := fresh[ms]
			var err error
			if _, u.base, err = a.s.writeBasesLocked(b, ms.id, isNew, windowLevel, ms.headWindow, ms.headBase, samples); err != nil {
				return nil, err
			}
			if u.day, u.dayB, err = a.s.writeBasesLocked(b, ms.id, isNew, dayLevel, ms.headDay, ms.dayBase, samples); err != nil {
				return nil, err
			}
		}
		// Samples at or before the newest committed one merge into their
		// windows; the rest append to the newest window.
		split, _ := slices.BinarySearchFunc(samples, ms.maxT+1, func(s sample, t int64) int { return cmp.Compare(s.t, t) })
		if ms.maxT == math.MinInt64 {
			split = 0
		}
		for i := 0; i < split; {
			w := windowOf(samples[i].t)
			j := i
			for j < split && windowOf(samples[j].t) == w {
				j++
			}
			committed, err := a.s.readWindowLocked(ms, w)
			if err != nil {
				return nil, err
			}
			merged, err := encodeSamples(a.s.mergeSamples(ms.kind, committed, samples[i:j]))
			if err != nil {
				return nil, err
			}
			if err := set(ms, w, merged.chunks, w != ms.headWindow); err != nil {
				return nil, err
			}
			if w == u.window {
				u.head, u.merges, whole = merged, 0, true
			}
			i = j
		}
		if split < len(samples) {
			// The head writer is appended to in place: Commit drops it if
			// the batch fails (see invalidateLocked).
			a.touched = append(a.touched, ms)
			for i := split; i < len(samples); i++ {
				smp := &samples[i]
				switch w := windowOf(smp.t); {
				case w == u.window && u.head == nil:
					// The head window as stored: rebuild its writer.
					stored, err := a.s.readWindowLocked(ms, w)
					if err != nil {
						return nil, err
					}
					if u.head, err = encodeSamples(stored); err != nil {
						return nil, err
					}
				case w != u.window:
					if u.head == nil && u.window != math.MinInt64 {
						// The stored head window closes: read it to
						// write its summaries.
						stored, err := a.s.readWindowLocked(ms, u.window)
						if err != nil {
							return nil, err
						}
						if u.head, err = encodeSamples(stored); err != nil {
							return nil, err
						}
					}
					if u.head != nil {
						if err := set(ms, u.window, u.head.chunks, true); err != nil {
							return nil, err
						}
					}
					u.window, u.head, whole = w, &chunkWriter{}, true
				}
				if err := u.head.add(smp); err != nil {
					return nil, err
				}
			}
			// The newest window goes in whole, or its new samples as a Merge
			// operand (see mergeLimit). Histogram samples always rewrite it:
			// their chunks are cut where the series' appender cuts them.
			tail := samples[split:]
			var err error
			if whole || u.merges >= mergeLimit(ms.id) || slices.ContainsFunc(tail, notFloat) {
				u.merges = 0
				err = set(ms, u.window, u.head.chunks, false)
			} else {
				u.merges++
				err = addOperand(b, &buf, chunkKey(ms.id, u.window), tail)
			}
			if err != nil {
				return nil, err
			}
			u.maxT, u.last = samples[len(samples)-1].t, samples[len(samples)-1]
		}
		updates = append(updates, u)
	}
	return func() {
		if len(created) > 0 {
			a.s.mu.Lock()
			for _, ms := range created {
				a.s.indexLocked(ms)
			}
			a.s.mu.Unlock()
		}
		for _, u := range updates {
			u.ms.headWindow, u.ms.head, u.ms.maxT, u.ms.last, u.ms.headBase = u.window, u.head, u.maxT, u.last, u.base
			u.ms.headDay, u.ms.dayBase, u.ms.merges = u.day, u.dayB, u.merges
			u.ms.minW.Store(u.minW)
			u.ms.maxW.Store(u.window)
		}
	}, nil
}

// addOperand adds samples to b as a Merge operand of the window at key:
// a window value of their own, which Pebble's concatenating merger appends
// to the stored one.
func addOperand(b *pebble.Batch, buf *[]byte, key []byte, samples []sample) error {
	w, err := encodeSamples(samples)
	if err != nil {
		return err
	}
	*buf = appendWindow((*buf)[:0], w.chunks)
	return b.Merge(key, *buf, nil)
}

func notFloat(s sample) bool { return s.valueType() != chunkenc.ValFloat }

// mergeLimit is how many Merge operands a series' newest window takes
// before it is written whole again: 16 to 31 by series, so that the
// series of one flush do not all rewrite their windows at once. Rewriting
// the window at every flush would write each sample again at every later
// flush of its window (hundreds of times in two hours at 15 s); appending
// operands without end would make every read of it merge them all.
func mergeLimit(id uint64) int { return 16 + int(id%16) }

// writeNewSeriesLocked gives the appender's new series their ids and adds them to
// b, and returns them for indexing once b is committed. A series another
// appender committed meanwhile is used instead: the staged samples merge
// into it. The caller holds commitMu.
func (a *appender) writeNewSeriesLocked(b *pebble.Batch) ([]*memSeries, error) {
	var created []*memSeries
	for i, ms := range a.order {
		if ms.id != 0 {
			continue
		}
		st := a.staged[ms]
		if len(st.samples) == 0 {
			continue
		}
		if existing := a.s.lookup(ms.lset, ms.lset.Hash()); existing != nil {
			if existing.kind != ms.kind {
				return nil, fmt.Errorf("series %s: another writer created it with samples of another kind", ms.lset)
			}
			delete(a.staged, ms)
			a.staged[existing], a.order[i] = st, existing
			continue
		}
		a.s.mu.Lock()
		ms.id = a.s.nextID
		a.s.nextID++
		a.s.mu.Unlock()
		v := appendLabels([]byte{byte(ms.kind)}, ms.lset)
		if err := b.Set(seriesKey(ms.id), v, nil); err != nil {
			return nil, err
		}
		created = append(created, ms)
	}
	return created, nil
}

// dedupe folds samples with the same timestamp: increments add up; for
// samples the first one stays (Append refused conflicting ones).
func (s *SeriesStore) dedupe(kind SeriesKind, samples []sample) []sample {
	out := samples[:0]
	for _, smp := range samples {
		if n := len(out); n > 0 && out[n-1].t == smp.t {
			if kind == KindIncrements {
				out[n-1].f += smp.f
			}
			continue
		}
		out = append(out, smp)
	}
	return out
}

// mergeSamples merges new samples (sorted, deduplicated) into committed
// ones (sorted). At a common timestamp increments add up; for samples the
// committed one stays.
func (s *SeriesStore) mergeSamples(kind SeriesKind, committed, fresh []sample) []sample {
	out := make([]sample, 0, len(committed)+len(fresh))
	i, j := 0, 0
	for i < len(committed) || j < len(fresh) {
		switch {
		case j == len(fresh) || (i < len(committed) && committed[i].t < fresh[j].t):
			out = append(out, committed[i])
			i++
		case i == len(committed) || fresh[j].t < committed[i].t:
			out = append(out, fresh[j])
			j++
		default:
			c := committed[i]
			if kind == KindIncrements {
				c.f += fresh[j].f
			}
			out = append(out, c)
			i++
			j++
		}
	}
	return out
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
