package pebblestore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sort"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/util/annotations"
)

// boundsIn returns the boundary points of hints in [mint, maxt].
func boundsIn(hints *storage.SelectHints, mint, maxt int64) []int64 {
	bounds := boundaryTimes(hints)
	first, _ := slices.BinarySearch(bounds, mint)
	last, found := slices.BinarySearch(bounds, maxt)
	if found {
		last++
	}
	return bounds[first:last]
}

// boundaryTimes lists the window boundary points of hints in order (see
// boundaries): e−range+1 and e for every evaluated window end e.
func boundaryTimes(hints *storage.SelectHints) []int64 {
	var out []int64
	nextStart, nextEnd := hints.Start, hints.Start+hints.Range-1
	for {
		b := min(nextStart, nextEnd)
		if b > hints.End {
			return out
		}
		out = append(out, b)
		if hints.Step <= 0 {
			if nextStart <= b {
				nextStart = math.MaxInt64
			}
			if nextEnd <= b {
				nextEnd = math.MaxInt64
			}
			continue
		}
		for nextStart <= b {
			nextStart += hints.Step
		}
		for nextEnd <= b {
			nextEnd += hints.Step
		}
	}
}

// sumGroups adds up, per group and boundary, the counters of the series,
// reading the series on as many goroutines as there are CPUs, with the
// overlay's increments of each (ov, aligned with series; nil: none).
// present reports the groups with at least one series with samples in
// range.
func (q *querier) sumGroups(ctx context.Context, series []*memSeries, ov []*ovSeries, groupOf []int, nGroups int, bounds []int64, mint, maxt int64) ([][]float64, []bool, error) {
	workers := min(runtime.GOMAXPROCS(0), len(series))
	type partial struct {
		sums    [][]float64
		present []bool
		err     error
	}
	parts := make([]partial, workers)
	// Each worker reads a run of series in id order, which is key order:
	// one Pebble iterator moves forward through its part of the key space.
	order := make([]int, len(series))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(series[a].id, series[b].id) })
	raw := rawData(ctx)
	var grids levelGrid
	for i, res := range summaryLevels {
		grids[i] = onGrid(bounds, math.MaxInt64, res) && !raw
	}
	days := onGrid(bounds, math.MaxInt64, dayMs) && !raw
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			p := &parts[w]
			p.sums = make([][]float64, nGroups)
			p.present = make([]bool, nGroups)
			r := counterReader{onGrid: grids, days: days, raw: raw}
			defer r.close()
			for _, i := range order[w*len(order)/workers : (w+1)*len(order)/workers] {
				if i%64 == 0 {
					if err := ctx.Err(); err != nil {
						p.err = err
						return
					}
				}
				g := groupOf[i]
				if p.sums[g] == nil {
					p.sums[g] = make([]float64, len(bounds))
				}
				var o *ovSeries
				if ov != nil {
					o = ov[i]
				}
				ok, err := r.addWithOverlay(q, series[i].id, o, mint, maxt, bounds, p.sums[g])
				if err != nil {
					p.err = fmt.Errorf("series %s: %w", series[i].lset, err)
					return
				}
				p.present[g] = p.present[g] || ok
			}
		})
	}
	wg.Wait()
	sums, present := parts[0].sums, parts[0].present
	for _, p := range parts {
		if p.err != nil {
			return nil, nil, p.err
		}
	}
	for _, p := range parts[1:] {
		for g := range nGroups {
			present[g] = present[g] || p.present[g]
			switch {
			case p.sums[g] == nil:
			case sums[g] == nil:
				sums[g] = p.sums[g]
			default:
				for i, v := range p.sums[g] {
					sums[g][i] += v
				}
			}
		}
	}
	return sums, present, nil
}

// counterReader reads increment series as counters at given times.
type counterReader struct {
	onGrid                  levelGrid // summary resolutions on whose grid every bound lies
	days                    bool      // every bound lies on the daily rollup's grid
	raw                     bool      // raw windows only (WithRawData)
	iter, sumIter, hourIter *pebble.Iterator
	baseIter, dayIter       *pebble.Iterator
	viewIters               map[**pebble.Iterator]*pebble.Iterator // the same, on a cut view's snapshot
	chunks                  []timedChunk
	sums                    []summary
	it                      chunkenc.Iterator

	// The series being read.
	bounds  []int64
	acc     []float64
	bi      int     // the next boundary
	counter float64 // the counter so far
}

func (r *counterReader) close() {
	for _, it := range []*pebble.Iterator{r.iter, r.sumIter, r.hourIter, r.baseIter, r.dayIter} {
		if it != nil {
			_ = it.Close()
		}
	}
	for _, it := range r.viewIters {
		_ = it.Close()
	}
}

// addWithOverlay is add with the overlay's increments of the series
// (o; nil: none) added to its counter.
func (r *counterReader) addWithOverlay(q *querier, id uint64, o *ovSeries, mint, maxt int64, bounds []int64, acc []float64) (bool, error) {
	ok := false
	if id != 0 {
		var err error
		if ok, err = r.add(q, id, mint, maxt, bounds, acc); err != nil || o == nil {
			return ok, err
		}
	}
	if o == nil {
		return false, nil
	}
	if !ok && !o.overlaps(mint, min(maxt, bounds[len(bounds)-1])) {
		return false, nil // nothing in range, as add
	}
	if !ok && id != 0 {
		// No stored window in range: the committed counter there is what
		// the windows before hold.
		from := windowOf(max(mint, math.MinInt64+windowMs))
		if mint <= math.MinInt64+windowMs {
			from = math.MinInt64
		}
		base, err := storedBefore(q.snapFor(id), id, from)
		if err != nil {
			return false, err
		}
		for i := range bounds {
			acc[i] += base
		}
	}
	// The bounds are ascending: one walk through the increments.
	j := 0
	for i, b := range bounds {
		for j < len(o.t) && o.t[j] <= b {
			j++
		}
		if j > 0 {
			acc[i] += o.cum[j-1]
		}
	}
	return true, nil
}

// add adds the counter of series id at each of bounds (the sum of its
// increments up to and including that time) to acc. It reads the windows
// from the one holding mint to the one holding the last bound, and reports
// whether the series has any there (else it adds nothing).
func (r *counterReader) add(q *querier, id uint64, mint, maxt int64, bounds []int64, acc []float64) (bool, error) {
	last := min(maxt, bounds[len(bounds)-1])
	if r.days {
		return r.addDays(q, id, mint, last, bounds, acc)
	}
	first, lastW := windowOf(max(mint, math.MinInt64+windowMs)), windowOf(min(last, math.MaxInt64-windowMs))
	wb, w0, found, err := r.firstBase(q, id, first, lastW)
	if err != nil || !found {
		return false, err
	}
	r.counter, r.bi = wb.base, 0
	r.acc, r.bounds = acc, bounds
	if floor := q.s.floorHourly.Load(); w0 > first && w0 < floor {
		// Retention removed the windows before its cut-off but for the
		// newest base before it (w0). The bounds before the first window
		// after the cut-off are answered from the daily rollup, a day's
		// increments counted at its end; the counter carries on from that
		// window's base, which holds every increment before it.
		wb2, w2, found2, err := r.firstBase(q, id, windowOf(floor), lastW)
		if err != nil {
			return false, err
		}
		if !found2 {
			return r.addDays(q, id, mint, last, bounds, acc)
		}
		if n := sort.Search(len(bounds), func(i int) bool { return bounds[i] >= w2 }); n > 0 {
			days, err := r.addDays(q, id, mint, bounds[n-1], bounds[:n], acc)
			if err != nil {
				return false, err
			}
			if !days { // no daily rollup there either
				for i := range n {
					acc[i] += wb.base
				}
			}
			r.bi = n
		}
		r.counter = wb2.base
	}
	// Closed windows from their summaries, where the boundaries allow;
	// every closed window of an increment series has them. The hourly
	// ones lead, a key a day: bounds on the hour grid read nothing else.
	raw := first
	if q.s.summarized() {
		it, err := r.open(q, id, &r.hourIter, hourKey(id, hourDay(first)), hourKey(id, hourDay(lastW)+dayMs))
		if err != nil {
			return false, err
		}
		for valid := it.First(); valid; valid = it.Next() {
			v, err := it.ValueAndErr()
			if err != nil {
				return false, err
			}
			rd := newHourDayReader(v, periodFromKey(it.Key()))
			for {
				w, pts, ok, err := rd.next()
				if err != nil {
					return false, err
				}
				if !ok {
					break
				}
				if w < first || w > lastW {
					continue
				}
				if err := r.closedWindow(q, id, w, pts); err != nil {
					return false, err
				}
				if r.bi == len(bounds) {
					return true, nil
				}
				raw = w + windowMs
			}
		}
		if err := it.Error(); err != nil {
			return false, err
		}
	}
	// The windows without summaries: the newest (or all, where increments
	// are not finer than a minute).
	it, err := r.open(q, id, &r.iter, chunkKey(id, raw), chunkKey(id, lastW+windowMs))
	if err != nil {
		return false, err
	}
	for valid := it.First(); valid && r.bi < len(bounds); valid = it.Next() {
		v, err := it.ValueAndErr()
		if err == nil {
			r.chunks, err = decodeWindow(v, r.chunks[:0])
		}
		if err == nil {
			err = r.read()
		}
		if err != nil {
			return false, err
		}
	}
	if err := it.Error(); err != nil {
		return false, err
	}
	for ; r.bi < len(bounds); r.bi++ {
		acc[r.bi] += r.counter
	}
	return true, nil
}

// closedWindow adds the increments of a closed window of series id, whose
// hourly summary's points are hourPts, from the coarsest summary on the bounds' grid,
// else from the raw increments, else (retention removed them) from the
// finest summary left.
func (r *counterReader) closedWindow(q *querier, id uint64, w int64, hourPts []byte) error {
	hourly := func() error {
		for j := range len(hourPts) / hourPointBytes {
			if !r.point(hourPointOf(hourPts, w, j)) {
				break
			}
		}
		return nil
	}
	if !r.raw && (r.onGrid.at(hourRes) || onGrid(r.bounds[r.bi:], w+windowMs, hourRes)) {
		return hourly()
	}
	r.sums, r.chunks = r.sums[:0], r.chunks[:0]
	it, err := r.open(q, id, &r.sumIter, summaryKey(id, w), summaryKey(id, w+windowMs))
	if err != nil {
		return err
	}
	if it.First() {
		if r.sums, err = decodeSummaries(it.Value(), r.sums); err != nil {
			return err
		}
	} else if err := it.Error(); err != nil {
		return err
	}
	for i := len(r.sums) - 1; i >= 0 && !r.raw; i-- {
		if res := r.sums[i].res; r.onGrid.at(res) || onGrid(r.bounds[r.bi:], w+windowMs, res) {
			r.chunks = append(r.chunks, timedChunk{c: r.sums[i].c})
			return r.read()
		}
	}
	v, closer, err := q.snapFor(id).Get(chunkKey(id, w))
	if errors.Is(err, pebble.ErrNotFound) {
		// Retention removed the raw increments: the finest summary left
		// is the best answer there is.
		if len(r.sums) == 0 {
			return hourly()
		}
		r.chunks = append(r.chunks, timedChunk{c: r.sums[0].c})
		return r.read()
	}
	if err != nil {
		return fmt.Errorf("window %d: %w", w, err)
	}
	defer closer.Close()
	if r.chunks, err = decodeWindow(v, r.chunks); err != nil {
		return err
	}
	return r.read()
}

// addDays is add from the daily rollup, for bounds on its grid: a key per
// day with increments, (base, total), where the day's increments count at
// its end.
func (r *counterReader) addDays(q *querier, id uint64, mint, last int64, bounds []int64, acc []float64) (bool, error) {
	lower := dayLevel.periodKey(id, dayOf(max(mint, math.MinInt64+dayMs)))
	upper := dayLevel.periodKey(id, dayOf(min(last, math.MaxInt64-2*dayMs))+dayMs)
	it, err := r.open(q, id, &r.dayIter, lower, upper)
	if err != nil {
		return false, err
	}
	bi, found := 0, false
	var counter float64
	for valid := it.First(); valid && bi < len(bounds); valid = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return false, err
		}
		wb, err := decodeBase(v)
		if err != nil {
			return false, err
		}
		if !found {
			counter, found = wb.base, true
		}
		for end := periodFromKey(it.Key()) + dayMs; bi < len(bounds) && bounds[bi] < end; bi++ {
			acc[bi] += counter
		}
		counter += wb.total
	}
	if err := it.Error(); err != nil || !found {
		return false, err
	}
	for ; bi < len(bounds); bi++ {
		acc[bi] += counter
	}
	return true, nil
}

// firstBase returns the base of the series' first window in [first, last]
// and that window (found false: no window there).
func (r *counterReader) firstBase(q *querier, id uint64, first, last int64) (windowBase, int64, bool, error) {
	it, err := r.open(q, id, &r.baseIter, baseKey(id, first), baseKey(id, last+windowMs))
	if err != nil {
		return windowBase{}, 0, false, err
	}
	if !it.First() {
		return windowBase{}, 0, false, it.Error()
	}
	v, err := it.ValueAndErr()
	if err != nil {
		return windowBase{}, 0, false, err
	}
	wb, err := decodeBase(v)
	return wb, periodFromKey(it.Key()), err == nil, err
}

// open returns *it, created or reused, bounded to [lower, upper).
func (r *counterReader) open(q *querier, id uint64, it **pebble.Iterator, lower, upper []byte) (*pebble.Iterator, error) {
	if snap := q.snapFor(id); snap != q.snap {
		// A series of a cut being applied (cut_view.go): its own
		// iterators, on the view's snapshot.
		if r.viewIters == nil {
			r.viewIters = map[**pebble.Iterator]*pebble.Iterator{}
		}
		vit := r.viewIters[it]
		if vit == nil {
			vit, err := snap.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
			if err == nil {
				r.viewIters[it] = vit
			}
			return vit, err
		}
		vit.SetBounds(lower, upper)
		return vit, nil
	}
	if *it == nil {
		var err error
		*it, err = q.snap.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
		return *it, err
	}
	(*it).SetBounds(lower, upper)
	return *it, nil
}

// read adds r.chunks' increments to the counter (see point).
func (r *counterReader) read() error {
	for _, c := range r.chunks {
		r.it = c.c.Iterator(r.it)
		for r.it.Next() == chunkenc.ValFloat {
			if !r.point(r.it.At()) {
				return nil
			}
		}
		if err := r.it.Err(); err != nil {
			return err
		}
	}
	return nil
}

// point adds increment f at t to the counter, adding the counter to the
// accumulator at every boundary before t. It reports whether boundaries
// are left.
func (r *counterReader) point(t int64, f float64) bool {
	for r.bi < len(r.bounds) && r.bounds[r.bi] < t {
		r.acc[r.bi] += r.counter
		r.bi++
	}
	if r.bi == len(r.bounds) {
		return false
	}
	r.counter += f
	return true
}

// levelGrid holds, per summary level (summaryLevels), whether every
// bound lies on its grid: looked up once a window, it is an array, not
// a map (a map was 5% of an hourly 30-day query).
type levelGrid [len(summaryLevels)]bool

// at reports the entry of the level of resolution res (false for others).
func (g *levelGrid) at(res int64) bool {
	for i, r := range summaryLevels {
		if r == res {
			return g[i]
		}
	}
	return false
}

// onGrid reports whether every bound before end lies on a multiple of res
// or just after one (e − range + 1 for e on the grid): there, a summary of
// the increments per res gives the same counters as the increments.
func onGrid(bounds []int64, end, res int64) bool {
	for _, b := range bounds {
		if b >= end {
			break
		}
		if m := b % res; m != 0 && m != 1 && m != 1-res {
			return false
		}
	}
	return true
}

// pointSeriesSet is a set of series held as points.
type pointSeriesSet struct {
	series []*pointSeries
	i      int
}

func (s *pointSeriesSet) Next() bool                        { s.i++; return s.i < len(s.series) }
func (s *pointSeriesSet) At() storage.Series                { return s.series[s.i] }
func (s *pointSeriesSet) Err() error                        { return nil }
func (s *pointSeriesSet) Warnings() annotations.Annotations { return nil }

type pointSeries struct {
	lset labels.Labels
	t    []int64
	f    []float64
}

func (s *pointSeries) Labels() labels.Labels { return s.lset }

func (s *pointSeries) Iterator(it chunkenc.Iterator) chunkenc.Iterator {
	if pi, ok := it.(*pointIterator); ok {
		*pi = pointIterator{s: s, i: -1}
		return pi
	}
	return &pointIterator{s: s, i: -1}
}

type pointIterator struct {
	s *pointSeries
	i int
}

func (p *pointIterator) Next() chunkenc.ValueType {
	if p.i+1 >= len(p.s.t) {
		p.i = len(p.s.t)
		return chunkenc.ValNone
	}
	p.i++
	return chunkenc.ValFloat
}

func (p *pointIterator) Seek(t int64) chunkenc.ValueType {
	if p.i < 0 {
		p.i = 0
	}
	j, _ := slices.BinarySearch(p.s.t[p.i:], t)
	p.i += j
	if p.i >= len(p.s.t) {
		return chunkenc.ValNone
	}
	return chunkenc.ValFloat
}

func (p *pointIterator) At() (int64, float64) { return p.s.t[p.i], p.s.f[p.i] }
func (p *pointIterator) AtHistogram(*histogram.Histogram) (int64, *histogram.Histogram) {
	return p.s.t[p.i], nil
}

func (p *pointIterator) AtFloatHistogram(*histogram.FloatHistogram) (int64, *histogram.FloatHistogram) {
	return p.s.t[p.i], nil
}
func (p *pointIterator) AtT() int64  { return p.s.t[p.i] }
func (p *pointIterator) AtST() int64 { return 0 }
func (p *pointIterator) Err() error  { return nil }
