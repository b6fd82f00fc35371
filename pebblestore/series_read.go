package pebblestore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
)

// Querier implements storage.Queryable. The querier reads a consistent
// snapshot of the database taken now.
func (s *SeriesStore) Querier(mint, maxt int64) (storage.Querier, error) {
	// Nothing older than the retention policy keeps is answered.
	mint = max(mint, s.floorAll.Load())
	// The overlay first, the snapshot after: see overlayParts.
	var view []OverlayPart
	if o := s.overlay.Load(); o != nil {
		view = (*o).OverlayView()
	}
	// A cut of history being applied in pieces: its series are read
	// from the view's snapshot, without the cut, and its increments
	// from the overlay (cut_view.go).
	snap, cv := s.snapshotAndView()
	ovSnap := snap
	if cv != nil {
		ovSnap = cv.snap
	}
	ov, err := s.overlayParts(view, ovSnap)
	if err != nil {
		err = fmt.Errorf("read the journal checkpoint for the overlay: %w", err)
		if cv != nil {
			err = errors.Join(err, cv.release())
		}
		return nil, errors.Join(err, snap.Close())
	}
	return &querier{s: s, snap: snap, view: cv, ov: ov, mint: mint, maxt: maxt}, nil
}

// ChunkQuerier implements storage.ChunkQueryable.
func (s *SeriesStore) ChunkQuerier(mint, maxt int64) (storage.ChunkQuerier, error) {
	q, err := s.Querier(mint, maxt)
	if err != nil {
		return nil, err
	}
	return chunkQuerier{q.(*querier)}, nil
}

type chunkQuerier struct{ *querier }

func (c chunkQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.ChunkSeriesSet {
	return storage.NewSeriesSetToChunkSet(c.querier.Select(ctx, sortSeries, hints, ms...))
}

type querier struct {
	s          *SeriesStore
	snap       *pebble.Snapshot
	view       *cutView      // a cut being applied (nil: none); its series are read from view.snap
	ov         []OverlayPart // the increments not in snap (not in view.snap for the view's series)
	mint, maxt int64

	mu     sync.Mutex
	iters  []*pebble.Iterator // opened by series iterators, closed with the querier
	closed bool
}

// Close releases the snapshot and every iterator series opened.
func (q *querier) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil
	}
	q.closed = true
	var errs []error
	for _, it := range q.iters {
		errs = append(errs, it.Close())
	}
	q.iters = nil
	errs = append(errs, q.snap.Close(), q.closeView())
	return errors.Join(errs...)
}

func (q *querier) newIter(id uint64, opts *pebble.IterOptions) (*pebble.Iterator, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil, errors.New("querier closed")
	}
	it, err := q.snapFor(id).NewIter(opts)
	if err != nil {
		return nil, err
	}
	q.iters = append(q.iters, it)
	return it, nil
}

// Select implements storage.Querier. Series always come sorted by labels.
func (q *querier) Select(ctx context.Context, _ bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	if err := ctx.Err(); err != nil {
		return storage.ErrSeriesSet(err)
	}
	if rest, fn, rng, ok := splitRate(ms); ok {
		return q.rateSelect(ctx, hints, fn, rng, rest)
	}
	mint, maxt, limit := q.mint, q.maxt, 0
	if hints != nil {
		mint, maxt, limit = max(mint, hints.Start), min(maxt, hints.End), hints.Limit
	}
	ms, hints, _, onGrid := subqueryGrid(ms, hints)
	if rest, without, grouping, ok := splitPushdown(ms); ok {
		ms = rest
		if onGrid {
			if set := q.sumSelect(ctx, hints, mint, maxt, without, grouping, ms); set != nil {
				return set
			}
		}
	}
	series, ov := q.selectSeries(mint, maxt, ms)
	if limit > 0 && len(series) > limit {
		series = series[:limit]
		if ov != nil {
			ov = ov[:limit]
		}
	}
	if onGrid {
		if set := q.pointSelect(ctx, hints, mint, maxt, series, ov); set != nil {
			return set
		}
	}
	set := &seriesSet{q: q, series: series, ov: ov, mint: mint, maxt: maxt, i: -1}
	if hints != nil && hints.Range > 0 && hints.Step >= 0 && boundedFuncs[hints.Func] {
		set.bounds = &boundaries{start: hints.Start, end: hints.End, step: hints.Step, rng: hints.Range}
	}
	return set
}

// boundedFuncs are the functions whose windows increment series answer with
// a point at each end (see boundaries).
var boundedFuncs = map[string]bool{"rate": true, "increase": true, "delta": true}

// boundaries are the windows a range function evaluates over a selector:
// (e−rng, e] for e = start+rng−1, then every step, up to end (the engine
// selects from start = first evaluation − offset − range + 1).
//
// An increment series is a step function known at its interval ends.
// rate(), increase() and delta() extrapolate from the first and last points
// inside a window to the window's ends, so a window that starts or ends in
// a stretch without increments would be stretched by guesswork. The series
// iterator therefore adds, for every evaluated window, the counter's value
// just inside its start (at e−rng+1) and at its end (at e): true values of
// the step function, which make the functions count exactly what happened
// in each window.
type boundaries struct {
	start, end, step, rng int64
}

// match returns the series with samples in [mint, maxt] (at the
// granularity of windows) that every matcher matches, sorted by labels if
// byLabels (else in no particular order).
// Matchers that an absent label satisfies (such as foo="" or foo!="bar")
// only filter; the others pick candidates from the postings.
func (s *SeriesStore) match(mint, maxt int64, ms []*labels.Matcher, byLabels bool) []*memSeries {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var ids []uint64
	picked := false
	var filters []*labels.Matcher
	for _, m := range ms {
		if m.Matches("") {
			filters = append(filters, m)
			continue
		}
		var union []uint64
		if m.Type == labels.MatchEqual {
			union = s.postings[m.Name][m.Value]
		} else {
			for v, p := range s.postings[m.Name] {
				if m.Matches(v) {
					union = unionSorted(union, p)
				}
			}
		}
		if !picked {
			ids, picked = union, true
		} else {
			ids = intersectSorted(ids, union)
		}
		if len(ids) == 0 {
			return nil
		}
	}
	var out []*memSeries
	add := func(ms *memSeries) {
		if !ms.overlaps(mint, maxt) {
			return
		}
		for _, f := range filters {
			if !f.Matches(ms.lset.Get(f.Name)) {
				return
			}
		}
		out = append(out, ms)
	}
	if picked {
		for _, id := range ids {
			add(s.byID[id])
		}
	} else {
		for _, ms := range s.byID {
			add(ms)
		}
	}
	if byLabels {
		s.order.sort(out)
	}
	return out
}

func unionSorted(a, b []uint64) []uint64 {
	if len(a) == 0 {
		return b
	}
	out := make([]uint64, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] < b[j]:
			out = append(out, a[i])
			i++
		case b[j] < a[i]:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i, j = i+1, j+1
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}

func intersectSorted(a, b []uint64) []uint64 {
	var out []uint64
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] < b[j]:
			i++
		case b[j] < a[i]:
			j++
		default:
			out = append(out, a[i])
			i, j = i+1, j+1
		}
	}
	return out
}

// LabelValues implements storage.LabelQuerier: the values of name among the
// series the matchers select (all series without matchers), sorted.
func (q *querier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	var vals []string
	if len(ms) == 0 {
		q.s.mu.RLock()
		for v, ids := range q.s.postings[name] {
			if v != "" && q.s.anyOverlapsLocked(ids, q.mint, q.maxt) {
				vals = append(vals, v)
			}
		}
		q.s.mu.RUnlock()
	} else {
		seen := map[string]bool{}
		for _, s := range q.s.match(q.mint, q.maxt, ms, false) {
			if v := s.lset.Get(name); v != "" && !seen[v] {
				seen[v] = true
				vals = append(vals, v)
			}
		}
	}
	slices.Sort(vals)
	vals = mergeStrings(vals, q.overlayStrings(ms, func(ls labels.Labels, add func(string)) { add(ls.Get(name)) }))
	if hints != nil && hints.Limit > 0 && len(vals) > hints.Limit {
		vals = vals[:hints.Limit]
	}
	return vals, nil, nil
}

// LabelNames implements storage.LabelQuerier: the label names of the series
// the matchers select (all series without matchers), sorted.
func (q *querier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	var names []string
	if len(ms) == 0 {
		q.s.mu.RLock()
		for n, vals := range q.s.postings {
			for _, ids := range vals {
				if q.s.anyOverlapsLocked(ids, q.mint, q.maxt) {
					names = append(names, n)
					break
				}
			}
		}
		q.s.mu.RUnlock()
	} else {
		seen := map[string]bool{}
		for _, s := range q.s.match(q.mint, q.maxt, ms, false) {
			s.lset.Range(func(l labels.Label) {
				if !seen[l.Name] {
					seen[l.Name] = true
					names = append(names, l.Name)
				}
			})
		}
	}
	slices.Sort(names)
	names = mergeStrings(names, q.overlayStrings(ms, func(ls labels.Labels, add func(string)) {
		ls.Range(func(l labels.Label) { add(l.Name) })
	}))
	if hints != nil && hints.Limit > 0 && len(names) > hints.Limit {
		names = names[:hints.Limit]
	}
	return names, nil, nil
}

// anyOverlapsLocked reports whether any of the series ids has samples in
// [mint, maxt]; the caller holds mu.
func (s *SeriesStore) anyOverlapsLocked(ids []uint64, mint, maxt int64) bool {
	if mint == math.MinInt64 && maxt == math.MaxInt64 {
		return len(ids) > 0
	}
	for _, id := range ids {
		if s.byID[id].overlaps(mint, maxt) {
			return true
		}
	}
	return false
}
