package otelanalytics

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// SamplingConfig sets the adaptive sampler's thresholds. The defaults are the
// product spec's: keep everything below 10,000 spans a minute, keep 10% above
// 100,000 a minute, and fall linearly in between.
type SamplingConfig struct {
	// LowPerMinute is the rate below which every record is kept. Default 10000.
	LowPerMinute float64 `yaml:"low_per_minute" json:"low_per_minute"`
	// HighPerMinute is the rate above which the floor applies. Default 100000.
	HighPerMinute float64 `yaml:"high_per_minute" json:"high_per_minute"`
	// Floor is the probability of keeping a record at or above HighPerMinute,
	// in (0, 1]. Default 0.1.
	Floor float64 `yaml:"floor" json:"floor"`
}

// DefaultSamplingConfig returns the product spec's thresholds.
func DefaultSamplingConfig() SamplingConfig {
	return SamplingConfig{LowPerMinute: 10000, HighPerMinute: 100000, Floor: 0.1}
}

// Validate reports every problem of c at once.
func (c SamplingConfig) Validate() error {
	var errs []error
	if !(c.LowPerMinute >= 0) || math.IsInf(c.LowPerMinute, 0) {
		errs = append(errs, fmt.Errorf("sampling.low_per_minute: must be a finite number >= 0, got %v", c.LowPerMinute))
	}
	if !(c.HighPerMinute >= c.LowPerMinute) || math.IsInf(c.HighPerMinute, 0) {
		errs = append(errs, fmt.Errorf("sampling.high_per_minute: must be finite and >= low_per_minute (%v), got %v", c.LowPerMinute, c.HighPerMinute))
	}
	if !(c.Floor > 0 && c.Floor <= 1) {
		errs = append(errs, fmt.Errorf("sampling.floor: must be in (0, 1], got %v", c.Floor))
	}
	return errors.Join(errs...)
}

// Probability returns the keep probability at a rate in spans per minute.
func (c SamplingConfig) Probability(perMinute float64) float64 {
	switch {
	case perMinute <= c.LowPerMinute:
		return 1
	case perMinute >= c.HighPerMinute:
		return c.Floor
	}
	return 1 - (1-c.Floor)*(perMinute-c.LowPerMinute)/(c.HighPerMinute-c.LowPerMinute)
}

// Rate measurement. Spans arrive in batches (an SDK ships up to 512 at a
// time, every few seconds when traffic is light), so the rate is measured
// over the shortest window that holds at least minBatches batches, and never
// shorter than minWindow nor longer than maxWindow. Dense traffic gets a
// 50 ms window and the probability follows a step within it; one light
// client sending a batch every 6 s is averaged over its last batches instead
// of being mistaken for a burst of 512 spans in 50 ms.
const (
	minWindow  = 50 * time.Millisecond
	maxWindow  = time.Minute
	minBatches = 16
	ringSize   = 4096 // batches remembered; enough for minBatches at any rate
)

// Sampler decides which records to keep. Its thresholds can be changed while
// it runs.
type Sampler struct {
	cfg atomic.Pointer[SamplingConfig]

	mu   sync.Mutex
	ring [ringSize]arrival // batch arrivals, newest at ring[(next-1)%ringSize]
	next uint64            // arrivals so far

	rate atomic.Uint64 // float64 bits: last measured spans/minute
	prob atomic.Uint64 // float64 bits: last probability

	rnd func() float64
}

type arrival struct {
	at  int64  // Unix nanoseconds
	cum uint64 // spans received up to and including this batch
	n   uint32 // spans of this batch
}

// NewSampler returns a sampler with cfg, which must be valid.
func NewSampler(cfg SamplingConfig) *Sampler {
	s := &Sampler{rnd: rand.Float64}
	s.cfg.Store(&cfg)
	s.prob.Store(math.Float64bits(1))
	return s
}

// SetConfig changes the thresholds; the next batch uses them.
func (s *Sampler) SetConfig(cfg SamplingConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	s.cfg.Store(&cfg)
	return nil
}

// Config returns the thresholds in use.
func (s *Sampler) Config() SamplingConfig { return *s.cfg.Load() }

// Rate returns the last measured rate in spans per minute.
func (s *Sampler) Rate() float64 { return math.Float64frombits(s.rate.Load()) }

// LastProbability returns the keep probability given to the last batch.
func (s *Sampler) LastProbability() float64 { return math.Float64frombits(s.prob.Load()) }

// Observe records the arrival of a batch of n spans at now (Unix
// nanoseconds) and returns the probability of keeping each of its records.
func (s *Sampler) Observe(now int64, n int) float64 {
	rate := s.observe(now, n)
	p := s.cfg.Load().Probability(rate)
	s.rate.Store(math.Float64bits(rate))
	s.prob.Store(math.Float64bits(p))
	return p
}

func (s *Sampler) observe(now int64, n int) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var cum uint64
	if s.next > 0 {
		last := s.ring[(s.next-1)%ringSize]
		cum = last.cum
		if now < last.at {
			now = last.at // the clock never runs backwards for the meter
		}
	}
	s.ring[s.next%ringSize] = arrival{at: now, cum: cum + uint64(n), n: uint32(min(n, math.MaxUint32))}
	s.next++

	// Walk back to the start of the window: at least minWindow long, at
	// least minBatches batches deep, at most maxWindow. The batch that
	// opens the window only marks its start; the spans counted are those
	// of the batches after it.
	newest := s.ring[(s.next-1)%ringSize]
	avail := min(s.next, ringSize)
	for i := uint64(1); i < avail; i++ {
		a := s.ring[(s.next-1-i)%ringSize]
		age := now - a.at
		if age >= int64(maxWindow) {
			return perMinute(newest.cum-a.cum, int64(maxWindow))
		}
		if i >= minBatches && age >= int64(minWindow) {
			return perMinute(newest.cum-a.cum, age)
		}
	}
	// The history is shorter than the window.
	oldest := s.ring[(s.next-avail)%ringSize]
	if avail > minBatches {
		// Enough batches to measure: over their span, at least minWindow.
		if age := now - oldest.at; age >= int64(minWindow) {
			return perMinute(newest.cum-oldest.cum, age)
		}
		return perMinute(newest.cum-oldest.cum+uint64(oldest.n), int64(minWindow))
	}
	// A few batches since start: assume it was quiet before them.
	return perMinute(newest.cum-oldest.cum+uint64(oldest.n), int64(maxWindow))
}

func perMinute(spans uint64, window int64) float64 {
	return float64(spans) / float64(window) * float64(time.Minute)
}

// Keep draws whether to keep one record at probability p.
func (s *Sampler) Keep(p float64) bool {
	return p >= 1 || s.rnd() < p
}

// SetRand replaces the random source (a function returning uniform numbers in
// [0, 1)); for reproducible tests. Not safe to call while the sampler is used.
func (s *Sampler) SetRand(rnd func() float64) { s.rnd = rnd }
