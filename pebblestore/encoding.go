package pebblestore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/proxylens/proxylens/otelanalytics"
)

// FormatVersion is the on-disk format this package writes and reads.
const FormatVersion = 5

// Key spaces of the Pebble database: the first byte of every key.
const (
	prefixMeta   = 'm' // m<name>                       → meta value
	prefixDict   = 'd' // d<id:4>                       → string bytes
	prefixRecord = 'r' // r<end:8><seq:8><idx:4>        → record
	prefixTotals = 'a' // a<family:1><series key:29>    → cumulative values
)

var (
	keyFormat     = []byte("mformat")     // uvarint FormatVersion
	keyCreated    = []byte("mcreated")    // 8-byte big-endian Unix ns of the store's creation
	keyCheckpoint = []byte("mcheckpoint") // uvarint last journal segment in Pebble, uvarint highest batch seq in it
)

// errCorrupt marks a value that does not decode.
var errCorrupt = errors.New("corrupt value")

func dictKey(id uint32) []byte {
	k := make([]byte, 5)
	k[0] = prefixDict
	binary.BigEndian.PutUint32(k[1:], id)
	return k
}

const recordKeyLen = 21

func appendRecordKey(dst []byte, end int64, seq uint64, idx uint32) []byte {
	dst = append(dst, prefixRecord)
	dst = binary.BigEndian.AppendUint64(dst, uint64(end))
	dst = binary.BigEndian.AppendUint64(dst, seq)
	return binary.BigEndian.AppendUint32(dst, idx)
}

// seriesKeyLen is the encoded length of an otelanalytics.SeriesKey.
const seriesKeyLen = 6*4 + 2 + 1 + 1 + 1 // ids, status, method, flags, reserved

// Series key flags.
const (
	seriesSuccess  = 1 << 0
	seriesOverflow = 1 << 1
)

func appendTotalsKey(dst []byte, f otelanalytics.Family, k *otelanalytics.SeriesKey) []byte {
	dst = append(dst, prefixTotals, byte(f))
	for _, id := range [...]uint32{k.Source, k.Tier, k.Application, k.Domain, k.ErrorType, k.Proxy} {
		dst = binary.BigEndian.AppendUint32(dst, id)
	}
	dst = binary.BigEndian.AppendUint16(dst, k.StatusCode)
	dst = append(dst, byte(k.Method))
	var flags byte
	if k.Success {
		flags |= seriesSuccess
	}
	if k.Overflow {
		flags |= seriesOverflow
	}
	return append(dst, flags, 0) // last byte reserved, zero
}

func decodeTotalsKey(key []byte) (otelanalytics.Family, otelanalytics.SeriesKey, error) {
	var k otelanalytics.SeriesKey
	if len(key) != 2+seriesKeyLen || key[0] != prefixTotals {
		return 0, k, fmt.Errorf("totals key of %d bytes: %w", len(key), errCorrupt)
	}
	f := otelanalytics.Family(key[1])
	b := key[2:]
	ids := [6]*uint32{&k.Source, &k.Tier, &k.Application, &k.Domain, &k.ErrorType, &k.Proxy}
	for i, p := range ids {
		*p = binary.BigEndian.Uint32(b[i*4:])
	}
	b = b[24:]
	k.StatusCode = binary.BigEndian.Uint16(b)
	k.Method = otelanalytics.Method(b[2])
	k.Success = b[3]&seriesSuccess != 0
	k.Overflow = b[3]&seriesOverflow != 0
	if f >= otelanalytics.NumFamilies || !k.Method.Valid() || b[3]&^(seriesSuccess|seriesOverflow) != 0 || b[4] != 0 {
		return 0, k, fmt.Errorf("totals key: %w", errCorrupt)
	}
	return f, k, nil
}

func appendFloats(dst []byte, vs []float64) []byte {
	for _, v := range vs {
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(v))
	}
	return dst
}

func decodeFloats(b []byte, dst []float64) ([]float64, error) {
	if len(b)%8 != 0 {
		return nil, fmt.Errorf("float vector of %d bytes: %w", len(b), errCorrupt)
	}
	for i := 0; i < len(b); i += 8 {
		dst = append(dst, math.Float64frombits(binary.LittleEndian.Uint64(b[i:])))
	}
	return dst, nil
}

// Record flags.
const (
	flagSuccess = 1 << 0 // the request succeeded
	flagWeight  = 1 << 1 // a float64 weight follows; absent means weight 1
	flagIDs     = 1 << 2 // trace and span ids follow; absent means all zero
	flagKept    = 1 << 3 // journal only: sampling kept the record
	knownFlags  = flagSuccess | flagWeight | flagIDs
)

// appendRef encodes one string of a record: a dictionary id as uvarint(id<<1),
// or, for a string the dictionary had no room for, uvarint(len<<1|1) and the
// bytes.
func appendRef(dst []byte, id uint32, s string) []byte {
	if id != otelanalytics.NoID {
		return binary.AppendUvarint(dst, uint64(id)<<1)
	}
	dst = binary.AppendUvarint(dst, uint64(len(s))<<1|1)
	return append(dst, s...)
}

// appendRecord encodes a record's value (everything but its end time, which
// the key or the journal entry holds): see docs/format.md. extra adds flags
// (flagKept in the journal); ids false leaves the trace and span ids out.
func appendRecord(dst []byte, r *otelanalytics.Record, refs *otelanalytics.Refs, weight float64, extra byte, ids bool) []byte {
	flags := extra
	if r.Success {
		flags |= flagSuccess
	}
	if weight != 1 {
		flags |= flagWeight
	}
	if ids && (r.TraceID != ([16]byte{}) || r.SpanID != ([8]byte{})) {
		flags |= flagIDs
	}
	dst = append(dst, flags)
	dst = binary.AppendUvarint(dst, uint64(r.Duration))
	strs := r.Strings()
	for i, id := range refs {
		dst = appendRef(dst, id, strs[i])
	}
	dst = append(dst, byte(r.Method))
	dst = binary.AppendUvarint(dst, uint64(r.StatusCode))
	dst = binary.AppendUvarint(dst, r.BytesSent)
	dst = binary.AppendUvarint(dst, r.BytesReceived)
	if flags&flagWeight != 0 {
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(weight))
	}
	if flags&flagIDs != 0 {
		dst = append(dst, r.TraceID[:]...)
		dst = append(dst, r.SpanID[:]...)
	}
	return dst
}

// reader decodes varints and bytes, remembering the first error.
type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) byte() byte {
	if r.err != nil || len(r.b) < 1 {
		r.err = errCorrupt
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) bytes(n uint64) []byte {
	if r.err != nil || uint64(len(r.b)) < n {
		r.err = errCorrupt
		return nil
	}
	b := r.b[:n]
	r.b = r.b[n:]
	return b
}

func (r *reader) float() float64 {
	b := r.bytes(8)
	if b == nil {
		return 0
	}
	return math.Float64frombits(binary.LittleEndian.Uint64(b))
}

// ref decodes one string reference: it returns the id, or NoID and the
// inline string.
func (r *reader) ref() (uint32, string) {
	v := r.uvarint()
	if v&1 == 0 {
		if v>>1 >= uint64(otelanalytics.NoID) {
			r.err = errCorrupt
		}
		return uint32(v >> 1), ""
	}
	return otelanalytics.NoID, string(r.bytes(v >> 1))
}

// decodeRecordValue decodes a record value from rd into rec (its strings
// left empty), the ids of its strings into refs and the strings the
// dictionary had no room for into inline. It returns the flags.
func decodeRecordValue(rd *reader, known byte, rec *otelanalytics.Record, refs *otelanalytics.Refs, inline *[otelanalytics.NumRefs]string) byte {
	flags := rd.byte()
	if flags&^known != 0 {
		rd.err = errCorrupt
		return 0
	}
	rec.Success = flags&flagSuccess != 0
	rec.Duration = int64(rd.uvarint())
	for i := range refs {
		refs[i], inline[i] = rd.ref()
	}
	rec.Method = otelanalytics.Method(rd.byte())
	status := rd.uvarint()
	rec.StatusCode = uint16(status)
	rec.BytesSent = rd.uvarint()
	rec.BytesReceived = rd.uvarint()
	rec.Weight = 1
	if flags&flagWeight != 0 {
		rec.Weight = rd.float()
	}
	rec.TraceID, rec.SpanID = [16]byte{}, [8]byte{}
	if flags&flagIDs != 0 {
		copy(rec.TraceID[:], rd.bytes(16))
		copy(rec.SpanID[:], rd.bytes(8))
	}
	if status > 999 || !rec.Method.Valid() || rec.Duration < 0 || !(rec.Weight >= 0) {
		rd.err = errCorrupt
	}
	return flags
}

// decodeRecord decodes a stored record's key and value into rec, resolving
// dictionary ids with dict.
func decodeRecord(key, val []byte, dict *otelanalytics.Dict, rec *otelanalytics.Record) error {
	if len(key) != recordKeyLen || key[0] != prefixRecord {
		return fmt.Errorf("record key of %d bytes: %w", len(key), errCorrupt)
	}
	*rec = otelanalytics.Record{EndTime: int64(binary.BigEndian.Uint64(key[1:]))}
	rd := reader{b: val}
	var refs otelanalytics.Refs
	var strs [otelanalytics.NumRefs]string
	decodeRecordValue(&rd, knownFlags, rec, &refs, &strs)
	if rd.err != nil || len(rd.b) != 0 {
		return fmt.Errorf("record: %w", errCorrupt)
	}
	resolve(dict, &refs, &strs)
	rec.SetStrings(&strs)
	return nil
}

// resolve fills strs with the strings of refs, but for those the dictionary
// had no room for, which are already inline.
func resolve(dict *otelanalytics.Dict, refs *otelanalytics.Refs, strs *[otelanalytics.NumRefs]string) {
	inline := false
	for _, id := range refs {
		inline = inline || id == otelanalytics.NoID
	}
	if !inline {
		dict.Strings(refs, strs)
		return
	}
	for i, id := range refs {
		if id != otelanalytics.NoID {
			strs[i] = dict.String(id)
		}
	}
}

const journalVersion = 1

// appendJournalEntry encodes the journal entry of an ingest batch: its
// sequence number and keep probability, the dictionary entries it brings,
// and every record (kept ones flagged, with their ids), end times
// delta-encoded. Weights are the upstream adjusted counts.
func appendJournalEntry(dst []byte, b *otelanalytics.Batch) []byte {
	dst = append(dst, journalVersion)
	dst = binary.AppendUvarint(dst, b.Seq)
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(b.Probability))
	dst = binary.AppendUvarint(dst, uint64(len(b.Dict)))
	for _, e := range b.Dict {
		dst = binary.AppendUvarint(dst, uint64(e.ID))
		dst = binary.AppendUvarint(dst, uint64(len(e.Str)))
		dst = append(dst, e.Str...)
	}
	dst = binary.AppendUvarint(dst, uint64(len(b.Records)))
	var prev int64
	for i := range b.Records {
		r := &b.Records[i]
		dst = binary.AppendVarint(dst, r.EndTime-prev)
		prev = r.EndTime
		var extra byte
		if b.Kept[i] {
			extra = flagKept
		}
		dst = appendRecord(dst, r, &b.Refs[i], r.Weight, extra, b.Kept[i])
	}
	return dst
}

// journalEntry is a decoded journal entry. Its slices are reused by the
// next decode.
type journalEntry struct {
	seq    uint64
	prob   float64
	dict   []otelanalytics.DictEntry
	recs   []otelanalytics.Record
	refs   []otelanalytics.Refs
	inline [][otelanalytics.NumRefs]string
	kept   []bool
}

// decodeJournalEntry decodes val into e.
func decodeJournalEntry(val []byte, e *journalEntry) error {
	rd := reader{b: val}
	if v := rd.byte(); v != journalVersion {
		return fmt.Errorf("journal entry version %d: %w", v, errCorrupt)
	}
	e.seq = rd.uvarint()
	e.prob = rd.float()
	if rd.err != nil || !(e.prob > 0 && e.prob <= 1) {
		return fmt.Errorf("journal entry header: %w", errCorrupt)
	}
	nd := rd.uvarint()
	if nd > uint64(len(val)) {
		return fmt.Errorf("journal entry of %d dictionary entries: %w", nd, errCorrupt)
	}
	e.dict = e.dict[:0]
	for range nd {
		id := rd.uvarint()
		s := rd.bytes(rd.uvarint())
		if id == 0 || id >= uint64(otelanalytics.NoID) {
			rd.err = errCorrupt
		}
		e.dict = append(e.dict, otelanalytics.DictEntry{ID: uint32(id), Str: string(s)})
	}
	n := rd.uvarint()
	if rd.err != nil || n > uint64(len(val)) { // every record takes more than a byte
		return fmt.Errorf("journal entry of %d records in %d bytes: %w", n, len(val), errCorrupt)
	}
	e.recs, e.refs, e.inline, e.kept = e.recs[:0], e.refs[:0], e.inline[:0], e.kept[:0]
	var prev int64
	for range n {
		var r otelanalytics.Record
		var refs otelanalytics.Refs
		var inline [otelanalytics.NumRefs]string
		r.EndTime = prev + rd.varint()
		prev = r.EndTime
		flags := decodeRecordValue(&rd, knownFlags|flagKept, &r, &refs, &inline)
		if rd.err != nil {
			return fmt.Errorf("journal record: %w", rd.err)
		}
		e.recs = append(e.recs, r)
		e.refs = append(e.refs, refs)
		e.inline = append(e.inline, inline)
		e.kept = append(e.kept, flags&flagKept != 0)
	}
	if len(rd.b) != 0 {
		return fmt.Errorf("journal entry: %d trailing bytes: %w", len(rd.b), errCorrupt)
	}
	return nil
}
