package pebblestore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/proxylens/proxylens/internal/varint"
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
	// Changes, if set, is told the sample times of every committed append
	// (samples, increments, a cut's series) once queries can read them,
	// and the cut-off of every retention run: a cache of query results
	// learns from it what went stale (internal/changes.Tracker).
	Changes ChangeNoter
	// Feed makes every commit also write the samples it committed to the
	// series feed (feed.go), for remote write out. Off (the default), a
	// feed left from a run with it on is deleted at open.
	Feed bool
	// Now stamps feed entries with their commit time; default time.Now.
	Now func() time.Time
}

// ChangeNoter is told which sample times changed, after the change is
// visible to queries.
type ChangeNoter interface {
	Note(minMs, maxMs int64) // samples in [minMs, maxMs] changed
	NoteBefore(tMs int64)    // samples up to tMs may have changed
}

// SeriesStore is the time-series store in the database: series with their
// labels, a label index, and samples in Prometheus chunk encodings, one
// Pebble value per series and two-hour window. It implements
// storage.Storage. Its index is held in memory and persisted; its samples
// are read from Pebble.
//
// All methods are safe for concurrent use; commits are serialised.
type SeriesStore struct {
	db       *pebble.DB
	ooo      int64 // out-of-order window, ms
	interval int64 // increment interval, ms
	changes  ChangeNoter
	now      func() time.Time
	feedOn   bool
	feed     feedState  // guarded by commitMu
	guard    *diskGuard // refuses commits while the disk is short of space (nil: none)

	mu       sync.RWMutex
	byHash   map[uint64][]*memSeries
	byID     map[uint64]*memSeries
	postings map[string]map[string][]uint64 // name → value → ascending ids
	order    labelOrder
	nextID   uint64

	commitMu sync.Mutex // one commit at a time; guards every memSeries' head
	pack     packer     // packs the windows commits close; guarded by commitMu
	// viewMu guards view, a cut of history being applied in pieces, as
	// queries read it (cut_view.go).
	viewMu sync.RWMutex
	view   *cutView

	// The oldest times reads answer (Unix ms), raised by retention: raw
	// samples of sample series, and everything.
	floorRaw, floorAll atomic.Int64
	// floorHourly: retention removed the window bases before it (but the
	// newest): reads past it fall back on the daily rollup.
	floorHourly atomic.Int64

	meta metadataStore

	// overlay serves the increments not committed yet (SetOverlay);
	// openCheckpoint is the journal checkpoint when the store opened, for
	// its parts that no cut has taken (see overlayParts).
	overlay        atomic.Pointer[Overlay]
	openCheckpoint atomic.Uint64
	// indexedCheckpoint is the newest journal checkpoint whose cut's
	// series are in the index (see overlayParts).
	indexedCheckpoint atomic.Uint64
}

// memSeries is a series in memory: its identity and, for appends, its
// newest window.
type memSeries struct {
	id   uint64
	lset labels.Labels
	kind SeriesKind
	rank uint32 // place in label order, guarded by labelOrder.mu

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

// openSeries opens the series store of db, loading its index. A database
// has one, opened with it (DB.Series).
func openSeries(db *pebble.DB, opts SeriesOptions) (*SeriesStore, error) {
	if opts.OutOfOrderWindow <= 0 {
		opts.OutOfOrderWindow = time.Hour
	}
	if opts.IncrementInterval <= 0 {
		opts.IncrementInterval = 15 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &SeriesStore{
		db:       db,
		ooo:      opts.OutOfOrderWindow.Milliseconds(),
		interval: opts.IncrementInterval.Milliseconds(),
		changes:  opts.Changes,
		now:      opts.Now,
		feedOn:   opts.Feed,
		byHash:   map[uint64][]*memSeries{},
		byID:     map[uint64]*memSeries{},
		postings: map[string]map[string][]uint64{},
		nextID:   1,
	}
	s.floorRaw.Store(math.MinInt64)
	s.floorAll.Store(math.MinInt64)
	s.floorHourly.Store(math.MinInt64)
	if err := scan(db, []byte{prefixSeries}, func(k, v []byte) error {
		if len(k) != 9 || len(v) < 1 {
			return fmt.Errorf("series key: %w", errCorrupt)
		}
		lset, err := decodeLabels(v[1:])
		if err != nil {
			return err
		}
		ms := newMemSeries(binary.BigEndian.Uint64(k[1:]), lset, SeriesKind(v[0]))
		s.indexLocked(ms)
		s.nextID = max(s.nextID, ms.id+1)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("load series: %w", err)
	}
	if err := s.loadFeed(opts.Feed); err != nil {
		return nil, fmt.Errorf("load series feed: %w", err)
	}
	if err := s.meta.load(db); err != nil {
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

// indexLocked adds a series to the in-memory index; the caller holds mu or
// owns s.
func (s *SeriesStore) indexLocked(ms *memSeries) {
	h := ms.lset.Hash()
	s.byHash[h] = append(s.byHash[h], ms)
	s.byID[ms.id] = ms
	s.order.add(ms)
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
// (everything), and marks hourly as the horizon of the window bases:
// retention is deleting what is older.
func (s *SeriesStore) raiseFloor(raw, hourly, all int64) {
	for _, f := range []struct {
		v *atomic.Int64
		t int64
	}{{&s.floorRaw, raw}, {&s.floorHourly, hourly}, {&s.floorAll, all}} {
		for {
			old := f.v.Load()
			if f.t <= old || f.v.CompareAndSwap(old, f.t) {
				break
			}
		}
	}
	s.noteBefore(max(raw, hourly, all))
}

// noteBefore tells the change noter, if any, that anything up to t may
// have changed: reads stop at the retention cut-offs, and what is older
// is deleted. Nothing after the newest cut-off changes.
func (s *SeriesStore) noteBefore(t int64) {
	if s.changes != nil {
		s.changes.NoteBefore(t)
	}
}

// loadHead reads the newest window of a series to resume appending to it,
// and the newest day of an increment series' daily rollup. The rollup
// holds every increment, also where retention removed the windows.
func (s *SeriesStore) loadHead(ms *memSeries) error {
	if ms.kind == KindIncrements {
		prefix := seriesPrefix(prefixDays, ms.id)
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
		if err != nil {
			return err
		}
		if it.First() {
			ms.minW.Store(windowOf(periodFromKey(it.Key()) + 1))
			it.Last()
			ms.headDay = periodFromKey(it.Key())
			ms.maxW.Store(windowOf(ms.headDay + dayMs))
			ms.dayBase, err = decodeBase(it.Value())
		}
		if err = errors.Join(err, it.Error(), it.Close()); err != nil {
			return fmt.Errorf("series %d: daily rollup: %w", ms.id, err)
		}
	}
	prefix := seriesPrefix(prefixChunks, ms.id)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return err
	}
	defer it.Close()
	if !it.First() {
		return it.Error()
	}
	ms.minW.Store(min(ms.minW.Load(), periodFromKey(it.Key())))
	if !it.Last() {
		return it.Error()
	}
	win := periodFromKey(it.Key())
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
		if ms.headBase, err = getBase(s.db, ms.id, win); err != nil {
			return fmt.Errorf("series %d: %w", ms.id, err)
		}
	}
	return nil
}

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
	rd := varint.Reader{B: b}
	n := rd.Uvarint()
	if n > uint64(len(b)) {
		return labels.EmptyLabels(), fmt.Errorf("labels: %w", errCorrupt)
	}
	lb := labels.NewScratchBuilder(int(n))
	for range n {
		name := rd.LenBytes()
		value := rd.LenBytes()
		lb.Add(string(name), string(value))
	}
	if rd.Err != nil || len(rd.B) != 0 {
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
