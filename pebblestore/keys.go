package pebblestore

import (
	"encoding/binary"
	"time"
)

// This file is the key space of the Pebble database, every prefix in one
// place, as docs/format.md documents it; encoding_test.go freezes the
// bytes. The values of the d, r and a spaces are the ingest pipeline's
// encodings (otelanalytics/codec.go), which this package stores without
// reading them.

// FormatVersion is the on-disk format this package writes and reads.
const FormatVersion = 10

// Key spaces: the first byte of every key.
const (
	prefixMeta      = 'm' // m<name>                                → see the meta keys below
	prefixDict      = 'd' // d<id:4 BE>                             → string bytes
	prefixRecord    = 'r' // r<end:8 BE><seq:8 BE><idx:4 BE>        → record (the pipeline's encoding)
	prefixTotals    = 'a' // a<family:1><series key:29>             → cumulative values (the pipeline's encoding)
	prefixSeries    = 's' // s<id:8 BE>                             → kind, labels
	prefixChunks    = 'c' // c<id:8 BE><window:8>                   → the window's samples
	prefixBases     = 'b' // b<id:8 BE><window:8>                   → base, total (increment series)
	prefixSummaries = 'u' // u<id:8 BE><window:8>                   → minute and five-minute summaries (closed increment windows), counter summary (closed sample windows)
	prefixHours     = 'h' // h<id:8 BE><day:8>                      → hourly summaries of the day's closed increment windows
	prefixDays      = 'y' // y<id:8 BE><day:8>                      → base, total of the day (increment series)
	prefixMetadata  = 'n' // n<family name>                         → type, help, unit
	prefixAudit     = 'l' // l<time:8 BE ns><seq:8 BE>              → audit entry, JSON
	// The series feed (feed.go), written only with SeriesOptions.Feed.
	prefixFeed         = 'f' // f<seq:8 BE>                         → the samples of one series commit
	prefixFeedConsumer = 'o' // o<len(name)><name>[<id:8 BE>]       → a consumer's position [its state of series id]
	// A cut's samples staged before they are applied in pieces
	// (cut_pieces.go): chunk 0 of a series holds its kind and labels.
	prefixCutStage = 'z' // z<sid:4 BE><chunk:4 BE>                → kind, labels | samples (varint t, 8-byte LE float)

	// Versions before 2026-11-29 also wrote postings, p<name><value><id>,
	// which nothing reads; they stay until their series do.
)

// Meta keys (m<name>).
var (
	keyFormat     = []byte("mformat")     // uvarint FormatVersion
	keyCreated    = []byte("mcreated")    // 8-byte BE Unix ns of the store's creation
	keyCheckpoint = []byte("mcheckpoint") // uvarint last journal segment in Pebble, uvarint the pipeline's sequence number (Cut.Seq)
	keyCutApply   = []byte("mcutapply")   // uvarint the journal segment of the cut whose staged samples (z) are not all applied
	keyRetention  = []byte("mretention")  // the retention policy, JSON
	keyCosts      = []byte("mcosts")      // the cost models, JSON (the admin API's shape)
	keySampling   = []byte("msampling")   // the sampling settings the admin API set, JSON (the server's shape)
	keyRetired    = []byte("mretired")    // the retired sources, JSON (the admin API's shape)
	// keyAuditHead holds the hash of the newest audit entry: removing the
	// newest entries breaks the chain too.
	keyAuditHead = []byte("maudithead")
	// keyAuditAnchor holds the hash of the newest entry retention deleted:
	// the first entry left links to it.
	keyAuditAnchor = []byte("mauditanchor")
)

func dictKey(id uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{prefixDict}, id)
}

// recordKeyLen is the length of a record key.
const recordKeyLen = 21

// appendRecordKey encodes a record's key: its end time (Unix ns) first, so
// that a time range is one contiguous scan, then its batch and index in
// the batch, which make it unique and let a replayed cut write the very
// same key again.
func appendRecordKey(dst []byte, end int64, seq uint64, idx uint32) []byte {
	dst = append(dst, prefixRecord)
	dst = binary.BigEndian.AppendUint64(dst, uint64(end))
	dst = binary.BigEndian.AppendUint64(dst, seq)
	return binary.BigEndian.AppendUint32(dst, idx)
}

// seriesKey is the key of series id's labels.
func seriesKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixSeries}, id)
}

// seriesPrefix is the prefix of series id's keys in a per-period key space
// (c, b, u, y).
func seriesPrefix(prefix byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefix}, id)
}

// periodKey is the key of series id's value for the period (a two-hour
// window or a day) starting at start (Unix ms) in a per-period key space.
// The start is big-endian with its sign bit flipped, so that periods sort
// in time order, negative times included.
func periodKey(prefix byte, id uint64, start int64) []byte {
	return periodKeyTo(make([]byte, 0, 17), prefix, id, start)
}

// periodKeyTo appends periodKey(prefix, id, start) to dst.
func periodKeyTo(dst []byte, prefix byte, id uint64, start int64) []byte {
	dst = binary.BigEndian.AppendUint64(append(dst, prefix), id)
	return binary.BigEndian.AppendUint64(dst, uint64(start)^(1<<63))
}

// periodFromKey returns the period start of a periodKey.
func periodFromKey(k []byte) int64 {
	return int64(binary.BigEndian.Uint64(k[9:]) ^ (1 << 63))
}

func chunkKey(id uint64, window int64) []byte   { return periodKey(prefixChunks, id, window) }
func baseKey(id uint64, window int64) []byte    { return periodKey(prefixBases, id, window) }
func summaryKey(id uint64, window int64) []byte { return periodKey(prefixSummaries, id, window) }
func hourKey(id uint64, day int64) []byte       { return periodKey(prefixHours, id, day) }

func metadataKey(family string) []byte { return append([]byte{prefixMetadata}, family...) }

// auditKey is the key of an audit entry: its append time, never before the
// previous entry's, so that key order is append order, then its sequence
// number.
func auditKey(t time.Time, seq uint64) []byte {
	k := binary.BigEndian.AppendUint64([]byte{prefixAudit}, uint64(t.UnixNano()))
	return binary.BigEndian.AppendUint64(k, seq)
}

// prefixEnd returns the smallest key after every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
