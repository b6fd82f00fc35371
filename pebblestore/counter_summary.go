package pebblestore

import (
	"encoding/binary"

	"fmt"
	"math"

	"github.com/cockroachdb/pebble/v2"

	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/proxylens/proxylens/internal/varint"
)

// counterSummary is what rate() and increase() need of a closed window of
// a sample series (remote write, OTLP metrics) whose samples are all
// plain floats: the first and last samples, how many there are, and the
// value before each drop, in order. A window in the middle of a long
// range adds to the engine's arithmetic exactly what its samples would
// (see rateAcc), so a read over [1d] or [30d] decodes two windows per
// range instead of all of them. Written beside the window under the
// summary key (u), only for windows without NaN values or start
// timestamps; a window without one is decoded.
type counterSummary struct {
	n             int
	firstT, lastT int64
	firstF, lastF float64
	resets        []float64 // the value before each drop, in order
	// The second sample, if n ≥ 2 and the summary was written with it
	// (version 0x82): a range that starts at the first sample holds the
	// rest of the window, which it gives without a read of the chunks.
	hasSecond bool
	secondT   int64
	secondF   float64
}

// summarizeCounter returns the summary of a window's chunks, or false when
// the window has a sample that is not a plain float (a histogram, a NaN
// such as a stale marker, a start timestamp).
func summarizeCounter(chunks []timedChunk) (counterSummary, bool) {
	var cs counterSummary
	var it chunkenc.Iterator
	for _, tc := range chunks {
		it = tc.c.Iterator(it)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			if vt != chunkenc.ValFloat || it.AtST() != 0 {
				return counterSummary{}, false
			}
			t, f := it.At()
			if math.IsNaN(f) {
				return counterSummary{}, false
			}
			if cs.n == 1 {
				cs.hasSecond, cs.secondT, cs.secondF = true, t, f
			}
			if cs.n == 0 {
				cs.firstT, cs.firstF = t, f
			} else if f < cs.lastF {
				cs.resets = append(cs.resets, cs.lastF)
			}
			cs.lastT, cs.lastF = t, f
			cs.n++
		}
		if it.Err() != nil {
			return counterSummary{}, false
		}
	}
	return cs, cs.n > 0
}

// counterSummaryVersion is the first byte of a sample window's summary
// value; the summaries of increment windows start with their count of
// resolutions (3), so the two never read as each other. Version 0x82
// adds the second sample; 0x81 values are still read.
const (
	counterSummaryVersion       = 0x81
	counterSummaryVersionSecond = 0x82
)

// Flags of a counter summary value.
const (
	csFirstInt  = 1 << iota // the first value is an integer, stored as a zigzag varint
	csLastInt               // last − first is an integer, stored as a zigzag varint
	csSecondInt             // second − first likewise
)

// maxExactInt is the largest integer below which every float64 integer
// round-trips through int64 exactly.
const maxExactInt = 1 << 53

func isSmallInt(f float64) bool {
	return f == math.Trunc(f) && math.Abs(f) < maxExactInt && !(f == 0 && math.Signbit(f))
}

// appendCounterSummary encodes cs for the window starting at w: the
// version byte, flags, uvarint n, uvarint firstT−w and lastT−firstT, the
// first value (zigzag varint if an integer, else 8 bytes little-endian),
// last − first likewise (else the last value's 8 bytes); with the second
// sample (version 0x82), uvarint secondT−firstT and second − first as the
// last; then uvarint count of resets and each reset value's 8 bytes.
func appendCounterSummary(dst []byte, w int64, cs counterSummary) []byte {
	var flags byte
	intDelta := func(f float64) bool {
		d := f - cs.firstF
		return isSmallInt(f) && isSmallInt(d) && cs.firstF+d == f
	}
	if isSmallInt(cs.firstF) {
		flags |= csFirstInt
		if intDelta(cs.lastF) {
			flags |= csLastInt
		}
		if cs.hasSecond && intDelta(cs.secondF) {
			flags |= csSecondInt
		}
	}
	version := byte(counterSummaryVersion)
	if cs.hasSecond {
		version = counterSummaryVersionSecond
	}
	dst = append(dst, version, flags)
	dst = binary.AppendUvarint(dst, uint64(cs.n))
	dst = binary.AppendUvarint(dst, uint64(cs.firstT-w))
	dst = binary.AppendUvarint(dst, uint64(cs.lastT-cs.firstT))
	if flags&csFirstInt != 0 {
		dst = binary.AppendVarint(dst, int64(cs.firstF))
	} else {
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(cs.firstF))
	}
	if flags&csLastInt != 0 {
		dst = binary.AppendVarint(dst, int64(cs.lastF-cs.firstF))
	} else {
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(cs.lastF))
	}
	if cs.hasSecond {
		dst = binary.AppendUvarint(dst, uint64(cs.secondT-cs.firstT))
		if flags&csSecondInt != 0 {
			dst = binary.AppendVarint(dst, int64(cs.secondF-cs.firstF))
		} else {
			dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(cs.secondF))
		}
	}
	dst = binary.AppendUvarint(dst, uint64(len(cs.resets)))
	for _, r := range cs.resets {
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(r))
	}
	return dst
}

// decodeCounterSummary decodes a summary of the window starting at w;
// resets reuse dst's array.
func decodeCounterSummary(val []byte, w int64, dst []float64) (counterSummary, error) {
	rd := varint.Reader{B: val}
	version := rd.Byte()
	if version != counterSummaryVersion && version != counterSummaryVersionSecond {
		return counterSummary{}, fmt.Errorf("counter summary version: %w", errCorrupt)
	}
	flags := rd.Byte()
	cs := counterSummary{n: int(rd.Uvarint())}
	cs.firstT = w + int64(rd.Uvarint())
	cs.lastT = cs.firstT + int64(rd.Uvarint())
	if flags&csFirstInt != 0 {
		cs.firstF = float64(rd.Varint())
	} else {
		cs.firstF = rd.Float()
	}
	if flags&csLastInt != 0 {
		cs.lastF = cs.firstF + float64(rd.Varint())
	} else {
		cs.lastF = rd.Float()
	}
	if version == counterSummaryVersionSecond {
		cs.hasSecond = true
		cs.secondT = cs.firstT + int64(rd.Uvarint())
		if flags&csSecondInt != 0 {
			cs.secondF = cs.firstF + float64(rd.Varint())
		} else {
			cs.secondF = rd.Float()
		}
	}
	k := rd.Uvarint()
	if k > uint64(len(rd.B))/8+1 {
		return counterSummary{}, fmt.Errorf("counter summary of %d resets: %w", k, errCorrupt)
	}
	cs.resets = dst[:0]
	for range k {
		cs.resets = append(cs.resets, rd.Float())
	}
	if rd.Err != nil || len(rd.B) != 0 || cs.n <= 0 || cs.lastT < cs.firstT ||
		cs.hasSecond && (cs.n < 2 || cs.secondT <= cs.firstT || cs.secondT > cs.lastT) {
		return counterSummary{}, fmt.Errorf("counter summary: %w", errCorrupt)
	}
	return cs, nil
}

// setCounterSummary adds to b the summary of a closed window of sample
// series id, or deletes a summary the window had when it has none now (a
// rewrite added a NaN or a histogram).
func setCounterSummary(b *pebble.Batch, buf *[]byte, id uint64, w int64, chunks []timedChunk) error {
	cs, ok := summarizeCounter(chunks)
	if !ok {
		return b.Delete(summaryKey(id, w), nil)
	}
	*buf = appendCounterSummary((*buf)[:0], w, cs)
	return b.Set(summaryKey(id, w), *buf, nil)
}
