package pebblestore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/util/annotations"
)

// The rate pushdown for sample series (remote write, OTLP metrics): PushDown
// rewrites sum by (…) (rate|increase(sel[r])) into
// sum by (…) (last_over_time(sel{__proxylens_rate__="increase:r"}[1ms])),
// and Select answers the marked selector with the function's value at
// each evaluation time, computed here: for ranges shorter than two
// windows, over a float series' samples read once (rate_slide.go); for
// longer ones, with the closed windows in the middle of a range read from
// their counter summaries (counter_summary.go) instead of their samples;
// by Prometheus' own function over each window's samples where they hold
// histograms. The engine then only picks each value and sums.

// rateLabel names the matcher that carries the function and its range in
// milliseconds, "rate:300000".
const rateLabel = "__proxylens_rate__"

// minSummaryRange is the shortest range whose windows read counter
// summaries: one that holds at least one whole window.
const minSummaryRange = 2 * windowMs

func rateMatcher(fn string, rng time.Duration) *labels.Matcher {
	return labels.MustNewMatcher(labels.MatchEqual, rateLabel, fn+":"+strconv.FormatInt(rng.Milliseconds(), 10))
}

// splitRate removes the rate mark from ms and parses it.
func splitRate(ms []*labels.Matcher) (rest []*labels.Matcher, fn string, rng int64, ok bool) {
	i := slices.IndexFunc(ms, func(m *labels.Matcher) bool { return m.Name == rateLabel })
	if i < 0 {
		return ms, "", 0, false
	}
	rest = append(slices.Clone(ms[:i]), ms[i+1:]...)
	fn, r, found := strings.Cut(ms[i].Value, ":")
	n, err := strconv.ParseInt(r, 10, 64)
	if !found || err != nil || n <= 0 || (fn != "rate" && fn != "increase") {
		return rest, "", 0, false
	}
	return rest, fn, n, true
}

// rewriteRate rewrites agg, a sum by (…) of rate() or increase() over vs
// (see PushDown), when every series vs matches now is a sample series
// whose reads the pushdown answers as Prometheus would: the mark then
// replaces the function.
func (s *SeriesStore) rewriteRate(agg *parser.AggregateExpr, call *parser.Call, msel *parser.MatrixSelector, vs *parser.VectorSelector) bool {
	if agg.Without || slices.Contains(agg.Grouping, model.MetricNameLabel) || vs.Timestamp != nil || vs.StartOrEnd != 0 {
		return false
	}
	series := s.match(math.MinInt64, math.MaxInt64, vs.LabelMatchers, false)
	if len(series) == 0 {
		return false
	}
	for _, ms := range series {
		if ms.kind != KindSamples {
			return false
		}
	}
	sel := &parser.VectorSelector{
		Name:           vs.Name,
		OriginalOffset: vs.OriginalOffset,
		Offset:         vs.Offset,
		LabelMatchers:  append(slices.Clone(vs.LabelMatchers), rateMatcher(call.Func.Name, msel.Range), sumMatcher(false, agg.Grouping)),
		PosRange:       vs.PosRange,
	}
	agg.Expr = &parser.Call{
		Func:     parser.Functions["last_over_time"],
		Args:     parser.Expressions{&parser.MatrixSelector{VectorSelector: sel, Range: time.Millisecond, EndPos: msel.EndPos}},
		PosRange: call.PosRange,
	}
	return true
}

// rateSelect answers a selector marked with rateLabel: each matched
// series' fn over [rng] at every evaluation time of hints, one point per
// time, at that time.
func (q *querier) rateSelect(ctx context.Context, hints *storage.SelectHints, fn string, rng int64, ms []*labels.Matcher) storage.SeriesSet {
	if hints == nil {
		return storage.ErrSeriesSet(fmt.Errorf("%s without select hints", rateLabel))
	}
	first := hints.Start + max(hints.Range, 1) - 1
	var times []int64
	for e := first; e <= hints.End; e += hints.Step {
		times = append(times, e)
		if hints.Step <= 0 {
			break
		}
	}
	if len(times) == 0 {
		return storage.EmptySeriesSet()
	}
	ms, without, grouping, summed := splitPushdown(ms)
	mint, maxt := max(times[0]-rng+1, q.s.floorAll.Load()), times[len(times)-1]
	series, ov := q.selectSeries(mint, maxt, ms)
	p := &rateParams{q: q, ctx: ctx, fn: fn, rng: rng, times: times, mint: mint, maxt: maxt}
	p.args = parser.Expressions{&parser.MatrixSelector{VectorSelector: &parser.VectorSelector{}, Range: time.Duration(rng) * time.Millisecond}}
	if summed && !without {
		if set, ok := p.sumByGroup(series, ov, grouping); ok {
			return set
		}
	}
	return &rateSeriesSet{p: p, sl: &slider{p: p}, series: series, ov: ov, i: -1}
}

type rateParams struct {
	q          *querier
	ctx        context.Context
	fn         string
	rng        int64
	times      []int64 // evaluation times, ascending
	mint, maxt int64
	args       parser.Expressions
}

type rateSeriesSet struct {
	pre    []*rateSeries // computed already (sumByGroup); else computed from series
	p      *rateParams
	sl     *slider
	series []*memSeries
	ov     []*ovSeries
	i      int
	cur    *rateSeries
	annos  annotations.Annotations
	err    error
}

// Next computes the next series' points, so that its annotations are
// there when the engine asks for them.
func (s *rateSeriesSet) Next() bool {
	if s.pre != nil || s.p == nil {
		s.i++
		if s.i < len(s.pre) {
			s.cur = s.pre[s.i]
			return true
		}
		return false
	}
	for s.err == nil {
		s.i++
		if s.i >= len(s.series) {
			return false
		}
		if err := s.p.ctx.Err(); err != nil {
			s.err = err
			return false
		}
		var ov *ovSeries
		if s.ov != nil {
			ov = s.ov[s.i]
		}
		rs := &rateSeries{}
		annos, err := s.p.points(s.sl, s.series[s.i], ov, rs)
		if err != nil {
			s.err = fmt.Errorf("series %d: %w", s.series[s.i].id, err)
			return false
		}
		s.annos.Merge(annos)
		if len(rs.t) > 0 {
			s.cur = rs
			return true
		}
	}
	return false
}

func (s *rateSeriesSet) At() storage.Series                { return s.cur }
func (s *rateSeriesSet) Err() error                        { return s.err }
func (s *rateSeriesSet) Warnings() annotations.Annotations { return s.annos }

// points computes fn of one series at every evaluation time into out,
// whose points it first drops; sl reads a float series' short ranges.
func (p *rateParams) points(sl *slider, ms *memSeries, ov *ovSeries, out *rateSeries) (annotations.Annotations, error) {
	out.lset, out.t, out.f, out.h = ms.lset, out.t[:0], out.f[:0], out.h[:0]
	if ms.kind == KindSamples && ms.id != 0 {
		mint := max(p.mint, p.q.s.floorRaw.Load())
		if p.rng < minSummaryRange {
			if floats, err := sl.read(ms.id, mint, p.maxt); err != nil || floats {
				if floats {
					sl.slide(out)
				}
				return nil, err
			}
		}
		w := &windowReader{q: p.q, id: ms.id, mint: mint, maxt: p.maxt}
		annos, err := p.windowed(w, out)
		return annos, errors.Join(err, w.close())
	}
	// Every sample in range, then Prometheus' function window by window.
	sr := &series{q: p.q, ms: ms, ov: ov, mint: p.mint, maxt: p.maxt}
	var buf sampleBuf
	if err := buf.read(sr.Iterator(nil)); err != nil {
		return nil, err
	}
	var annos annotations.Annotations
	var fl, hl int // the first float and histogram in the window
	var fh, hh int // past the last
	for _, e := range p.times {
		a := e - p.rng
		for fl < len(buf.f) && buf.f[fl].T <= a {
			fl++
		}
		for hl < len(buf.h) && buf.h[hl].T <= a {
			hl++
		}
		fh, hh = max(fh, fl), max(hh, hl)
		for fh < len(buf.f) && buf.f[fh].T <= e {
			fh++
		}
		for hh < len(buf.h) && buf.h[hh].T <= e {
			hh++
		}
		annos.Merge(p.eval(out, e, ms.lset, buf.f[fl:fh], buf.h[hl:hh]))
	}
	return annos, nil
}

// eval appends fn over the window ending at e of floats and histograms,
// as the engine computes it, to out.
func (p *rateParams) eval(out *rateSeries, e int64, lset labels.Labels, fl []promql.FPoint, hl []promql.HPoint) annotations.Annotations {
	if len(fl) == 0 && len(hl) == 0 {
		return nil
	}
	enh := &promql.EvalNodeHelper{Ts: e}
	vec, annos := promql.FunctionCalls[p.fn](nil, promql.Matrix{{Metric: lset, Floats: fl, Histograms: hl}}, p.args, enh)
	for _, smp := range vec {
		out.t = append(out.t, e)
		out.f = append(out.f, smp.F)
		out.h = append(out.h, smp.H)
	}
	return annos
}

// windowed computes fn of a sample series window by window from the
// decoded samples, with, for ranges of minSummaryRange or more, the closed
// windows that lie wholly inside a range read from their summaries.
func (p *rateParams) windowed(w *windowReader, out *rateSeries) (annotations.Annotations, error) {
	if p.rng >= minSummaryRange {
		if err := w.loadSummaries(); err != nil {
			return nil, err
		}
	}
	var (
		annos annotations.Annotations
		acc   rateAcc
		buf   sampleBuf
	)
	isRate := p.fn == "rate"
	rngSeconds := (time.Duration(p.rng) * time.Millisecond).Seconds()
	for _, e := range p.times {
		if err := p.ctx.Err(); err != nil {
			return nil, err
		}
		a := e - p.rng
		w.forget(windowOf(a + 1))
		acc.reset()
		plain := true // only float samples
		for win := windowOf(max(a+1, w.mint)); win <= e && plain; win += windowMs {
			if cs, ok := w.summary(win); ok && cs.firstT >= w.mint {
				switch {
				case cs.lastT <= e && cs.firstT > a: // the whole window
					acc.addSummary(cs)
					continue
				case cs.lastT <= e && cs.n >= 2:
					// A range that starts at the window's first sample, as an
					// aligned range over samples at whole minutes does,
					// holds the rest of it: the summary less the first
					// sample, which the first two samples give.
					if tail, ok, err := w.tail(win, cs, a); err != nil {
						return nil, err
					} else if ok {
						acc.addSummary(&tail)
						continue
					}
				case cs.firstT > a && cs.firstT >= e:
					// The range ends at or before the window's first sample,
					// as an aligned range over samples at whole minutes does.
					if cs.firstT == e {
						acc.add(cs.firstT, cs.firstF)
					}
					continue
				}
			}
			if win+windowMs > e && w.cached(win) == nil && (len(p.times) < 2 || e+p.times[1]-p.times[0] >= win+windowMs) {
				// The range ends inside the window, and no later range ends
				// in it: its samples up to e, no further.
				var err error
				if plain, err = w.prefix(win, a, e, &acc); err != nil {
					return nil, err
				}
				continue
			}
			dw, err := w.window(win)
			if err != nil {
				return nil, err
			}
			if dw == nil {
				continue
			}
			if dw.nonFloat {
				plain = false
				break
			}
			i, _ := slices.BinarySearch(dw.t, a+1)
			for ; i < len(dw.t) && dw.t[i] <= e; i++ {
				if !value.IsStaleNaN(dw.f[i]) {
					acc.add(dw.t[i], dw.f[i])
				}
			}
		}
		if plain {
			if f, ok := acc.extrapolate(a, e, rngSeconds, isRate); ok {
				out.t, out.f, out.h = append(out.t, e), append(out.f, f), append(out.h, nil)
			}
			continue
		}
		// A histogram in the window: Prometheus' function over every sample.
		buf.reset()
		for win := windowOf(max(a+1, w.mint)); win <= e; win += windowMs {
			dw, err := w.window(win)
			if err != nil {
				return nil, err
			}
			if dw != nil {
				buf.add(dw.samples, a, e)
				buf.addFloats(dw.t, dw.f, a, e)
			}
		}
		annos.Merge(p.eval(out, e, out.lset, buf.f, buf.h))
	}
	return annos, nil
}

// rateAcc gathers what Prometheus' extrapolatedRate reads of a window's
// float samples: the first and last, their count, and the value before
// each drop, in order.
type rateAcc struct {
	n             int
	firstT, lastT int64
	firstF, lastF float64
	resets        []float64
}

func (a *rateAcc) reset() { a.n, a.resets = 0, a.resets[:0] }

func (a *rateAcc) add(t int64, f float64) {
	if a.n == 0 {
		a.firstT, a.firstF = t, f
	} else if f < a.lastF {
		a.resets = append(a.resets, a.lastF)
	}
	a.lastT, a.lastF = t, f
	a.n++
}

func (a *rateAcc) addSummary(cs *counterSummary) {
	if a.n == 0 {
		a.firstT, a.firstF = cs.firstT, cs.firstF
	} else if cs.firstF < a.lastF {
		a.resets = append(a.resets, a.lastF)
	}
	a.resets = append(a.resets, cs.resets...)
	a.lastT, a.lastF = cs.lastT, cs.lastF
	a.n += cs.n
}

// extrapolate is extrapolatedRate of Prometheus v0.316 (promql/functions.go)
// for a counter of float samples without start timestamps, step by step
// in the same order, so that the result is the same to the bit: the window
// is (rangeStart, rangeEnd].
func (a *rateAcc) extrapolate(rangeStart, rangeEnd int64, rangeSeconds float64, isRate bool) (float64, bool) {
	if a.n < 2 {
		return 0, false
	}
	resultFloat := a.lastF - a.firstF
	for _, r := range a.resets {
		resultFloat += r
	}
	return extrapolatedRate(a.firstT, a.lastT, a.firstF, resultFloat, a.n, rangeStart, rangeEnd, rangeSeconds, isRate), true
}

// extrapolatedRate is the rest of Prometheus' extrapolatedRate for n ≥ 2
// float samples of a counter, from the first and last and the increase
// between them, resets included.
func extrapolatedRate(firstT, lastT int64, firstF, resultFloat float64, n int, rangeStart, rangeEnd int64, rangeSeconds float64, isRate bool) float64 {
	durationToStart := float64(firstT-rangeStart) / 1000
	durationToEnd := float64(rangeEnd-lastT) / 1000
	sampledInterval := float64(lastT-firstT) / 1000
	averageDurationBetweenSamples := sampledInterval / float64(n-1)
	extrapolationThreshold := averageDurationBetweenSamples * 1.1
	if durationToStart >= extrapolationThreshold {
		durationToStart = averageDurationBetweenSamples / 2
	}
	durationToZero := durationToStart
	if resultFloat > 0 && firstF >= 0 {
		durationToZero = sampledInterval * (firstF / resultFloat)
	}
	if durationToZero < durationToStart {
		durationToStart = durationToZero
	}
	if durationToEnd >= extrapolationThreshold {
		durationToEnd = averageDurationBetweenSamples / 2
	}
	factor := 1.0
	if sampledInterval != 0 {
		factor = (sampledInterval + durationToStart + durationToEnd) / sampledInterval
	}
	if isRate {
		factor /= rangeSeconds
	}
	return resultFloat * factor
}

// rateSeries is a series of computed points, floats or float histograms
// (h[i] non-nil); h is empty where every point is a float.
type rateSeries struct {
	lset labels.Labels
	t    []int64
	f    []float64
	h    []*histogram.FloatHistogram
}

func (s *rateSeries) Labels() labels.Labels { return s.lset }

func (s *rateSeries) Iterator(chunkenc.Iterator) chunkenc.Iterator {
	return &rateIterator{s: s, i: -1}
}

type rateIterator struct {
	s *rateSeries
	i int
}

func (r *rateIterator) vt() chunkenc.ValueType {
	if r.i >= len(r.s.t) {
		return chunkenc.ValNone
	}
	if r.i < len(r.s.h) && r.s.h[r.i] != nil {
		return chunkenc.ValFloatHistogram
	}
	return chunkenc.ValFloat
}

func (r *rateIterator) Next() chunkenc.ValueType {
	if r.i < len(r.s.t) {
		r.i++
	}
	return r.vt()
}

func (r *rateIterator) Seek(t int64) chunkenc.ValueType {
	if r.i < 0 {
		r.i = 0
	}
	for r.i < len(r.s.t) && r.s.t[r.i] < t {
		r.i++
	}
	return r.vt()
}

func (r *rateIterator) At() (int64, float64) { return r.s.t[r.i], r.s.f[r.i] }

func (r *rateIterator) AtHistogram(*histogram.Histogram) (int64, *histogram.Histogram) {
	return r.s.t[r.i], nil
}

func (r *rateIterator) AtFloatHistogram(fh *histogram.FloatHistogram) (int64, *histogram.FloatHistogram) {
	h := r.s.h[r.i]
	if fh == nil {
		return r.s.t[r.i], h.Copy()
	}
	h.CopyTo(fh)
	return r.s.t[r.i], fh
}

func (r *rateIterator) AtT() int64  { return r.s.t[r.i] }
func (r *rateIterator) AtST() int64 { return 0 }
func (r *rateIterator) Err() error  { return nil }
