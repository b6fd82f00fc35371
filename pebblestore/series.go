package pebblestore

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// Key spaces of the series store.
const (
	prefixSeries    = 's' // s<id:8>                                   → kind, labels
	prefixPostings  = 'p' // p<len><name><len><value><id:8>            → empty (written before 2026-11-29, never read)
	prefixChunks    = 'c' // c<id:8><window start:8, sign bit flipped> → window value
	prefixBases     = 'b' // b<id:8><window start:8, sign bit flipped> → base, total (increment series)
	prefixSummaries = 'u' // u<id:8><window start:8, sign bit flipped> → summaries (closed increment windows)
	prefixDays      = 'y' // y<id:8><day start:8, sign bit flipped>    → base, total of the day (increment series)
)

// SeriesKind says how a series' samples read back.
type SeriesKind byte

const (
	// KindSamples series store samples as appended, like any Prometheus
	// series.
	KindSamples SeriesKind = 0
	// KindIncrements series store the increment of a counter per interval
	// of event time; increments at the same timestamp add up, and reads
	// return the running sum, a counter that never resets.
	KindIncrements SeriesKind = 1
)

// SeriesOptions configure a SeriesStore.
type SeriesOptions struct {
	// OutOfOrderWindow is how much older than a series' newest sample a
	// sample may be and still be accepted (KindSamples series only).
	// Default 1h.
	OutOfOrderWindow time.Duration
	// IncrementInterval is the interval each sample of an increment series
	// covers (the flush interval): a sample at t counts what happened in
	// (t − interval, t]. Default 15s.
	IncrementInterval time.Duration
}

// SeriesStore is the time-series store in the database: series with their
// labels, a label index, and samples in Prometheus chunk encodings, one
// Pebble value per series and two-hour window. It implements
// storage.Storage. Its index is held in memory and persisted; its samples
// are read from Pebble.
//
// All methods are safe for concurrent use; commits are serialised.
type SeriesStore struct {
	db       *DB
	ooo      int64 // out-of-order window, ms
	interval int64 // increment interval, ms

	mu       sync.RWMutex
	byHash   map[uint64][]*memSeries
	byID     map[uint64]*memSeries
	postings map[string]map[string][]uint64 // name → value → ascending ids
	nextID   uint64

	commitMu sync.Mutex // one commit at a time; guards every memSeries' head

	// The oldest times reads answer (Unix ms), raised by retention: raw
	// samples of sample series, and everything.
	floorRaw, floorAll atomic.Int64

	meta metadataStore
}

// memSeries is a series in memory: its identity and, for appends, its
// newest window.
type memSeries struct {
	id   uint64
	lset labels.Labels
	kind SeriesKind

	// Guarded by SeriesStore.commitMu.
	headWindow int64        // start of the newest window, math.MinInt64 before the first sample
	head       *chunkWriter // the newest window's chunks, nil until appended to
	maxT       int64        // newest sample, math.MinInt64 before the first
	last       sample       // the newest sample
	headBase   windowBase   // the newest window's base (increment series)
	headDay    int64        // the newest day of the daily rollup, math.MinInt64 if none
	dayBase    windowBase   // its base
	merges     int          // samples appended to the newest window's value by a Merge since it was last written whole

	// The first and newest windows with samples, for time filtering
	// without commitMu; math.MaxInt64 and math.MinInt64 before any.
	minW, maxW atomic.Int64
}

// overlaps reports whether the series has windows in [mint, maxt].
func (ms *memSeries) overlaps(mint, maxt int64) bool {
	return ms.minW.Load() <= maxt && (mint == math.MinInt64 || ms.maxW.Load() > mint-windowMs)
}

func newMemSeries(id uint64, lset labels.Labels, kind SeriesKind) *memSeries {
	ms := &memSeries{id: id, lset: lset, kind: kind, headWindow: math.MinInt64, headDay: math.MinInt64, maxT: math.MinInt64}
	ms.minW.Store(math.MaxInt64)
	ms.maxW.Store(math.MinInt64)
	return ms
}

// windowBase is what an increment series keeps per window beside its
// chunks, so that a read can start at any window: the sum of every
// increment before the window (base) and of the window's own (total).
type windowBase struct{ base, total float64 }

func (b windowBase) end() float64 { return b.base + b.total }

var _ storage.Storage = (*SeriesStore)(nil)

// Series opens the series store of the database, loading its index.
func (d *DB) Series(opts SeriesOptions) (*SeriesStore, error) {
	if opts.OutOfOrderWindow <= 0 {
		opts.OutOfOrderWindow = time.Hour
	}
	if opts.IncrementInterval <= 0 {
		opts.IncrementInterval = 15 * time.Second
	}
	s := &SeriesStore{
		db:       d,
		ooo:      opts.OutOfOrderWindow.Milliseconds(),
		interval: opts.IncrementInterval.Milliseconds(),
		byHash:   map[uint64][]*memSeries{},
		byID:     map[uint64]*memSeries{},
		postings: map[string]map[string][]uint64{},
		nextID:   1,
	}
	s.floorRaw.Store(math.MinInt64)
	s.floorAll.Store(math.MinInt64)
	if err := d.scan([]byte{prefixSeries}, func(k, v []byte) error {
		if len(k) != 9 || len(v) < 1 {
			return fmt.Errorf("series key: %w", errCorrupt)
		}
		lset, err := decodeLabels(v[1:])
		if err != nil {
			return err
		}
		ms := newMemSeries(binary.BigEndian.Uint64(k[1:]), lset, SeriesKind(v[0]))
		s.index(ms)
		s.nextID = max(s.nextID, ms.id+1)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("load series: %w", err)
	}
	if err := s.meta.load(d); err != nil {
		return nil, fmt.Errorf("load metadata: %w", err)
	}
	// The newest window of each series gives its newest sample.
	for _, ms := range s.byID {
		if err := s.loadHead(ms); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// index adds a series to the in-memory index; the caller holds mu or owns s.
func (s *SeriesStore) index(ms *memSeries) {
	h := ms.lset.Hash()
	s.byHash[h] = append(s.byHash[h], ms)
	s.byID[ms.id] = ms
	ms.lset.Range(func(l labels.Label) {
		vals := s.postings[l.Name]
		if vals == nil {
			vals = map[string][]uint64{}
			s.postings[l.Name] = vals
		}
		ids := vals[l.Value]
		i, _ := slices.BinarySearch(ids, ms.id)
		vals[l.Value] = slices.Insert(ids, i, ms.id)
	})
}

// raiseFloor stops reads before raw (samples of sample series) and all
// (everything): retention is deleting what is older.
func (s *SeriesStore) raiseFloor(raw, all int64) {
	for _, f := range []struct {
		v *atomic.Int64
		t int64
	}{{&s.floorRaw, raw}, {&s.floorAll, all}} {
		for {
			old := f.v.Load()
			if f.t <= old || f.v.CompareAndSwap(old, f.t) {
				break
			}
		}
	}
}

// loadHead reads the newest window of a series to resume appending to it,
// and the newest day of an increment series' daily rollup. The rollup
// holds every increment, also where retention removed the windows.
func (s *SeriesStore) loadHead(ms *memSeries) error {
	if ms.kind == KindIncrements {
		prefix := dayLevel.key(ms.id, 0)[:9]
		it, err := s.db.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
		if err != nil {
			return err
		}
		if it.First() {
			ms.minW.Store(windowOf(windowFromKey(it.Key()) + 1))
			it.Last()
			ms.headDay = windowFromKey(it.Key())
			ms.maxW.Store(windowOf(ms.headDay + dayMs))
			ms.dayBase, err = decodeBase(it.Value())
		}
		if err = errors.Join(err, it.Error(), it.Close()); err != nil {
			return fmt.Errorf("series %d: daily rollup: %w", ms.id, err)
		}
	}
	prefix := chunkPrefix(ms.id)
	it, err := s.db.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return err
	}
	defer it.Close()
	if !it.First() {
		return it.Error()
	}
	ms.minW.Store(min(ms.minW.Load(), windowFromKey(it.Key())))
	if !it.Last() {
		return it.Error()
	}
	win := windowFromKey(it.Key())
	ms.maxW.Store(win)
	chunks, err := decodeWindow(slices.Clone(it.Value()), nil)
	if err != nil {
		return fmt.Errorf("series %d window %d: %w", ms.id, win, err)
	}
	samples, err := windowSamples(chunks, nil)
	if err != nil || len(samples) == 0 {
		return err
	}
	// The writer is rebuilt at the first append: a chunk cannot be resumed
	// from its bytes (XOR's last byte is padded). Each Merge operand added
	// at least one chunk.
	ms.headWindow, ms.head, ms.merges = win, nil, len(chunks)-1
	ms.last = samples[len(samples)-1]
	ms.maxT = ms.last.t
	if ms.kind == KindIncrements {
		if ms.headBase, err = getBase(s.db.db, ms.id, win); err != nil {
			return fmt.Errorf("series %d: %w", ms.id, err)
		}
	}
	return nil
}

func baseKey(id uint64, window int64) []byte { return windowLevel.key(id, window) }

func appendBase(dst []byte, b windowBase) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(b.base))
	return binary.LittleEndian.AppendUint64(dst, math.Float64bits(b.total))
}

func decodeBase(v []byte) (windowBase, error) {
	if len(v) != 16 {
		return windowBase{}, fmt.Errorf("window base of %d bytes: %w", len(v), errCorrupt)
	}
	return windowBase{
		base:  math.Float64frombits(binary.LittleEndian.Uint64(v)),
		total: math.Float64frombits(binary.LittleEndian.Uint64(v[8:])),
	}, nil
}

// getBase reads the base of a window that has one.
func getBase(r pebble.Reader, id uint64, window int64) (windowBase, error) {
	v, closer, err := r.Get(baseKey(id, window))
	if err != nil {
		return windowBase{}, fmt.Errorf("base of window %d: %w", window, err)
	}
	defer closer.Close()
	return decodeBase(v)
}

func chunkPrefix(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixChunks}, id)
}

func chunkKey(id uint64, window int64) []byte {
	return binary.BigEndian.AppendUint64(chunkPrefix(id), uint64(window)^(1<<63))
}

func windowFromKey(k []byte) int64 {
	return int64(binary.BigEndian.Uint64(k[9:]) ^ (1 << 63))
}

func appendLabels(dst []byte, lset labels.Labels) []byte {
	dst = binary.AppendUvarint(dst, uint64(lset.Len()))
	lset.Range(func(l labels.Label) {
		dst = binary.AppendUvarint(dst, uint64(len(l.Name)))
		dst = append(dst, l.Name...)
		dst = binary.AppendUvarint(dst, uint64(len(l.Value)))
		dst = append(dst, l.Value...)
	})
	return dst
}

func decodeLabels(b []byte) (labels.Labels, error) {
	rd := reader{b: b}
	n := rd.uvarint()
	if n > uint64(len(b)) {
		return labels.EmptyLabels(), fmt.Errorf("labels: %w", errCorrupt)
	}
	lb := labels.NewScratchBuilder(int(n))
	for range n {
		name := rd.bytes(rd.uvarint())
		value := rd.bytes(rd.uvarint())
		lb.Add(string(name), string(value))
	}
	if rd.err != nil || len(rd.b) != 0 {
		return labels.EmptyLabels(), fmt.Errorf("labels: %w", errCorrupt)
	}
	return lb.Labels(), nil
}

// lookup returns the committed series of lset, or nil.
func (s *SeriesStore) lookup(lset labels.Labels, h uint64) *memSeries {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, c := range s.byHash[h] {
		if labels.Equal(c.lset, lset) {
			return c
		}
	}
	return nil
}

// summarized reports whether closed increment windows get summaries: only
// where increments are finer than the finest summary.
func (s *SeriesStore) summarized() bool { return s.interval < summaryLevels[0] }

// StartTime implements storage.Storage: the store has no lower bound.
func (s *SeriesStore) StartTime() (int64, error) { return math.MinInt64, nil }

// Close implements storage.Storage. The database is closed by its owner.
func (s *SeriesStore) Close() error { return nil }

// NumSeries returns the number of series.
func (s *SeriesStore) NumSeries() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.byID)
}

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
	anyAge  bool // accept samples of any age (the store's own gauges, written per cut interval)
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
	v, closer, err := s.db.db.Get(chunkKey(ms.id, w))
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
	b := a.s.db.db.NewBatch()
	defer b.Close()
	a.s.commitMu.Lock()
	defer a.s.commitMu.Unlock()
	apply, err := a.write(b)
	if err == nil {
		err = b.Commit(pebble.Sync)
	}
	if err != nil {
		a.invalidate()
		return fmt.Errorf("commit samples: %w", err)
	}
	apply()
	return nil
}

// invalidate drops the head writers a failed write appended to, so that
// the next append rebuilds them from what is committed. The caller holds
// commitMu.
func (a *appender) invalidate() {
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

// write adds the appender's series and samples to b, merging them with the
// committed windows; the caller holds commitMu. It returns the function
// that updates the series heads once b is committed.
func (a *appender) write(b *pebble.Batch) (func(), error) {
	created, err := a.writeNewSeries(b)
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
		u := headUpdate{ms: ms, window: ms.headWindow, head: ms.head, maxT: ms.maxT, last: ms.last, base: ms.headBase,
			day: ms.headDay, dayB: ms.dayBase, minW: min(ms.minW.Load(), windowOf(samples[0].t)), merges: ms.merges}
		// whole: the newest window's value is written whole, not appended
		// to: it is new, or this batch changed samples already in it.
		whole := ms.headWindow == math.MinInt64
		if ms.kind == KindIncrements {
			_, isNew := fresh[ms]
			var err error
			if _, u.base, err = a.s.writeBases(b, ms.id, isNew, windowLevel, ms.headWindow, ms.headBase, samples); err != nil {
				return nil, err
			}
			if u.day, u.dayB, err = a.s.writeBases(b, ms.id, isNew, dayLevel, ms.headDay, ms.dayBase, samples); err != nil {
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
			// the batch fails (see invalidate).
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
				a.s.index(ms)
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

// writeNewSeries gives the appender's new series their ids and adds them to
// b, and returns them for indexing once b is committed. A series another
// appender committed meanwhile is used instead: the staged samples merge
// into it. The caller holds commitMu.
func (a *appender) writeNewSeries(b *pebble.Batch) ([]*memSeries, error) {
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
		if err := b.Set(binary.BigEndian.AppendUint64([]byte{prefixSeries}, ms.id), v, nil); err != nil {
			return nil, err
		}
		created = append(created, ms)
	}
	return created, nil
}

// baseLevel is one level of an increment series' running sums: a key per
// period with increments, holding the sum of every increment before the
// period and of the period's own. Windows ('b', two hours, [w, w+2h)) let a
// read start at any window; days ('y', (d, d+24h] in UTC, the daily
// rollup) let a read at day boundaries skip everything in between.
type baseLevel struct {
	prefix byte
	of     func(t int64) int64 // the period holding an increment at t
}

var (
	windowLevel = baseLevel{prefixBases, windowOf}
	dayLevel    = baseLevel{prefixDays, dayOf}
)

// dayMs is the period of the daily rollup.
const dayMs = 24 * 60 * 60 * 1000

// dayOf returns the start d of the day (d, d+24h] holding an increment at
// t: an increment at midnight closes the day before, as a summary point at
// a multiple m of its resolution holds the increments in (m − res, m].
func dayOf(t int64) int64 {
	return (ceilDiv(t, dayMs) - 1) * dayMs
}

func (lv baseLevel) key(id uint64, period int64) []byte {
	k := binary.BigEndian.AppendUint64([]byte{lv.prefix}, id)
	return binary.BigEndian.AppendUint64(k, uint64(period)^(1<<63))
}

// writeBases adds to b the bases at level lv of increment series id after
// the increments (sorted, deduplicated) are added, and returns the newest
// period and its base. head and headBase are the newest period and its
// base as committed (head is math.MinInt64 when not known: they are read);
// isNew says the series has no keys yet. The caller holds commitMu.
//
// Increments in or after the newest period, the usual case, touch only the
// newest period's base and start new ones from it. Late increments also
// move the base of every later period of the series: that costs a write
// per later period, once, so that reads never have to sum from the
// series' start.
func (s *SeriesStore) writeBases(b *pebble.Batch, id uint64, isNew bool, lv baseLevel, head int64, headBase windowBase, incs []sample) (int64, windowBase, error) {
	type delta struct {
		w int64
		d float64
	}
	var deltas []delta
	for _, smp := range incs {
		w := lv.of(smp.t)
		if n := len(deltas); n > 0 && deltas[n-1].w == w {
			deltas[n-1].d += smp.f
		} else {
			deltas = append(deltas, delta{w, smp.f})
		}
	}
	// The periods from the first touched one on, with their committed
	// bases, and the end of the period before them.
	type win struct {
		w    int64
		base windowBase
	}
	var existing []win
	var prevEnd float64
	switch {
	case isNew:
	case head != math.MinInt64 && deltas[0].w == head:
		existing, prevEnd = []win{{head, headBase}}, headBase.base
	case head != math.MinInt64 && deltas[0].w > head:
		prevEnd = headBase.end()
	default:
		prefix := lv.key(id, 0)[:9]
		it, err := s.db.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
		if err != nil {
			return 0, windowBase{}, err
		}
		before := it.SeekLT(lv.key(id, deltas[0].w))
		if before {
			wb, err := decodeBase(it.Value())
			if err != nil {
				_ = it.Close()
				return 0, windowBase{}, err
			}
			prevEnd = wb.end()
		}
		for valid := it.SeekGE(lv.key(id, deltas[0].w)); valid; valid = it.Next() {
			wb, err := decodeBase(it.Value())
			if err != nil {
				_ = it.Close()
				return 0, windowBase{}, err
			}
			existing = append(existing, win{windowFromKey(it.Key()), wb})
		}
		if err := errors.Join(it.Error(), it.Close()); err != nil {
			return 0, windowBase{}, fmt.Errorf("read bases: %w", err)
		}
		if !before && len(existing) > 0 {
			// Retention removed the periods before: the first one left
			// still counts everything before it.
			prevEnd = existing[0].base.base
		}
	}
	// Walk both in period order, carrying the running sum.
	var buf []byte
	running := prevEnd
	var lastW int64
	var last windowBase
	i, j := 0, 0
	for i < len(existing) || j < len(deltas) {
		var w int64
		var old windowBase
		var d float64
		created := false
		switch {
		case j == len(deltas) || (i < len(existing) && existing[i].w < deltas[j].w):
			w, old = existing[i].w, existing[i].base
			i++
		case i == len(existing) || deltas[j].w < existing[i].w:
			w, d, created = deltas[j].w, deltas[j].d, true
			j++
		default:
			w, old, d = existing[i].w, existing[i].base, deltas[j].d
			i, j = i+1, j+1
		}
		nb := windowBase{base: running, total: old.total + d}
		if created || nb != old {
			buf = appendBase(buf[:0], nb)
			if err := b.Set(lv.key(id, w), buf, nil); err != nil {
				return 0, windowBase{}, err
			}
		}
		running, lastW, last = nb.end(), w, nb
	}
	return lastW, last, nil
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
