package pebblestore

import (
	"fmt"
	"math"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// What the rate pushdown (rate.go) reads of one sample series: its
// counter summaries, its windows decoded on demand, and the samples of a
// range in a buffer the engine's functions take.

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
	floats         floatBuf // prefix's samples
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
	if d := w.cached(win); d != nil {
		return d, nil
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
		d.nonFloat = d.nonFloat || !floatEncoding(c.c.Encoding())
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

// cached returns window win if it is decoded already.
func (w *windowReader) cached(win int64) *decodedWindow {
	for _, d := range w.decoded {
		if d.w == win {
			return d
		}
	}
	return nil
}

// prefix adds to acc window win's float samples in (a, e] (and in [mint,
// maxt]), decoding its chunks only as far as e. It reports false, having
// added nothing, where a chunk that reaches e holds histograms.
func (w *windowReader) prefix(win, a, e int64, acc *rateAcc) (bool, error) {
	v, err := w.value(win)
	if err != nil || v == nil {
		return true, err
	}
	if w.chunks, err = decodeWindow(v, w.chunks[:0]); err != nil {
		return false, fmt.Errorf("window %d: %w", win, err)
	}
	w.floats.t, w.floats.f = w.floats.t[:0], w.floats.f[:0]
	if ok, err := w.floats.add(w.chunks, max(a+1, w.mint), min(e, w.maxt)); err != nil || !ok {
		if err != nil {
			err = fmt.Errorf("window %d: %w", win, err)
		}
		return false, err
	}
	for i, t := range w.floats.t {
		acc.add(t, w.floats.f[i])
	}
	return true, nil
}

// floatBuf holds float samples decoded from chunks.
type floatBuf struct {
	t   []int64
	f   []float64
	cit chunkenc.Iterator
}

// add appends the float samples of chunks in [lo, hi], stale markers
// dropped, decoding each chunk only as far as hi. It reports false,
// having appended nothing, where a chunk in range holds histograms.
func (b *floatBuf) add(chunks []timedChunk, lo, hi int64) (bool, error) {
	for _, c := range chunks {
		if c.minT <= hi && c.maxT >= lo && !floatEncoding(c.c.Encoding()) {
			return false, nil
		}
	}
	for _, c := range chunks {
		if c.maxT < lo || c.minT > hi {
			continue
		}
		b.cit = c.c.Iterator(b.cit)
		for b.cit.Next() == chunkenc.ValFloat {
			t, f := b.cit.At()
			if t > hi {
				break
			}
			if t >= lo && !value.IsStaleNaN(f) {
				b.t, b.f = append(b.t, t), append(b.f, f)
			}
		}
		if err := b.cit.Err(); err != nil {
			return false, err
		}
	}
	return true, nil
}

// tail returns the summary of window win without its first sample, if
// only that sample is at or before a: cs with the second sample, read
// from the window's first chunk, as its first.
func (w *windowReader) tail(win int64, cs *counterSummary, a int64) (counterSummary, bool, error) {
	if cs.hasSecond {
		return cs.less(sample{t: cs.firstT, f: cs.firstF}, sample{t: cs.secondT, f: cs.secondF}, a)
	}
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
	return cs.less(first, second, a)
}

// less returns cs without its first sample, given the first two, if only
// the first is at or before a.
func (cs *counterSummary) less(first, second sample, a int64) (counterSummary, bool, error) {
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
