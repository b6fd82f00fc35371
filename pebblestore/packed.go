package pebblestore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/proxylens/proxylens/internal/varint"
)

// encPacked is proxylens' own chunk encoding, for a closed window whose
// float samples are all integers (counters of requests, bytes and
// histogram buckets nearly always are): frame-of-reference bit packing
// of the deltas, as the integer codecs of column stores pack them, where
// Prometheus' XOR spends a sign, a leading-zero count and a significant-bit
// count on every value. A window is packed when it closes and only where
// that is smaller; the head window stays XOR, which appends in place.
// Encodings from 0x80 are proxylens' own, clear of Prometheus' (1 to 6).
//
// The bytes: uvarint sample count n (≥ 1), varint first time, uvarint the
// time unit (the greatest common divisor of the time deltas, 1 for one
// sample), uvarint the least time delta in units and 1 byte the bit width
// of the deltas above it, varint first value, varint the least value
// delta and 1 byte its width; then the n − 1 time deltas in units less the
// least, at their width, least significant bit first, padded to a byte;
// then the n − 1 value deltas less the least the same way. Samples at a
// fixed interval take no bits for their times, and one bit with gaps of
// one interval.
const encPacked chunkenc.Encoding = 0x80

// packedMaxWidth bounds the bit width of a packed delta, so that one
// 64-bit load at any bit offset reads a whole delta. Values are integers
// of at most 2⁵³ in magnitude (floats hold every integer up to there), so
// their deltas span at most 2⁵⁵.
const (
	packedMaxWidth   = 56
	packedMaxInteger = 1 << 53
	packedMaxSamples = 1 << 20
)

var errNotAppendable = errors.New("a packed chunk is not appendable: its window is closed")

// floatEncoding reports whether chunks of encoding e hold float samples.
func floatEncoding(e chunkenc.Encoding) bool {
	return e == chunkenc.EncXOR || e == chunkenc.EncXOR2 || e == encPacked
}

// packedChunk is a chunk of encoding encPacked.
type packedChunk struct {
	b              []byte
	n              int
	t0, v0         int64
	tUnit          int64
	tBase, vBase   int64
	tWidth, vWidth uint
	tOff, vOff     int // where the streams start in b
}

// newPackedChunk parses b, which it aliases; it refuses bytes that are
// not a whole packed chunk, so that its iterator never reads past them.
func newPackedChunk(b []byte) (*packedChunk, error) {
	c := &packedChunk{}
	if err := c.parse(b); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *packedChunk) parse(b []byte) error {
	rd := varint.Reader{B: b}
	n := rd.Uvarint()
	c.t0 = rd.Varint()
	unit := rd.Uvarint()
	tBase := rd.Uvarint()
	tw := uint(rd.Byte())
	c.v0 = rd.Varint()
	c.vBase = rd.Varint()
	vw := uint(rd.Byte())
	if rd.Err != nil || n == 0 || n > packedMaxSamples || tw > packedMaxWidth || vw > packedMaxWidth ||
		unit == 0 || unit > math.MaxInt64 || tBase > math.MaxInt64 || n > 1 && tBase == 0 {
		return fmt.Errorf("packed chunk header: %w", errCorrupt)
	}
	c.b, c.n, c.tUnit, c.tBase, c.tWidth, c.vWidth = b, int(n), int64(unit), int64(tBase), tw, vw
	c.tOff = len(b) - len(rd.B)
	c.vOff = c.tOff + packedStreamLen(c.n, tw)
	if c.vOff+packedStreamLen(c.n, vw) != len(b) {
		return fmt.Errorf("packed chunk of %d samples in %d bytes: %w", n, len(b), errCorrupt)
	}
	return nil
}

// packedStreamLen is the bytes of the n − 1 deltas of n samples at width w.
func packedStreamLen(n int, w uint) int { return ((n-1)*int(w) + 7) / 8 }

func (c *packedChunk) Bytes() []byte                        { return c.b }
func (c *packedChunk) Encoding() chunkenc.Encoding          { return encPacked }
func (c *packedChunk) Appender() (chunkenc.Appender, error) { return nil, errNotAppendable }
func (c *packedChunk) NumSamples() int                      { return c.n }
func (c *packedChunk) Compact()                             {}

// Reset makes c the chunk of stream; bytes that do not parse leave it
// empty (n = 0), which its iterator reads as no samples.
func (c *packedChunk) Reset(stream []byte) {
	if c.parse(stream) != nil {
		*c = packedChunk{}
	}
}

func (c *packedChunk) Iterator(it chunkenc.Iterator) chunkenc.Iterator {
	pit, ok := it.(*packedIterator)
	if !ok {
		pit = &packedIterator{}
	}
	*pit = packedIterator{c: c, tBit: uint(c.tOff) * 8, vBit: uint(c.vOff) * 8}
	return pit
}

// packedIterator reads a packedChunk's samples in order.
type packedIterator struct {
	c          *packedChunk
	i          int // samples read
	t, v       int64
	tBit, vBit uint // the next deltas' bit offsets in c.b
}

func (it *packedIterator) Next() chunkenc.ValueType {
	c := it.c
	switch {
	case it.i >= c.n:
		return chunkenc.ValNone
	case it.i == 0:
		it.t, it.v = c.t0, c.v0
	default:
		it.t += c.tUnit * (c.tBase + int64(bitsAt(c.b, it.tBit, c.tWidth)))
		it.v += c.vBase + int64(bitsAt(c.b, it.vBit, c.vWidth))
		it.tBit += c.tWidth
		it.vBit += c.vWidth
	}
	it.i++
	return chunkenc.ValFloat
}

func (it *packedIterator) Seek(t int64) chunkenc.ValueType {
	// As Prometheus' XOR iterator seeks: forward only, and a sample
	// already at or after t stays.
	for it.i == 0 || it.t < t {
		if it.Next() == chunkenc.ValNone {
			return chunkenc.ValNone
		}
	}
	return chunkenc.ValFloat
}

func (it *packedIterator) At() (int64, float64) { return it.t, float64(it.v) }
func (it *packedIterator) AtT() int64           { return it.t }
func (it *packedIterator) AtST() int64          { return 0 }
func (it *packedIterator) Err() error           { return nil }

func (it *packedIterator) AtHistogram(*histogram.Histogram) (int64, *histogram.Histogram) {
	panic("cannot call packedIterator.AtHistogram")
}

func (it *packedIterator) AtFloatHistogram(*histogram.FloatHistogram) (int64, *histogram.FloatHistogram) {
	panic("cannot call packedIterator.AtFloatHistogram")
}

// bitsAt reads the w bits (w ≤ packedMaxWidth) at bit offset off of b,
// least significant first.
func bitsAt(b []byte, off, w uint) uint64 {
	if w == 0 {
		return 0
	}
	i := off >> 3
	var x uint64
	if i+8 <= uint(len(b)) {
		x = binary.LittleEndian.Uint64(b[i:])
	} else {
		for k := uint(0); i+k < uint(len(b)); k++ {
			x |= uint64(b[i+k]) << (8 * k)
		}
	}
	return x >> (off & 7) & (1<<w - 1)
}

// packer packs closed windows, its buffers reused from window to window
// (see trim).
type packer struct {
	ts, vs []int64
	dt, dv []int64 // deltas of ts (in units) and of vs
	buf    []byte
	it     chunkenc.Iterator
	c      packedChunk
	one    [1]timedChunk
}

// packerKeep bounds the samples a packer's buffers keep between commits:
// two hours at one a second, where a window of millisecond samples may
// have grown them to packedMaxSamples.
const packerKeep = 8192

// trim drops buffers grown past packerKeep.
func (p *packer) trim() {
	if cap(p.ts) > packerKeep {
		*p = packer{}
	}
}

// pack returns the window's chunks as one packed chunk where its samples
// allow it and that takes fewer bytes than their chunks (their headers in
// the window value not counted), else chunks. The packed chunk is valid
// until the next call.
func (p *packer) pack(chunks []timedChunk) []timedChunk {
	if len(chunks) == 0 || len(chunks) == 1 && chunks[0].c.Encoding() == encPacked {
		return chunks
	}
	p.ts, p.vs = p.ts[:0], p.vs[:0]
	stored := 0
	for _, tc := range chunks {
		if tc.c.Encoding() != chunkenc.EncXOR && tc.c.Encoding() != encPacked {
			return chunks // histograms, or start times XOR2 keeps
		}
		stored += len(tc.c.Bytes())
		it := tc.c.Iterator(p.it)
		p.it = it
		for it.Next() == chunkenc.ValFloat {
			t, v := it.At()
			if v != math.Trunc(v) || math.Abs(v) > packedMaxInteger || v == 0 && math.Signbit(v) ||
				len(p.ts) > 0 && t <= p.ts[len(p.ts)-1] || len(p.ts) == packedMaxSamples {
				return chunks
			}
			p.ts, p.vs = append(p.ts, t), append(p.vs, int64(v))
		}
		if it.Err() != nil {
			return chunks
		}
	}
	if len(p.ts) == 0 {
		return chunks
	}
	b, ok := p.encode(p.buf[:0])
	p.buf = b
	if !ok || len(b) >= stored {
		return chunks
	}
	if err := p.c.parse(b); err != nil {
		return chunks // cannot happen: the bytes were just written
	}
	p.one[0] = timedChunk{c: &p.c, minT: p.ts[0], maxT: p.ts[len(p.ts)-1]}
	return p.one[:]
}

// encode appends the packed chunk of p.ts (increasing) and p.vs to dst;
// ok is false where deltas are too wide to pack.
func (p *packer) encode(dst []byte) (b []byte, ok bool) {
	n := len(p.ts)
	// Time deltas in units of their greatest common divisor: samples at
	// a fixed interval with gaps (a missed scrape, a quiet flush interval)
	// take a bit or two a sample, not the width of the gap in ms.
	p.dt, p.dv = p.dt[:0], p.dv[:0]
	unit := int64(1)
	for i := 1; i < n; i++ {
		d := p.ts[i] - p.ts[i-1]
		p.dt, p.dv = append(p.dt, d), append(p.dv, p.vs[i]-p.vs[i-1])
		if i == 1 {
			unit = d
		} else {
			unit = gcd(unit, d)
		}
	}
	for i := range p.dt {
		p.dt[i] /= unit
	}
	tBase, tWidth := frame(p.dt)
	vBase, vWidth := frame(p.dv)
	if tWidth > packedMaxWidth || vWidth > packedMaxWidth {
		return dst, false
	}
	b = binary.AppendUvarint(dst, uint64(n))
	b = binary.AppendVarint(b, p.ts[0])
	b = binary.AppendUvarint(b, uint64(unit))
	b = binary.AppendUvarint(b, uint64(tBase))
	b = append(b, byte(tWidth))
	b = binary.AppendVarint(b, p.vs[0])
	b = binary.AppendVarint(b, vBase)
	b = append(b, byte(vWidth))
	b = appendDeltas(b, p.dt, tBase, tWidth)
	return appendDeltas(b, p.dv, vBase, vWidth), true
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// frame returns the least of ds and the bit width of ds above it (more
// than packedMaxWidth: too wide to pack).
func frame(ds []int64) (base int64, width uint) {
	if len(ds) == 0 {
		return 0, 0
	}
	lo, hi := ds[0], ds[0]
	for _, d := range ds[1:] {
		lo, hi = min(lo, d), max(hi, d)
	}
	return lo, uint(bits.Len64(uint64(hi) - uint64(lo)))
}

// appendDeltas appends ds less base at width w, least significant bit
// first, padded to a byte.
func appendDeltas(b []byte, ds []int64, base int64, w uint) []byte {
	if w == 0 || w > packedMaxWidth {
		return b
	}
	var acc uint64
	var n uint
	for _, d := range ds {
		acc |= uint64(d-base) << n
		n += w
		for n >= 8 {
			b = append(b, byte(acc))
			acc >>= 8
			n -= 8
		}
	}
	if n > 0 {
		b = append(b, byte(acc))
	}
	return b
}
