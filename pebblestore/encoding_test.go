package pebblestore

import (
	"encoding/binary"
	"encoding/hex"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/otelanalytics"
)

// frozenRecord is a record whose encoding is frozen below: a change to the
// encoding must change FormatVersion and docs/format.md, not just this test.
func frozenRecord() (otelanalytics.Record, otelanalytics.Refs) {
	r := otelanalytics.Record{
		EndTime: 1764331200123456789, Duration: 250_000_000,
		Source: "brightdata", Tier: "premium", Proxy: "10.1.2.3:8080", Application: "crawler",
		Domain: "inline.example", ErrorType: "",
		Method: otelanalytics.MethodGet, StatusCode: 200, Success: true,
		BytesSent: 120, BytesReceived: 53211,
		TraceID: [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:  [8]byte{0xa, 0xb, 0xc, 0xd, 0xe, 0xf, 0x10, 0x11},
		Weight:  1,
	}
	return r, otelanalytics.Refs{1, 2, 3, 4, otelanalytics.NoID, 0}
}

func TestEncodingFrozen(t *testing.T) {
	r, refs := frozenRecord()
	key := appendRecordKey(nil, r.EndTime, 7, 3)
	require.Equal(t, "72"+"187c29e0f17f4d15"+"0000000000000007"+"00000003", hex.EncodeToString(key))
	val := appendRecord(nil, &r, &refs, 2.5, 0, true)
	require.Equal(t,
		"07"+"80e59a77"+ // flags (success, weight, ids), duration 250 ms
			"02"+"04"+"06"+"08"+"1d696e6c696e652e6578616d706c65"+"00"+ // refs, the domain inline
			"04"+"c801"+"78"+"db9f03"+ // GET, 200, 120 B sent, 53211 B received
			"0000000000000440"+ // weight 2.5
			"0102030405060708090a0b0c0d0e0f10"+"0a0b0c0d0e0f1011",
		hex.EncodeToString(val))

	b := &otelanalytics.Batch{
		Seq: 9, Probability: 0.5, Dict: []otelanalytics.DictEntry{{ID: 4, Str: "crawler"}},
		Records: []otelanalytics.Record{r, r}, Refs: []otelanalytics.Refs{refs, refs}, Kept: []bool{false, true},
	}
	require.Equal(t,
		"01"+"09"+"000000000000e03f"+ // version, seq, probability 0.5
			"01"+"04"+"07"+"637261776c6572"+ // one dictionary entry: id 4, "crawler"
			"02"+ // two records
			"aab4fa979ef894fc30"+ // end time (zigzag delta from 0)
			"01"+"80e59a77"+"02040608"+"1d696e6c696e652e6578616d706c65"+"00"+"04"+"c801"+"78"+"db9f03"+ // not kept: no ids
			"00"+ // end time delta 0
			"0d"+"80e59a77"+"02040608"+"1d696e6c696e652e6578616d706c65"+"00"+"04"+"c801"+"78"+"db9f03"+ // kept (0x08), ids (0x04)
			"0102030405060708090a0b0c0d0e0f10"+"0a0b0c0d0e0f1011",
		hex.EncodeToString(appendJournalEntry(nil, b)))

	k := otelanalytics.SeriesKey{Source: 1, Tier: 2, Application: 3, Domain: 4, ErrorType: 5, StatusCode: 429, Method: otelanalytics.MethodPost, Success: false}
	require.Equal(t, "6100"+"00000001"+"00000002"+"00000003"+"00000004"+"00000005"+"00000000"+"01ad"+"08"+"00"+"00", // ids, 429, POST, flags, reserved
		hex.EncodeToString(appendTotalsKey(nil, otelanalytics.FamilyRequests, &k)))
	require.Equal(t, "000000000000f83f0000000000000040", hex.EncodeToString(appendFloats(nil, []float64{1.5, 2})))
}

func TestRecordRoundTrip(t *testing.T) {
	d := otelanalytics.NewDict(0)
	for id, s := range []string{"brightdata", "premium", "10.1.2.3:8080", "crawler"} {
		require.NoError(t, d.Load(otelanalytics.DictEntry{ID: uint32(id + 1), Str: s}))
	}
	r, refs := frozenRecord()
	key := appendRecordKey(nil, r.EndTime, 7, 3)
	val := appendRecord(nil, &r, &refs, 1, 0, true)
	var got otelanalytics.Record
	require.NoError(t, decodeRecord(key, val, d, &got))
	require.Equal(t, r, got)

	// Zero ids are omitted; a weight other than one is kept.
	r.TraceID, r.SpanID = [16]byte{}, [8]byte{}
	r.Success, r.ErrorType, r.StatusCode = false, "", 0
	refs[otelanalytics.RefErrorType] = 0
	val = appendRecord(nil, &r, &refs, 10, 0, true)
	require.NoError(t, decodeRecord(key, val, d, &got))
	r.Weight = 10
	require.Equal(t, r, got)

	for _, bad := range [][]byte{nil, {0x80}, val[:len(val)-1], append(append([]byte{}, val...), 0)} {
		require.Error(t, decodeRecord(key, bad, d, &got))
	}
	require.Error(t, decodeRecord(key[:5], val, d, &got))
}

func TestJournalRoundTrip(t *testing.T) {
	r, refs := frozenRecord()
	r2 := r
	r2.EndTime -= 5e9 // earlier: a negative delta
	r2.Weight = 4
	r2.Success = false
	refs2 := refs
	refs2[otelanalytics.RefSource] = otelanalytics.NoID
	r2.Source = "no room in the dictionary"
	b := &otelanalytics.Batch{Seq: 3, Probability: 0.25, Records: []otelanalytics.Record{r, r2},
		Refs: []otelanalytics.Refs{refs, refs2}, Kept: []bool{true, false},
		Dict: []otelanalytics.DictEntry{{ID: 1, Str: "brightdata"}}}
	enc := appendJournalEntry(nil, b)
	var e journalEntry
	require.NoError(t, decodeJournalEntry(enc, &e))
	require.Equal(t, uint64(3), e.seq)
	require.Equal(t, 0.25, e.prob)
	require.Equal(t, b.Dict, e.dict)
	require.Equal(t, []bool{true, false}, e.kept)
	require.Equal(t, []otelanalytics.Refs{refs, refs2}, e.refs)
	require.Equal(t, "inline.example", e.inline[0][otelanalytics.RefDomain])
	require.Equal(t, "no room in the dictionary", e.inline[1][otelanalytics.RefSource])
	for i, want := range []otelanalytics.Record{r, r2} {
		got := e.recs[i]
		got.SetStrings(&[otelanalytics.NumRefs]string{}) // strings come from the dictionary
		want.SetStrings(&[otelanalytics.NumRefs]string{})
		if !b.Kept[i] {
			want.TraceID, want.SpanID = [16]byte{}, [8]byte{} // ids are kept for kept records only
		}
		require.Equal(t, want, got)
	}
	for _, bad := range [][]byte{nil, {2}, enc[:len(enc)-1], append(append([]byte{}, enc...), 0), enc[:10]} {
		require.Error(t, decodeJournalEntry(bad, &e))
	}
}

func TestTotalsKeyRoundTrip(t *testing.T) {
	for _, k := range []otelanalytics.SeriesKey{
		{Source: 1, Tier: 2, Application: 3, Domain: 4, ErrorType: 5, StatusCode: 503, Method: otelanalytics.MethodConnect, Success: true},
		{Source: 9, Proxy: 7},
		otelanalytics.OverflowKey,
	} {
		for f := range otelanalytics.NumFamilies {
			gf, gk, err := decodeTotalsKey(appendTotalsKey(nil, f, &k))
			require.NoError(t, err)
			require.Equal(t, f, gf)
			require.Equal(t, k, gk)
		}
	}
	key := appendTotalsKey(nil, otelanalytics.FamilyRequests, &otelanalytics.SeriesKey{})
	key[len(key)-1] = 1
	_, _, err := decodeTotalsKey(key)
	require.Error(t, err)
	_, _, err = decodeTotalsKey(key[:10])
	require.Error(t, err)
}

func FuzzDecodeRecord(f *testing.F) {
	r, refs := frozenRecord()
	f.Add(appendRecord(nil, &r, &refs, 3, 0, true))
	d := otelanalytics.NewDict(0)
	key := appendRecordKey(nil, 1, 1, 1)
	f.Fuzz(func(t *testing.T, val []byte) {
		var rec otelanalytics.Record
		if decodeRecord(key, val, d, &rec) != nil {
			return
		}
		require.True(t, rec.Method.Valid())
		require.GreaterOrEqual(t, rec.Duration, int64(0))
	})
}

func FuzzDecodeJournalEntry(f *testing.F) {
	r, refs := frozenRecord()
	f.Add(appendJournalEntry(nil, &otelanalytics.Batch{Seq: 1, Probability: 1, Records: []otelanalytics.Record{r},
		Refs: []otelanalytics.Refs{refs}, Kept: []bool{true}, Dict: []otelanalytics.DictEntry{{ID: 2, Str: "x"}}}))
	f.Fuzz(func(t *testing.T, val []byte) {
		var e journalEntry
		if decodeJournalEntry(val, &e) != nil {
			return
		}
		// Re-encoding what decoded decodes to the same entry.
		b := &otelanalytics.Batch{Seq: e.seq, Probability: e.prob, Dict: e.dict, Refs: e.refs, Kept: e.kept}
		for i := range e.recs {
			rec := e.recs[i]
			rec.SetStrings(&e.inline[i])
			b.Records = append(b.Records, rec)
		}
		var e2 journalEntry
		require.NoError(t, decodeJournalEntry(appendJournalEntry(nil, b), &e2))
		require.Equal(t, e.seq, e2.seq)
		require.Equal(t, e.refs, e2.refs)
		require.Equal(t, e.kept, e2.kept)
		require.Equal(t, len(e.recs), len(e2.recs))
		for i := range e.recs {
			require.Equal(t, e.recs[i].EndTime, e2.recs[i].EndTime)
			require.Equal(t, e.recs[i].Duration, e2.recs[i].Duration)
		}
	})
}

// TestSeriesEncodingFrozen freezes the series store's keys and values.
func TestSeriesEncodingFrozen(t *testing.T) {
	ls := labels.FromStrings("__name__", "up", "job", "a")
	require.Equal(t, "73"+"0000000000000007", hex.EncodeToString(binary.BigEndian.AppendUint64([]byte{prefixSeries}, 7)))
	require.Equal(t, "01"+"02"+"085f5f6e616d655f5f"+"027570"+"036a6f62"+"0161", // kind, two labels: __name__=up, job=a
		hex.EncodeToString(appendLabels([]byte{byte(KindIncrements)}, ls)))
	require.Equal(t, "63"+"0000000000000007"+"8000019aca559e00", hex.EncodeToString(chunkKey(7, 1_764_331_200_000-1_764_331_200_000%windowMs)))
	require.Equal(t, "63"+"0000000000000007"+"7fffffffff922300", hex.EncodeToString(chunkKey(7, -windowMs)))
	require.Equal(t, "62"+"0000000000000007"+"8000019aca559e00", hex.EncodeToString(baseKey(7, 1_764_331_200_000-1_764_331_200_000%windowMs)))
	require.Equal(t, "0000000000002440"+"000000000000f83f", hex.EncodeToString(appendBase(nil, windowBase{base: 10, total: 1.5})))
	// The daily rollup: a day (d, d+24h] keyed by d; midnight closes a day.
	require.Equal(t, "79"+"0000000000000007"+"8000019ac7c27000", hex.EncodeToString(dayLevel.key(7, dayOf(1_764_331_200_000))))
	require.Equal(t, int64(1_764_288_000_000), dayOf(1_764_288_000_000+1))
	require.Equal(t, int64(1_764_288_000_000-dayMs), dayOf(1_764_288_000_000))

	w, err := encodeSamples([]sample{{t: 1000, f: 1}, {t: 16000, f: 2}})
	require.NoError(t, err)
	chunks := w.chunks
	require.Equal(t, "01"+ // one chunk
		"01"+"d00f"+"80fa01"+ // chunkenc.EncXOR, min time 1000, max time 16000
		"11"+"0002"+"d00f3ff00000000000009875c25fff", // 17 bytes of Prometheus' XOR chunk: 2 samples, then the samples
		hex.EncodeToString(appendWindow(nil, chunks)))
	// Samples appended later are a group of their own after it, as Pebble's
	// concatenating merger joins a window and its Merge operands.
	later, err := encodeSamples([]sample{{t: 31000, f: 3}})
	require.NoError(t, err)
	merged := appendWindow(appendWindow(nil, chunks), later.chunks)
	require.Equal(t, hex.EncodeToString(appendWindow(nil, chunks))+
		"01"+"01"+"b0e403"+"b0e403"+"0d"+"0001b0e4034008000000000000", // one chunk, XOR, 31000 to 31000: 1 sample
		hex.EncodeToString(merged))
	decoded, err := decodeWindow(merged, nil)
	require.NoError(t, err)
	all, err := windowSamples(decoded, nil)
	require.NoError(t, err)
	require.Equal(t, []sample{{t: 1000, f: 1}, {t: 16000, f: 2}, {t: 31000, f: 3}}, all)
	_, err = decodeWindow(append(merged, 0x02), nil)
	require.ErrorIs(t, err, errCorrupt, "a group cut short")
	// A closed increment window's summaries: the increments per minute,
	// five minutes and hour.
	w, err = encodeSamples([]sample{{t: 15000, f: 1}, {t: 30000, f: 2}, {t: 75000, f: 4}})
	require.NoError(t, err)
	sums, err := summarize(w.chunks)
	require.NoError(t, err)
	require.Equal(t, "75"+"0000000000000007"+"8000019aca559e00", hex.EncodeToString(summaryKey(7, 1_764_331_200_000)))
	require.Equal(t, "03"+ // three summaries
		"e0d403"+"01"+"12"+"0002c0a9074008000000000000e0d403d616"+ // 1 m, XOR, 18 bytes: 3 at 60000, 4 at 120000
		"e0a712"+"01"+"0d"+"0001c0cf24401c000000000000"+ // 5 m: 7 at 300000
		"80dddb01"+"01"+"0e"+"000180bab703401c000000000000", // 1 h: 7 at 3600000
		hex.EncodeToString(appendSummaries(nil, sums)))
	got, err := decodeSummaries(appendSummaries(nil, sums), nil)
	require.NoError(t, err)
	require.Len(t, got, 3)
	// A sample with a start timestamp switches to XOR2, which stores them.
	w, err = encodeSamples([]sample{{t: 1000, f: 1}, {st: 500, t: 16000, f: 2}})
	require.NoError(t, err)
	require.Equal(t, "02"+ // two chunks
		"01"+"d00f"+"d00f"+"0c"+"0001d00f3ff0000000000000"+ // XOR, 1000 to 1000: 1 sample
		"04"+"80fa01"+"80fa01"+"11"+"00018080fa01400000000000000098f201", // XOR2, 16000 to 16000: 1 sample with its start time
		hex.EncodeToString(appendWindow(nil, w.chunks)))
}
