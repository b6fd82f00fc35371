package pebblestore

import (
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/prometheus/prometheus/util/kahansum"
)

// The rate pushdown's short ranges and its sums (rate.go). A range shorter
// than minSummaryRange reads no summaries, so a float series' samples are
// read once, in order, and each evaluation window is the slice of them
// between two cursors that only move forward: the work is the samples
// plus the evaluation times, where the engine's path seeks into a buffer
// and copies each window's samples. The sums over many series are
// computed by several workers, a batch of series at a time, and added in
// the series' order, so that they are the same to the bit.

// maxRateWorkers bounds the goroutines one query's rate pushdown uses.
const maxRateWorkers = 8

// rateBatch is the number of series whose points the workers compute
// before they are added to the sums: it bounds the points held at once.
const rateBatch = 64

// slider reads float sample series and computes fn over their short
// ranges. It is not safe for concurrent use: one per goroutine.
type slider struct {
	p            *rateParams
	snaps        [2]*pebble.Snapshot // the querier's two: its own and its cut view's
	its          [2]*pebble.Iterator
	lower, upper []byte
	chunks       []timedChunk
	floatBuf             // the series' samples read
	drops        []int32 // drops[i]: how many of f[1..i] are below the value before them
}

// iter returns an iterator over [lower, upper) of the snapshot series id
// is read from, reusing the one already open on it.
func (sl *slider) iter(id uint64) (*pebble.Iterator, error) {
	snap := sl.p.q.snapFor(id)
	for i, s := range sl.snaps {
		if s == snap {
			sl.its[i].SetBounds(sl.lower, sl.upper)
			return sl.its[i], nil
		}
		if s == nil {
			it, err := sl.p.q.newIter(id, &pebble.IterOptions{LowerBound: slices.Clone(sl.lower), UpperBound: slices.Clone(sl.upper)})
			if err != nil {
				return nil, err
			}
			sl.snaps[i], sl.its[i] = snap, it
			return it, nil
		}
	}
	return nil, fmt.Errorf("series %d: a third snapshot", id)
}

// read reads series id's float samples in [mint, maxt] into sl.t and sl.f,
// stale markers dropped. It reports false, having read part of them, if a
// chunk in range holds histograms.
func (sl *slider) read(id uint64, mint, maxt int64) (bool, error) {
	sl.t, sl.f = sl.t[:0], sl.f[:0]
	if mint > maxt {
		return true, nil
	}
	sl.lower = periodKeyTo(sl.lower[:0], prefixChunks, id, windowOf(mint))
	sl.upper = periodKeyTo(sl.upper[:0], prefixChunks, id, windowOf(maxt)+windowMs)
	it, err := sl.iter(id)
	if err != nil {
		return false, err
	}
	for valid := it.First(); valid; valid = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return false, err
		}
		if sl.chunks, err = decodeWindow(v, sl.chunks[:0]); err != nil {
			return false, fmt.Errorf("window %d: %w", periodFromKey(it.Key()), err)
		}
		if ok, err := sl.add(sl.chunks, mint, maxt); err != nil || !ok {
			if err != nil {
				err = fmt.Errorf("window %d: %w", periodFromKey(it.Key()), err)
			}
			return false, err
		}
	}
	return true, it.Error()
}

// slide appends fn over (e − rng, e] at every evaluation time e to out,
// from the samples read: extrapolatedRate's arithmetic in its order, with
// the sum of the values before each drop taken only over a window that
// has a drop.
func (sl *slider) slide(out *rateSeries) {
	t, f := sl.t, sl.f
	sl.drops = slices.Grow(sl.drops[:0], len(f))[:len(f)]
	drops := sl.drops
	var n int32
	for i := range f {
		if i > 0 && f[i] < f[i-1] {
			n++
		}
		drops[i] = n
	}
	p := sl.p
	if cap(out.t) < len(p.times) {
		out.t, out.f = make([]int64, 0, len(p.times)), make([]float64, 0, len(p.times))
	}
	isRate := p.fn == "rate"
	rngSeconds := (time.Duration(p.rng) * time.Millisecond).Seconds()
	lo, hi := 0, 0
	for _, e := range p.times {
		a := e - p.rng
		for lo < len(t) && t[lo] <= a {
			lo++
		}
		hi = max(hi, lo)
		for hi < len(t) && t[hi] <= e {
			hi++
		}
		if hi-lo < 2 {
			continue
		}
		result := f[hi-1] - f[lo]
		if drops[hi-1] != drops[lo] {
			for i := lo + 1; i < hi; i++ {
				if f[i] < f[i-1] {
					result += f[i-1]
				}
			}
		}
		v := extrapolatedRate(t[lo], t[hi-1], f[lo], result, hi-lo, a, e, rngSeconds, isRate)
		out.t, out.f = append(out.t, e), append(out.f, v)
	}
}

// rateSlot is one series' points in a batch of sumByGroup.
type rateSlot struct {
	rs    rateSeries
	annos annotations.Annotations
	err   error
}

// sumByGroup answers with one series per group of the sum by (grouping)
// that the query applies: the sum of its series' values at each time,
// added as the engine's sum adds them (Kahan–Neumaier, in the order the
// series would reach it, sorted by labels), so that the engine's sum over
// the one series is the same to the bit. It declines (false) where a
// value is a histogram or the sums would hold more than
// maxPushdownPoints, and the caller answers series by series.
func (p *rateParams) sumByGroup(series []*memSeries, ov []*ovSeries, grouping []string) (storage.SeriesSet, bool) {
	type group struct {
		lset labels.Labels
		f, c []float64
		seen []bool
	}
	var (
		b       labels.Builder
		groups  []*group
		groupOf = make([]int, len(series))
		index   = map[uint64][]int{}
	)
	for i, ms := range series {
		b.Reset(ms.lset)
		b.Keep(grouping...)
		ls := b.Labels()
		h := ls.Hash()
		g := slices.IndexFunc(index[h], func(x int) bool { return labels.Equal(groups[x].lset, ls) })
		if g < 0 {
			g = len(groups)
			groups = append(groups, &group{lset: ls})
			index[h] = append(index[h], g)
		} else {
			g = index[h][g]
		}
		groupOf[i] = g
	}
	if len(groups)*len(p.times) > maxPushdownPoints {
		return nil, false
	}
	var annos annotations.Annotations
	workers := max(1, min(runtime.GOMAXPROCS(0), maxRateWorkers, len(series)/rateBatch+1))
	sliders := make([]slider, workers)
	for w := range sliders {
		sliders[w].p = p
	}
	slots := make([]rateSlot, min(rateBatch*workers, len(series)))
	for lo := 0; lo < len(series); lo += len(slots) {
		if err := p.ctx.Err(); err != nil {
			return storage.ErrSeriesSet(err), true
		}
		hi := min(lo+len(slots), len(series))
		var next atomic.Int64
		var wg sync.WaitGroup
		for w := range sliders {
			wg.Go(func() {
				for i := lo + int(next.Add(1)) - 1; i < hi; i = lo + int(next.Add(1)) - 1 {
					var o *ovSeries
					if ov != nil {
						o = ov[i]
					}
					s := &slots[i-lo]
					s.annos, s.err = p.points(&sliders[w], series[i], o, &s.rs)
				}
			})
		}
		wg.Wait()
		for i := lo; i < hi; i++ {
			s := &slots[i-lo]
			if s.err != nil {
				return storage.ErrSeriesSet(fmt.Errorf("series %d: %w", series[i].id, s.err)), true
			}
			if slices.ContainsFunc(s.rs.h, func(h *histogram.FloatHistogram) bool { return h != nil }) {
				return nil, false
			}
			annos.Merge(s.annos)
			if len(s.rs.t) == 0 {
				continue
			}
			g := groups[groupOf[i]]
			if g.seen == nil {
				n := len(p.times)
				g.f, g.c, g.seen = make([]float64, n), make([]float64, n), make([]bool, n)
			}
			k := 0
			for j, t := range s.rs.t {
				for p.times[k] != t {
					k++
				}
				if !g.seen[k] {
					g.seen[k], g.f[k], g.c[k] = true, s.rs.f[j], 0
				} else {
					g.f[k], g.c[k] = kahansum.Inc(s.rs.f[j], g.f[k], g.c[k])
				}
			}
		}
	}
	set := &rateSeriesSet{i: -1, annos: annos}
	for _, g := range groups {
		if g.seen == nil {
			continue
		}
		n := 0
		for _, seen := range g.seen {
			if seen {
				n++
			}
		}
		rs := &rateSeries{lset: g.lset, t: make([]int64, 0, n), f: make([]float64, 0, n)}
		for k, seen := range g.seen {
			if seen {
				rs.t, rs.f = append(rs.t, p.times[k]), append(rs.f, g.f[k]+g.c[k])
			}
		}
		set.pre = append(set.pre, rs)
	}
	slices.SortFunc(set.pre, func(a, b *rateSeries) int { return labels.Compare(a.lset, b.lset) })
	return set, true
}
