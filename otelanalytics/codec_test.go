package otelanalytics

import (
	"encoding/hex"
	"testing"

	"github.com/proxylens/proxylens/internal/varint"
	"github.com/stretchr/testify/require"
)

// frozenRecord is a record whose encoding is frozen below: a change to the
// encoding must change FormatVersion and docs/format.md, not just this test.
func frozenRecord() (Record, Refs) {
	r := Record{
		EndTime: 1764331200123456789, Duration: 250_000_000,
		Source: "brightdata", Tier: "premium", Proxy: "10.1.2.3:8080", Application: "crawler",
		Domain: "inline.example", ErrorType: "",
		Method: MethodGet, StatusCode: 200, Success: true,
		BytesSent: 120, BytesReceived: 53211,
		TraceID: [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:  [8]byte{0xa, 0xb, 0xc, 0xd, 0xe, 0xf, 0x10, 0x11},
		Weight:  1,
	}
	return r, Refs{1, 2, 3, 4, NoID, 0}
}

func TestEncodingFrozen(t *testing.T) {
	r, refs := frozenRecord()
	val := appendRecord(nil, &r, &refs, 2.5, 0, true)
	require.Equal(t,
		"07"+"80e59a77"+ // flags (success, weight, ids), duration 250 ms
			"02"+"04"+"06"+"08"+"1d696e6c696e652e6578616d706c65"+"00"+ // refs, the domain inline
			"04"+"c801"+"78"+"db9f03"+ // GET, 200, 120 B sent, 53211 B received
			"0000000000000440"+ // weight 2.5
			"0102030405060708090a0b0c0d0e0f10"+"0a0b0c0d0e0f1011",
		hex.EncodeToString(val))

	b := &Batch{
		Seq: 9, Probability: 0.5, Dict: []DictEntry{{ID: 4, Str: "crawler"}},
		Records: []Record{r, r}, Refs: []Refs{refs, refs}, Kept: []bool{false, true},
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
		hex.EncodeToString(b.AppendEntry(nil)))

	k := SeriesKey{Source: 1, Tier: 2, Application: 3, Domain: 4, ErrorType: 5, StatusCode: 429, Method: MethodPost, Success: false}
	require.Equal(t, "00"+"00000001"+"00000002"+"00000003"+"00000004"+"00000005"+"00000000"+"01ad"+"08"+"00"+"00", // ids, 429, POST, flags, reserved
		hex.EncodeToString(appendTotalsKey(nil, FamilyRequests, &k)))
	require.Equal(t, "000000000000f83f0000000000000040", hex.EncodeToString(appendFloats(nil, []float64{1.5, 2})))
}

func TestRecordRoundTrip(t *testing.T) {
	d := NewDict(0)
	for id, s := range []string{"brightdata", "premium", "10.1.2.3:8080", "crawler"} {
		require.NoError(t, d.Load(DictEntry{ID: uint32(id + 1), Str: s}))
	}
	r, refs := frozenRecord()
	val := appendRecord(nil, &r, &refs, 1, 0, true)
	var got Record
	require.NoError(t, decodeRecord(r.EndTime, val, d, &got))
	require.Equal(t, r, got)

	// Zero ids are omitted; a weight other than one is kept.
	r.TraceID, r.SpanID = [16]byte{}, [8]byte{}
	r.Success, r.ErrorType, r.StatusCode = false, "", 0
	refs[RefErrorType] = 0
	val = appendRecord(nil, &r, &refs, 10, 0, true)
	require.NoError(t, decodeRecord(r.EndTime, val, d, &got))
	r.Weight = 10
	require.Equal(t, r, got)

	for _, bad := range [][]byte{nil, {0x80}, val[:len(val)-1], append(append([]byte{}, val...), 0)} {
		require.Error(t, decodeRecord(r.EndTime, bad, d, &got))
	}
}

func TestJournalRoundTrip(t *testing.T) {
	r, refs := frozenRecord()
	r2 := r
	r2.EndTime -= 5e9 // earlier: a negative delta
	r2.Weight = 4
	r2.Success = false
	refs2 := refs
	refs2[RefSource] = NoID
	r2.Source = "no room in the dictionary"
	b := &Batch{Seq: 3, Probability: 0.25, Records: []Record{r, r2},
		Refs: []Refs{refs, refs2}, Kept: []bool{true, false},
		Dict: []DictEntry{{ID: 1, Str: "brightdata"}}}
	enc := b.AppendEntry(nil)
	var e journalEntry
	require.NoError(t, decodeJournalEntry(enc, &e))
	require.Equal(t, uint64(3), e.seq)
	require.Equal(t, 0.25, e.prob)
	require.Equal(t, b.Dict, e.dict)
	require.Equal(t, []bool{true, false}, e.kept)
	require.Equal(t, []Refs{refs, refs2}, e.refs)
	require.Equal(t, "inline.example", e.inline[0][RefDomain])
	require.Equal(t, "no room in the dictionary", e.inline[1][RefSource])
	for i, want := range []Record{r, r2} {
		got := e.recs[i]
		got.SetStrings(&[NumRefs]string{}) // strings come from the dictionary
		want.SetStrings(&[NumRefs]string{})
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
	for _, k := range []SeriesKey{
		{Source: 1, Tier: 2, Application: 3, Domain: 4, ErrorType: 5, StatusCode: 503, Method: MethodConnect, Success: true},
		{Source: 9, Proxy: 7},
		OverflowKey,
	} {
		for f := range NumFamilies {
			gf, gk, err := decodeTotalsKey(appendTotalsKey(nil, f, &k))
			require.NoError(t, err)
			require.Equal(t, f, gf)
			require.Equal(t, k, gk)
		}
	}
	key := appendTotalsKey(nil, FamilyRequests, &SeriesKey{})
	key[len(key)-1] = 1 // the reserved byte
	_, _, err := decodeTotalsKey(key)
	require.Error(t, err)
	_, _, err = decodeTotalsKey(key[:10])
	require.Error(t, err)
}

func FuzzDecodeRecord(f *testing.F) {
	r, refs := frozenRecord()
	f.Add(appendRecord(nil, &r, &refs, 3, 0, true))
	d := NewDict(0)
	f.Fuzz(func(t *testing.T, val []byte) {
		var rec Record
		if decodeRecord(1, val, d, &rec) != nil {
			return
		}
		require.True(t, rec.Method.Valid())
		require.GreaterOrEqual(t, rec.Duration, int64(0))
	})
}

func FuzzDecodeJournalEntry(f *testing.F) {
	r, refs := frozenRecord()
	f.Add((&Batch{Seq: 1, Probability: 1, Records: []Record{r},
		Refs: []Refs{refs}, Kept: []bool{true}, Dict: []DictEntry{{ID: 2, Str: "x"}}}).AppendEntry(nil))
	f.Fuzz(func(t *testing.T, val []byte) {
		var e journalEntry
		if decodeJournalEntry(val, &e) != nil {
			return
		}
		// Re-encoding what decoded decodes to the same entry.
		b := &Batch{Seq: e.seq, Probability: e.prob, Dict: e.dict, Refs: e.refs, Kept: e.kept}
		for i := range e.recs {
			rec := e.recs[i]
			rec.SetStrings(&e.inline[i])
			b.Records = append(b.Records, rec)
		}
		var e2 journalEntry
		require.NoError(t, decodeJournalEntry(b.AppendEntry(nil), &e2))
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

func TestDecodeFloatsAndTotalsErrors(t *testing.T) {
	_, err := decodeFloats([]byte{1, 2, 3}, nil)
	require.Error(t, err)
	got, err := decodeFloats(appendFloats(nil, []float64{1, 2.5}), nil)
	require.NoError(t, err)
	require.Equal(t, []float64{1, 2.5}, got)
	rd := varint.Reader{B: []byte{0x80}}
	rd.Varint()
	require.Error(t, rd.Err)
	rd = varint.Reader{B: []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}}
	readRef(&rd)
	require.Error(t, rd.Err, "an id past the largest dictionary id")
}
