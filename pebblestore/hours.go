package pebblestore

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// The hourly summaries of an increment series' closed windows have a key
// space of their own (h), apart from the finer ones (u), with one key per
// series and UTC day [d, d+24h) holding the summaries of the day's twelve
// windows: an hourly read over thirty days reads thirty small values a
// series instead of 360 windows' chunks at every level.
//
// A day's value is its windows' records in window order, each a byte
// holding the window's number in the day (0 to 11), a byte holding its
// count of points (1 to 3) and per point a byte holding the number of
// hours after the window's start (0 to 2) and the sum as float64 LE: the
// window's increments in (m − 1h, m] at each hour m. Every write of a
// day's records reads the day's value and writes it whole (see hourDays).

// hourRes is the coarsest summary level, the one under h.
const hourRes = 3_600_000

// hourDay returns the start of the UTC day [d, d+24h) holding window w.
func hourDay(w int64) int64 { return floorTo(w, dayMs) }

// hourPoint is a point of an hourly summary.
type hourPoint struct {
	t int64
	f float64
}

// hourRec is the hourly summary of window w.
type hourRec struct {
	w   int64
	pts []hourPoint
}

// hourlyPoints returns the points of an hourly summary chunk of window w.
func hourlyPoints(w int64, c chunkenc.Chunk, dst []hourPoint) ([]hourPoint, error) {
	it := c.Iterator(nil)
	for it.Next() == chunkenc.ValFloat {
		t, f := it.At()
		if t < w || t > w+windowMs || (t-w)%hourRes != 0 {
			return nil, fmt.Errorf("hourly summary point at %d in window %d: %w", t, w, errCorrupt)
		}
		dst = append(dst, hourPoint{t, f})
	}
	return dst, it.Err()
}

// hourPointBytes is the size of an encoded hourly point.
const hourPointBytes = 9

// appendHourDay encodes the records of day d, in window order.
func appendHourDay(dst []byte, d int64, recs []hourRec) []byte {
	for _, rec := range recs {
		dst = append(dst, byte((rec.w-d)/windowMs), byte(len(rec.pts)))
		for _, p := range rec.pts {
			dst = append(dst, byte((p.t-rec.w)/hourRes))
			dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(p.f))
		}
	}
	return dst
}

// hourDayReader reads the records of a day's value in order.
type hourDayReader struct {
	b    []byte
	d    int64
	prev int
}

func newHourDayReader(val []byte, d int64) hourDayReader {
	return hourDayReader{b: val, d: d, prev: -1}
}

// next returns the next record's window and its encoded points (see
// hourPoint); ok is false at the end.
func (r *hourDayReader) next() (w int64, pts []byte, ok bool, err error) {
	if len(r.b) == 0 {
		return 0, nil, false, nil
	}
	if len(r.b) < 2 {
		return 0, nil, false, fmt.Errorf("hourly summaries of day %d: %w", r.d, errCorrupt)
	}
	i, n := int(r.b[0]), int(r.b[1])
	size := 2 + n*hourPointBytes
	if i <= r.prev || i >= dayMs/windowMs || n == 0 || n > windowMs/hourRes+1 || len(r.b) < size {
		return 0, nil, false, fmt.Errorf("hourly summaries of day %d: %w", r.d, errCorrupt)
	}
	w, pts = r.d+int64(i)*windowMs, r.b[2:size]
	for j := 0; j < len(pts); j += hourPointBytes {
		if pts[j] > windowMs/hourRes {
			return 0, nil, false, fmt.Errorf("hourly summaries of day %d: %w", r.d, errCorrupt)
		}
	}
	r.b, r.prev = r.b[size:], i
	return w, pts, true, nil
}

// hourPointOf decodes point j of a record of window w.
func hourPointOf(pts []byte, w int64, j int) (int64, float64) {
	p := pts[j*hourPointBytes:]
	return w + int64(p[0])*hourRes, math.Float64frombits(binary.LittleEndian.Uint64(p[1:hourPointBytes]))
}

// decodeHourDay decodes the records of day d.
func decodeHourDay(val []byte, d int64) ([]hourRec, error) {
	var recs []hourRec
	rd := newHourDayReader(val, d)
	for {
		w, enc, ok, err := rd.next()
		if err != nil || !ok {
			return recs, err
		}
		rec := hourRec{w: w}
		for j := range len(enc) / hourPointBytes {
			t, f := hourPointOf(enc, w, j)
			rec.pts = append(rec.pts, hourPoint{t, f})
		}
		recs = append(recs, rec)
	}
}

// hourDays collects the hourly summaries a write puts, per series and
// day, so that each day's value is read and written once a batch.
type hourDays struct {
	days map[hourDayKey][]hourRec
	// from drops, per series, the records of windows before it (retention).
	from map[uint64]int64
}

type hourDayKey struct {
	id  uint64
	day int64
}

// put records the hourly summary chunk of closed window w of series id,
// replacing one put before.
func (h *hourDays) put(id uint64, w int64, c chunkenc.Chunk) error {
	pts, err := hourlyPoints(w, c, nil)
	if err != nil {
		return err
	}
	if h.days == nil {
		h.days = map[hourDayKey][]hourRec{}
	}
	k := hourDayKey{id, hourDay(w)}
	h.days[k] = mergeHourRecs(h.days[k], []hourRec{{w, pts}})
	return nil
}

// trim drops the records of series id's windows before from, in the day
// holding from (the days before are the caller's to delete).
func (h *hourDays) trim(id uint64, from int64) {
	if h.from == nil {
		h.from = map[uint64]int64{}
	}
	h.from[id] = from
	if h.days == nil {
		h.days = map[hourDayKey][]hourRec{}
	}
	if k := (hourDayKey{id, hourDay(from)}); h.days[k] == nil {
		h.days[k] = []hourRec{} // written, trimmed, even without new records
	}
}

// write writes every day put or trimmed to b, merged with its value in r
// (the committed one: the caller holds commitMu).
func (h *hourDays) write(b *pebble.Batch, r pebble.Reader) (err error) {
	if len(h.days) == 0 {
		h.days, h.from = nil, nil
		return nil
	}
	keys := make([]hourDayKey, 0, len(h.days))
	for k := range h.days {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b hourDayKey) int { return cmp.Or(cmp.Compare(a.id, b.id), cmp.Compare(a.day, b.day)) })
	// The days are read in key order with one iterator, not a Get each:
	// a cut of history reads tens of thousands, and a Get builds an
	// iterator over every level and reloads its blocks, which was 60% of
	// a history cut's series commit.
	last := keys[len(keys)-1]
	it, err := r.NewIter(&pebble.IterOptions{
		LowerBound: hourKey(keys[0].id, keys[0].day),
		UpperBound: append(hourKey(last.id, last.day), 0),
	})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	var buf, key []byte
	for _, k := range keys {
		key = periodKeyTo(key[:0], prefixHours, k.id, k.day)
		var old []hourRec
		if it.SeekGE(key) && bytes.Equal(it.Key(), key) {
			v, err := it.ValueAndErr()
			if err == nil {
				old, err = decodeHourDay(v, k.day) // copies the points out
			}
			if err != nil {
				return fmt.Errorf("series %d: %w", k.id, err)
			}
		} else if err := it.Error(); err != nil {
			return err
		}
		recs := mergeHourRecs(old, h.days[k])
		if from, ok := h.from[k.id]; ok {
			recs = slices.DeleteFunc(recs, func(rec hourRec) bool { return rec.w < from })
		}
		if len(recs) == 0 {
			if err := b.Delete(key, nil); err != nil {
				return err
			}
			continue
		}
		buf = appendHourDay(buf[:0], k.day, recs)
		if err := b.Set(key, buf, nil); err != nil {
			return err
		}
	}
	h.days, h.from = nil, nil
	return nil
}

// mergeHourRecs merges newer records into old (both in window order): a
// newer record replaces an old one of the same window.
func mergeHourRecs(old, newer []hourRec) []hourRec {
	out := make([]hourRec, 0, len(old)+len(newer))
	i, j := 0, 0
	for i < len(old) || j < len(newer) {
		switch {
		case j == len(newer) || (i < len(old) && old[i].w < newer[j].w):
			out = append(out, old[i])
			i++
		case i == len(old) || newer[j].w < old[i].w:
			out = append(out, newer[j])
			j++
		default:
			out = append(out, newer[j])
			i, j = i+1, j+1
		}
	}
	return out
}

// putSummaries writes the summaries of closed window w of increment
// series id: the minute and five-minute ones to b under u, the hourly one
// to h (written with h.write). It returns buf, grown, for reuse.
func putSummaries(b *pebble.Batch, h *hourDays, id uint64, w int64, chunks []timedChunk, buf []byte) ([]byte, error) {
	sums, err := summarize(chunks)
	if err != nil {
		return buf, err
	}
	buf = appendSummaries(buf[:0], sums[:len(sums)-1])
	if err := b.Set(summaryKey(id, w), buf, nil); err != nil {
		return buf, err
	}
	return buf, h.put(id, w, sums[len(sums)-1].c)
}
