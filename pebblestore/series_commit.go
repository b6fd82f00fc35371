package pebblestore

// The write half of an appender: Commit turns the staged samples and new
// series into one synced Pebble batch (chunks, window bases and rollups, the
// series feed), and the helpers that merge staged samples with committed
// ones.

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// Commit implements storage.AppenderTransaction: it writes every staged
// sample and new series in one synced Pebble batch.
func (a *appender) Commit() error {
	if a.done {
		return errors.New("appender already committed or rolled back")
	}
	a.done = true
	defer a.releaseSlabs()
	if len(a.staged) == 0 {
		return nil
	}
	b := a.s.db.NewBatch()
	defer b.Close()
	// The batch is applied under the commit lock, and its sync awaited
	// after: the next commit prepares its batch while this one's WAL
	// syncs, and the two share a sync when they can. Commit returns, and
	// the request is acknowledged, only once the batch is durable.
	applied := false
	if err := a.s.commit(a, b, func() error {
		err := a.s.db.ApplyNoSyncWait(b, pebble.Sync)
		applied = err == nil
		return err
	}); err != nil {
		return fmt.Errorf("commit samples: %w", err)
	}
	if applied {
		if err := b.SyncWait(); err != nil {
			return fmt.Errorf("commit samples: sync: %w", err)
		}
	}
	return nil
}

// commit adds what a staged to b, under the commit lock, and calls
// commitBatch to commit b (with whatever else the caller added to it):
// the series heads move on only if it succeeds.
func (s *SeriesStore) commit(a *appender, b *pebble.Batch, commitBatch func() error) error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	if s.guard != nil {
		// Pebble cannot survive a WAL write that finds the disk full:
		// refuse before it would.
		if err := s.guard.refuse(); err != nil {
			a.invalidateLocked()
			return err
		}
	}
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
	var ops operandEncoder
	var hours hourDays
	pk := &a.s.pack
	defer pk.trim()
	// set writes a window; a closed window (one the head has moved past)
	// gets its summaries: an increment series' sums, a sample series'
	// counter summary (counter_summary.go), and is packed where that is
	// smaller (packed.go).
	set := func(ms *memSeries, w int64, chunks []timedChunk, closed bool) error {
		if closed && ms.kind == KindIncrements && a.s.summarized() {
			var err error
			if buf, err = putSummaries(b, &hours, ms.id, w, chunks, buf); err != nil {
				return err
			}
		}
		if closed && ms.kind == KindSamples {
			if err := setCounterSummary(b, &buf, ms.id, w, chunks); err != nil {
				return err
			}
		}
		if closed {
			chunks = pk.pack(chunks)
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
			if _, u.base, err = a.s.writeBasesLocked(b, a.bases, ms.id, isNew, windowLevel, ms.headWindow, ms.headBase, samples); err != nil {
				return nil, err
			}
			if u.day, u.dayB, err = a.s.writeBasesLocked(b, a.bases, ms.id, isNew, dayLevel, ms.headDay, ms.dayBase, samples); err != nil {
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
			committed, err := a.readWindowLocked(ms, w)
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
					stored, err := a.readWindowLocked(ms, w)
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
						stored, err := a.readWindowLocked(ms, u.window)
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
				err = ops.add(b, &buf, chunkKey(ms.id, u.window), tail)
			}
			if err != nil {
				return nil, err
			}
			u.maxT, u.last = samples[len(samples)-1].t, samples[len(samples)-1]
		}
		updates = append(updates, u)
	}
	if err := hours.write(b, a.s.db); err != nil {
		return nil, err
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

// operandEncoder encodes the Merge operands of one commit. An operand of
// float samples without start timestamps (what remote write and cuts
// append) is encoded into one XOR chunk reused from series to series: the
// bytes are those encodeSamples gives, without its four allocations a
// series.
type operandEncoder struct {
	c      chunkenc.XORChunk
	stream []byte
	one    [1]timedChunk
}

// add adds samples to b as a Merge operand of the window at key: a
// window value of their own, which Pebble's concatenating merger appends
// to the stored one.
func (e *operandEncoder) add(b *pebble.Batch, buf *[]byte, key []byte, samples []sample) error {
	chunks, err := e.encode(samples)
	if err != nil {
		return err
	}
	*buf = appendWindow((*buf)[:0], chunks)
	return b.Merge(key, *buf, nil)
}

// encode returns the chunks of samples (in time order), valid until the
// next call.
func (e *operandEncoder) encode(samples []sample) ([]timedChunk, error) {
	if len(samples) == 0 || len(samples) > maxChunkSamples || slices.ContainsFunc(samples, func(s sample) bool { return s.st != 0 || notFloat(s) }) {
		w, err := encodeSamples(samples)
		if err != nil {
			return nil, err
		}
		return w.chunks, nil
	}
	e.stream = append(e.stream[:0], 0, 0) // an empty chunk: its sample count
	e.c.Reset(e.stream)
	app, err := e.c.Appender()
	if err != nil {
		return nil, err
	}
	for i := range samples {
		app.Append(0, samples[i].t, samples[i].f)
	}
	e.stream = e.c.Bytes()
	e.one[0] = timedChunk{c: &e.c, minT: samples[0].t, maxT: samples[len(samples)-1].t}
	return e.one[:], nil
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
