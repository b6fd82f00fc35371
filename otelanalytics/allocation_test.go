package otelanalytics

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// ledgerRun drives a Ledger as the pipeline does, cut by cut, and keeps
// what was written: the allocated subscription increments by (application,
// t) and the ledger's keys.
type ledgerRun struct {
	t      *testing.T
	l      *Ledger
	d      *Dict
	b      *CostBook
	by     string
	incs   map[string]map[int64]float64 // application → t → sum of increments
	stored map[string][]byte            // ledger keys as the store holds them
}

func newLedgerRun(t *testing.T, b *CostBook) *ledgerRun {
	return &ledgerRun{t: t, l: newLedger(15 * time.Second), d: NewDict(0), b: b,
		incs: map[string]map[int64]float64{}, stored: map[string][]byte{}}
}

// cut plans and commits one cut at now whose usage is recs.
func (r *ledgerRun) cut(now time.Time, recs ...Record) {
	a := NewAggregator(AggregationConfig{}, 15*time.Second, nil)
	if len(recs) > 0 {
		applyOne(a, r.d, recs...)
	}
	p := r.l.plan(a.Cut().usage(), r.d, r.b, r.by, now)
	for _, inc := range p.incs {
		require.Equal(r.t, "EUR", inc.currency)
		m := r.incs[inc.application]
		if m == nil {
			m = map[int64]float64{}
			r.incs[inc.application] = m
		}
		m[inc.t] += inc.v
	}
	require.NoError(r.t, p.writeState(func(k, v []byte) error {
		r.stored[string(k)] = append([]byte(nil), v...)
		return nil
	}))
	r.l.commit(p)
}

func (r *ledgerRun) total(app string) float64 {
	var s float64
	for _, v := range r.incs[app] {
		s += v
	}
	return s
}

// TestLedgerAccrualAndMoves: a subscription accrues every interval up to
// the one before now, traffic or not, to unallocated; once an hour is
// over and its usage has settled, its accrual moves to the applications
// by their requests; an hour nobody used stays unallocated until usage
// for it arrives; no increment ever makes a counter go down.
func TestLedgerAccrualAndMoves(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	price, perLump := 2592.0, 2592.0/2592000*60 // 2592 EUR a month: 0.06 EUR a minute
	b, err := NewCostBook([]CostModel{{Source: "sub", Model: CostModelSubscription, Currency: "EUR",
		From: t0, Subscription: &price, Period: "month"}})
	require.NoError(t, err)
	r := newLedgerRun(t, b)
	rec := func(end time.Time, app string, w float64) Record {
		x := reqRecord(end.UnixNano(), "sub", "a.com", true, 0.1, w)
		x.Application = app
		return x
	}
	at := func(app string, from, to time.Time) float64 { // increments in (from, to]
		var s float64
		for tm, v := range r.incs[app] {
			if tm > from.UnixMilli() && tm <= to.UnixMilli() {
				s += v
			}
		}
		return s
	}
	hour1 := t0.Add(time.Hour)

	// An hour later: 60 minutes accrued, from the one that ends at t0 (a
	// model applies to the minute that ends in its validity) to the one
	// before now (the current one waits). The first hour is not over: its
	// usage (a: 3 requests, b: 1) waits.
	r.cut(hour1.Add(time.Second), rec(t0.Add(10*time.Minute), "a", 3), rec(t0.Add(20*time.Minute), "b", 1))
	require.InDelta(t, 60*perLump, r.total(UnallocatedApplication), 1e-9)
	require.Len(t, r.incs, 1)
	require.False(t, r.l.due(b, hour1.Add(59*time.Second)))
	require.True(t, r.l.due(b, hour1.Add(time.Minute)))

	// The hour is over and nothing late came: it moves, minute by
	// minute, 3:1.
	r.cut(hour1.Add(61 * time.Second))
	require.InDelta(t, 0.75*60*perLump, at("a", t0, hour1), 1e-9)
	require.InDelta(t, 0.25*60*perLump, at("b", t0, hour1), 1e-9)
	require.InDelta(t, 0, at(UnallocatedApplication, t0, hour1), 1e-9)
	require.Len(t, r.incs["a"], 60, "one increment a minute")
	require.InDelta(t, perLump, r.total(UnallocatedApplication), 1e-9, "the hour that ends at t0 had no usage")

	// Usage for that idle hour arrives late: it waits while late usage
	// goes on, then moves; more usage after that moves nothing more.
	r.cut(hour1.Add(62*time.Second), rec(t0.Add(-time.Second), "c", 2))
	require.Zero(t, r.total("c"))
	r.cut(hour1.Add(63*time.Second), rec(t0.Add(-2*time.Second), "c", 1))
	require.Zero(t, r.total("c"), "late usage goes on: not settled")
	r.cut(hour1.Add(64 * time.Second))
	require.InDelta(t, perLump, r.total("c"), 1e-12)
	require.InDelta(t, 0, r.total(UnallocatedApplication), 1e-12)
	r.cut(hour1.Add(65*time.Second), rec(t0.Add(-time.Second), "d", 2))
	r.cut(hour1.Add(66 * time.Second))
	require.Zero(t, r.total("d"))
	// Late usage for an allocated hour is not reallocated either.
	r.cut(hour1.Add(67*time.Second), rec(t0.Add(5*time.Minute), "d", 5))
	r.cut(hour1.Add(68 * time.Second))
	require.Zero(t, r.total("d"))

	// Late usage that never stops: an hour settles an hour after its
	// usage was first seen.
	hour2 := hour1.Add(time.Hour)
	r.cut(hour2.Add(61 * time.Second)) // the second hour, unused: idle
	require.InDelta(t, 60*perLump, at(UnallocatedApplication, hour1, hour2), 1e-9)
	now := hour2.Add(62 * time.Second)
	for i := 0; r.total("e") == 0; i++ {
		require.Less(t, i, 300)
		r.cut(now, rec(hour1.Add(time.Minute), "e", 1))
		now = now.Add(15 * time.Second)
	}
	require.GreaterOrEqual(t, now.Sub(hour2.Add(62*time.Second)), settleWait)
	require.InDelta(t, 60*perLump, r.total("e"), 1e-9)

	var sum float64
	for app, m := range r.incs {
		sum += r.total(app)
		for tm, v := range m {
			require.GreaterOrEqual(t, v, -1e-12, "%s at %d: a counter never goes down", app, tm)
		}
	}
	accrued := float64((r.l.through["sub"]-t0.UnixMilli())/60000 + 1)
	require.InDelta(t, accrued*perLump, sum, 1e-9, "every minute accrued once")

	// The ledger restored from its keys goes on where it was.
	l := newLedger(15 * time.Second)
	for k, v := range r.stored {
		require.NoError(t, l.load([]byte(k), v))
	}
	require.Equal(t, r.l.through, l.through)
	require.Equal(t, r.l.idle, l.idle)

	// On another grid the ledger starts afresh rather than misread it.
	other := newLedger(45 * time.Second) // accrues every 3 minutes
	for k, v := range r.stored {
		require.NoError(t, other.load([]byte(k), v))
	}
	require.Empty(t, other.through)
	require.Empty(t, other.idle)
	require.Error(t, other.load([]byte{ledgerThroughKey, 'x'}, []byte{1}))
	require.Error(t, other.load([]byte{ledgerIdleKey, 1}, make([]byte, 16)))
	require.Error(t, other.load([]byte{0xee}, nil))
}

// TestLedgerModelsChange: a price change accrues each price over its own
// intervals; after a source's models change, hours accrued under the old
// ones are no longer moved (what would move is not what accrued), while
// another source's change does not matter.
func TestLedgerModelsChange(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	change := t0.Add(30 * time.Minute)
	p1, p2 := 86.4, 172.8 // a day: 0.06 and 0.12 a minute
	models := []CostModel{
		{Source: "sub", Model: CostModelSubscription, Currency: "EUR", From: t0, Until: &change, Subscription: &p1, Period: "day"},
		{Source: "sub", Model: CostModelHybrid, Currency: "EUR", From: change, Subscription: &p2, Period: "day", PerRequest: new(float64)},
	}
	b, err := NewCostBook(models)
	require.NoError(t, err)
	r := newLedgerRun(t, b)
	r.cut(t0.Add(2*time.Hour + time.Second))
	require.InDelta(t, 30*0.06+90*0.12, r.total(UnallocatedApplication), 1e-9)

	more := 1.0
	models = append(models, CostModel{Source: "other", Model: CostModelPerRequest, From: t0, PerRequest: &more, Currency: "EUR"})
	r.b, err = NewCostBook(models)
	require.NoError(t, err)
	before := r.total(UnallocatedApplication)
	x := reqRecord(t0.Add(10*time.Minute).UnixNano(), "sub", "a.com", true, 0.1, 1)
	r.cut(t0.Add(2*time.Hour+2*time.Second), x)
	r.cut(t0.Add(2*time.Hour + 3*time.Second))
	require.InDelta(t, before-29*0.06-31*0.12, r.total(UnallocatedApplication), 1e-9, "same models for sub: the hour (t0, t0+1h] moved")

	p3 := 1.0
	models[0].Subscription = &p3
	r.b, err = NewCostBook(models)
	require.NoError(t, err)
	before = r.total(UnallocatedApplication)
	x.EndTime = t0.Add(-time.Second).UnixNano() // the hour ending at t0
	r.cut(t0.Add(2*time.Hour+4*time.Second), x)
	r.cut(t0.Add(2*time.Hour + 5*time.Second))
	require.InDelta(t, before, r.total(UnallocatedApplication), 1e-12, "sub's models changed: not moved")
}

// TestLedgerLongHistory: a subscription from 30 days ago accrues its whole
// history, a bounded number of intervals a cut, and by bytes the shares
// follow the bytes.
func TestLedgerLongHistory(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 7, 0, time.UTC)
	from := now.Add(-30 * 24 * time.Hour)
	price := 3000.0
	b, err := NewCostBook([]CostModel{{Source: "sub", Model: CostModelSubscription, Currency: "EUR",
		From: from, Subscription: &price, Period: "month"}})
	require.NoError(t, err)
	r := newLedgerRun(t, b)
	r.by = AllocateByBytes
	x := reqRecord(from.Add(time.Hour).UnixNano(), "sub", "a.com", true, 0.1, 1)
	x.Application, x.BytesSent, x.BytesReceived = "small", 0, 100
	y := x
	y.Application, y.Weight, y.BytesReceived = "big", 9, 300 // more requests, fewer bytes each
	cuts := 0
	for ; r.l.due(b, now); cuts++ {
		r.cut(now, x, y)
		x.EndTime, y.EndTime = 0, 0 // usage in the first cut only
		require.Less(t, cuts, 10)
	}
	require.Equal(t, 2, cuts, "the month in one cut (a minute a increment for 8 days, an hour before), then the usage's hour")
	var sum float64
	for app := range r.incs {
		sum += r.total(app)
	}
	minutes := float64(30*24*60 - 1) // from 12:01 a month ago to 11:59 today
	require.InDelta(t, price*minutes/(30*24*60), sum, 1e-6)
	require.Less(t, len(r.incs[UnallocatedApplication]), 8*24*60+22*24+10)
	// The hour of the usage, a month ago, accrued as one increment at its
	// end, and moved as one. Bytes: small 100, big 9 × 300.
	end := from.Truncate(time.Hour).Add(2 * time.Hour).UnixMilli()
	require.Len(t, r.incs["small"], 1)
	require.InDelta(t, 3000.0/(30*24)*100/2800, r.incs["small"][end], 1e-9)
	require.InDelta(t, 3000.0/(30*24)*2700/2800, r.incs["big"][end], 1e-9)
}

// TestLedgerBudget: histories too long for one cut accrue over several,
// each within the bound, and every minute exactly once.
func TestLedgerBudget(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	from := now.Add(-300 * 24 * time.Hour)
	price := 1000.0
	var models []CostModel
	for _, src := range []string{"a", "b", "c", "d", "e"} {
		models = append(models, CostModel{Source: src, Model: CostModelSubscription, Currency: "EUR", From: from, Subscription: &price, Period: "month"})
	}
	b, err := NewCostBook(models)
	require.NoError(t, err)
	r := newLedgerRun(t, b)
	cuts := 0
	for ; r.l.due(b, now); cuts++ {
		before := len(r.incs[UnallocatedApplication])
		r.cut(now)
		require.LessOrEqual(t, len(r.incs[UnallocatedApplication])-before, maxAccrualsPerCut)
		require.Less(t, cuts, 10)
	}
	require.Greater(t, cuts, 1)
	require.InDelta(t, 5*price*float64(300*24*60)/(30*24*60), r.total(UnallocatedApplication), 1e-6)
}

// BenchmarkLedgerHour is the fixed-cost work of an hour of live cuts (one
// every 15 s) for 20 sources with a subscription used by 10 applications:
// each cut accrues its minute and takes the cut's usage; the cut after
// the hour allocates it (60 minutes × 11 series a source).
func BenchmarkLedgerHour(b *testing.B) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	price := 1000.0
	var models []CostModel
	for s := range 20 {
		models = append(models, CostModel{Source: fmt.Sprintf("src-%02d", s), Model: CostModelSubscription, From: t0, Subscription: &price, Period: "month"})
	}
	book, err := NewCostBook(models)
	if err != nil {
		b.Fatal(err)
	}
	d := NewDict(0)
	var recs []Record
	for s := range 20 {
		for a := range 10 {
			r := reqRecord(0, fmt.Sprintf("src-%02d", s), "a.com", true, 0.1, 1)
			r.Application = fmt.Sprintf("app-%d", a)
			recs = append(recs, r)
		}
	}
	refs := make([]Refs, len(recs))
	d.MarkDurable(d.Intern(recs, refs, nil))
	l := newLedger(15 * time.Second)
	now := t0.Add(time.Hour)
	l.commit(l.plan(nil, d, book, "", now)) // the first hour, idle
	b.ReportAllocs()
	incs := 0
	for b.Loop() {
		for range 240 {
			now = now.Add(15 * time.Second)
			u := make(map[costKey]*costUsage, len(recs))
			for i := range refs {
				u[costKey{refs[i][0], refs[i][3], now.UnixNano()}] = &costUsage{requests: 1, bytes: 1010, hasReqs: true, hasBytes: true}
			}
			p := l.plan(u, d, book, "", now)
			incs += len(p.incs)
			l.commit(p)
		}
	}
	b.ReportMetric(float64(incs)/float64(b.N), "increments/hour")
}
