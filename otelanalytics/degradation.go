package otelanalytics

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/proxylens/proxylens/selfmetrics"
)

// The series the degradation detector writes (docs/analytics.md).
const (
	// DegradedMetric is 1 while a source is degraded on a signal and 0
	// while it is not; labels source and signal.
	DegradedMetric = "proxy_source_degraded"
	// DegradedOnsetMetric is the Unix time, in seconds, at which a
	// degradation began; written only while it lasts.
	DegradedOnsetMetric = "proxy_source_degraded_onset_timestamp_seconds"
	// SignalMetric is a signal's value over the detection window
	// (window="current") and in the source's baseline (window="baseline"):
	// a success ratio (0–1) or a p95 latency in seconds.
	SignalMetric = "proxy_source_signal"
)

// The signals (values of the signal label).
const (
	SignalSuccessRate = "success_rate"
	SignalLatencyP95  = "latency_p95"
)

const numSignals = 2

var signalNames = [numSignals]string{SignalSuccessRate, SignalLatencyP95}

// DegradationConfig tunes the detection of degraded sources.
type DegradationConfig struct {
	// Window is the stretch of recent traffic compared with the baseline.
	// Default 5m.
	Window time.Duration `yaml:"window"`
	// Baseline is how much of a source's own past it is compared with,
	// in whole hours, at most 720h. Default 168h (a week).
	Baseline time.Duration `yaml:"baseline"`
	// MinRequests is the least traffic a window must carry to be judged
	// (successful requests for latency). Default 50.
	MinRequests float64 `yaml:"min_requests"`
	// MinSuccessDrop is the least fall of the success rate, in ratio
	// points, that counts as a degradation. Default 0.05.
	MinSuccessDrop float64 `yaml:"min_success_drop"`
	// MinLatencyRatio is the least rise of the p95 latency, as a multiple
	// of the baseline's, that counts as a degradation. Default 1.5.
	MinLatencyRatio float64 `yaml:"min_latency_ratio"`
	// Significance is the one-sided test's level: the chance that a
	// healthy window of a source with the baseline's behaviour is
	// flagged. Default 0.000001 (one in a million).
	Significance float64 `yaml:"significance"`
	// MinDuration is how long a change must have lasted to be flagged.
	// Default 1m.
	MinDuration time.Duration `yaml:"min_duration"`
	// MaxSources bounds the sources followed (about 60 KiB each); past it,
	// new sources are not. Default 1000.
	MaxSources int `yaml:"max_sources"`
}

// DefaultDegradationConfig returns the defaults.
func DefaultDegradationConfig() DegradationConfig {
	return DegradationConfig{
		Window: 5 * time.Minute, Baseline: 168 * time.Hour, MinRequests: 50,
		MinSuccessDrop: 0.05, MinLatencyRatio: 1.5, Significance: 1e-6,
		MinDuration: time.Minute, MaxSources: 1000,
	}
}

// Validate reports every problem of c at once.
func (c DegradationConfig) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf("degradation."+format, args...)) }
	if c.Window < time.Minute || c.Window > 30*time.Minute {
		add("window: must be from 1m to 30m, got %q", c.Window)
	}
	if c.Baseline < time.Hour || c.Baseline > 720*time.Hour || c.Baseline%time.Hour != 0 {
		add("baseline: must be whole hours from 1h to 720h, got %q", c.Baseline)
	}
	if !(c.MinRequests >= 1) {
		add("min_requests: must be at least 1, got %g", c.MinRequests)
	}
	if !(c.MinSuccessDrop > 0 && c.MinSuccessDrop < 1) {
		add("min_success_drop: must be between 0 and 1, got %g", c.MinSuccessDrop)
	}
	if !(c.MinLatencyRatio > 1) || math.IsInf(c.MinLatencyRatio, 0) {
		add("min_latency_ratio: must be more than 1, got %g", c.MinLatencyRatio)
	}
	if !(c.Significance > 0 && c.Significance < 0.5) {
		add("significance: must be between 0 and 0.5, got %g", c.Significance)
	}
	if c.MinDuration < 0 || c.MinDuration > c.Window {
		add("min_duration: must be from 0 to the window (%s), got %q", c.Window, c.MinDuration)
	}
	if c.MaxSources < 1 {
		add("max_sources: must be at least 1, got %d", c.MaxSources)
	}
	return errors.Join(errs...)
}

// Detector finds sources whose success rate or p95 latency degraded
// against their own baseline, on the aggregates' grid of event time. The
// pipeline hands it every cut once written (Observe); it judges each
// interval once, one interval after it ended, and writes the verdicts as
// series at the interval's end. A window is judged when it carries
// MinRequests; it is degraded when a one-sided test at Significance,
// scaled by the dispersion the source showed while healthy, rejects "as
// in the baseline" and the change is large enough (MinSuccessDrop,
// MinLatencyRatio). The onset is the maximum-likelihood change point over
// the last hour, so it is found to the interval whenever it is detected.
//
// Spans that arrive for an interval already judged count in the baseline,
// not in a verdict. State is in memory; Seed refills the baselines from the
// store after a restart. Safe for concurrent use.
type Detector struct {
	cfg            DegradationConfig
	res            int64 // interval, ns
	ringLen        int   // intervals kept for the change point: an hour, at least two windows
	winLen         int   // intervals in a window
	hours          int   // baseline hours
	zIn, zOut      float64
	minBaseline    float64 // requests a baseline needs
	phiWarm        int     // healthy windows before a source can be flagged
	phiMemory      float64 // windows the dispersion's moving average spans
	minOnsetLength int64

	mu      sync.Mutex
	srcs    map[string]*srcState
	retired func(source string) (time.Time, bool)

	degraded *metrics.Counter
	dropped  *metrics.Counter
	nowDeg   int
}

// NewDetector returns a detector for aggregates of the given resolution
// (the flush interval); cfg must be valid. reg may be nil.
func NewDetector(cfg DegradationConfig, resolution time.Duration, reg *selfmetrics.Registry) *Detector {
	res := int64(resolution)
	winLen := max(int(int64(cfg.Window)/res), 1)
	d := &Detector{
		cfg: cfg, res: res, winLen: winLen,
		ringLen:        max(int(int64(time.Hour)/res), 2*winLen),
		hours:          int(cfg.Baseline / time.Hour),
		zIn:            zFor(cfg.Significance),
		zOut:           zFor(0.05),
		minBaseline:    20 * cfg.MinRequests,
		phiWarm:        2 * winLen,
		phiMemory:      float64(max(int64(6*time.Hour)/res, 1)),
		minOnsetLength: int64(cfg.MinDuration),
		srcs:           map[string]*srcState{},
	}
	reg = selfmetrics.OrNew(reg)
	d.degraded = reg.Counter("proxylens_degradations_total", "Degradations of a source on a signal found by the detector.")
	d.dropped = reg.Counter("proxylens_degradation_sources_dropped_total", "Spans' intervals not judged because degradation.max_sources sources are followed already.")
	reg.Gauge("proxylens_degraded_sources", "Source and signal pairs judged degraded now.", func() float64 {
		d.mu.Lock()
		defer d.mu.Unlock()
		return float64(d.nowDeg)
	})
	return d
}

// SetRetired makes the detector skip a source from the time retired
// returns for it: it is neither judged nor written from then on.
func (d *Detector) SetRetired(retired func(source string) (time.Time, bool)) {
	d.mu.Lock()
	d.retired = retired
	d.mu.Unlock()
}

// srcState is one source's recent intervals, baseline and verdicts.
type srcState struct {
	name    string
	cursor  int64            // end of the last interval judged; 0: none yet
	pending map[int64]*tally // intervals after the cursor
	peak    int              // the most intervals pending since pending was made
	ring    []slot           // by (t/res) % ringLen
	busy    int              // ring slots with requests
	hours   []hourSlot       // by hour % len(hours)
	base    tally            // sum of the hours in the baseline
	baseHr  int64            // hour the baseline sum was last swept at
	sig     [numSignals]signalState
	series  [numSignals]signalSeries
}

type slot struct {
	t int64
	tally
	healthy bool // not degraded on any signal: joins the baseline when it leaves the ring
}

type hourSlot struct {
	h int64
	tally
}

type signalState struct {
	degraded bool
	onset    int64   // ns
	phi      float64 // moving average of healthy windows' squared scores
	nPhi     int
}

// signalSeries are a signal's label sets, built once.
type signalSeries struct {
	degraded, onset, current, baseline labels.Labels
}

func (d *Detector) state(name string) *srcState {
	if s, ok := d.srcs[name]; ok {
		return s
	}
	if len(d.srcs) >= d.cfg.MaxSources {
		return nil
	}
	s := &srcState{name: name, pending: map[int64]*tally{}, ring: make([]slot, d.ringLen), hours: make([]hourSlot, d.hours)}
	for i, sig := range signalNames {
		s.series[i] = signalSeries{
			degraded: labels.FromStrings("__name__", DegradedMetric, "signal", sig, "source", name),
			onset:    labels.FromStrings("__name__", DegradedOnsetMetric, "signal", sig, "source", name),
			current:  labels.FromStrings("__name__", SignalMetric, "signal", sig, "source", name, "window", "current"),
			baseline: labels.FromStrings("__name__", SignalMetric, "signal", sig, "source", name, "window", "baseline"),
		}
	}
	d.srcs[name] = s
	return s
}

// Observe takes a written cut's request counts and latencies by source
// and event time, judges every interval that ended at least one interval
// before now, and calls emit for every sample of the verdicts (times in
// Unix milliseconds; ls valid during the call only).
func (d *Detector) Observe(c *Cut, dict *Dict, now time.Time, emit func(ls labels.Labels, tMs int64, v float64) error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	fc := &c.Families[FamilyDuration]
	names := map[uint32]*srcState{}
	for i := range fc.NumIncs() {
		k := fc.IncKey(i)
		if k.Overflow {
			continue
		}
		s, ok := names[k.Source]
		if !ok {
			s = d.state(dict.String(k.Source))
			names[k.Source] = s
		}
		if s == nil {
			d.dropped.Inc()
			continue
		}
		var in tally
		v := fc.Inc(i)[:durationBuckets]
		for _, n := range v {
			in.req += n
		}
		if k.Success {
			in.ok = in.req
			copy(in.lat[:], v)
		}
		d.record(s, fc.IncTime(i), &in)
	}
	limit := now.UnixNano()/d.res*d.res - d.res
	order := make([]string, 0, len(d.srcs))
	for name := range d.srcs {
		order = append(order, name)
	}
	slices.Sort(order)
	for _, name := range order {
		s := d.srcs[name]
		if err := d.advance(s, limit, emit); err != nil {
			return err
		}
		s.shrinkPending()
	}
	d.nowDeg = 0
	for _, s := range d.srcs {
		for i := range s.sig {
			if s.sig[i].degraded {
				d.nowDeg++
			}
		}
	}
	return nil
}

// record adds one interval's tally of a source: to the intervals to judge,
// or, if it was judged already, to the ring or the baseline.
func (d *Detector) record(s *srcState, t int64, in *tally) {
	if t > s.cursor {
		p := s.pending[t]
		if p == nil {
			p = new(tally)
			s.pending[t] = p
			s.peak = max(s.peak, len(s.pending))
		}
		p.add(in)
		return
	}
	if sl := &s.ring[d.ringIdx(t)]; sl.t == t {
		if sl.empty() && !in.empty() {
			s.busy++
		}
		sl.add(in)
		return
	}
	if t > s.cursor-int64(d.hours)*int64(time.Hour) {
		d.addBaseline(s, t, in)
	}
}

func (d *Detector) ringIdx(t int64) int { return int((t / d.res) % int64(d.ringLen)) }

// hourOf returns the hour an interval ending at t lies in.
func (d *Detector) hourOf(t int64) int64 { return (t - d.res) / int64(time.Hour) }

func (d *Detector) addBaseline(s *srcState, t int64, in *tally) {
	h := d.hourOf(t)
	hs := &s.hours[int(h%int64(d.hours))]
	if hs.h != h {
		if hs.h > h {
			return // older than the baseline
		}
		s.base.sub(&hs.tally)
		hs.tally, hs.h = tally{}, h
	}
	hs.add(in)
	s.base.add(in)
}

// sweep drops the hours that left the baseline by hour h and sums the rest
// afresh, so that the running sum carries no rounding.
func (d *Detector) sweep(s *srcState, h int64) {
	if s.baseHr == h {
		return
	}
	s.baseHr = h
	s.base = tally{}
	for i := range s.hours {
		hs := &s.hours[i]
		if hs.h <= h-int64(d.hours) {
			hs.tally, hs.h = tally{}, 0
		}
		s.base.add(&hs.tally)
	}
}

// shrinkPending moves the pending intervals to a new map once they are
// far fewer than the map held: a Go map keeps the size it grew to, and a
// backfill of weeks leaves thousands of judged intervals' room behind.
func (s *srcState) shrinkPending() {
	if s.peak < 256 || len(s.pending) > s.peak/8 {
		return
	}
	m := make(map[int64]*tally, len(s.pending))
	for t, p := range s.pending {
		m[t] = p
	}
	s.pending, s.peak = m, len(m)
}

// advance judges the source's intervals up to limit in order.
func (d *Detector) advance(s *srcState, limit int64, emit func(labels.Labels, int64, float64) error) error {
	for {
		next := s.cursor + d.res
		if s.cursor == 0 || s.busy == 0 {
			// Nothing recent: go straight to the next interval with data.
			first := int64(math.MaxInt64)
			for t := range s.pending {
				first = min(first, t)
			}
			if first > limit {
				if s.busy == 0 && limit > s.cursor {
					s.cursor = limit
				}
				return nil
			}
			next = max(next, first)
		}
		if next > limit {
			return nil
		}
		d.step(s, next)
		if err := d.judge(s, next, emit); err != nil {
			return err
		}
		s.cursor = next
	}
}

// step moves the interval ending at t into the ring, moving the one it
// replaces to the baseline.
func (d *Detector) step(s *srcState, t int64) {
	sl := &s.ring[d.ringIdx(t)]
	if !sl.empty() {
		if sl.healthy {
			d.addBaseline(s, sl.t, &sl.tally)
		}
		s.busy--
	}
	sl.t, sl.tally, sl.healthy = t, tally{}, true
	if p := s.pending[t]; p != nil {
		sl.tally = *p
		delete(s.pending, t)
		if !sl.empty() {
			s.busy++
		}
	}
}

// window sums the ring's last n intervals up to t.
func (d *Detector) window(s *srcState, t int64, n int) tally {
	var w tally
	for i := range n {
		ti := t - int64(i)*d.res
		if sl := &s.ring[d.ringIdx(ti)]; sl.t == ti {
			w.add(&sl.tally)
		}
	}
	return w
}

// judge decides the interval ending at t on both signals and writes the
// verdicts.
func (d *Detector) judge(s *srcState, t int64, emit func(labels.Labels, int64, float64) error) error {
	if d.retired != nil {
		if from, ok := d.retired(s.name); ok && t > from.UnixNano() {
			s.sig = [numSignals]signalState{}
			return nil
		}
	}
	d.sweep(s, d.hourOf(t))
	win := d.window(s, t, d.winLen)
	if win.empty() || s.base.req < d.minBaseline {
		return nil // no traffic, or too little history to compare with
	}
	tMs := t / 1e6
	p0 := s.base.ok / s.base.req
	p := win.ok / win.req
	okSig := d.signal(s, 0, t, win.req-win.ok, win.req, 1-p0, s.base.req,
		p0-p >= d.cfg.MinSuccessDrop, p0-p < d.cfg.MinSuccessDrop/2,
		func(sl *slot) (float64, float64) { return sl.req - sl.ok, sl.req })
	if err := d.write(s, 0, tMs, okSig, p, p0, emit); err != nil {
		return err
	}
	nb := s.base.successes()
	b95 := s.base.quantile(0.95)
	if nb < d.minBaseline || math.IsInf(b95, 0) || math.IsNaN(b95) || b95 <= 0 {
		return nil
	}
	q0 := s.base.above(b95) / nb
	n := win.successes()
	cur := win.quantile(0.95)
	latSig := d.signal(s, 1, t, win.above(b95), n, q0, nb,
		cur >= d.cfg.MinLatencyRatio*b95, cur < (1+(d.cfg.MinLatencyRatio-1)/2)*b95,
		func(sl *slot) (float64, float64) { return sl.above(b95), sl.successes() })
	if math.IsNaN(cur) {
		cur = b95 // no successful request in the window: nothing slower
	}
	return d.write(s, 1, tMs, latSig, cur, b95, emit)
}

// signal updates one signal's verdict from the window's x bad events out of
// n (baseline rate b0 over n0 requests) and reports whether the source
// is degraded on it. effect says the window is bad enough to flag; weak
// that it is good enough to clear.
func (d *Detector) signal(s *srcState, i int, t int64, x, n, b0, n0 float64, effect, weak bool, bad func(*slot) (float64, float64)) bool {
	ss := &s.sig[i]
	if n < d.cfg.MinRequests {
		return ss.degraded // too little traffic to change the verdict
	}
	z := zScore(x, n, b0, n0, 1)
	zs := z / math.Sqrt(max(ss.phi, 1))
	if ss.degraded {
		if zs < d.zOut || weak {
			ss.degraded = false
		} else {
			s.ring[d.ringIdx(t)].healthy = false
		}
		return ss.degraded
	}
	if zs >= d.zIn && effect && ss.nPhi >= d.phiWarm {
		onset := d.onset(s, t, b0, bad)
		if t-onset >= d.minOnsetLength {
			ss.degraded, ss.onset = true, onset
			d.degraded.Inc()
			return true
		}
		return false
	}
	if zs < d.zIn {
		ss.nPhi++
		ss.phi += (z*z - ss.phi) / min(float64(ss.nPhi), d.phiMemory)
	}
	return false
}

// onset finds where the change that the window ending at t shows began:
// the start of the first interval of the most likely step over the ring.
// The intervals from there are kept out of the baseline.
func (d *Detector) onset(s *srcState, t int64, b0 float64, bad func(*slot) (float64, float64)) int64 {
	bads := make([]float64, d.ringLen)
	ns := make([]float64, d.ringLen)
	oldest := t - int64(d.ringLen-1)*d.res
	for i := range d.ringLen {
		ti := oldest + int64(i)*d.res
		if sl := &s.ring[d.ringIdx(ti)]; sl.t == ti {
			bads[i], ns[i] = bad(sl)
		}
	}
	at := changePoint(bads, ns, b0)
	if at < 0 {
		return t - d.res
	}
	for i := at; i < d.ringLen; i++ {
		ti := oldest + int64(i)*d.res
		if sl := &s.ring[d.ringIdx(ti)]; sl.t == ti {
			sl.healthy = false
		}
	}
	return oldest + int64(at-1)*d.res
}

func (d *Detector) write(s *srcState, i int, tMs int64, degraded bool, cur, base float64, emit func(labels.Labels, int64, float64) error) error {
	ls := &s.series[i]
	v := 0.0
	if degraded {
		v = 1
		if err := emit(ls.onset, tMs, float64(s.sig[i].onset)/1e9); err != nil {
			return err
		}
	}
	if err := emit(ls.degraded, tMs, v); err != nil {
		return err
	}
	if err := emit(ls.current, tMs, cur); err != nil {
		return err
	}
	return emit(ls.baseline, tMs, base)
}

// Seed adds to a source's baseline the traffic of the hour ending at
// hourEnd, as the store holds it: requests, those that succeeded, and the
// latency histogram of the successful ones (non-cumulative counts per
// bucket of DurationBuckets, +Inf last). A start seeds the baseline from
// the stored series, so that a restart does not blind the detector for a
// week; the hours it seeds must be older than any interval it will judge.
func (d *Detector) Seed(source string, hourEnd time.Time, requests, successes float64, latency []float64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.state(source)
	if s == nil {
		d.dropped.Inc()
		return
	}
	in := tally{req: requests, ok: successes}
	copy(in.lat[:], latency)
	d.addBaseline(s, hourEnd.UnixNano(), &in)
}

// Baseline returns a source's baseline: its requests, the share that
// succeeded and the p95 latency of the successful ones (NaN without
// any), and whether the source is followed.
func (d *Detector) Baseline(source string) (requests, successRate, p95 float64, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.srcs[source]
	if !ok {
		return 0, 0, 0, false
	}
	return s.base.req, s.base.ok / s.base.req, s.base.quantile(0.95), true
}
