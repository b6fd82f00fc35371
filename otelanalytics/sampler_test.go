package otelanalytics

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestSamplingProbability(t *testing.T) {
	c := DefaultSamplingConfig()
	for _, tc := range []struct{ rate, p float64 }{
		{0, 1}, {9999, 1}, {10000, 1}, {55000, 0.55}, {100000, 0.1}, {1e9, 0.1},
	} {
		require.InDelta(t, tc.p, c.Probability(tc.rate), 1e-12, "rate %v", tc.rate)
	}
	flat := SamplingConfig{LowPerMinute: 5, HighPerMinute: 5, Floor: 0.5}
	require.NoError(t, flat.Validate())
	require.Equal(t, 1.0, flat.Probability(5))
	require.Equal(t, 0.5, flat.Probability(5.1))
}

func TestSamplingConfigValidate(t *testing.T) {
	require.NoError(t, DefaultSamplingConfig().Validate())
	err := SamplingConfig{LowPerMinute: -1, HighPerMinute: math.Inf(1), Floor: 0}.Validate()
	require.ErrorContains(t, err, "sampling.low_per_minute: must be a finite number >= 0, got -1")
	require.ErrorContains(t, err, "sampling.high_per_minute")
	require.ErrorContains(t, err, "sampling.floor: must be in (0, 1], got 0")
	require.Error(t, SamplingConfig{LowPerMinute: 10, HighPerMinute: 5, Floor: 1}.Validate())
	require.Error(t, SamplingConfig{LowPerMinute: math.NaN(), HighPerMinute: 5, Floor: 1}.Validate())

	s := NewSampler(DefaultSamplingConfig())
	require.Error(t, s.SetConfig(SamplingConfig{Floor: 2}))
	require.Equal(t, DefaultSamplingConfig(), s.Config(), "a refused config changes nothing")
	lower := SamplingConfig{LowPerMinute: 10, HighPerMinute: 20, Floor: 0.5}
	require.NoError(t, s.SetConfig(lower))
	require.Equal(t, lower, s.Config())
	require.Equal(t, 0.5, s.Observe(0, 1000), "the next batch uses the new thresholds")
}

// feed sends batches of n spans every gap, from start, and returns the
// probability of the last batch.
func feed(s *Sampler, start time.Time, batches, n int, gap time.Duration) (float64, time.Time) {
	at := start
	var p float64
	for range batches {
		p = s.Observe(at.UnixNano(), n)
		at = at.Add(gap)
	}
	return p, at
}

// TestRateMeasurement checks the rate the sampler sees for the traffic
// shapes it meets: dense streams, one light client shipping 512-span batches
// every few seconds, many such clients, and a first batch.
func TestRateMeasurement(t *testing.T) {
	start := time.Unix(1_800_000_000, 0)

	s := NewSampler(DefaultSamplingConfig())
	require.Equal(t, 1.0, s.LastProbability())
	p, _ := feed(s, start, 2000, 100, time.Millisecond) // 6M spans/min
	require.InEpsilon(t, 6e6, s.Rate(), 0.05)
	require.Equal(t, 0.1, p)

	// One client at 5,000/min in 512-span batches: every record kept, not
	// mistaken for a burst of 512 in a few milliseconds.
	s = NewSampler(DefaultSamplingConfig())
	gap := time.Duration(float64(time.Minute) * 512 / 5000)
	p, _ = feed(s, start, 40, 512, gap)
	require.InEpsilon(t, 5000, s.Rate(), 0.15)
	require.Equal(t, 1.0, p)

	// Ten such clients, interleaved: 50,000/min in total.
	s = NewSampler(DefaultSamplingConfig())
	at := start
	for range 40 {
		for c := range 10 {
			s.Observe(at.Add(time.Duration(c)*gap/10).UnixNano(), 512)
		}
		at = at.Add(gap)
	}
	require.InEpsilon(t, 50000, s.Rate(), 0.15)

	// The very first batch is measured over a minute.
	s = NewSampler(DefaultSamplingConfig())
	require.Equal(t, 1.0, s.Observe(start.UnixNano(), 512))
	require.Equal(t, 512.0, s.Rate())

	// A clock that steps back does not break the meter.
	s.Observe(start.Add(-time.Hour).UnixNano(), 10)
	require.GreaterOrEqual(t, s.Rate(), 0.0)
}

// stepFollowTime drives dense traffic at low rate, steps it up (or down) and
// returns how long the probability takes to reach the new steady value.
func stepFollowTime(fromPerBatch, toPerBatch int) time.Duration {
	s := NewSampler(DefaultSamplingConfig())
	start := time.Unix(1_800_000_000, 0)
	const gap = time.Millisecond
	_, at := feed(s, start, 2000, fromPerBatch, gap)
	target := DefaultSamplingConfig().Probability(float64(toPerBatch) * float64(time.Minute/gap))
	step := at
	for {
		p := s.Observe(at.UnixNano(), toPerBatch)
		if math.Abs(p-target) < 0.01 {
			return at.Sub(step)
		}
		at = at.Add(gap)
	}
}

func TestStepResponse(t *testing.T) {
	// 1 span/ms = 60,000/min (p=0.6) up to 10 spans/ms = 600,000/min (p=0.1), and back.
	up := stepFollowTime(1, 10)
	down := stepFollowTime(10, 1)
	require.LessOrEqual(t, up, 100*time.Millisecond)
	require.LessOrEqual(t, down, 100*time.Millisecond)
}

// BenchmarkSamplerStepFollow reports, in simulated time, how long the keep
// probability takes to follow a step change of dense traffic (the issue asks
// for under 100 ms), and the cost of one Observe.
func BenchmarkSamplerStepFollow(b *testing.B) {
	var up, down time.Duration
	for b.Loop() {
		up = stepFollowTime(1, 10)
		down = stepFollowTime(10, 1)
	}
	b.ReportMetric(float64(up)/1e6, "ms-to-follow-up")
	b.ReportMetric(float64(down)/1e6, "ms-to-follow-down")
}

func BenchmarkSamplerObserve(b *testing.B) {
	s := NewSampler(DefaultSamplingConfig())
	at := int64(1_800_000_000e9)
	b.ReportAllocs()
	for b.Loop() {
		at += int64(time.Millisecond)
		s.Observe(at, 512)
	}
}

// TestSamplingEstimatesUnbiased is the property test of the issue: over
// 1,000,000 spans with a known mix, weighted estimates from the kept records
// of the total, each source's share and the failure rate stay within 1% and
// 1 percentage point of the truth, for several seeds, while traffic ramps
// through the thresholds so the probability varies.
func TestSamplingEstimatesUnbiased(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000,000 spans per seed")
	}
	const total = 1_000_000
	sources := []struct {
		share, fail float64
	}{{0.4, 0.03}, {0.25, 0.3}, {0.2, 0.05}, {0.1, 0.35}, {0.05, 0.02}}
	for seed := range uint64(4) {
		rnd := rand.New(rand.NewPCG(seed, 7))
		s := NewSampler(DefaultSamplingConfig())
		s.SetRand(rnd.Float64)
		var (
			trueFail float64
			trueBy   = make([]float64, len(sources))
			estTotal float64
			estFail  float64
			estBy    = make([]float64, len(sources))
			kept     int
			minP     = 1.0
			at       = time.Unix(1_800_000_000, 0)
			sent     int
		)
		for sent < total {
			// Ramp from 20,000 to 400,000 spans a minute in 50-span batches.
			rate := 20000 + 380000*float64(sent)/total
			n := min(50, total-sent)
			at = at.Add(time.Duration(float64(n) / rate * float64(time.Minute)))
			p := s.Observe(at.UnixNano(), n)
			minP = min(minP, p)
			for range n {
				x := rnd.Float64()
				src := 0
				for acc := sources[0].share; x > acc && src < len(sources)-1; {
					src++
					acc += sources[src].share
				}
				fail := rnd.Float64() < sources[src].fail
				trueBy[src]++
				if fail {
					trueFail++
				}
				if s.Keep(p) {
					kept++
					w := 1 / p
					estTotal += w
					estBy[src] += w
					if fail {
						estFail += w
					}
				}
			}
			sent += n
		}
		require.Less(t, minP, 0.2, "the ramp must reach the floor")
		require.Less(t, kept, total/2, "sampling must have dropped records")
		require.InEpsilon(t, total, estTotal, 0.01, "seed %d: total", seed)
		for i := range sources {
			require.InDelta(t, trueBy[i]/total, estBy[i]/estTotal, 0.01, "seed %d: share of source %d", seed, i)
		}
		require.InDelta(t, trueFail/total, estFail/estTotal, 0.01, "seed %d: failure rate", seed)
	}
}
