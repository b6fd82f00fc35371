package pebblestore

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/proxylens/proxylens/internal/varint"
)

// windowMs is the time span of one chunk key: a series' samples are stored
// one Pebble value per series and aligned two-hour window, as Prometheus
// cuts head chunks and blocks at two hours.
const windowMs = 2 * 60 * 60 * 1000

// windowOf returns the start of the window holding t (milliseconds).
func windowOf(t int64) int64 { return floorTo(t, windowMs) }

// floorTo returns the greatest multiple of p (> 0) not after t.
func floorTo(t, p int64) int64 {
	f := t / p * p
	if t < 0 && t%p != 0 {
		f -= p
	}
	return f
}

// sample is one sample of any type, for merging windows.
type sample struct {
	st int64 // start timestamp, 0 when unknown
	t  int64
	f  float64
	h  *histogram.Histogram
	fh *histogram.FloatHistogram
}

func (s *sample) valueType() chunkenc.ValueType {
	switch {
	case s.h != nil:
		return chunkenc.ValHistogram
	case s.fh != nil:
		return chunkenc.ValFloatHistogram
	}
	return chunkenc.ValFloat
}

// timedChunk is a chunk with the time range of its samples.
type timedChunk struct {
	c          chunkenc.Chunk
	minT, maxT int64
}

// A window value: one or more groups of chunks, each a uvarint count, then
// per chunk its encoding byte, varint min and max time, uvarint length and
// bytes. A window written whole is one group; Pebble's concatenating merger
// appends the groups of the samples appended to it since (see addOperand).

// summaryLevels are the resolutions of an increment series' window
// summaries, finest first.
var summaryLevels = [...]int64{60_000, 300_000, 3_600_000}

// summary is a closed increment window's increments summed per res: points
// at each multiple m of res holding the sum of the increments in
// (m − res, m], in one XOR chunk. A read whose window boundaries all fall
// on multiples of res reads the coarsest such summary instead of the raw
// increments, with the same counter at every boundary: at the default 15 s
// flush interval, a quarter of the points at a minute, a twentieth at five
// minutes, 1/240 at an hour. Summaries have their own key space, so a read
// of them does not go through the raw chunks' bytes.
type summary struct {
	res int64 // ms
	c   chunkenc.Chunk
}

// appendWindow encodes a window's chunks.
func appendWindow(dst []byte, chunks []timedChunk) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(chunks)))
	for _, c := range chunks {
		b := c.c.Bytes()
		dst = append(dst, byte(c.c.Encoding()))
		dst = binary.AppendVarint(dst, c.minT)
		dst = binary.AppendVarint(dst, c.maxT)
		dst = binary.AppendUvarint(dst, uint64(len(b)))
		dst = append(dst, b...)
	}
	return dst
}

// decodeWindow decodes a window value's chunks, which alias val.
func decodeWindow(val []byte, dst []timedChunk) ([]timedChunk, error) {
	rd := varint.Reader{B: val}
	for first := true; first || len(rd.B) > 0; first = false {
		n := rd.Uvarint()
		if rd.Err != nil || n > uint64(len(val)) {
			return nil, fmt.Errorf("window of %d chunks: %w", n, errCorrupt)
		}
		for range n {
			enc := chunkenc.Encoding(rd.Byte())
			minT, maxT := rd.Varint(), rd.Varint()
			b := rd.LenBytes()
			if rd.Err != nil {
				return nil, fmt.Errorf("window chunk: %w", rd.Err)
			}
			c, err := chunkFromData(enc, b)
			if err != nil {
				return nil, fmt.Errorf("window chunk: %w", err)
			}
			dst = append(dst, timedChunk{c: c, minT: minT, maxT: maxT})
		}
	}
	return dst, nil
}

// chunkFromData is chunkenc.FromData, with proxylens' packed chunks
// (packed.go), that refuses bytes too short for the encoding's header (2
// bytes of sample count for XOR, 3 with the flags of the others), which
// Prometheus' iterators slice without a check: a damaged value, or one
// from a doctored backup, fails its read instead of crashing the query
// that reads it.
func chunkFromData(enc chunkenc.Encoding, b []byte) (chunkenc.Chunk, error) {
	if enc == encPacked {
		return newPackedChunk(b)
	}
	header := 3
	if enc == chunkenc.EncXOR || enc == chunkenc.EncXOR2 {
		header = 2
	}
	if len(b) < header {
		return nil, fmt.Errorf("chunk of %d bytes: %w", len(b), errCorrupt)
	}
	return chunkenc.FromData(enc, b)
}

// appendSummaries encodes a window's summaries: uvarint count, then for
// each its uvarint resolution, encoding byte, uvarint length and bytes.
func appendSummaries(dst []byte, sums []summary) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(sums)))
	for _, sum := range sums {
		b := sum.c.Bytes()
		dst = binary.AppendUvarint(dst, uint64(sum.res))
		dst = append(dst, byte(sum.c.Encoding()))
		dst = binary.AppendUvarint(dst, uint64(len(b)))
		dst = append(dst, b...)
	}
	return dst
}

// decodeSummaries decodes a summary value; the chunks alias val.
func decodeSummaries(val []byte, dst []summary) ([]summary, error) {
	rd := varint.Reader{B: val}
	n := rd.Uvarint()
	if n > uint64(len(val)) {
		return nil, fmt.Errorf("%d summaries: %w", n, errCorrupt)
	}
	for range n {
		sum := summary{res: int64(rd.Uvarint())}
		enc := chunkenc.Encoding(rd.Byte())
		b := rd.LenBytes()
		if rd.Err != nil || sum.res <= 0 {
			return nil, fmt.Errorf("window summary: %w", errCorrupt)
		}
		c, err := chunkFromData(enc, b)
		if err != nil {
			return nil, fmt.Errorf("window summary: %w", err)
		}
		sum.c = c
		dst = append(dst, sum)
	}
	if len(rd.B) != 0 {
		return nil, fmt.Errorf("summaries: trailing bytes: %w", errCorrupt)
	}
	return dst, nil
}

// summarize sums a closed window's increments at each summary level.
func summarize(chunks []timedChunk) ([]summary, error) {
	sums := make([]summary, len(summaryLevels))
	apps := make([]chunkenc.Appender, len(summaryLevels))
	ends := make([]int64, len(summaryLevels))
	accs := make([]float64, len(summaryLevels))
	for i, res := range summaryLevels {
		c := chunkenc.NewXORChunk()
		app, err := c.Appender()
		if err != nil {
			return nil, err
		}
		sums[i], apps[i], ends[i] = summary{res: res, c: c}, app, math.MinInt64
	}
	var it chunkenc.Iterator
	for _, tc := range chunks {
		it = tc.c.Iterator(it)
		for it.Next() == chunkenc.ValFloat {
			t, f := it.At()
			for i, res := range summaryLevels {
				if end := ceilDiv(t, res) * res; end != ends[i] {
					if ends[i] != math.MinInt64 {
						apps[i].Append(0, ends[i], accs[i])
					}
					ends[i], accs[i] = end, 0
				}
				accs[i] += f
			}
		}
		if err := it.Err(); err != nil {
			return nil, err
		}
	}
	for i := range summaryLevels {
		if ends[i] != math.MinInt64 {
			apps[i].Append(0, ends[i], accs[i])
		}
	}
	return sums, nil
}

// ceilDiv returns ⌈a/b⌉ for b > 0.
func ceilDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a > 0 {
		q++
	}
	return q
}

// windowSamples appends every sample of chunks to dst, in order, with
// histograms copied.
func windowSamples(chunks []timedChunk, dst []sample) ([]sample, error) {
	var it chunkenc.Iterator
	for _, c := range chunks {
		it = c.c.Iterator(it)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			switch vt {
			case chunkenc.ValFloat:
				t, f := it.At()
				dst = append(dst, sample{st: it.AtST(), t: t, f: f})
			case chunkenc.ValHistogram:
				t, h := it.AtHistogram(nil)
				dst = append(dst, sample{st: it.AtST(), t: t, h: h})
			case chunkenc.ValFloatHistogram:
				t, fh := it.AtFloatHistogram(nil)
				dst = append(dst, sample{st: it.AtST(), t: t, fh: fh})
			}
		}
		if err := it.Err(); err != nil {
			return nil, fmt.Errorf("read chunk: %w", err)
		}
	}
	return dst, nil
}

// chunkWriter appends samples in time order into chunks, cutting a new
// chunk when the sample type changes, as the TSDB head does: a histogram
// appended after one of the same kind records, in the chunk header,
// whether its counter reset. It cuts one too at maxChunkSamples.
type chunkWriter struct {
	chunks []timedChunk
	app    chunkenc.Appender
	typ    chunkenc.ValueType
	st     bool // the current chunk's encoding stores start timestamps
}

func (w *chunkWriter) add(s *sample) error {
	typ := s.valueType()
	if w.app == nil || typ != w.typ || (s.st != 0 && !w.st) || w.chunks[len(w.chunks)-1].c.NumSamples() >= maxChunkSamples {
		// Prometheus' default encodings, XOR for floats and the plain
		// histogram ones, until a sample carries a start timestamp: then
		// the encodings that store them (XOR2 and the ST histogram ones),
		// which cost more (XOR2 about twice XOR's bytes and decoding time).
		st := s.st != 0
		c, err := chunkenc.NewEmptyChunk(typ.ChunkEncoding(st, st))
		if err != nil {
			return err
		}
		app, err := c.Appender()
		if err != nil {
			return err
		}
		w.chunks = append(w.chunks, timedChunk{c: c, minT: s.t, maxT: s.t})
		w.app, w.typ, w.st = app, typ, st
	}
	cur := &w.chunks[len(w.chunks)-1]
	var (
		newChunk chunkenc.Chunk
		recoded  bool
		err      error
	)
	switch typ {
	case chunkenc.ValFloat:
		w.app.Append(s.st, s.t, s.f)
	case chunkenc.ValHistogram:
		newChunk, recoded, w.app, err = w.app.AppendHistogram(nil, s.st, s.t, s.h, false)
	case chunkenc.ValFloatHistogram:
		newChunk, recoded, w.app, err = w.app.AppendFloatHistogram(nil, s.st, s.t, s.fh, false)
	}
	if err != nil {
		return fmt.Errorf("append to chunk: %w", err)
	}
	switch {
	case newChunk == nil:
		cur.maxT = s.t
	case recoded:
		cur.c, cur.maxT = newChunk, s.t
	default:
		w.chunks = append(w.chunks, timedChunk{c: newChunk, minT: s.t, maxT: s.t})
	}
	return nil
}

// maxChunkSamples is the most samples a chunk takes: Prometheus' chunks
// count theirs in 16 bits (14 for the histogram ones with start
// timestamps) and panic past it, which a series sampled faster than about
// 9 Hz would reach in one two-hour window.
const maxChunkSamples = 1<<14 - 1

// encodeSamples builds the chunks of a window from samples in time order,
// and returns the writer, ready for more.
func encodeSamples(samples []sample) (*chunkWriter, error) {
	w := &chunkWriter{}
	for i := range samples {
		if err := w.add(&samples[i]); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// sameValue reports whether two samples at one timestamp are the same.
func sameValue(a, b *sample) bool {
	switch {
	case a.h != nil && b.h != nil:
		return a.h.Equals(b.h)
	case a.fh != nil && b.fh != nil:
		return a.fh.Equals(b.fh)
	case a.h == nil && b.h == nil && a.fh == nil && b.fh == nil:
		return math.Float64bits(a.f) == math.Float64bits(b.f)
	}
	return false
}
