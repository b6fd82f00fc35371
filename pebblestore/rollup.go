package pebblestore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

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

// periodKey is the key of series id's base in period at this level.
func (lv baseLevel) periodKey(id uint64, period int64) []byte {
	return periodKey(lv.prefix, id, period)
}

// writeBasesLocked adds to b the bases at level lv of increment series id after
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
func (s *SeriesStore) writeBasesLocked(b *pebble.Batch, reuse *pebble.Iterator, id uint64, isNew bool, lv baseLevel, head int64, headBase windowBase, incs []sample) (int64, windowBase, error) {
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
		prefix := seriesPrefix(lv.prefix, id)
		it := reuse
		closeIt := func() error { return nil }
		if it != nil {
			it.SetBounds(prefix, prefixEnd(prefix))
		} else {
			var err error
			if it, err = s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)}); err != nil {
				return 0, windowBase{}, err
			}
			closeIt = it.Close
		}
		before := it.SeekLT(lv.periodKey(id, deltas[0].w))
		if before {
			wb, err := decodeBase(it.Value())
			if err != nil {
				_ = closeIt()
				return 0, windowBase{}, err
			}
			prevEnd = wb.end()
		}
		for valid := it.SeekGE(lv.periodKey(id, deltas[0].w)); valid; valid = it.Next() {
			wb, err := decodeBase(it.Value())
			if err != nil {
				_ = closeIt()
				return 0, windowBase{}, err
			}
			existing = append(existing, win{periodFromKey(it.Key()), wb})
		}
		if err := errors.Join(it.Error(), closeIt()); err != nil {
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
			if err := b.Set(lv.periodKey(id, w), buf, nil); err != nil {
				return 0, windowBase{}, err
			}
		}
		running, lastW, last = nb.end(), w, nb
	}
	return lastW, last, nil
}

// RollupResult is what Rollup did.
type RollupResult struct {
	Series     int `json:"series"`     // increment series with windows in the range
	Windows    int `json:"windows"`    // closed windows read
	Summarized int `json:"summarized"` // of them, summarized now
}

// Rollup writes the summaries of every closed window of an increment
// series in [from, to] that has raw increments but no summaries, as the
// window's close would have: a window that was its series' newest when
// the series fell silent, or one retention is about to reach. The daily
// rollup needs no run: it is written with every increment.
func (s *SeriesStore) Rollup(ctx context.Context, from, to int64) (RollupResult, error) {
	var res RollupResult
	if !s.summarized() {
		return res, nil // the raw windows are the finest data: nothing to summarize
	}
	s.mu.RLock()
	var all []*memSeries
	for _, ms := range s.byID {
		if ms.kind == KindIncrements && ms.overlaps(from, to) {
			all = append(all, ms)
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(all, func(a, b *memSeries) int { return int(min(max(int64(a.id)-int64(b.id), -1), 1)) })
	res.Series = len(all)
	for i := 0; i < len(all); i += enforceBatchSeries {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if err := s.rollupRun(all[i:min(i+enforceBatchSeries, len(all))], windowOf(from), windowOf(to), &res); err != nil {
			return res, fmt.Errorf("rollup: %w", err)
		}
	}
	return res, nil
}

func (s *SeriesStore) rollupRun(run []*memSeries, fromW, toW int64, res *RollupResult) error {
	db := s.db
	b := db.NewBatch()
	defer b.Close()
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	it, err := db.NewIter(nil)
	if err != nil {
		return err
	}
	defer it.Close()
	var buf []byte
	var hours hourDays
	for _, ms := range run {
		upper := toW
		if ms.headWindow != math.MinInt64 {
			upper = min(upper, ms.headWindow-windowMs) // the newest window is open
		}
		it.SetBounds(chunkKey(ms.id, fromW), chunkKey(ms.id, upper+windowMs))
		for valid := it.First(); valid; valid = it.Next() {
			w := periodFromKey(it.Key())
			if w == ms.headWindow {
				continue // still open: summarized when it closes
			}
			res.Windows++
			_, closer, err := db.Get(summaryKey(ms.id, w))
			if err == nil {
				_ = closer.Close()
				continue
			}
			if err != pebble.ErrNotFound {
				return err
			}
			chunks, err := decodeWindow(it.Value(), nil)
			if err != nil {
				return fmt.Errorf("series %d window %d: %w", ms.id, w, err)
			}
			if buf, err = putSummaries(b, &hours, ms.id, w, chunks, buf); err != nil {
				return err
			}
			res.Summarized++
		}
		if err := it.Error(); err != nil {
			return err
		}
	}
	if err := hours.write(b, db); err != nil {
		return err
	}
	return b.Commit(pebble.Sync)
}
