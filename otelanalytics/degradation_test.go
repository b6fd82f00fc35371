package otelanalytics

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
)

// trafficSource says what one source does in an interval ending at t.
type trafficSource struct {
	name string
	// perInterval returns the requests, the success probability and the
	// latency bucket shift of the interval ending at t.
	perInterval func(t time.Time, r *rand.Rand) (n int, pOK float64, shift int)
}

// healthyLatency draws a successful request's latency bucket: mostly
// 100–500 ms, a tail to 2.5 s.
func healthyLatency(r *rand.Rand) int {
	switch x := r.Float64(); {
	case x < 0.55:
		return 5 // (0.1, 0.25]
	case x < 0.93:
		return 6 // (0.25, 0.5]
	case x < 0.985:
		return 7 // (0.5, 1]
	default:
		return 8 // (1, 2.5]
	}
}

// verdicts collects what a detector writes.
type verdicts struct {
	degraded map[string][]point // "source/signal" → samples
	onset    map[string][]point
}

type point struct {
	t int64
	v float64
}

func (v *verdicts) emit(ls labels.Labels, tMs int64, val float64) error {
	key := ls.Get("source") + "/" + ls.Get("signal")
	switch ls.Get("__name__") {
	case DegradedMetric:
		v.degraded[key] = append(v.degraded[key], point{tMs, val})
	case DegradedOnsetMetric:
		v.onset[key] = append(v.onset[key], point{tMs, val})
	}
	return nil
}

// drive runs sources from start to end through a detector, one cut per
// cutEvery, and returns the verdicts.
func drive(t *testing.T, det *Detector, srcs []trafficSource, start, end time.Time, res, cutEvery time.Duration) *verdicts {
	t.Helper()
	d := NewDict(0)
	ids := map[string]uint32{}
	for _, s := range srcs {
		recs := []Record{{Source: s.name}}
		refs := make([]Refs, 1)
		d.Intern(recs, refs, nil)
		ids[s.name] = refs[0][RefSource]
	}
	r := rand.New(rand.NewPCG(1, 2))
	out := &verdicts{degraded: map[string][]point{}, onset: map[string][]point{}}
	w := FamilyDuration.Width()
	c := &Cut{}
	flush := func(now time.Time) {
		require.NoError(t, det.Observe(c, d, now, out.emit))
		c = &Cut{}
	}
	lastCut := start
	for ts := start.Add(res); !ts.After(end); ts = ts.Add(res) {
		fc := &c.Families[FamilyDuration]
		for _, s := range srcs {
			n, pOK, shift := s.perInterval(ts, r)
			if n == 0 {
				continue
			}
			okv, failv := make([]float64, w), make([]float64, w)
			for range n {
				if r.Float64() < pOK {
					okv[min(healthyLatency(r)+shift, durationBuckets-1)]++
				} else {
					failv[9]++
				}
			}
			for _, success := range []bool{true, false} {
				v := okv
				if !success {
					v = failv
				}
				fc.addInc(SeriesKey{Source: ids[s.name], Success: success}, ts.UnixNano(), v)
			}
		}
		if ts.Sub(lastCut) >= cutEvery {
			flush(ts.Add(res / 3))
			lastCut = ts
		}
	}
	flush(end.Add(2 * res))
	return out
}

// steady sends n requests an interval, each succeeding with probability p.
func steady(n int, p float64) func(time.Time, *rand.Rand) (int, float64, int) {
	return func(time.Time, *rand.Rand) (int, float64, int) { return n, p, 0 }
}

func TestDetectorFindsOneStepDegradation(t *testing.T) {
	const res = 15 * time.Second
	start := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	week := start.Add(7 * 24 * time.Hour)
	onset := week.Add(17*time.Minute + 20*time.Second) // mid-interval
	end := onset.Add(40 * time.Minute).Add(30 * time.Minute)
	during := func(ts time.Time) bool { return ts.After(onset) && !ts.After(onset.Add(40*time.Minute)) }

	for _, signal := range []string{SignalSuccessRate, SignalLatencyP95} {
		t.Run(signal, func(t *testing.T) {
			srcs := []trafficSource{
				{name: "premium-bad", perInterval: func(ts time.Time, r *rand.Rand) (int, float64, int) {
					switch {
					case !during(ts):
						return 10, 0.97, 0
					case signal == SignalSuccessRate:
						return 10, 0.70, 0
					default:
						return 10, 0.97, 2 // every success two buckets slower
					}
				}},
				{name: "premium-good", perInterval: steady(10, 0.97)},
				// Low volume, a coin toss each: never judged.
				{name: "free-trickle", perInterval: steady(1, 0.5)},
				// Enough volume, but its success rate swings from 20% to 80%
				// every 10 minutes: far noisier than a binomial draw.
				{name: "free-swinging", perInterval: func(ts time.Time, r *rand.Rand) (int, float64, int) {
					block := uint64(ts.Unix() / 600)
					p := 0.2 + 0.6*float64((block*2654435761)%1000)/1000
					return 8, p, 0
				}},
			}
			det := NewDetector(DefaultDegradationConfig(), res, nil)
			v := drive(t, det, srcs, start, end, res, 10*time.Minute)

			for key, pts := range v.degraded {
				var flagged []point
				for _, p := range pts {
					if p.v == 1 {
						flagged = append(flagged, p)
					}
				}
				if key != "premium-bad/"+signal {
					require.Empty(t, flagged, "%s flagged", key)
					continue
				}
				require.NotEmpty(t, flagged, "%s not flagged", key)
				first := time.UnixMilli(flagged[0].t)
				last := time.UnixMilli(flagged[len(flagged)-1].t)
				require.True(t, first.After(onset), "flagged at %s before the onset %s", first, onset)
				require.Less(t, first.Sub(onset), 6*time.Minute, "flagged late: %s", first)
				require.Less(t, last.Sub(onset.Add(40*time.Minute)), 6*time.Minute, "still flagged at %s", last)
				require.True(t, last.After(onset.Add(30*time.Minute)), "cleared early: %s", last)
				ons := v.onset[key]
				require.NotEmpty(t, ons)
				t.Logf("%s: flagged from %s to %s, onset %s (truth %s)", key, first.Sub(onset), last.Sub(onset),
					time.Unix(0, int64(ons[0].v*1e9)).Sub(onset), onset.Format(time.TimeOnly))
				for _, o := range ons {
					got := time.Unix(0, int64(o.v*1e9))
					require.InDelta(t, 0, got.Sub(onset).Seconds(), 60, "onset %s, truth %s", got, onset)
				}
			}
			for _, key := range []string{"premium-good/" + signal, "free-swinging/" + SignalSuccessRate, "free-trickle/" + SignalSuccessRate} {
				require.NotEmpty(t, v.degraded[key], "%s is judged (and not flagged)", key)
			}
		})
	}
}

// TestDetectorShrinksPendingAfterABackfill checks that a day of intervals
// that arrive at once, as a backfill's do, leaves no room for them held
// once they are judged.
func TestDetectorShrinksPendingAfterABackfill(t *testing.T) {
	const res = 15 * time.Second
	start := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	det := NewDetector(DefaultDegradationConfig(), res, nil)
	v := drive(t, det, []trafficSource{{name: "s", perInterval: steady(10, 0.97)}}, start, start.Add(24*time.Hour), res, 48*time.Hour)
	require.NotEmpty(t, v.degraded["s/"+SignalSuccessRate], "judged")
	s := det.srcs["s"]
	require.Less(t, len(s.pending), 8)
	require.Equal(t, len(s.pending), s.peak, "the map that held a day of intervals is replaced")
}

func TestDetectorSkipsRetiredSources(t *testing.T) {
	const res = 15 * time.Second
	start := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	end := start.Add(6 * time.Hour)
	retiredAt := start.Add(3 * time.Hour)
	det := NewDetector(DefaultDegradationConfig(), res, nil)
	det.SetRetired(func(source string) (time.Time, bool) { return retiredAt, source == "old" })
	v := drive(t, det, []trafficSource{{name: "old", perInterval: steady(10, 0.9)}, {name: "new", perInterval: steady(10, 0.9)}}, start, end, res, time.Hour)
	old := v.degraded["old/"+SignalSuccessRate]
	require.NotEmpty(t, old)
	require.LessOrEqual(t, old[len(old)-1].t, retiredAt.UnixMilli(), "no verdict after retirement")
	fresh := v.degraded["new/"+SignalSuccessRate]
	require.Greater(t, fresh[len(fresh)-1].t, retiredAt.UnixMilli())
}

func TestDegradationStats(t *testing.T) {
	var tl tally
	tl.lat[5], tl.lat[6] = 50, 50 // (0.1, 0.25] and (0.25, 0.5]
	require.InDelta(t, 0.25+0.25*0.9, tl.quantile(0.95), 1e-9)
	require.InDelta(t, 25, tl.above(0.375), 1e-9)
	require.InDelta(t, 100, tl.above(0.05), 1e-9)
	require.True(t, math.IsNaN((&tally{}).quantile(0.95)))
	require.InDelta(t, 3.719, zFor(1e-4), 1e-3)
	// A step from 5% to 50% bad at slot 6 of 10.
	bad := []float64{0, 1, 0, 1, 0, 0, 5, 6, 4, 5}
	n := []float64{10, 10, 10, 10, 10, 10, 10, 10, 10, 10}
	require.Equal(t, 6, changePoint(bad, n, 0.05))
	require.Equal(t, -1, changePoint([]float64{0, 0}, []float64{10, 10}, 0.05))
	require.InDelta(t, 0, zScore(5, 100, 0.05, 1000, 1), 1e-12)
	require.False(t, math.IsInf(zScore(1, 100, 0, 1000, 1), 0), "a perfect baseline is not infinitely sure")
}

func TestDegradationConfigValidate(t *testing.T) {
	require.NoError(t, DefaultDegradationConfig().Validate())
	bad := DegradationConfig{Window: time.Second, Baseline: 90 * time.Minute, MinRequests: 0, MinSuccessDrop: 1,
		MinLatencyRatio: 1, Significance: 0.6, MinDuration: time.Hour}
	err := bad.Validate()
	require.Error(t, err)
	for _, key := range []string{"window", "baseline", "min_requests", "min_success_drop", "min_latency_ratio", "significance", "min_duration", "max_sources"} {
		require.Contains(t, err.Error(), "degradation."+key+":")
	}
}

// BenchmarkDetectorObserve: the detector's work at one 15 s cut, 20
// sources judged on both signals (the appends of its samples are not
// included), once a week of baseline is in.
func BenchmarkDetectorObserve(b *testing.B) {
	const res = 15 * time.Second
	d := NewDict(0)
	var ids []uint32
	for i := range 20 {
		recs := []Record{{Source: "source-" + string(rune('a'+i))}}
		refs := make([]Refs, 1)
		d.Intern(recs, refs, nil)
		ids = append(ids, refs[0][RefSource])
	}
	det := NewDetector(DefaultDegradationConfig(), res, nil)
	w := FamilyDuration.Width()
	cutAt := func(ts time.Time) *Cut {
		c := &Cut{}
		fc := &c.Families[FamilyDuration]
		for _, id := range ids {
			for _, success := range []bool{true, false} {
				v := make([]float64, w)
				if success {
					v[5], v[6], v[7] = 20, 15, 2
				} else {
					v[9] = 1
				}
				fc.addInc(SeriesKey{Source: id, Success: success}, ts.UnixNano(), v)
			}
		}
		return c
	}
	discard := func(labels.Labels, int64, float64) error { return nil }
	ts := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for range 7 * 24 * 240 { // a week of cuts
		ts = ts.Add(res)
		require.NoError(b, det.Observe(cutAt(ts), d, ts.Add(res), discard))
	}
	cuts := make([]*Cut, 1000)
	for i := range cuts {
		cuts[i] = cutAt(ts.Add(time.Duration(i+1) * res))
	}
	for i := 0; b.Loop(); i++ {
		ts = ts.Add(res)
		c := cuts[i%len(cuts)]
		dc := &c.Families[FamilyDuration]
		for j := range dc.NumIncs() {
			dc.setIncTime(j, ts.UnixNano())
		}
		if err := det.Observe(c, d, ts.Add(res), discard); err != nil {
			b.Fatal(err)
		}
	}
}
