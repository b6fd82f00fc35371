package pebblestore

import (
	"fmt"
	"math"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/util/annotations"
)

type seriesSet struct {
	q          *querier
	series     []*memSeries
	ov         []*ovSeries // the overlay's increments of each series; nil: none
	mint, maxt int64
	bounds     *boundaries
	i          int
}

func (s *seriesSet) Next() bool {
	s.i++
	return s.i < len(s.series)
}

func (s *seriesSet) At() storage.Series {
	sr := &series{q: s.q, ms: s.series[s.i], mint: s.mint, maxt: s.maxt, bounds: s.bounds}
	if s.ov != nil {
		sr.ov = s.ov[s.i]
	}
	return sr
}

func (s *seriesSet) Err() error                        { return nil }
func (s *seriesSet) Warnings() annotations.Annotations { return nil }

type series struct {
	q          *querier
	ms         *memSeries
	ov         *ovSeries // nil: nothing in the overlay
	mint, maxt int64
	bounds     *boundaries
}

func (s *series) Labels() labels.Labels { return s.ms.lset }

func (s *series) Iterator(chunkenc.Iterator) chunkenc.Iterator {
	it := &seriesIterator{q: s.q, id: s.ms.id, kind: s.ms.kind, mint: s.mint, maxt: s.maxt, ov: s.ov}
	if s.ms.kind != KindIncrements {
		it.mint = max(it.mint, s.q.s.floorRaw.Load())
	}
	if s.ms.kind == KindIncrements && s.bounds != nil {
		b := *s.bounds
		it.bounds, it.nextStart, it.nextEnd = &b, b.start, b.start+b.rng-1
	}
	return it
}

// seriesIterator reads a series' windows from the snapshot, one at a time,
// and returns the samples in [mint, maxt]. An increment series reads as the
// counter its increments add up to, starting from the base of the first
// window it reads; under
// rate(), increase() and delta() it also has a point at each end of every
// evaluated window (see boundaries).
type seriesIterator struct {
	q          *querier
	id         uint64
	kind       SeriesKind
	mint, maxt int64

	bounds             *boundaries
	nextStart, nextEnd int64   // the next window start and end points
	pendT              int64   // a stored increment read but not yet passed
	pendF              float64 // its value
	pend               bool
	val                float64 // the counter at t
	emitted            bool    // a point was returned (t is valid)
	exhausted          bool    // no stored samples left

	// The overlay's increments (nil: none), merged with the stored ones;
	// ovI is the next not yet merged. storedT and storedF are a stored
	// increment read but not yet merged; noStored: none left.
	ov         *ovSeries
	ovI        int
	storedT    int64
	storedF    float64
	haveStored bool
	noStored   bool

	started bool
	it      *pebble.Iterator
	chunks  []timedChunk
	ci      int
	cit     chunkenc.Iterator
	vt      chunkenc.ValueType
	t       int64
	sum     float64
	done    bool
	err     error
}

func (s *seriesIterator) start() bool {
	if s.id == 0 { // only in the overlay
		s.it, s.noStored = nil, true
		return s.startOverlay(windowOf(max(s.mint, math.MinInt64+windowMs)), 0)
	}
	lower := seriesPrefix(prefixChunks, s.id)
	if s.mint > math.MinInt64+windowMs {
		lower = chunkKey(s.id, windowOf(s.mint))
	}
	upper := prefixEnd(seriesPrefix(prefixChunks, s.id))
	if s.maxt < math.MaxInt64-windowMs {
		upper = chunkKey(s.id, windowOf(s.maxt)+windowMs)
	}
	it, err := s.q.newIter(s.id, &pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		s.err, s.done = err, true
		return false
	}
	s.it = it
	if !it.First() && s.ov != nil && s.kind == KindIncrements && it.Error() == nil {
		// No stored window in range: the committed counter is what the
		// windows before hold, and the overlay's increments go on from it.
		from := windowOf(max(s.mint, math.MinInt64+windowMs))
		if s.mint <= math.MinInt64+windowMs {
			from = math.MinInt64
		}
		base, err := storedBefore(s.q.snapFor(s.id), s.id, from)
		if err != nil {
			s.err, s.done = fmt.Errorf("series %d: %w", s.id, err), true
			return false
		}
		s.noStored = true
		return s.startOverlay(from, base)
	}
	if !s.loadWindow(it.Valid()) {
		return false
	}
	if s.kind == KindIncrements {
		// The counter before the first window read is its base.
		w := periodFromKey(it.Key())
		wb, err := getBase(s.q.snapFor(s.id), s.id, w)
		if err != nil {
			s.err, s.done = fmt.Errorf("series %d: %w", s.id, err), true
			return false
		}
		s.sum = wb.base
		if s.ov != nil {
			// The overlay's increments from the window holding mint on
			// (history may lie before the first stored window): the
			// stored counter is wb.base until w.
			from := windowOf(max(s.mint, math.MinInt64+windowMs))
			if s.mint <= math.MinInt64+windowMs {
				from = math.MinInt64
			}
			from = min(from, w)
			s.sum += s.ov.before(from)
			s.ovI, _ = slices.BinarySearch(s.ov.t, from)
		}
	}
	return true
}

// startOverlay starts an increment series without stored windows in
// range at the committed counter base, with the overlay's increments
// from time from on.
func (s *seriesIterator) startOverlay(from int64, base float64) bool {
	if s.ov == nil {
		s.done = true
		return false
	}
	s.sum = base + s.ov.before(from)
	s.ovI, _ = slices.BinarySearch(s.ov.t, from)
	return true
}

// loadWindow decodes the window the iterator is at.
func (s *seriesIterator) loadWindow(valid bool) bool {
	if !valid {
		s.err, s.done = s.it.Error(), true
		return false
	}
	v, err := s.it.ValueAndErr()
	if err == nil {
		s.chunks, err = decodeWindow(slices.Clone(v), s.chunks[:0])
	}
	if err != nil {
		s.err, s.done = fmt.Errorf("series %d: %w", s.id, err), true
		return false
	}
	s.ci = 0
	s.cit = s.chunks[0].c.Iterator(s.cit)
	return true
}

func (s *seriesIterator) Next() chunkenc.ValueType {
	if s.done {
		return chunkenc.ValNone
	}
	if !s.started {
		s.started = true
		if !s.start() {
			return chunkenc.ValNone
		}
	}
	if s.kind == KindIncrements {
		return s.nextIncrement()
	}
	for {
		vt, ok := s.stored()
		if !ok {
			return chunkenc.ValNone
		}
		t := s.cit.AtT()
		if t < s.mint {
			continue
		}
		if t > s.maxt {
			s.done = true
			return chunkenc.ValNone
		}
		s.vt, s.t = vt, t
		return vt
	}
}

// stored advances to the next stored sample, across chunks and windows.
func (s *seriesIterator) stored() (chunkenc.ValueType, bool) {
	for {
		vt := s.cit.Next()
		if vt != chunkenc.ValNone {
			return vt, true
		}
		if err := s.cit.Err(); err != nil {
			s.err, s.done = err, true
			return chunkenc.ValNone, false
		}
		if s.ci++; s.ci < len(s.chunks) {
			s.cit = s.chunks[s.ci].c.Iterator(s.cit)
			continue
		}
		if !s.loadWindow(s.it.Next()) {
			return chunkenc.ValNone, false
		}
	}
}

// nextIncrement returns the next point of an increment series: the running
// sum at each stored increment or, under a bounded function, at each window
// boundary only, in time order, each timestamp once. An increment at the
// same time as a boundary is counted at that time.
func (s *seriesIterator) nextIncrement() chunkenc.ValueType {
	for {
		if !s.pend && !s.exhausted {
			if t, f, ok := s.nextStoredIncrement(); ok {
				s.pendT, s.pendF, s.pend = t, f, true
			} else {
				if s.err != nil {
					return chunkenc.ValNone
				}
				s.exhausted, s.done = true, false
			}
		}
		var t int64
		switch b := s.nextBoundary(); {
		case s.bounds != nil && b == math.MaxInt64:
			s.done = true // past the last window
			return chunkenc.ValNone
		case s.pend && s.pendT <= b:
			s.sum += s.pendF
			s.pend = false
			if s.bounds != nil {
				// rate(), increase() and delta() read a window's first and
				// last points, and the counter never resets: the boundary
				// points alone give their exact results, and the engine
				// has a third of the points to go through.
				continue
			}
			t = s.pendT
		case b != math.MaxInt64:
			t = b
			s.advanceBoundary(b)
		default:
			s.done = true
			return chunkenc.ValNone
		}
		if (s.emitted && t == s.t) || t < s.mint {
			continue
		}
		if t > s.maxt {
			s.done = true
			return chunkenc.ValNone
		}
		s.vt, s.t, s.val, s.emitted = chunkenc.ValFloat, t, s.sum, true
		return chunkenc.ValFloat
	}
}

// nextStoredIncrement returns the next increment of the stored windows
// and the overlay merged, in time order, adding those at the same time.
func (s *seriesIterator) nextStoredIncrement() (int64, float64, bool) {
	if !s.haveStored && !s.noStored {
		if _, ok := s.stored(); ok {
			_, f := s.cit.At()
			s.storedT, s.storedF, s.haveStored = s.cit.AtT(), f, true
		} else {
			if s.err != nil {
				return 0, 0, false
			}
			s.noStored, s.done = true, false
		}
	}
	haveOv := s.ov != nil && s.ovI < len(s.ov.t)
	switch {
	case s.haveStored && (!haveOv || s.storedT < s.ov.t[s.ovI]):
		s.haveStored = false
		return s.storedT, s.storedF, true
	case haveOv && (!s.haveStored || s.ov.t[s.ovI] < s.storedT):
		s.ovI++
		return s.ov.t[s.ovI-1], s.ov.v[s.ovI-1], true
	case haveOv: // both at the same time
		s.haveStored = false
		s.ovI++
		return s.storedT, s.storedF + s.ov.v[s.ovI-1], true
	}
	return 0, 0, false
}

// nextBoundary returns the next window boundary point, or MaxInt64.
func (s *seriesIterator) nextBoundary() int64 {
	if s.bounds == nil {
		return math.MaxInt64
	}
	b := min(s.nextStart, s.nextEnd)
	if b > s.bounds.end {
		return math.MaxInt64
	}
	return b
}

// advanceBoundary moves past boundary b.
func (s *seriesIterator) advanceBoundary(b int64) {
	bs := s.bounds
	for s.nextStart <= b {
		if bs.step <= 0 {
			s.nextStart = math.MaxInt64
			break
		}
		s.nextStart += bs.step
	}
	for s.nextEnd <= b {
		if bs.step <= 0 {
			s.nextEnd = math.MaxInt64
			break
		}
		s.nextEnd += bs.step
	}
}

func (s *seriesIterator) Seek(t int64) chunkenc.ValueType {
	if s.done {
		return chunkenc.ValNone
	}
	if s.vt != chunkenc.ValNone && s.t >= t {
		return s.vt
	}
	for {
		vt := s.Next()
		if vt == chunkenc.ValNone || s.t >= t {
			return vt
		}
	}
}

func (s *seriesIterator) At() (int64, float64) {
	if s.kind == KindIncrements {
		return s.t, s.val
	}
	return s.cit.At()
}

func (s *seriesIterator) AtHistogram(h *histogram.Histogram) (int64, *histogram.Histogram) {
	return s.cit.AtHistogram(h)
}

func (s *seriesIterator) AtFloatHistogram(fh *histogram.FloatHistogram) (int64, *histogram.FloatHistogram) {
	return s.cit.AtFloatHistogram(fh)
}

func (s *seriesIterator) AtT() int64 { return s.t }

func (s *seriesIterator) Err() error { return s.err }

// AtST implements chunkenc.Iterator: the sample's start timestamp, 0 when
// unknown (always for increment series).
func (s *seriesIterator) AtST() int64 {
	if s.kind == KindIncrements {
		return 0
	}
	return s.cit.AtST()
}
