package otelanalytics

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/proxylens/proxylens/selfmetrics"
)

// Family is one of the aggregated metric families.
type Family uint8

// The aggregated families. Their names and labels are a contract, listed in
// docs/metrics.md.
const (
	FamilyRequests Family = iota // proxy_requests_total
	FamilyDuration               // proxy_request_duration_seconds
	FamilyTransfer               // proxy_transfer_bytes_total
	FamilyEndpoint               // proxy_endpoint_requests_total
	FamilyAdjusted               // proxy_sample_adjusted_requests_total
	NumFamilies
)

// DurationBuckets are the upper bounds, in seconds, of the latency histogram:
// from 5 ms to 60 s, dense where proxied requests usually finish.
var DurationBuckets = [...]float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60}

// Layout of a duration series' values: one non-cumulative count per bucket
// (the last for +Inf), then the sum of durations in seconds.
const (
	durationBuckets = len(DurationBuckets) + 1
	durationSum     = durationBuckets
)

// Layout of a transfer series' values.
const (
	transferSent     = 0
	transferReceived = 1
)

var familyInfo = [NumFamilies]struct {
	name  string
	width int
}{
	FamilyRequests: {"proxy_requests_total", 1},
	FamilyDuration: {"proxy_request_duration_seconds", durationBuckets + 1},
	FamilyTransfer: {"proxy_transfer_bytes_total", 2},
	FamilyEndpoint: {"proxy_endpoint_requests_total", 1},
	FamilyAdjusted: {"proxy_sample_adjusted_requests_total", 1},
}

// Name returns the metric family name.
func (f Family) Name() string { return familyInfo[f].name }

// Width returns how many values a series of the family holds: 1 for the
// request counters, 2 (sent, received) for transfer, and for durations one
// count per bucket (+Inf last, not cumulative) followed by the sum.
func (f Family) Width() int { return familyInfo[f].width }

// SeriesKey identifies a series of a family by the dictionary ids of its
// label values. Fields that are not labels of the family are zero. The
// overflow series of every family is SeriesKey{Overflow: true}.
type SeriesKey struct {
	Source, Tier, Application, Domain, ErrorType, Proxy uint32
	StatusCode                                          uint16
	Method                                              Method
	Success                                             bool
	Overflow                                            bool
}

// OverflowKey is the key of a family's overflow series.
var OverflowKey = SeriesKey{Overflow: true}

// keyFor builds the key of a record in family f.
func keyFor(f Family, r *Record, ref *Refs) SeriesKey {
	switch f {
	case FamilyRequests:
		return SeriesKey{
			Source: ref[RefSource], Tier: ref[RefTier], Application: ref[RefApplication],
			Domain: ref[RefDomain], Method: r.Method, StatusCode: r.StatusCode,
			Success: r.Success, ErrorType: ref[RefErrorType],
		}
	case FamilyDuration:
		return SeriesKey{Source: ref[RefSource], Tier: ref[RefTier], Application: ref[RefApplication], Success: r.Success}
	case FamilyTransfer:
		return SeriesKey{Source: ref[RefSource], Application: ref[RefApplication]}
	case FamilyAdjusted:
		return SeriesKey{Source: ref[RefSource]}
	default:
		return SeriesKey{Source: ref[RefSource], Proxy: ref[RefProxy], Success: r.Success}
	}
}

// hasNoID reports whether a label of k could not be interned.
func (k *SeriesKey) hasNoID() bool {
	return k.Source == NoID || k.Tier == NoID || k.Application == NoID ||
		k.Domain == NoID || k.ErrorType == NoID || k.Proxy == NoID
}

// AggregationConfig bounds the aggregates.
type AggregationConfig struct {
	// MaxSeriesPerFamily bounds the series of each family; past it, spans go
	// to the family's overflow series. Default 100000.
	MaxSeriesPerFamily int `yaml:"max_series_per_family"`
	// MaxDomains bounds the distinct domains of proxy_requests_total; spans
	// to further domains go to the overflow series. Default 10000.
	MaxDomains int `yaml:"max_domains"`
	// MaxPendingIncrements bounds the per-interval increments held between
	// two cuts; past it the pipeline cuts early, and past twice as many
	// (while a cut of history is still being written) it refuses batches
	// with ErrOverloaded until a cut takes them. Default 1000000.
	MaxPendingIncrements int `yaml:"max_pending_increments"`
}

// DefaultAggregationConfig returns the default bounds.
func DefaultAggregationConfig() AggregationConfig {
	return AggregationConfig{MaxSeriesPerFamily: 100000, MaxDomains: 10000, MaxPendingIncrements: 1000000}
}

// Validate reports every problem of c at once.
func (c AggregationConfig) Validate() error {
	var errs []error
	if c.MaxSeriesPerFamily < 1 {
		errs = append(errs, fmt.Errorf("aggregation.max_series_per_family: must be at least 1, got %d", c.MaxSeriesPerFamily))
	}
	if c.MaxDomains < 1 {
		errs = append(errs, fmt.Errorf("aggregation.max_domains: must be at least 1, got %d", c.MaxDomains))
	}
	if c.MaxPendingIncrements < 1000 {
		errs = append(errs, fmt.Errorf("aggregation.max_pending_increments: must be at least 1000, got %d", c.MaxPendingIncrements))
	}
	return errors.Join(errs...)
}

// Aggregator keeps exact, weighted aggregates of every mapped span: the
// cumulative totals of each series (what /metrics shows) and, for history,
// the increments of each series per interval of event time since the last
// Cut. A span ending in (t−resolution, t] counts in the increment at t, t a
// multiple of the resolution, whenever it arrives.
type Aggregator struct {
	resolution int64
	maxPending int

	mu         sync.Mutex
	fams       [NumFamilies]family
	idxs       []uint32 // Apply's scratch: the requests series of each record
	domains    []uint64 // bitset of admitted domain ids
	nDomains   int
	maxDomains int
	pending    int          // increments held, all families
	held       atomic.Int64 // pending, for Saturated without the lock
	taken      atomic.Int64 // increments of the cut being written (inflight), for Backlog
	gen        uint32       // cut generation, for the increment slot caches

	// For the Overlay: version changes with every change of the
	// increments held (Apply, cut, Restore, cutWritten); inflight is the
	// cut being written (nil: none), lastSealed the journal segment the
	// newest cut sealed.
	version    uint64
	inflight   *rawPart
	written    func() // the Overlay's release, called after cutWritten (nil: none)
	lastSealed uint64

	overflow   [NumFamilies]*metrics.Counter // spans sent to overflow series
	cutRequest chan struct{}

	// ledger is the fixed costs' accrual on the same grid; it is restored
	// with the totals and used by the pipeline's flushes only.
	ledger *Ledger
}

type family struct {
	f     Family
	width int
	limit int

	index  map[SeriesKey]uint32
	keys   []SeriesKey  // by series index; append-only
	totals []float64    // width values per series
	dirty  []uint32     // series changed since the last cut
	meta   []seriesMeta // by series index

	overflow int64 // index of the overflow series, -1 until needed

	pend *pendIndex // → offset in incs
	incs pendBlocks

	// What the last cut took, emptied outside the lock for the next cut to
	// swap in, so that a cut holds the lock only to copy the totals.
	sparePend  *pendIndex
	spareDirty []uint32

	// Endpoint family only: its series by proxy id (below maxByProxy), for
	// the source the proxy was first seen with; other sources and larger
	// ids go through index. It spares a map lookup a span.
	byProxy []proxySeries
}

// seriesMeta is what Apply reads and writes of a series besides its
// values, kept together so that a span touches one cache line of it per
// family rather than one per field (flat out, Apply waits mostly on
// memory).
type seriesMeta struct {
	// The increment slot last used, valid while lastGen is the
	// aggregator's generation (it changes at every cut). Spans of a batch
	// mostly fall in one interval, so this spares most pend lookups.
	lastT   int64
	lastOff uint32
	lastGen uint32
	// Requests family only: the duration and transfer series its spans
	// also count in (their keys follow from its own), or noSeries.
	dur, xfer uint32
	dirty     bool // in the family's dirty list
}

// proxySeries is an entry of family.byProxy: the endpoint series of one
// proxy and source, by success (index 1) and failure (0).
type proxySeries struct {
	source uint32 // NoID: unused
	idx    [2]uint32
}

// maxByProxy bounds family.byProxy: 65,536 entries of 12 bytes.
const maxByProxy = 1 << 16

const noSeries = ^uint32(0)

type pendKey struct {
	series uint32
	t      int64
}

// NewAggregator returns an aggregator whose event-time increments fall on a
// grid of resolution (the flush interval). reg may be nil.
func NewAggregator(cfg AggregationConfig, resolution time.Duration, reg *selfmetrics.Registry) *Aggregator {
	def := DefaultAggregationConfig()
	if cfg.MaxSeriesPerFamily <= 0 {
		cfg.MaxSeriesPerFamily = def.MaxSeriesPerFamily
	}
	if cfg.MaxDomains <= 0 {
		cfg.MaxDomains = def.MaxDomains
	}
	if cfg.MaxPendingIncrements <= 0 {
		cfg.MaxPendingIncrements = def.MaxPendingIncrements
	}
	if resolution <= 0 {
		resolution = 15 * time.Second
	}
	a := &Aggregator{
		resolution: int64(resolution),
		maxPending: cfg.MaxPendingIncrements,
		maxDomains: cfg.MaxDomains,
		cutRequest: make(chan struct{}, 1),
		gen:        1,
		ledger:     newLedger(resolution),
	}
	reg = selfmetrics.OrNew(reg)
	for f := range NumFamilies {
		a.overflow[f] = reg.Counter(fmt.Sprintf(`proxylens_series_overflow_total{family=%q}`, f.Name()),
			"Spans counted in a family's overflow series because a cardinality limit was reached.")
		reg.Gauge(fmt.Sprintf(`proxylens_series{family=%q}`, f.Name()),
			"Series held in memory per metric family, overflow series included.",
			func() float64 { return float64(a.SeriesCount(f)) })
		a.fams[f] = family{
			f: f, width: f.Width(), limit: cfg.MaxSeriesPerFamily,
			index: make(map[SeriesKey]uint32), overflow: -1,
			pend: newPendIndex(a.resolution, 0), incs: newPendBlocks(f.Width()),
		}
	}
	return a
}

// Resolution returns the event-time grid of the increments.
func (a *Aggregator) Resolution() time.Duration { return time.Duration(a.resolution) }

// CutRequested is signalled when the increments held reach their bound and
// a cut should not wait for the next tick.
func (a *Aggregator) CutRequested() <-chan struct{} { return a.cutRequest }

// IntervalEnd returns the grid point whose interval (t−resolution, t] holds
// the Unix-nanosecond time ts.
func (a *Aggregator) IntervalEnd(ts int64) int64 {
	r := a.resolution
	q := ts / r
	if ts%r > 0 {
		q++ // round up; for negative ts, truncation already rounded up
	}
	return q * r
}

// Apply adds a batch of mapped records, whose strings have the dictionary
// ids refs.
func (a *Aggregator) Apply(recs []Record, refs []Refs) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.version++
	before := a.pending
	reqs := &a.fams[FamilyRequests]
	// The requests series of every record first, in a loop that does
	// little else, so that the processor overlaps the cache misses of the
	// index lookups; series are still created in record order.
	if cap(a.idxs) < len(recs) {
		a.idxs = make([]uint32, len(recs))
	}
	idxs := a.idxs[:len(recs)]
	for i := range recs {
		k := keyFor(FamilyRequests, &recs[i], &refs[i])
		idxs[i] = a.series(FamilyRequests, k, !a.admitDomain(k.Domain))
	}
	for i := range recs {
		r, ref := &recs[i], &refs[i]
		w := r.Weight
		t := a.IntervalEnd(r.EndTime)

		ri := idxs[i]
		tot, inc := a.touch(FamilyRequests, ri, t)
		tot[0] += w
		inc[0] += w

		// The duration and transfer series follow from the requests series,
		// unless that is the overflow series.
		var di, xi uint32
		if rm := &reqs.meta[ri]; int64(ri) != reqs.overflow && rm.dur != noSeries {
			di, xi = rm.dur, rm.xfer
			a.countOverflow(FamilyDuration, di)
			a.countOverflow(FamilyTransfer, xi)
		} else {
			di = a.series(FamilyDuration, keyFor(FamilyDuration, r, ref), false)
			xi = a.series(FamilyTransfer, keyFor(FamilyTransfer, r, ref), false)
			if int64(ri) != reqs.overflow {
				rm.dur, rm.xfer = di, xi
			}
		}

		secs := float64(r.Duration) / 1e9
		b := bucketOf(secs)
		tot, inc = a.touch(FamilyDuration, di, t)
		tot[b] += w
		inc[b] += w
		tot[durationSum] += w * secs
		inc[durationSum] += w * secs

		tot, inc = a.touch(FamilyTransfer, xi, t)
		sent, recv := w*float64(r.BytesSent), w*float64(r.BytesReceived)
		tot[transferSent] += sent
		inc[transferSent] += sent
		tot[transferReceived] += recv
		inc[transferReceived] += recv

		ei := a.endpointSeries(r, ref)
		tot, inc = a.touch(FamilyEndpoint, ei, t)
		tot[0] += w
		inc[0] += w

		// Requests that stand for others (an upstream sampler's adjusted
		// count): the counts of their intervals are estimates.
		if w != 1 {
			ai := a.series(FamilyAdjusted, keyFor(FamilyAdjusted, r, ref), false)
			tot, inc = a.touch(FamilyAdjusted, ai, t)
			tot[0] += w
			inc[0] += w
		}
	}
	a.held.Store(int64(a.pending))
	if cap(a.idxs) > 1<<16 {
		a.idxs = nil // a rare huge batch: do not keep its scratch
	}
	if a.pending >= a.maxPending && before < a.maxPending {
		select {
		case a.cutRequest <- struct{}{}:
		default:
		}
	}
}

// bucketOf returns the histogram bucket of a duration in seconds.
func bucketOf(secs float64) int {
	for i, ub := range DurationBuckets {
		if secs <= ub {
			return i
		}
	}
	return len(DurationBuckets)
}

// admitDomain reports whether a domain id may have series of its own.
func (a *Aggregator) admitDomain(id uint32) bool {
	if id == 0 {
		return true
	}
	if id == NoID {
		return false
	}
	w, bit := id/64, uint64(1)<<(id%64)
	if int(w) < len(a.domains) && a.domains[w]&bit != 0 {
		return true
	}
	if a.nDomains >= a.maxDomains {
		return false
	}
	for int(w) >= len(a.domains) {
		a.domains = append(a.domains, 0)
	}
	a.domains[w] |= bit
	a.nDomains++
	return true
}

// series finds or creates the series of k, or gives the family's overflow
// series when k may not have one of its own.
func (a *Aggregator) series(f Family, k SeriesKey, overflow bool) uint32 {
	fam := &a.fams[f]
	if idx, ok := fam.index[k]; ok {
		return idx
	}
	if overflow || k.hasNoID() || len(fam.keys) >= fam.limit {
		a.overflow[f].Inc()
		return fam.overflowSeries()
	}
	return fam.add(k)
}

// endpointSeries finds or creates the endpoint series of a record, through
// the family's byProxy table where it can.
func (a *Aggregator) endpointSeries(r *Record, ref *Refs) uint32 {
	fam := &a.fams[FamilyEndpoint]
	src, proxy := ref[RefSource], ref[RefProxy]
	if proxy >= maxByProxy || src == NoID {
		return a.series(FamilyEndpoint, keyFor(FamilyEndpoint, r, ref), false)
	}
	ok := 0
	if r.Success {
		ok = 1
	}
	if int(proxy) < len(fam.byProxy) {
		if ps := &fam.byProxy[proxy]; ps.source == src && ps.idx[ok] != noSeries {
			a.countOverflow(FamilyEndpoint, ps.idx[ok])
			return ps.idx[ok]
		}
	}
	idx := a.series(FamilyEndpoint, keyFor(FamilyEndpoint, r, ref), false)
	for int(proxy) >= len(fam.byProxy) {
		fam.byProxy = append(fam.byProxy, proxySeries{source: NoID, idx: [2]uint32{noSeries, noSeries}})
	}
	ps := &fam.byProxy[proxy]
	if ps.source == NoID {
		ps.source = src
	}
	if ps.source == src {
		ps.idx[ok] = idx
	}
	return idx
}

// countOverflow counts a span that reached the overflow series of f through
// a cached series index.
func (a *Aggregator) countOverflow(f Family, idx uint32) {
	if int64(idx) == a.fams[f].overflow {
		a.overflow[f].Inc()
	}
}

// touch returns the cumulative values of series idx and its increment at t
// (created if needed), for the caller to add to.
func (a *Aggregator) touch(f Family, idx uint32, t int64) (tot, inc []float64) {
	fam := &a.fams[f]
	w := fam.width
	m := &fam.meta[idx]
	if !m.dirty {
		m.dirty = true
		fam.dirty = append(fam.dirty, idx)
	}
	var off uint32
	if m.lastGen == a.gen && m.lastT == t {
		off = m.lastOff
	} else {
		off = a.incSlot(fam, idx, t)
		m.lastGen, m.lastT, m.lastOff = a.gen, t, off
	}
	o := int(idx) * w
	return fam.totals[o : o+w : o+w], fam.incs.mut(off)
}

// incSlot finds or creates the increment of series idx at t.
func (a *Aggregator) incSlot(fam *family, idx uint32, t int64) uint32 {
	pk := pendKey{series: idx, t: t}
	off, added := fam.pend.find(pk, uint32(fam.incs.len()))
	if added {
		fam.incs.add(pk)
		a.pending++
	}
	return off
}

func (fam *family) add(k SeriesKey) uint32 {
	idx := uint32(len(fam.keys))
	fam.index[k] = idx
	fam.keys = append(fam.keys, k)
	fam.totals = append(fam.totals, make([]float64, fam.width)...)
	fam.meta = append(fam.meta, seriesMeta{dur: noSeries, xfer: noSeries})
	return idx
}

func (fam *family) overflowSeries() uint32 {
	if fam.overflow < 0 {
		fam.overflow = int64(fam.add(OverflowKey))
	}
	return uint32(fam.overflow)
}

// LoadTotals restores a series' cumulative values while the store opens,
// before any Apply. Loaded series count towards the series limit.
func (a *Aggregator) LoadTotals(f Family, k SeriesKey, values []float64) error {
	if f >= NumFamilies {
		return fmt.Errorf("unknown family %d", f)
	}
	fam := &a.fams[f]
	if len(values) != fam.width {
		return fmt.Errorf("%s: series with %d values, want %d", f.Name(), len(values), fam.width)
	}
	for _, v := range values {
		if math.IsNaN(v) || v < 0 {
			return fmt.Errorf("%s: invalid total %v", f.Name(), v)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	idx, ok := fam.index[k]
	if !ok {
		if k == OverflowKey {
			idx = fam.overflowSeries()
		} else {
			idx = fam.add(k)
		}
		if f == FamilyRequests && k.Domain != 0 && k.Domain != NoID {
			w, bit := k.Domain/64, uint64(1)<<(k.Domain%64)
			for int(w) >= len(a.domains) {
				a.domains = append(a.domains, 0)
			}
			if a.domains[w]&bit == 0 {
				a.domains[w] |= bit
				a.nDomains++
			}
		}
	}
	copy(fam.totals[int(idx)*fam.width:], values)
	return nil
}

// Snapshot returns the keys and a copy of the cumulative values of every
// series of family f (Width values per key).
func (a *Aggregator) Snapshot(f Family) ([]SeriesKey, []float64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	fam := &a.fams[f]
	return fam.keys[:len(fam.keys):len(fam.keys)], append([]float64(nil), fam.totals...)
}

// SeriesCount returns the number of series of family f, overflow included.
func (a *Aggregator) SeriesCount(f Family) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.fams[f].keys)
}

// OverflowSpans returns how many spans went to the overflow series of f.
func (a *Aggregator) OverflowSpans(f Family) uint64 { return a.overflow[f].Get() }

// Saturated reports whether the increments held reached twice
// MaxPendingIncrements: a cut was requested at once, and is not done
// yet (a cut of history takes a while); ingest should wait for it.
func (a *Aggregator) Saturated() bool { return a.held.Load() >= 2*int64(a.maxPending) }

// MaxPending returns MaxPendingIncrements: at it a cut is requested, at
// twice it batches are refused.
func (a *Aggregator) MaxPending() int { return a.maxPending }

// Backlog returns the increments held in memory until the store has
// them: the pending ones and those of the cut being written. It does not
// take the lock.
func (a *Aggregator) Backlog() int { return int(a.held.Load() + a.taken.Load()) }

// Pending returns the number of increments held until the next cut.
func (a *Aggregator) Pending() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pending
}
