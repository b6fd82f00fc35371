package otelanalytics

// How spend reaches applications. Every cost is written as increments of
// one counter, proxy_cost_allocated_total{source, application, currency,
// component}, by event time, so that the store's hourly and daily rollups
// keep it as they keep the request counters:
//
//   - component="usage": what an application's own requests and bytes
//     cost (per_request, per_gb), in the flush interval they ended in;
//   - component="subscription": a fixed price accrues interval by
//     interval, price ÷ period × interval, traffic or not, first to
//     application="unallocated". Once an hour is over, its accrual moves
//     to the applications that used the source in that hour, in
//     proportion to their requests (or bytes: cost_allocation: bytes).
//     An hour nobody used stays unallocated.
//
// A move adds, at each interval of the hour, −amount to unallocated and
// its shares to the applications: every series' increment at every time
// stays ≥ 0, so the counters never go down.
//
// The Ledger remembers, durably and in the cut's own batch, up to which
// interval each source has accrued and which hours are wholly
// unallocated. Usage that arrives later for such an hour (a backfill, a
// late span) allocates it then; an hour already allocated is not
// reallocated. The hour is allocated once its usage has settled: at the
// first cut that brings no usage for any finished hour, or an hour after
// its usage was first seen, so that a backfill is allocated by all of its
// spans, not by the first to arrive.

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/labels"
)

// AllocatedCostMetric is the counter of all spend, allocated to
// applications: labels source, application, currency and component.
const AllocatedCostMetric = "proxy_cost_allocated_total"

// Values of the component label of AllocatedCostMetric, and the
// application of fixed costs no usage could carry.
const (
	CostComponentUsage        = "usage"
	CostComponentSubscription = "subscription"
	UnallocatedApplication    = "unallocated"
)

// The keys a fixed cost is allocated by (cost_allocation).
const (
	AllocateByRequests = "requests"
	AllocateByBytes    = "bytes"
)

const (
	// maxAccrualHistory bounds how far back a subscription starts to
	// accrue when it is first seen: the longest range of an export.
	maxAccrualHistory = 400 * 24 * time.Hour
	// maxAccrualsPerCut bounds the increments one cut's accruals write,
	// all sources together; a long history accrues over several cuts.
	maxAccrualsPerCut = 50000
	// lumpAfter: an hour that ended longer ago than this when it accrues
	// (a history) accrues as one increment at its end, which is what the
	// hourly rollup keeps of it once the raw samples (7 days by default)
	// are gone.
	lumpAfter = 8 * 24 * time.Hour
	// settleWait: an hour's usage is taken as settled this long after it
	// was first seen, even while late usage goes on.
	settleWait = time.Hour

	minuteMs = int64(time.Minute / time.Millisecond)
	hourMs   = int64(time.Hour / time.Millisecond)
	dayMs    = 24 * hourMs
)

// The first bytes of the ledger's keys among the aggregates' totals
// (whose first byte is a Family).
const (
	ledgerThroughKey byte = 0xf0 // + source: newest interval accrued
	ledgerIdleKey    byte = 0xf1 // + day + source: hours wholly unallocated
)

// Ledger is the state of the fixed costs' accrual and allocation (see the
// top of this file). The pipeline's flushes use it one at a time; it is
// not safe for concurrent use.
type Ledger struct {
	res     int64                // interval, ms
	through map[string]int64     // source → newest interval end accrued, ms
	idle    map[idleKey]*idleDay // hours accrued wholly unallocated
	usage   map[hourKey]*hourUse // usage of hours not allocated yet
}

// idleKey is a source's UTC day (its start, ms).
type idleKey struct {
	source string
	day    int64
}

// idleDay marks the hours of a day: bit h is the hour (day+h, day+h+1h].
// fp is the fingerprint of the source's models they accrued under: the
// marks are only acted on under the same models, so that what moves is
// exactly what accrued.
type idleDay struct {
	fp   uint64
	idle uint32 // accrued whole and wholly unallocated
	lump uint32 // accrued as one increment at the hour's end
}

// hourKey is a source's hour, by its end (ms): the intervals ending in
// (end−1h, end].
type hourKey struct {
	source string
	end    int64
}

// hourUse is what the applications used of a source in an hour.
type hourUse struct {
	apps  map[string]*use
	since time.Time // first seen
}

// use is what an application used of a source.
type use struct{ requests, bytes float64 }

// newLedger returns the ledger of an aggregator whose increments fall on
// a grid of res: it accrues minute by minute (or on the least multiple of
// res that is a whole number of minutes), which keeps a month of history
// to a few tens of thousands of increments a source.
func newLedger(res time.Duration) *Ledger {
	r := max(res.Milliseconds(), 1)
	return &Ledger{
		res:     r / gcd(r, minuteMs) * minuteMs,
		through: map[string]int64{},
		idle:    map[idleKey]*idleDay{},
		usage:   map[hourKey]*hourUse{},
	}
}

func isLedgerKey(key []byte) bool {
	return len(key) > 0 && (key[0] == ledgerThroughKey || key[0] == ledgerIdleKey)
}

// load restores one ledger key and value, as a cut's totals wrote them. A
// ledger of another grid is ignored: accrual starts afresh from now.
func (l *Ledger) load(key, value []byte) error {
	switch key[0] {
	case ledgerThroughKey:
		if len(value) != 16 {
			return fmt.Errorf("ledger: accrual mark of %d bytes: %w", len(value), errCorrupt)
		}
		if int64(binary.BigEndian.Uint64(value[8:])) == l.res {
			l.through[string(key[1:])] = int64(binary.BigEndian.Uint64(value))
		}
	case ledgerIdleKey:
		if len(key) < 9 || len(value) != 24 {
			return fmt.Errorf("ledger: idle hours of %d bytes: %w", len(value), errCorrupt)
		}
		if int64(binary.BigEndian.Uint64(value[8:])) == l.res {
			l.idle[idleKey{string(key[9:]), int64(binary.BigEndian.Uint64(key[1:]))}] = &idleDay{
				fp:   binary.BigEndian.Uint64(value),
				idle: binary.BigEndian.Uint32(value[16:]),
				lump: binary.BigEndian.Uint32(value[20:]),
			}
		}
	default:
		return fmt.Errorf("ledger key %#x: %w", key[0], errCorrupt)
	}
	return nil
}

// closeTo returns the newest interval end that may accrue at now: the
// interval before the current one, so that its spans have had a whole
// interval to arrive.
func (l *Ledger) closeTo(now time.Time) int64 {
	return floorDiv(now.UnixMilli(), l.res)*l.res - l.res
}

// start returns the interval end a source's accrual counts from when it
// has none: its first subscription's start, at most maxAccrualHistory
// back (then on an hour).
func (l *Ledger) start(b *CostBook, source string, now time.Time) (int64, bool) {
	span, ok := b.spans[source]
	if !ok {
		return 0, false
	}
	for i := span[0]; i < span[1]; i++ {
		if b.models[i].Subscription == nil {
			continue
		}
		if oldest := now.Add(-maxAccrualHistory).UnixMilli(); b.fromMs[i] < oldest {
			return floorDiv(oldest, hourMs) * hourMs, true
		}
		return (ceilDiv(b.fromMs[i], l.res) - 1) * l.res, true
	}
	return 0, false
}

// due reports whether a cut at now has fixed costs to write even with no
// traffic: intervals to accrue, or usage of finished hours to allocate.
func (l *Ledger) due(b *CostBook, now time.Time) bool {
	if b == nil {
		return false
	}
	to := l.closeTo(now)
	for _, src := range b.sources {
		t, ok := l.through[src]
		if !ok {
			t, ok = l.start(b, src, now)
		}
		if ok && t < to {
			return true
		}
	}
	for k := range l.usage {
		if k.end <= l.through[k.source] {
			return true
		}
	}
	return false
}

// allocPlan is what one cut writes for the fixed costs, and the ledger's
// state once it is written (see Ledger.commit).
type allocPlan struct {
	res     int64 // the ledger's
	incs    []allocInc
	through map[string]int64
	idle    map[idleKey]*idleDay // days changed, whole
	usage   map[hourKey]*hourUse // hours changed; nil: allocated
}

// allocInc is one increment of the subscription component.
type allocInc struct {
	source, application, currency string
	t                             int64 // ms
	v                             float64
}

// plan works out the fixed costs of a cut whose usage is u (see
// Cut.usage): the accruals due at now, and the allocation of the hours
// whose usage has settled. It changes nothing: commit applies it once the
// cut is written.
func (l *Ledger) plan(u map[costKey]*costUsage, d *Dict, b *CostBook, by string, now time.Time) *allocPlan {
	p := &allocPlan{res: l.res, through: map[string]int64{}, idle: map[idleKey]*idleDay{}, usage: map[hourKey]*hourUse{}}
	if b == nil {
		return p
	}
	fps := map[string]uint64{}
	day := func(src string, end int64) (*idleDay, uint32) {
		k := idleKey{src, floorDiv(end-1, dayMs) * dayMs}
		bit := uint32(1) << ((end-k.day)/hourMs - 1)
		if cur, ok := p.idle[k]; ok {
			return cur, bit
		}
		fp, ok := fps[src]
		if !ok {
			fp = b.fingerprint(src)
			fps[src] = fp
		}
		cur := &idleDay{fp: fp}
		if old, ok := l.idle[k]; ok && old.fp == fp {
			*cur = *old
		}
		p.idle[k] = cur
		return cur, bit
	}
	through := func(src string) (int64, bool) {
		if t, ok := p.through[src]; ok {
			return t, true
		}
		t, ok := l.through[src]
		return t, ok
	}

	// Accruals due, source by source, oldest first, within the bound.
	budget := maxAccrualsPerCut
	to := l.closeTo(now)
	lumpBefore := now.Add(-lumpAfter).UnixMilli()
	for _, src := range b.sources {
		from, ok := l.through[src]
		if !ok {
			if from, ok = l.start(b, src, now); !ok {
				continue
			}
		}
		last := from
		for end := ceilDiv(from+l.res, hourMs) * hourMs; last < to && budget > 0; end += hourMs {
			lo, hi := max(from, end-hourMs), min(to, end)
			dd, bit := day(src, end)
			if end <= lumpBefore && lo == end-hourMs && hi == end {
				p.incs = b.accruals(p.incs, src, end-hourMs, end, l.res, true)
				dd.lump |= bit
				budget--
			} else {
				hi = min(hi, lo+int64(budget)*l.res)
				p.incs = b.accruals(p.incs, src, lo, hi, l.res, false)
				budget -= int((hi - lo) / l.res)
			}
			if hi == end {
				dd.idle |= bit
			}
			last = hi
		}
		if last == from {
			continue
		}
		p.through[src] = last
	}

	// This cut's usage, by source and hour, of the sources with a
	// subscription at its time.
	late := false
	for k, cu := range u {
		src := d.String(k.source)
		t := k.t / 1e6
		if m := b.Lookup(src, t); m == nil || m.Subscription == nil {
			continue
		}
		hk := hourKey{src, ceilDiv(t, hourMs) * hourMs}
		hu := p.usage[hk]
		if hu == nil {
			hu = &hourUse{apps: map[string]*use{}, since: now}
			if old := l.usage[hk]; old != nil {
				hu.since = old.since
				for app, a := range old.apps {
					hu.apps[app] = &use{a.requests, a.bytes}
				}
			}
			p.usage[hk] = hu
		}
		app := d.String(k.application)
		a := hu.apps[app]
		if a == nil {
			a = &use{}
			hu.apps[app] = a
		}
		a.requests += cu.requests
		a.bytes += cu.bytes
		if t, ok := through(src); ok && hk.end <= t {
			late = true
		}
	}

	// Finished hours whose usage has settled: allocated if they are
	// wholly unallocated, forgotten either way.
	var settle []hourKey
	for i, m := range [...]map[hourKey]*hourUse{l.usage, p.usage} {
		for k, hu := range m {
			t, ok := through(k.source)
			if !ok || k.end > t || (late && now.Sub(hu.since) < settleWait) {
				continue
			}
			if _, dup := p.usage[k]; dup && i == 0 {
				continue // this cut added to it: it is in p.usage
			}
			settle = append(settle, k)
		}
	}
	slices.SortFunc(settle, func(a, b hourKey) int { return cmp.Or(strings.Compare(a.source, b.source), cmp.Compare(a.end, b.end)) })
	for _, k := range settle {
		hu := p.usage[k]
		if hu == nil {
			hu = l.usage[k]
		}
		p.usage[k] = nil
		dd, bit := day(k.source, k.end)
		if dd.idle&bit == 0 {
			continue
		}
		amounts := b.accruals(nil, k.source, k.end-hourMs, k.end, l.res, dd.lump&bit != 0)
		if p.allocate(amounts, hu.apps, by) {
			dd.idle &^= bit
		}
	}
	return p
}

// accrual returns what source's subscription accrues in the interval
// ending at t (ms), and its currency.
func (b *CostBook) accrual(source string, t, res int64) (string, float64) {
	m := b.Lookup(source, t)
	if m == nil || m.Subscription == nil {
		return "", 0
	}
	return m.Currency, *m.Subscription / m.PeriodSeconds() * float64(res) / 1000
}

// accruals appends to dst what source's subscription accrues to
// application="unallocated" in (lo, hi]: an increment at the end of each
// interval of res, or with lump (a whole hour, hi its end) one at hi per
// currency, their sum.
func (b *CostBook) accruals(dst []allocInc, source string, lo, hi, res int64, lump bool) []allocInc {
	n := len(dst)
	for t := lo + res; t <= hi; t += res {
		cur, v := b.accrual(source, t, res)
		if v <= 0 {
			continue
		}
		at := t
		if lump {
			if i := slices.IndexFunc(dst[n:], func(a allocInc) bool { return a.currency == cur }); i >= 0 {
				dst[n+i].v += v
				continue
			}
			at = hi
		}
		dst = append(dst, allocInc{source, UnallocatedApplication, cur, at, v})
	}
	return dst
}

// allocate adds to p the moves of amounts (accruals of unallocated) to
// apps, shared by their requests (or bytes), and reports whether there
// was usage to share them by.
func (p *allocPlan) allocate(amounts []allocInc, apps map[string]*use, by string) bool {
	var total float64
	names := make([]string, 0, len(apps))
	for app, a := range apps {
		if w := a.weight(by); w > 0 {
			total += w
			names = append(names, app)
		}
	}
	if total <= 0 || math.IsInf(total, 0) {
		return false
	}
	slices.Sort(names)
	for _, a := range amounts {
		p.incs = append(p.incs, allocInc{a.source, UnallocatedApplication, a.currency, a.t, -a.v})
		for _, app := range names {
			p.incs = append(p.incs, allocInc{a.source, app, a.currency, a.t, a.v * apps[app].weight(by) / total})
		}
	}
	return true
}

func (a *use) weight(by string) float64 {
	if by == AllocateByBytes {
		return a.bytes
	}
	return a.requests
}

// write hands the plan's increments to increment and the ledger's new
// state to totals.
func (p *allocPlan) write(totals func(key, value []byte) error, increment func(ls labels.Labels, t int64, v float64) error) error {
	sb := labels.NewScratchBuilder(5)
	for _, inc := range p.incs {
		ls := costLabels(&sb, AllocatedCostMetric, inc.source, inc.application, inc.currency, CostComponentSubscription)
		if err := increment(ls, inc.t, inc.v); err != nil {
			return err
		}
	}
	return p.writeState(totals)
}

// writeState hands the ledger's changed keys to totals.
func (p *allocPlan) writeState(totals func(key, value []byte) error) error {
	var key, val []byte
	for src, t := range p.through {
		key = append(append(key[:0], ledgerThroughKey), src...)
		val = binary.BigEndian.AppendUint64(val[:0], uint64(t))
		val = binary.BigEndian.AppendUint64(val, uint64(p.res))
		if err := totals(key, val); err != nil {
			return err
		}
	}
	for k, d := range p.idle {
		key = binary.BigEndian.AppendUint64(append(key[:0], ledgerIdleKey), uint64(k.day))
		key = append(key, k.source...)
		val = binary.BigEndian.AppendUint64(val[:0], d.fp)
		val = binary.BigEndian.AppendUint64(val, uint64(p.res))
		val = binary.BigEndian.AppendUint32(val, d.idle)
		val = binary.BigEndian.AppendUint32(val, d.lump)
		if err := totals(key, val); err != nil {
			return err
		}
	}
	return nil
}

// commit makes the plan's state the ledger's, once its cut is written.
func (l *Ledger) commit(p *allocPlan) {
	for src, t := range p.through {
		l.through[src] = t
	}
	for k, d := range p.idle {
		l.idle[k] = d
	}
	for k, hu := range p.usage {
		if hu == nil {
			delete(l.usage, k)
		} else {
			l.usage[k] = hu
		}
	}
}

// fingerprint identifies the models of source: FNV-64a of what prices
// its subscriptions.
func (b *CostBook) fingerprint(source string) uint64 {
	h := fnv.New64a()
	span := b.spans[source]
	var buf []byte
	for i := span[0]; i < span[1]; i++ {
		m := &b.models[i]
		buf = binary.BigEndian.AppendUint64(buf[:0], uint64(b.fromMs[i]))
		buf = binary.BigEndian.AppendUint64(buf, uint64(b.untilMs[i]))
		if m.Subscription != nil {
			buf = binary.BigEndian.AppendUint64(buf, math.Float64bits(*m.Subscription))
		}
		buf = append(buf, m.Period...)
		buf = append(buf, 0)
		buf = append(buf, m.Currency...)
		h.Write(buf)
	}
	return h.Sum64()
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func ceilDiv(a, b int64) int64 { return -floorDiv(-a, b) }

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
