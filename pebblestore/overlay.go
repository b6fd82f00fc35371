package pebblestore

import (
	"cmp"
	"errors"
	"math"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/proxylens/proxylens/internal/varint"
)

// The overlay: increments that acknowledged batches added and that no
// committed cut has written yet, served on top of the store as
// Prometheus serves its head on top of its blocks. The ingest pipeline
// holds them (package otelanalytics implements Overlay); a querier reads
// them together with its Pebble snapshot, and takes from the overlay
// only the parts the snapshot does not hold yet, so that every increment
// is counted once: never twice (in memory and committed) and never
// missed (taken from memory by a cut, not committed yet).
//
// The switch needs no lock. A querier reads the overlay first and takes
// its snapshot after; each part says which journal checkpoint puts it in
// the store (a cut writes its checkpoint in the same batch as its
// increments), and the querier reads the checkpoint from its snapshot:
//
//   - a cut being written, which sealed journal segment n, is in the
//     snapshot once the checkpoint is n or more (n written, or a later
//     cut that carries it after n failed);
//   - increments not cut yet, read when the newest sealed segment was m,
//     are in the snapshot once the checkpoint passes m: the first cut to
//     commit after the read took them all.

// OverlayPart is one part of an Overlay: increments that reach the store
// together. It is an alias of a struct literal, as Cut is of an interface
// literal: otelanalytics declares the same literal, so that it implements
// Overlay without importing this package.
type OverlayPart = struct {
	// Sealed is the journal segment the cut of these increments sealed
	// (they are committed once the checkpoint reaches it), or 0 for
	// increments not cut yet.
	Sealed uint64
	// After, for increments not cut yet, is the newest journal segment
	// sealed before they were read (0: none since the store opened):
	// they are committed once the checkpoint passes it.
	After uint64
	// Series calls fn for each series of the part that the matchers may
	// select (fn checks them again), with its increments: times in Unix
	// milliseconds, ascending and distinct, and the increment at each.
	// Neither the labels nor the slices may be changed; they stay valid.
	Series func(ms []*labels.Matcher, fn func(ls labels.Labels, t []int64, v []float64))
}

// Overlay holds increments that are not committed yet (see OverlayPart).
type Overlay interface {
	// OverlayView returns the increments held now. It is called once per
	// querier, before the querier's snapshot is taken, and must be safe
	// for concurrent use.
	OverlayView() []OverlayPart
}

// SetOverlay makes every querier created from now on serve o's
// increments with the committed ones (nil: none).
func (s *SeriesStore) SetOverlay(o Overlay) {
	if o == nil {
		s.overlay.Store(nil)
		return
	}
	s.overlay.Store(&o)
}

// waitForCommit returns once no series commit is in progress.
func (s *SeriesStore) waitForCommit() {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	_ = s.nextID // nothing to do under the lock: waiting for it is the point
}

// noteCheckpoint records that the commit of journal checkpoint cp has
// updated the index.
func (s *SeriesStore) noteCheckpoint(cp uint64) {
	for old := s.indexedCheckpoint.Load(); cp > old && !s.indexedCheckpoint.CompareAndSwap(old, cp); old = s.indexedCheckpoint.Load() {
	}
}

// overlayParts returns the parts of the overlay that snap does not hold.
// view was read before snap was taken. The parts it leaves out are in
// snap, and their series in the index.
func (s *SeriesStore) overlayParts(view []OverlayPart, snap *pebble.Snapshot) ([]OverlayPart, error) {
	if len(view) == 0 {
		return nil, nil
	}
	var cp uint64
	v, closer, err := snap.Get(keyCheckpoint)
	switch {
	case err == nil:
		rd := varint.Reader{B: v}
		cp = rd.Uvarint()
		_ = closer.Close()
		if rd.Err != nil {
			return nil, errors.New("journal checkpoint: corrupt")
		}
	case !errors.Is(err, pebble.ErrNotFound):
		return nil, err
	}
	if cp > s.indexedCheckpoint.Load() {
		// The snapshot holds a cut whose commit may not have put its new
		// series in the index yet, nor widened its series' time spans:
		// a commit does both before it lets go of commitMu.
		s.waitForCommit()
	}
	open := s.openCheckpoint.Load()
	out := view[:0:0]
	for _, p := range view {
		if p.Sealed > 0 && cp >= p.Sealed {
			continue
		}
		if p.Sealed == 0 && cp > max(p.After, open) {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// ovSeries is one series' increments in the overlay: times (ms),
// ascending and distinct, the increment at each, and their running sum.
type ovSeries struct {
	lset labels.Labels
	t    []int64
	v    []float64
	cum  []float64
}

// before returns the sum of the increments at times before t.
func (o *ovSeries) before(t int64) float64 {
	i, _ := slices.BinarySearch(o.t, t)
	if i == 0 {
		return 0
	}
	return o.cum[i-1]
}

// overlaps reports whether the increments touch [mint, maxt] at the
// granularity of windows, as memSeries.overlaps for the committed ones.
func (o *ovSeries) overlaps(mint, maxt int64) bool {
	return windowOf(o.t[0]) <= maxt && (mint == math.MinInt64 || windowOf(o.t[len(o.t)-1]) > mint-windowMs)
}

// overlaySeries returns the overlay's series that every matcher selects,
// with increments at or before maxt, the parts merged, sorted by labels.
func (q *querier) overlaySeries(ms []*labels.Matcher, maxt int64) []*ovSeries {
	if len(q.ov) == 0 {
		return nil
	}
	byHash := map[uint64][]*ovSeries{}
	var out []*ovSeries
	for _, p := range q.ov {
		p.Series(ms, func(ls labels.Labels, t []int64, v []float64) {
			if len(t) == 0 || t[0] > maxt {
				return
			}
			for _, m := range ms {
				if !m.Matches(ls.Get(m.Name)) {
					return
				}
			}
			h := ls.Hash()
			for _, o := range byHash[h] {
				if labels.Equal(o.lset, ls) {
					o.t, o.v = mergeIncrements(o.t, o.v, t, v)
					return
				}
			}
			o := &ovSeries{lset: ls, t: t, v: v}
			byHash[h] = append(byHash[h], o)
			out = append(out, o)
		})
	}
	for _, o := range out {
		o.cum = make([]float64, len(o.v))
		var sum float64
		for i, v := range o.v {
			sum += v
			o.cum[i] = sum
		}
	}
	slices.SortFunc(out, func(a, b *ovSeries) int { return labels.Compare(a.lset, b.lset) })
	return out
}

// mergeIncrements merges two increment lists into a new one, adding
// increments at the same time.
func mergeIncrements(at []int64, av []float64, bt []int64, bv []float64) ([]int64, []float64) {
	t := make([]int64, 0, len(at)+len(bt))
	v := make([]float64, 0, len(at)+len(bt))
	i, j := 0, 0
	for i < len(at) || j < len(bt) {
		switch {
		case j == len(bt) || (i < len(at) && at[i] < bt[j]):
			t, v = append(t, at[i]), append(v, av[i])
			i++
		case i == len(at) || bt[j] < at[i]:
			t, v = append(t, bt[j]), append(v, bv[j])
			j++
		default:
			t, v = append(t, at[i]), append(v, av[i]+bv[j])
			i, j = i+1, j+1
		}
	}
	return t, v
}

// selectSeries returns the series that every matcher selects with
// samples in [mint, maxt], sorted by labels, and, aligned with them, the
// overlay's increments of each (nil: none). A series only the overlay
// holds is a transient increment series with id 0.
func (q *querier) selectSeries(mint, maxt int64, ms []*labels.Matcher) ([]*memSeries, []*ovSeries) {
	series := q.s.match(mint, maxt, ms, true)
	ovs := q.overlaySeries(ms, maxt)
	if len(ovs) == 0 {
		return series, nil
	}
	at := make(map[*memSeries]int, len(series))
	for i, s := range series {
		at[s] = i
	}
	ov := make([]*ovSeries, len(series))
	added := false
	for _, o := range ovs {
		ms := q.s.lookup(o.lset, o.lset.Hash())
		if ms != nil && ms.kind != KindIncrements {
			continue // a sample series; the cut will refuse these increments
		}
		if i, ok := at[ms]; ok && ms != nil {
			ov[i] = o
			continue
		}
		if !o.overlaps(mint, maxt) {
			continue
		}
		if ms == nil {
			ms = newMemSeries(0, o.lset, KindIncrements)
		}
		series = append(series, ms)
		ov = append(ov, o)
		added = true
	}
	if added {
		idx := make([]int, len(series))
		for i := range idx {
			idx[i] = i
		}
		slices.SortFunc(idx, func(a, b int) int { return labels.Compare(series[a].lset, series[b].lset) })
		s2, o2 := make([]*memSeries, len(idx)), make([]*ovSeries, len(idx))
		for i, j := range idx {
			s2[i], o2[i] = series[j], ov[j]
		}
		series, ov = s2, o2
	}
	return series, ov
}

// storedBefore returns the sum of a series' committed increments in the
// windows before window w, from the window bases of the snapshot.
func storedBefore(snap *pebble.Snapshot, id uint64, w int64) (float64, error) {
	if id == 0 {
		return 0, nil
	}
	prefix := seriesPrefix(prefixBases, id)
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	lower := baseKey(id, w)
	if w == math.MinInt64 {
		lower = prefix
	}
	if it.SeekGE(lower) {
		wb, err := decodeBase(it.Value())
		return wb.base, err
	}
	if it.Last() {
		wb, err := decodeBase(it.Value())
		return wb.end(), err
	}
	return 0, it.Error()
}

// overlayStrings returns the strings fn picks from the overlay series
// that ms select in the querier's range, each once.
func (q *querier) overlayStrings(ms []*labels.Matcher, fn func(ls labels.Labels, add func(string))) []string {
	var out []string
	seen := map[string]bool{}
	for _, o := range q.overlaySeries(ms, q.maxt) {
		if !o.overlaps(q.mint, q.maxt) {
			continue
		}
		fn(o.lset, func(v string) {
			if v != "" && !seen[v] {
				seen[v] = true
				out = append(out, v)
			}
		})
	}
	return out
}

// mergeStrings merges the sorted, distinct a with b (any order) into a
// sorted, distinct list.
func mergeStrings(a, b []string) []string {
	if len(b) == 0 {
		return a
	}
	out := append(slices.Clone(a), b...)
	slices.SortFunc(out, cmp.Compare[string])
	return slices.Compact(out)
}
