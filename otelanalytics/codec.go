package otelanalytics

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/proxylens/proxylens/internal/varint"
)

// The encodings of what the store keeps for this package, as bytes it does
// not read: the journal entry of an ingest batch, the value of a stored
// record, the key and values of a series' cumulative totals. The store
// gives each its place in its key space (pebblestore's keys.go);
// docs/format.md documents both, and codec_test.go freezes these bytes: a
// change that breaks it must change the store's FormatVersion and that page.

// seriesKeyLen is the encoded length of a SeriesKey.
const seriesKeyLen = 6*4 + 2 + 1 + 1 + 1 // ids, status, method, flags, reserved

// Series key flags.
const (
	seriesSuccess  = 1 << 0
	seriesOverflow = 1 << 1
)

// appendTotalsKey encodes the store's key of a series' cumulative totals:
// the family byte, then the series key (seriesKeyLen bytes).
func appendTotalsKey(dst []byte, f Family, k *SeriesKey) []byte {
	dst = append(dst, byte(f))
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

func decodeTotalsKey(key []byte) (Family, SeriesKey, error) {
	var k SeriesKey
	if len(key) != 1+seriesKeyLen {
		return 0, k, fmt.Errorf("totals key of %d bytes: %w", len(key), errCorrupt)
	}
	f := Family(key[0])
	b := key[1:]
	ids := [6]*uint32{&k.Source, &k.Tier, &k.Application, &k.Domain, &k.ErrorType, &k.Proxy}
	for i, p := range ids {
		*p = binary.BigEndian.Uint32(b[i*4:])
	}
	b = b[24:]
	k.StatusCode = binary.BigEndian.Uint16(b)
	k.Method = Method(b[2])
	k.Success = b[3]&seriesSuccess != 0
	k.Overflow = b[3]&seriesOverflow != 0
	if f >= NumFamilies || !k.Method.Valid() || b[3]&^(seriesSuccess|seriesOverflow) != 0 || b[4] != 0 {
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
	if id != NoID {
		return binary.AppendUvarint(dst, uint64(id)<<1)
	}
	dst = binary.AppendUvarint(dst, uint64(len(s))<<1|1)
	return append(dst, s...)
}

// appendRecord encodes a record's value (everything but its end time, which
// the key or the journal entry holds): see docs/format.md. extra adds flags
// (flagKept in the journal); ids false leaves the trace and span ids out.
func appendRecord(dst []byte, r *Record, refs *Refs, weight float64, extra byte, ids bool) []byte {
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

// readRef decodes one string reference (see appendRef): it returns the
// id, or NoID and the inline string.
func readRef(r *varint.Reader) (uint32, string) {
	v := r.Uvarint()
	if v&1 == 0 {
		if v>>1 >= uint64(NoID) {
			r.Err = errCorrupt
		}
		return uint32(v >> 1), ""
	}
	return NoID, string(r.Bytes(v >> 1))
}

// decodeRecordValue decodes a record value from rd into rec (its strings
// left empty), the ids of its strings into refs and the strings the
// dictionary had no room for into inline. It returns the flags.
func decodeRecordValue(rd *varint.Reader, known byte, rec *Record, refs *Refs, inline *[NumRefs]string) byte {
	flags := rd.Byte()
	if flags&^known != 0 {
		rd.Err = errCorrupt
		return 0
	}
	rec.Success = flags&flagSuccess != 0
	rec.Duration = int64(rd.Uvarint())
	for i := range refs {
		refs[i], inline[i] = readRef(rd)
	}
	rec.Method = Method(rd.Byte())
	status := rd.Uvarint()
	rec.StatusCode = uint16(status)
	rec.BytesSent = rd.Uvarint()
	rec.BytesReceived = rd.Uvarint()
	rec.Weight = 1
	if flags&flagWeight != 0 {
		rec.Weight = rd.Float()
	}
	rec.TraceID, rec.SpanID = [16]byte{}, [8]byte{}
	if flags&flagIDs != 0 {
		copy(rec.TraceID[:], rd.Bytes(16))
		copy(rec.SpanID[:], rd.Bytes(8))
	}
	if status > 999 || !rec.Method.Valid() || rec.Duration < 0 || !(rec.Weight >= 0) {
		rd.Err = errCorrupt
	}
	return flags
}

// decodeRecord decodes a stored record's value into rec, with its end
// time from the store's key, resolving dictionary ids with dict.
func decodeRecord(end int64, val []byte, dict *Dict, rec *Record) error {
	*rec = Record{EndTime: end}
	rd := varint.Reader{B: val}
	var refs Refs
	var strs [NumRefs]string
	decodeRecordValue(&rd, knownFlags, rec, &refs, &strs)
	if rd.Err != nil || len(rd.B) != 0 {
		return fmt.Errorf("record: %w", errCorrupt)
	}
	resolve(dict, &refs, &strs)
	rec.SetStrings(&strs)
	return nil
}

// resolve fills strs with the strings of refs, but for those the dictionary
// had no room for, which are already inline.
func resolve(dict *Dict, refs *Refs, strs *[NumRefs]string) {
	inline := false
	for _, id := range refs {
		inline = inline || id == NoID
	}
	if !inline {
		dict.Strings(refs, strs)
		return
	}
	for i, id := range refs {
		if id != NoID {
			strs[i] = dict.String(id)
		}
	}
}

const journalVersion = 1

// AppendEntry appends the batch's journal entry to dst: its sequence
// number and keep probability, the dictionary entries it brings, and every
// record (kept ones flagged, with their ids), end times delta-encoded.
// Weights are the upstream adjusted counts. Store.CommitBatch takes it.
func (b *Batch) AppendEntry(dst []byte) []byte {
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
	dict   []DictEntry
	recs   []Record
	refs   []Refs
	inline [][NumRefs]string
	kept   []bool
}

// decodeJournalEntry decodes val into e.
func decodeJournalEntry(val []byte, e *journalEntry) error {
	rd := varint.Reader{B: val}
	if v := rd.Byte(); v != journalVersion {
		return fmt.Errorf("journal entry version %d: %w", v, errCorrupt)
	}
	e.seq = rd.Uvarint()
	e.prob = rd.Float()
	if rd.Err != nil || !(e.prob > 0 && e.prob <= 1) {
		return fmt.Errorf("journal entry header: %w", errCorrupt)
	}
	nd := rd.Uvarint()
	if nd > uint64(len(val)) {
		return fmt.Errorf("journal entry of %d dictionary entries: %w", nd, errCorrupt)
	}
	e.dict = e.dict[:0]
	for range nd {
		id := rd.Uvarint()
		s := rd.LenBytes()
		if id == 0 || id >= uint64(NoID) {
			rd.Err = errCorrupt
		}
		e.dict = append(e.dict, DictEntry{ID: uint32(id), Str: string(s)})
	}
	n := rd.Uvarint()
	if rd.Err != nil || n > uint64(len(val)) { // every record takes more than a byte
		return fmt.Errorf("journal entry of %d records in %d bytes: %w", n, len(val), errCorrupt)
	}
	e.recs, e.refs, e.inline, e.kept = e.recs[:0], e.refs[:0], e.inline[:0], e.kept[:0]
	var prev int64
	for range n {
		var r Record
		var refs Refs
		var inline [NumRefs]string
		r.EndTime = prev + rd.Varint()
		prev = r.EndTime
		flags := decodeRecordValue(&rd, knownFlags|flagKept, &r, &refs, &inline)
		if rd.Err != nil {
			return fmt.Errorf("journal record: %w", rd.Err)
		}
		e.recs = append(e.recs, r)
		e.refs = append(e.refs, refs)
		e.inline = append(e.inline, inline)
		e.kept = append(e.kept, flags&flagKept != 0)
	}
	if len(rd.B) != 0 {
		return fmt.Errorf("journal entry: %d trailing bytes: %w", len(rd.B), errCorrupt)
	}
	return nil
}
