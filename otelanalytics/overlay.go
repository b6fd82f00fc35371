package otelanalytics

import (
	"cmp"
	"slices"
	"sync"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

// OverlayPart is one part of what Overlay serves: increments that reach
// the store together. It is the same struct literal as
// pebblestore.OverlayPart (an alias in both packages, as StoreCut is), so
// that *Overlay implements pebblestore.Overlay without either package
// importing the other.
type OverlayPart = struct {
	// Sealed is the journal segment the cut of these increments sealed,
	// or 0 for increments not cut yet.
	Sealed uint64
	// After, for increments not cut yet, is the newest journal segment
	// sealed before they were read (0: none since the start).
	After uint64
	// Series calls fn for each series of the part that the matchers may
	// select, with its increments: times in Unix milliseconds, ascending
	// and distinct, and the increment at each. Nothing handed to fn may be
	// changed; it stays valid.
	Series func(ms []*labels.Matcher, fn func(ls labels.Labels, t []int64, v []float64))
}

// Overlay serves the aggregator's increments that no committed cut has
// written yet, the ones still pending and those of the cut being
// written, as the Prometheus series a cut writes (see Cut.Increments), so
// that the query API answers from them as Prometheus answers from its
// head: a span counts in queries as soon as its batch is applied. The
// cost series (proxy_cost_*) are priced at the cut and are not served
// before it.
//
// A view is read under the aggregator's lock (the pending increments are
// shared, copied on write; the cut's taken as they are) and kept until
// the next Apply, cut or Restore; each family's series are built from it
// on first use. All methods are safe for concurrent use.
type Overlay struct {
	agg  *Aggregator
	dict *Dict

	mu      sync.Mutex // the cached view; taken before Aggregator.mu
	version uint64
	view    []OverlayPart
	cached  bool

	lmu    sync.Mutex                     // labels
	labels [NumFamilies][][]labels.Labels // by series index: its Prometheus series, built once
}

// NewOverlay returns the overlay of agg's increments, whose label strings
// are in dict.
func NewOverlay(agg *Aggregator, dict *Dict) *Overlay {
	o := &Overlay{agg: agg, dict: dict}
	agg.mu.Lock()
	agg.written = o.release
	agg.mu.Unlock()
	return o
}

// release drops the cached view once a cut is written: it holds the cut's
// increments (after a backfill, tens of megabytes), which no query needs
// any more, and an idle server would keep them until the next query.
func (o *Overlay) release() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.view, o.cached = nil, false
}

// rawPart is a part as the aggregator holds it: a cut's increments, or a
// copy of the pending ones. It does not change once taken.
type rawPart struct {
	sealed, after uint64
	fams          [NumFamilies]rawFamily
}

// rawFamily is a family's increments as the aggregator took them.
type rawFamily struct {
	keys []SeriesKey // by series index (a prefix of the family's)
	incs pendBlocks
}

// OverlayView returns the increments held now: those of the cut being
// written, if any, and the pending ones.
func (o *Overlay) OverlayView() []OverlayPart {
	o.mu.Lock()
	defer o.mu.Unlock()
	a := o.agg
	a.mu.Lock()
	if o.cached && a.version == o.version {
		a.mu.Unlock()
		return o.view
	}
	o.version, o.cached = a.version, true
	var raws []*rawPart
	if a.inflight != nil {
		raws = append(raws, a.inflight)
	}
	if a.pending > 0 {
		rp := &rawPart{after: a.lastSealed}
		for f := range a.fams {
			fam := &a.fams[f]
			rp.fams[f] = rawFamily{keys: fam.keys, incs: fam.incs.share()}
		}
		raws = append(raws, rp)
	}
	a.mu.Unlock()
	o.view = make([]OverlayPart, 0, len(raws))
	for _, rp := range raws {
		vp := &viewPart{o: o, raw: rp}
		o.view = append(o.view, OverlayPart{Sealed: rp.sealed, After: rp.after, Series: vp.series})
	}
	return o.view
}

// viewPart builds a raw part's series family by family, on first use.
type viewPart struct {
	o    *Overlay
	raw  *rawPart
	fams [NumFamilies]struct {
		once   sync.Once
		series []overlaySeries
	}
}

type overlaySeries struct {
	ls labels.Labels
	t  []int64
	v  []float64
}

func (p *viewPart) series(ms []*labels.Matcher, fn func(ls labels.Labels, t []int64, v []float64)) {
	for f := range NumFamilies {
		rf := &p.raw.fams[f]
		if rf.incs.len() == 0 || !familyMayMatch(f, ms) {
			continue
		}
		pf := &p.fams[f]
		pf.once.Do(func() { pf.series = p.o.build(f, rf) })
		for i := range pf.series {
			fn(pf.series[i].ls, pf.series[i].t, pf.series[i].v)
		}
	}
}

// familyNames are the metric names of each family's Prometheus series.
var familyNames = [NumFamilies][]string{
	FamilyRequests: {FamilyRequests.Name()},
	FamilyDuration: {"proxy_request_duration_seconds_bucket", "proxy_request_duration_seconds_sum", "proxy_request_duration_seconds_count"},
	FamilyTransfer: {FamilyTransfer.Name()},
	FamilyEndpoint: {FamilyEndpoint.Name()},
	FamilyAdjusted: {FamilyAdjusted.Name()},
}

// familyMayMatch reports whether the metric name matchers of ms select any
// of the family's names.
func familyMayMatch(f Family, ms []*labels.Matcher) bool {
	for _, m := range ms {
		if m.Name != model.MetricNameLabel {
			continue
		}
		if !slices.ContainsFunc(familyNames[f], m.Matches) {
			return false
		}
	}
	return true
}

// build turns a family's increments into Prometheus series: per series
// of the family, the series Cut.Increments writes, with the increments
// ordered by time.
func (o *Overlay) build(f Family, rf *rawFamily) []overlaySeries {
	order := make([]uint32, rf.incs.len())
	for i := range order {
		order[i] = uint32(i)
	}
	slices.SortFunc(order, func(x, y uint32) int {
		a, b := rf.incs.key(x), rf.incs.key(y)
		if a.series != b.series {
			return cmp.Compare(a.series, b.series)
		}
		return cmp.Compare(a.t, b.t)
	})
	var out []overlaySeries
	vals := make([]float64, 0, f.Width()+2)
	for start := 0; start < len(order); {
		idx := rf.incs.key(order[start]).series
		end := start
		for end < len(order) && rf.incs.key(order[end]).series == idx {
			end++
		}
		lsets := o.seriesLabels(f, idx, rf.keys[idx])
		base := len(out)
		times := make([]int64, 0, end-start)
		for range lsets {
			out = append(out, overlaySeries{v: make([]float64, 0, end-start)})
		}
		for _, i := range order[start:end] {
			t := rf.incs.key(i).t / 1e6
			vals = expandIncrement(f, rf.incs.at(i), vals[:0])
			if n := len(times); n > 0 && times[n-1] == t { // same millisecond
				for j, v := range vals {
					out[base+j].v[n-1] += v
				}
				continue
			}
			times = append(times, t)
			for j, v := range vals {
				out[base+j].v = append(out[base+j].v, v)
			}
		}
		for j, ls := range lsets {
			out[base+j].ls, out[base+j].t = ls, times
		}
		start = end
	}
	return out
}

// seriesLabels returns the labels of the Prometheus series of a family's
// series idx (key k), as Cut.Increments names them, built once.
func (o *Overlay) seriesLabels(f Family, idx uint32, k SeriesKey) []labels.Labels {
	o.lmu.Lock()
	defer o.lmu.Unlock()
	cache := &o.labels[f]
	if int(idx) < len(*cache) && (*cache)[idx] != nil {
		return (*cache)[idx]
	}
	for int(idx) >= len(*cache) {
		*cache = append(*cache, nil)
	}
	out := promSeries(f, seriesLabels(f, k, o.dict))
	(*cache)[idx] = out
	return out
}
