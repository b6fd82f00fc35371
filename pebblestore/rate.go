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

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/prometheus/prometheus/util/kahansum"
)

// The rate pushdown for sample series (remote write, OTLP metrics): PushDown
// rewrites sum by (…) (rate|increase(sel[r])) into
// sum by (…) (last_over_time(sel{__proxylens_rate__="increase:r"}[1ms])),
// and Select answers the marked selector with the function's value at
// each evaluation time, computed here: by Prometheus' own function over
// the samples of each window, or, for ranges of two windows or more, with
// the closed windows in the middle of a range read from their counter
// summaries (counter_summary.go) instead of their samples. The engine then
// only picks each value and sums.

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
	// Shorter ranges decode every sample either way, and measured no
	// faster here than the engine's own path (docs/benchmarks.md, C7).
	if msel.Range.Milliseconds() < minSummaryRange {
		return false
	}
	if agg.Without || slices.Contains(agg.Grouping, model.MetricNameLabel) || vs.Timestamp != nil || vs.StartOrEnd != 0 {
		return false
	}
	series := s.match(math.MinInt64, math.MaxInt64, vs.LabelMatchers)
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
	return &rateSeriesSet{p: p, series: series, ov: ov, i: -1}
}

// sumByGroup answers with one series per group of the sum by (grouping)
// that the query applies: the sum of its series' values at each time,
// added as the engine's sum adds them (Kahan–Neumaier, in the order the
// series would reach it, sorted by labels), so that the engine's sum over
// the one series is the same to the bit. It declines (false) where a
// value is a histogram, and the caller answers series by series.
func (p *rateParams) sumByGroup(series []*memSeries, ov []*ovSeries, grouping []string) (storage.SeriesSet, bool) {
	type group struct {
		lset labels.Labels
		f, c []float64
		seen []bool
	}
	var (
		b      labels.Builder
		groups []*group
		index  = map[uint64][]*group{}
		annos  annotations.Annotations
	)
	for i, ms := range series {
		if err := p.ctx.Err(); err != nil {
			return storage.ErrSeriesSet(err), true
		}
		var o *ovSeries
		if ov != nil {
			o = ov[i]
		}
		rs, a, err := p.points(ms, o)
		if err != nil {
			return storage.ErrSeriesSet(fmt.Errorf("series %d: %w", ms.id, err)), true
		}
		if slices.ContainsFunc(rs.h, func(h *histogram.FloatHistogram) bool { return h != nil }) {
			return nil, false
		}
		annos.Merge(a)
		if len(rs.t) == 0 {
			continue
		}
		b.Reset(ms.lset)
		b.Keep(grouping...)
		ls := b.Labels()
		h := ls.Hash()
		var g *group
		for _, x := range index[h] {
			if labels.Equal(x.lset, ls) {
				g = x
				break
			}
		}
		if g == nil {
			n := len(p.times)
			g = &group{lset: ls, f: make([]float64, n), c: make([]float64, n), seen: make([]bool, n)}
			groups = append(groups, g)
			index[h] = append(index[h], g)
		}
		k := 0
		for j, t := range rs.t {
			for p.times[k] != t {
				k++
			}
			if !g.seen[k] {
				g.seen[k], g.f[k], g.c[k] = true, rs.f[j], 0
			} else {
				g.f[k], g.c[k] = kahansum.Inc(rs.f[j], g.f[k], g.c[k])
			}
		}
	}
	set := &rateSeriesSet{i: -1, annos: annos}
	for _, g := range groups {
		rs := &rateSeries{lset: g.lset}
		for k, seen := range g.seen {
			if seen {
				rs.t, rs.f, rs.h = append(rs.t, p.times[k]), append(rs.f, g.f[k]+g.c[k]), append(rs.h, nil)
			}
		}
		set.pre = append(set.pre, rs)
	}
	slices.SortFunc(set.pre, func(a, b *rateSeries) int { return labels.Compare(a.lset, b.lset) })
	return set, true
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
		rs, annos, err := s.p.points(s.series[s.i], ov)
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

// points computes fn of one series at every evaluation time.
func (p *rateParams) points(ms *memSeries, ov *ovSeries) (*rateSeries, annotations.Annotations, error) {
	out := &rateSeries{lset: ms.lset}
	if ms.kind == KindSamples && ms.id != 0 {
		w := &windowReader{q: p.q, id: ms.id, mint: max(p.mint, p.q.s.floorRaw.Load()), maxt: p.maxt}
		annos, err := p.windowed(w, out)
		return out, annos, errors.Join(err, w.close())
	}
	// Every sample in range, then Prometheus' function window by window.
	sr := &series{q: p.q, ms: ms, ov: ov, mint: p.mint, maxt: p.maxt}
	var buf sampleBuf
	if err := buf.read(sr.Iterator(nil)); err != nil {
		return nil, nil, err
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
	return out, annos, nil
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
			if cs, ok := w.summary(win); ok && cs.lastT <= e && cs.firstT >= w.mint {
				switch {
				case cs.firstT > a: // the whole window
					acc.addSummary(cs)
					continue
				case cs.n >= 2 && cs.firstT <= a:
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
				}
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
	durationToStart := float64(a.firstT-rangeStart) / 1000
	durationToEnd := float64(rangeEnd-a.lastT) / 1000
	sampledInterval := float64(a.lastT-a.firstT) / 1000
	averageDurationBetweenSamples := sampledInterval / float64(a.n-1)
	extrapolationThreshold := averageDurationBetweenSamples * 1.1
	if durationToStart >= extrapolationThreshold {
		durationToStart = averageDurationBetweenSamples / 2
	}
	durationToZero := durationToStart
	if resultFloat > 0 && a.firstF >= 0 {
		durationToZero = sampledInterval * (a.firstF / resultFloat)
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
	return resultFloat * factor, true
}

// windowReader reads one sample series' counter summaries and windows
// from the querier's snapshot, for evaluation times in ascending order.
type windowReader struct {
	q          *querier
	id         uint64
	mint, maxt int64

	sumW           []int64 // windows with a summary, ascending
	sums           []counterSummary
	sumI           int
	it             *pebble.Iterator
	gapFrom, gapTo int64 // no window in [gapFrom, gapTo) has samples (the last seek that missed)
	decoded        []*decodedWindow
	chunks         []timedChunk
	cit            chunkenc.Iterator
}

type decodedWindow struct {
	w        int64
	nonFloat bool      // a chunk of histograms: samples holds every sample
	samples  []sample  // nonFloat
	t        []int64   // else the float samples' times
	f        []float64 // and values
}

func (w *windowReader) loadSummaries() error {
	lo, hi := summaryKey(w.id, windowOf(w.mint)), summaryKey(w.id, windowOf(w.maxt)+windowMs)
	it, err := w.q.newIter(w.id, &pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	for valid := it.First(); valid; valid = it.Next() {
		win := periodFromKey(it.Key())
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		cs, err := decodeCounterSummary(v, win, nil)
		if err != nil {
			return fmt.Errorf("window %d: %w", win, err)
		}
		w.sumW, w.sums = append(w.sumW, win), append(w.sums, cs)
	}
	return it.Error()
}

// summary returns the summary of window win, if it has one.
func (w *windowReader) summary(win int64) (*counterSummary, bool) {
	for w.sumI < len(w.sumW) && w.sumW[w.sumI] < win {
		w.sumI++
	}
	if w.sumI < len(w.sumW) && w.sumW[w.sumI] == win {
		return &w.sums[w.sumI], true
	}
	// Evaluation windows overlap: go back for an earlier window.
	if i, ok := slices.BinarySearch(w.sumW, win); ok {
		w.sumI = i
		return &w.sums[i], true
	}
	return nil, false
}

// forget drops the decoded windows before win.
func (w *windowReader) forget(win int64) {
	w.decoded = slices.DeleteFunc(w.decoded, func(d *decodedWindow) bool { return d.w < win })
}

// window returns window win's samples in [mint, maxt], decoded once, or
// nil if it has none.
func (w *windowReader) window(win int64) (*decodedWindow, error) {
	for _, d := range w.decoded {
		if d.w == win {
			return d, nil
		}
	}
	v, err := w.value(win)
	if err != nil || v == nil {
		return nil, err
	}
	if w.chunks, err = decodeWindow(v, w.chunks[:0]); err != nil {
		return nil, fmt.Errorf("window %d: %w", win, err)
	}
	d := &decodedWindow{w: win}
	n := 0
	for _, c := range w.chunks {
		n += c.c.NumSamples()
		d.nonFloat = d.nonFloat || c.c.Encoding() != chunkenc.EncXOR && c.c.Encoding() != chunkenc.EncXOR2
	}
	if d.nonFloat {
		// Every sample, histograms copied, for the engine's function.
		if d.samples, err = windowSamples(w.chunks, make([]sample, 0, n)); err != nil {
			return nil, fmt.Errorf("window %d: %w", win, err)
		}
		d.samples = slices.DeleteFunc(d.samples, func(s sample) bool { return s.t < w.mint || s.t > w.maxt })
	} else {
		// Floats only: times and values, nothing for the collector to scan.
		d.t, d.f = make([]int64, 0, n), make([]float64, 0, n)
		for _, c := range w.chunks {
			w.cit = c.c.Iterator(w.cit)
			for w.cit.Next() == chunkenc.ValFloat {
				if t, f := w.cit.At(); t >= w.mint && t <= w.maxt {
					d.t, d.f = append(d.t, t), append(d.f, f)
				}
			}
			if err := w.cit.Err(); err != nil {
				return nil, fmt.Errorf("window %d: %w", win, err)
			}
		}
	}
	w.decoded = append(w.decoded, d)
	return d, nil
}

// tail returns the summary of window win without its first sample, if
// only that sample is at or before a: cs with the second sample, read
// from the window's first chunk, as its first.
func (w *windowReader) tail(win int64, cs *counterSummary, a int64) (counterSummary, bool, error) {
	v, err := w.value(win)
	if err != nil || v == nil {
		return counterSummary{}, false, err
	}
	if w.chunks, err = decodeWindow(v, w.chunks[:0]); err != nil {
		return counterSummary{}, false, fmt.Errorf("window %d: %w", win, err)
	}
	w.cit = w.chunks[0].c.Iterator(w.cit)
	var first, second sample
	for i, s := range []*sample{&first, &second} {
		if w.cit.Next() != chunkenc.ValFloat {
			if i == 1 && w.cit.Err() == nil && len(w.chunks) > 1 {
				w.cit = w.chunks[1].c.Iterator(w.cit)
				if w.cit.Next() == chunkenc.ValFloat {
					s.t, s.f = w.cit.At()
					continue
				}
			}
			return counterSummary{}, false, w.cit.Err()
		}
		s.t, s.f = w.cit.At()
	}
	if first.t != cs.firstT || second.t <= a {
		return counterSummary{}, false, nil
	}
	t := counterSummary{n: cs.n - 1, firstT: second.t, firstF: second.f, lastT: cs.lastT, lastF: cs.lastF, resets: cs.resets}
	if second.f < first.f {
		t.resets = cs.resets[1:]
	}
	return t, true, nil
}

// value returns window win's value, or nil if it has none; it is valid
// until the next read.
func (w *windowReader) value(win int64) ([]byte, error) {
	if win >= w.gapFrom && win < w.gapTo {
		return nil, nil
	}
	if w.it == nil {
		it, err := w.q.newIter(w.id, &pebble.IterOptions{
			LowerBound: chunkKey(w.id, windowOf(w.mint)),
			UpperBound: chunkKey(w.id, windowOf(w.maxt)+windowMs),
		})
		if err != nil {
			return nil, err
		}
		w.it = it
	}
	if !w.it.SeekGE(chunkKey(w.id, win)) {
		w.gapFrom, w.gapTo = win, math.MaxInt64
		return nil, w.it.Error()
	}
	if found := periodFromKey(w.it.Key()); found != win {
		w.gapFrom, w.gapTo = win, found
		return nil, nil
	}
	return w.it.ValueAndErr()
}

// close is a no-op: the querier closes the iterators it opened.
func (w *windowReader) close() error { return nil }

// sampleBuf holds a window's samples as the engine's matrix selector
// hands them to a function: stale markers dropped, histograms as float
// histograms.
type sampleBuf struct {
	f []promql.FPoint
	h []promql.HPoint
}

func (b *sampleBuf) reset() { b.f, b.h = b.f[:0], b.h[:0] }

// add adds the samples of ss in (a, e].
func (b *sampleBuf) add(ss []sample, a, e int64) {
	for _, s := range ss {
		if s.t <= a || s.t > e {
			continue
		}
		switch {
		case s.h != nil:
			if !value.IsStaleNaN(s.h.Sum) {
				b.h = append(b.h, promql.HPoint{T: s.t, H: s.h.ToFloat(nil)})
			}
		case s.fh != nil:
			if !value.IsStaleNaN(s.fh.Sum) {
				b.h = append(b.h, promql.HPoint{T: s.t, H: s.fh})
			}
		default:
			if !value.IsStaleNaN(s.f) {
				b.f = append(b.f, promql.FPoint{T: s.t, F: s.f})
			}
		}
	}
}

// addFloats adds the float samples (t[i], f[i]) in (a, e].
func (b *sampleBuf) addFloats(t []int64, f []float64, a, e int64) {
	for i, ti := range t {
		if ti > a && ti <= e && !value.IsStaleNaN(f[i]) {
			b.f = append(b.f, promql.FPoint{T: ti, F: f[i]})
		}
	}
}

// read reads every sample of it.
func (b *sampleBuf) read(it chunkenc.Iterator) error {
	for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
		switch vt {
		case chunkenc.ValFloat:
			t, f := it.At()
			if !value.IsStaleNaN(f) {
				b.f = append(b.f, promql.FPoint{T: t, F: f})
			}
		case chunkenc.ValHistogram, chunkenc.ValFloatHistogram:
			t, fh := it.AtFloatHistogram(nil)
			if !value.IsStaleNaN(fh.Sum) {
				b.h = append(b.h, promql.HPoint{T: t, H: fh})
			}
		}
	}
	return it.Err()
}

// rateSeries is a series of computed points, floats or float histograms
// (h[i] non-nil).
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
	if r.s.h[r.i] != nil {
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
