package otelanalytics

import (
	"math"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const res = 15 * time.Second

var base = time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC).UnixNano()

// applyOne interns r and applies it as its own batch.
func applyOne(a *Aggregator, d *Dict, recs ...Record) {
	refs := make([]Refs, len(recs))
	d.MarkDurable(d.Intern(recs, refs, nil))
	a.Apply(recs, refs)
}

func reqRecord(end int64, source, domain string, success bool, durSec float64, w float64) Record {
	r := Record{
		EndTime: end, Duration: int64(durSec * 1e9), Source: source, Tier: "premium", Application: "app",
		Domain: domain, Method: MethodGet, StatusCode: 200, Success: success, Weight: w,
		BytesSent: 10, BytesReceived: 1000, Proxy: "10.0.0.1:8080",
	}
	if !success {
		r.StatusCode, r.ErrorType = 503, "503"
	}
	return r
}

func familyTotal(a *Aggregator, f Family, j int) float64 {
	_, vals := a.Snapshot(f)
	w := f.Width()
	var sum float64
	for i := j; i < len(vals); i += w {
		sum += vals[i]
	}
	return sum
}

func TestIntervalEnd(t *testing.T) {
	a := NewAggregator(AggregationConfig{}, res, nil)
	for _, c := range []struct{ ts, want int64 }{
		{base, base},
		{base + 1, base + int64(res)},
		{base + int64(res) - 1, base + int64(res)},
		{base + int64(res), base + int64(res)},
		{-1, 0},
	} {
		require.Equal(t, c.want, a.IntervalEnd(c.ts), "ts %d", c.ts)
	}
	require.Equal(t, res, a.Resolution())
	require.Equal(t, 15*time.Second, NewAggregator(AggregationConfig{}, 0, nil).Resolution())
}

// TestEventTimeIncrements: spans count in the interval of their end time,
// whenever they arrive, and late spans reach intervals already cut.
func TestEventTimeIncrements(t *testing.T) {
	a := NewAggregator(AggregationConfig{}, res, nil)
	d := NewDict(0)
	applyOne(a, d,
		reqRecord(base+1, "s", "x.com", true, 0.2, 1),            // interval ending base+15s
		reqRecord(base+int64(res), "s", "x.com", true, 0.2, 2),   // same interval, on its end
		reqRecord(base+int64(res)+1, "s", "x.com", true, 0.2, 1), // next one
	)
	c := a.Cut()
	rc := c.Families[FamilyRequests]
	require.Len(t, rc.Keys, 1)
	require.Equal(t, []float64{4}, rc.Totals)
	got := map[int64]float64{}
	for i, ts := range rc.incTimes() {
		got[ts] += rc.Inc(i)[0]
	}
	require.Equal(t, map[int64]float64{base + int64(res): 3, base + 2*int64(res): 1}, got)

	// A span of an hour ago arrives now: it lands in its own interval.
	applyOne(a, d, reqRecord(base-int64(time.Hour)+5, "s", "x.com", true, 0.2, 1))
	c = a.Cut()
	rc = c.Families[FamilyRequests]
	require.Equal(t, []int64{base - int64(time.Hour) + int64(res)}, rc.incTimes())
	require.Equal(t, []float64{5}, rc.Totals, "totals are cumulative")
	require.True(t, a.Cut().Empty())
}

func TestFamiliesValues(t *testing.T) {
	a := NewAggregator(AggregationConfig{}, res, nil)
	d := NewDict(0)
	applyOne(a, d,
		reqRecord(base, "s", "x.com", true, 0.004, 1), // first bucket
		reqRecord(base, "s", "x.com", true, 0.005, 2), // first bucket, on its bound
		reqRecord(base, "s", "x.com", false, 61, 1),   // +Inf
		reqRecord(base, "t", "y.com", true, 0.3, 0.5), // 0.5 bucket
	)
	require.Equal(t, 4.5, familyTotal(a, FamilyRequests, 0))
	require.Equal(t, 4.5, familyTotal(a, FamilyEndpoint, 0))
	require.Equal(t, 3.0, familyTotal(a, FamilyDuration, 0), "first bucket")
	require.Equal(t, 0.5, familyTotal(a, FamilyDuration, 6), "le=0.5 bucket")
	require.Equal(t, 1.0, familyTotal(a, FamilyDuration, durationBuckets-1), "+Inf bucket")
	require.InDelta(t, 0.004+2*0.005+61+0.5*0.3, familyTotal(a, FamilyDuration, durationSum), 1e-9)
	require.Equal(t, 45.0, familyTotal(a, FamilyTransfer, transferSent))
	require.Equal(t, 4500.0, familyTotal(a, FamilyTransfer, transferReceived))
	require.Equal(t, 3, a.SeriesCount(FamilyRequests), "s/x.com success and failure, t/y.com")
	require.Equal(t, 3, a.SeriesCount(FamilyDuration))
	require.Equal(t, 2, a.SeriesCount(FamilyTransfer))
	require.Equal(t, 3, a.SeriesCount(FamilyEndpoint))

	for i, ub := range DurationBuckets {
		require.Equal(t, i, bucketOf(ub))
		require.Equal(t, i+1, bucketOf(math.Nextafter(ub, math.Inf(1))))
	}
	require.Equal(t, "proxy_request_duration_seconds", FamilyDuration.Name())
	require.Equal(t, 16, FamilyDuration.Width())
}

func TestSeriesLimitOverflow(t *testing.T) {
	a := NewAggregator(AggregationConfig{MaxSeriesPerFamily: 2}, res, nil)
	d := NewDict(0)
	for _, dom := range []string{"a.com", "b.com", "c.com", "d.com"} {
		applyOne(a, d, reqRecord(base, "s", dom, true, 0.1, 1))
	}
	keys, vals := a.Snapshot(FamilyRequests)
	require.Len(t, keys, 3, "two series and the overflow series")
	require.Equal(t, OverflowKey, keys[2])
	require.Equal(t, 2.0, vals[2])
	require.Equal(t, uint64(2), a.OverflowSpans(FamilyRequests))
	require.Equal(t, 4.0, familyTotal(a, FamilyRequests, 0), "nothing is lost in overflow")
	require.Zero(t, a.OverflowSpans(FamilyDuration))
	// The overflow series is cut like any other.
	c := a.Cut()
	require.Contains(t, c.Families[FamilyRequests].Keys, OverflowKey)
}

func TestDomainLimit(t *testing.T) {
	a := NewAggregator(AggregationConfig{MaxDomains: 2}, res, nil)
	d := NewDict(0)
	for _, dom := range []string{"a.com", "b.com", "c.com", "a.com", ""} {
		applyOne(a, d, reqRecord(base, "s", dom, true, 0.1, 1))
	}
	require.Equal(t, uint64(1), a.OverflowSpans(FamilyRequests), "only c.com overflows; known and empty domains do not")
	require.Equal(t, 4, a.SeriesCount(FamilyRequests)) // a, b, "", overflow
	require.Equal(t, 1, a.SeriesCount(FamilyDuration), "the limit is on requests' domains only")

	// A string the dictionary could not intern goes to overflow too.
	a.Apply([]Record{reqRecord(base, "s", "zzz", true, 0.1, 1)}, []Refs{{NoID, 0, 0, 0, 0, 0}})
	require.Equal(t, uint64(2), a.OverflowSpans(FamilyRequests))
	require.Equal(t, uint64(1), a.OverflowSpans(FamilyDuration))
}

func TestCutRestore(t *testing.T) {
	a := NewAggregator(AggregationConfig{}, res, nil)
	d := NewDict(0)
	applyOne(a, d, reqRecord(base, "s", "x.com", true, 0.1, 1), reqRecord(base+int64(time.Minute), "s", "x.com", true, 0.1, 1))
	c := a.Cut()
	a.Restore(c) // the write failed
	applyOne(a, d, reqRecord(base, "s", "x.com", true, 0.1, 1))
	c2 := a.Cut()
	rc := c2.Families[FamilyRequests]
	require.Equal(t, []float64{3}, rc.Totals)
	got := map[int64]float64{}
	for i, ts := range rc.incTimes() {
		got[ts] += rc.Inc(i)[0]
	}
	require.Equal(t, map[int64]float64{base: 2, base + int64(time.Minute): 1}, got)
	// Restoring twice would double count: Restore is only for a cut that was
	// not written, and the pipeline calls it once. Check the durations too.
	dc := c2.Families[FamilyDuration]
	require.Len(t, dc.Keys, 1)
	require.Equal(t, 3.0, dc.Totals[bucketOf(0.1)])
}

// TestBacklog: the increments held until the store has them are the
// pending ones and those of the cut being written, until it is written or
// restored.
func TestBacklog(t *testing.T) {
	a := NewAggregator(AggregationConfig{}, res, nil)
	d := NewDict(0)
	applyOne(a, d, reqRecord(base, "s", "x.com", true, 0.1, 1), reqRecord(base+int64(time.Minute), "s", "x.com", true, 0.1, 1))
	n := a.Pending()
	require.Equal(t, 8, n, "2 intervals, 4 families")
	require.Equal(t, n, a.Backlog())
	c := a.cut(3)
	require.Zero(t, a.Pending())
	require.Equal(t, n, a.Backlog(), "the cut being written")
	applyOne(a, d, reqRecord(base+int64(2*time.Minute), "s", "x.com", true, 0.1, 1))
	require.Equal(t, n+4, a.Backlog())
	a.Restore(c)
	require.Equal(t, n+4, a.Pending())
	require.Equal(t, n+4, a.Backlog(), "restored: pending again, not counted twice")
	a.cut(4)
	a.cutWritten()
	require.Zero(t, a.Backlog())
}

func TestLoadTotals(t *testing.T) {
	a := NewAggregator(AggregationConfig{MaxSeriesPerFamily: 2, MaxDomains: 1}, res, nil)
	d := NewDict(0)
	refs := make([]Refs, 1)
	r := reqRecord(base, "s", "x.com", true, 0.1, 1)
	d.MarkDurable(d.Intern([]Record{r}, refs, nil))
	k := keyFor(FamilyRequests, &r, &refs[0])
	require.NoError(t, a.LoadTotals(FamilyRequests, k, []float64{41}))
	require.NoError(t, a.LoadTotals(FamilyRequests, OverflowKey, []float64{7}))
	require.Error(t, a.LoadTotals(FamilyRequests, k, []float64{1, 2}))
	require.Error(t, a.LoadTotals(FamilyRequests, k, []float64{-1}))
	require.Error(t, a.LoadTotals(FamilyRequests, k, []float64{math.NaN()}))
	require.Error(t, a.LoadTotals(NumFamilies, k, []float64{1}))

	a.Apply([]Record{r}, refs)
	_, vals := a.Snapshot(FamilyRequests)
	require.Equal(t, []float64{42, 7}, vals, "a loaded series continues from its total")
	// The loaded domain counts towards the domain limit.
	applyOne(a, d, reqRecord(base, "s", "other.com", true, 0.1, 1))
	require.Equal(t, uint64(1), a.OverflowSpans(FamilyRequests))
}

func TestCutRequested(t *testing.T) {
	a := NewAggregator(AggregationConfig{MaxPendingIncrements: 1000}, res, nil)
	d := NewDict(0)
	recs := make([]Record, 300)
	for i := range recs {
		recs[i] = reqRecord(base+int64(i)*int64(res), "s", "x.com", true, 0.1, 1) // 300 intervals × 4 families
	}
	select {
	case <-a.CutRequested():
		t.Fatal("no cut requested yet")
	default:
	}
	applyOne(a, d, recs...)
	require.Equal(t, 1200, a.Pending())
	select {
	case <-a.CutRequested():
	default:
		t.Fatal("a cut should be requested past the bound")
	}
	a.Cut()
	require.Zero(t, a.Pending())
}

func TestAggregationConfigValidate(t *testing.T) {
	require.NoError(t, DefaultAggregationConfig().Validate())
	err := AggregationConfig{MaxPendingIncrements: 5}.Validate()
	require.ErrorContains(t, err, "aggregation.max_series_per_family: must be at least 1, got 0")
	require.ErrorContains(t, err, "aggregation.max_domains")
	require.ErrorContains(t, err, "aggregation.max_pending_increments: must be at least 1000, got 5")
}

// TestConcurrentApplyAndCut: with batches applied from several goroutines
// while cuts run, the increments of all cuts add up to the totals.
func TestConcurrentApplyAndCut(t *testing.T) {
	a := NewAggregator(AggregationConfig{}, res, nil)
	d := NewDict(0)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				applyOne(a, d,
					reqRecord(base+int64(i%7)*int64(res), "s"+string(rune('a'+g)), "x.com", i%3 != 0, 0.1, 1))
			}
		})
	}
	var incs float64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 50 {
			c := a.Cut()
			for _, v := range c.Families[FamilyRequests].incValues() {
				incs += v
			}
			a.Snapshot(FamilyDuration)
		}
	}()
	wg.Wait()
	<-done
	c := a.Cut()
	for _, v := range c.Families[FamilyRequests].incValues() {
		incs += v
	}
	require.Equal(t, 800.0, incs)
	require.Equal(t, 800.0, familyTotal(a, FamilyRequests, 0))
}

// TestSampleAdjustedRequests: requests that carry an upstream adjusted
// count (a weight other than 1) are also counted, weighted, per source in
// proxy_sample_adjusted_requests_total, by event time; requests of weight 1
// are not, so a source without upstream sampling has no such series.
func TestSampleAdjustedRequests(t *testing.T) {
	a := NewAggregator(AggregationConfig{}, res, nil)
	d := NewDict(0)
	applyOne(a, d,
		reqRecord(base+1, "brightdata", "a.example", true, 0.1, 4),
		reqRecord(base+2, "brightdata", "b.example", false, 0.1, 2.5),
		reqRecord(base+3, "spys-one", "a.example", true, 0.1, 1),
		reqRecord(base+int64(res)+1, "brightdata", "a.example", true, 0.1, 1),
	)
	keys, vals := a.Snapshot(FamilyAdjusted)
	require.Len(t, keys, 1)
	require.Equal(t, []string{"brightdata"}, FamilyAdjusted.LabelValues(keys[0], d))
	require.Equal(t, []float64{6.5}, vals)
	require.Equal(t, 4+2.5+1+1, familyTotal(a, FamilyRequests, 0), "the requests family counts every request")
	c := a.Cut()
	fc := c.Families[FamilyAdjusted]
	require.Equal(t, []int64{base + int64(res)}, fc.incTimes())
	require.Equal(t, []float64{6.5}, fc.incValues())
	require.Equal(t, "proxy_sample_adjusted_requests_total", FamilyAdjusted.Name())
	require.Equal(t, []string{"source"}, FamilyAdjusted.Labels())
	typ, unit := FamilyAdjusted.Metadata()
	require.Equal(t, "counter", typ)
	require.Empty(t, unit)
}

// TestEndpointSeriesByProxy holds the endpoint series found through the
// byProxy table to those a plain key lookup gives: proxies shared by two
// sources, ids past the table's bound, ids the dictionary had no room for,
// and a series limit that sends the later series to overflow.
func TestEndpointSeriesByProxy(t *testing.T) {
	for _, limit := range []int{3, 50, 100000} {
		a := NewAggregator(AggregationConfig{MaxSeriesPerFamily: limit}, res, nil)
		// The reference: first come, first served, as Aggregator.series;
		// the overflow series, once created, takes a place under the limit.
		want := map[SeriesKey]float64{}
		known := map[SeriesKey]bool{}
		proxies := []uint32{1, 2, 7, maxByProxy - 1, maxByProxy, maxByProxy + 5, NoID}
		var recs []Record
		var refs []Refs
		for i := range 600 {
			r := Record{EndTime: base + int64(i), Weight: float64(1 + i%3), Success: i%5 != 0, Method: MethodGet}
			var ref Refs
			ref[RefSource] = uint32(10 + (i/7)%3) // a proxy meets several sources
			ref[RefProxy] = proxies[i%len(proxies)]
			if i%97 == 0 {
				ref[RefSource] = NoID
			}
			recs, refs = append(recs, r), append(refs, ref)
			k := keyFor(FamilyEndpoint, &r, &ref)
			if !known[k] && (k.hasNoID() || len(known) >= limit) {
				k = OverflowKey
			}
			known[k] = true
			want[k] += r.Weight
		}
		for lo := 0; lo < len(recs); lo += 64 {
			hi := min(lo+64, len(recs))
			a.Apply(recs[lo:hi], refs[lo:hi])
		}
		keys, vals := a.Snapshot(FamilyEndpoint)
		got := map[SeriesKey]float64{}
		for i, k := range keys {
			got[k] = vals[i]
		}
		require.Equal(t, want, got, "limit %d", limit)
	}
}

// TestCutRestoreManyIntervals: a backfill's increments, more than a block
// of them (pendBlockLen), come out of a cut with their values in the
// order of their keys, and a Restore puts every one back.
// TestPendTablesAfterBackfill keeps no increment table sized for a
// backfill once it is cut: the next one is presized small, and a table
// sized for four times what a later cut holds is dropped, not kept.
func TestPendTablesAfterBackfill(t *testing.T) {
	a := NewAggregator(AggregationConfig{}, res, nil)
	d := NewDict(0)
	spans := func(n int) {
		recs := make([]Record, n)
		for i := range recs {
			recs[i] = reqRecord(base-int64(i)*int64(res), "s", "x.com", true, 0.1, 1)
		}
		applyOne(a, d, recs...)
	}
	held := func() (most []int) {
		fam := &a.fams[FamilyRequests]
		for _, p := range []*pendIndex{fam.pend, fam.sparePend} {
			if p != nil {
				most = append(most, p.most)
			}
		}
		return most
	}
	spans(retainedPend + 10) // a backfill: an increment for every span
	a.Cut()
	require.Equal(t, []int{presizedPend}, held(), "the backfill's table dropped, the next presized")
	spans(20_000)
	a.Cut()
	require.Equal(t, []int{presizedPend, 20_000}, held(), "a table the size of its cut kept as the spare")
	spans(10)
	a.Cut()
	require.Equal(t, []int{20_000, presizedPend}, held())
	spans(10)
	a.Cut()
	require.Equal(t, []int{presizedPend}, held(), "the table sized for 20,000 dropped after a cut of 10")
}

func TestCutRestoreManyIntervals(t *testing.T) {
	a := NewAggregator(AggregationConfig{}, res, nil)
	d := NewDict(0)
	n := 2*pendBlockLen + 100
	recs := make([]Record, n)
	for i := range recs {
		recs[i] = reqRecord(base-int64(i)*int64(res), "s", "x.com", true, 0.1, 1)
	}
	applyOne(a, d, recs...)
	applyOne(a, d, recs[pendBlockLen+3]) // a second span in an interval of the second block
	want := map[int64]float64{}
	for i := range n {
		want[base-int64(i)*int64(res)] = 1
	}
	want[base-int64(pendBlockLen+3)*int64(res)] = 2
	check := func(c *Cut) {
		t.Helper()
		rc := c.Families[FamilyRequests]
		require.Len(t, rc.incTimes(), n)
		for i, ts := range rc.incTimes() {
			require.Equal(t, []float64{want[ts]}, rc.Inc(i), "interval %d", ts)
		}
		// The duration family's values are 16 a increment: the one of
		// the doubled interval counts its two spans in the 0.1 s bucket.
		dc := c.Families[FamilyDuration]
		w := FamilyDuration.Width()
		require.Len(t, dc.incValues(), n*w)
		for i, ts := range dc.incTimes() {
			require.Equal(t, want[ts], dc.Inc(i)[bucketOf(0.1)], "interval %d", ts)
		}
	}
	c := a.Cut()
	check(c)
	a.Restore(c)
	require.Equal(t, 4*n, a.Pending())
	check(a.Cut())
}
