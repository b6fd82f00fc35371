package pebblestore

import (
	"encoding/hex"
	"math"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/stretchr/testify/require"
)

// TestKeysFrozen freezes the keys of the spaces whose values the ingest
// pipeline encodes (otelanalytics/codec_test.go freezes those values).
func TestKeysFrozen(t *testing.T) {
	require.Equal(t, "72"+"187c29e0f17f4d15"+"0000000000000007"+"00000003", hex.EncodeToString(appendRecordKey(nil, 1764331200123456789, 7, 3)))
	require.Equal(t, "64"+"0000002a", hex.EncodeToString(dictKey(42)))
	require.Equal(t, "6e"+"7570", hex.EncodeToString(metadataKey("up")))
}

// TestStagedCutFrozen freezes a cut's staged samples (cut_pieces.go).
func TestStagedCutFrozen(t *testing.T) {
	require.Equal(t, "7a"+"00000007"+"00000002", hex.EncodeToString(stageKey(7, 2)))
	require.Equal(t, "d00f"+"000000000000f83f", hex.EncodeToString(appendStagedSample(nil, 1000, 1.5)))
	require.Equal(t, "6d6375746170706c79", hex.EncodeToString(keyCutApply))
}

// TestSeriesEncodingFrozen freezes the series store's keys and values.
func TestSeriesEncodingFrozen(t *testing.T) {
	ls := labels.FromStrings("__name__", "up", "job", "a")
	require.Equal(t, "73"+"0000000000000007", hex.EncodeToString(seriesKey(7)))
	require.Equal(t, "01"+"02"+"085f5f6e616d655f5f"+"027570"+"036a6f62"+"0161", // kind, two labels: __name__=up, job=a
		hex.EncodeToString(appendLabels([]byte{byte(KindIncrements)}, ls)))
	require.Equal(t, "63"+"0000000000000007"+"8000019aca559e00", hex.EncodeToString(chunkKey(7, 1_764_331_200_000-1_764_331_200_000%windowMs)))
	require.Equal(t, "63"+"0000000000000007"+"7fffffffff922300", hex.EncodeToString(chunkKey(7, -windowMs)))
	require.Equal(t, "62"+"0000000000000007"+"8000019aca559e00", hex.EncodeToString(baseKey(7, 1_764_331_200_000-1_764_331_200_000%windowMs)))
	require.Equal(t, "0000000000002440"+"000000000000f83f", hex.EncodeToString(appendBase(nil, windowBase{base: 10, total: 1.5})))
	// The daily rollup: a day (d, d+24h] keyed by d; midnight closes a day.
	require.Equal(t, "79"+"0000000000000007"+"8000019ac7c27000", hex.EncodeToString(dayLevel.periodKey(7, dayOf(1_764_331_200_000))))
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
	require.Len(t, sums, 3)
	require.Equal(t, "02"+ // two summaries under u
		"e0d403"+"01"+"12"+"0002c0a9074008000000000000e0d403d616"+ // 1 m, XOR, 18 bytes: 3 at 60000, 4 at 120000
		"e0a712"+"01"+"0d"+"0001c0cf24401c000000000000", // 5 m: 7 at 300000
		hex.EncodeToString(appendSummaries(nil, sums[:2])))
	got, err := decodeSummaries(appendSummaries(nil, sums[:2]), nil)
	require.NoError(t, err)
	require.Len(t, got, 2)
	// The hourly one under h, in its day's value: window 0 of the day, one
	// point, an hour after the window's start.
	require.Equal(t, "68"+"0000000000000007"+"8000019aca559e00", hex.EncodeToString(hourKey(7, 1_764_331_200_000)))
	pts, err := hourlyPoints(0, sums[2].c, nil)
	require.NoError(t, err)
	hv := appendHourDay(nil, 0, []hourRec{{w: 0, pts: pts}, {w: 3 * windowMs, pts: []hourPoint{{3*windowMs + hourRes, 2}}}})
	require.Equal(t, "00"+"01"+"01"+"0000000000001c40"+ // window 0: 7 at 3600000
		"03"+"01"+"01"+"0000000000000040", // window 3: 2 an hour after its start
		hex.EncodeToString(hv))
	recs, err := decodeHourDay(hv, 0)
	require.NoError(t, err)
	require.Equal(t, []hourRec{{w: 0, pts: []hourPoint{{3_600_000, 7}}}, {w: 3 * windowMs, pts: []hourPoint{{3*windowMs + hourRes, 2}}}}, recs)
	_, err = decodeHourDay(hv[:len(hv)-1], 0)
	require.ErrorIs(t, err, errCorrupt, "a point cut short")
	// A closed sample window's counter summary: 4 samples from 7200060000
	// to 7200240000 with a drop after 12 (integers), then one with
	// non-integer values.
	w, err = encodeSamples([]sample{{t: 7_200_060_000, f: 10}, {t: 7_200_120_000, f: 12}, {t: 7_200_180_000, f: 3}, {t: 7_200_240_000, f: 5}})
	require.NoError(t, err)
	cs, ok := summarizeCounter(w.chunks)
	require.True(t, ok)
	enc := appendCounterSummary(nil, 7_200_000_000, cs)
	require.Equal(t, "82"+"07"+ // version with the second sample, flags: all integers
		"04"+"e0d403"+"a0fe0a"+ // 4 samples, first 60000 after the window, last 180000 after the first
		"14"+"09"+ // first 10, last 10 − 5
		"e0d403"+"04"+ // second 60000 after the first, 10 + 2
		"01"+"0000000000002840", // one drop, after 12
		hex.EncodeToString(enc))
	back, err := decodeCounterSummary(enc, 7_200_000_000, nil)
	require.NoError(t, err)
	require.Equal(t, counterSummary{n: 4, firstT: 7_200_060_000, lastT: 7_200_240_000, firstF: 10, lastF: 5, resets: []float64{12},
		hasSecond: true, secondT: 7_200_120_000, secondF: 12}, back)
	enc = appendCounterSummary(nil, 0, counterSummary{n: 2, firstT: 1000, lastT: 2000, firstF: 0.5, lastF: 1.5, hasSecond: true, secondT: 2000, secondF: 1.5})
	require.Equal(t, "82"+"00"+"02"+"e807"+"e807"+"000000000000e03f"+"000000000000f83f"+"e807"+"000000000000f83f"+"00", hex.EncodeToString(enc))
	_, err = decodeCounterSummary(enc[:len(enc)-1], 0, nil)
	require.ErrorIs(t, err, errCorrupt, "cut short")
	// Summaries written before the second sample (0x81) are still read.
	old := "81" + "00" + "02" + "e807" + "e807" + "000000000000e03f" + "000000000000f83f" + "00"
	b, err := hex.DecodeString(old)
	require.NoError(t, err)
	back, err = decodeCounterSummary(b, 0, nil)
	require.NoError(t, err)
	require.Equal(t, counterSummary{n: 2, firstT: 1000, lastT: 2000, firstF: 0.5, lastF: 1.5}, back)
	require.Equal(t, old, hex.EncodeToString(appendCounterSummary(nil, 0, back)))
	b[0] = 0x82
	_, err = decodeCounterSummary(b, 0, nil)
	require.ErrorIs(t, err, errCorrupt, "0x82 without its second sample")
	_, ok = summarizeCounter([]timedChunk{{c: mustChunk(t, []sample{{t: 1, f: 1}, {t: 2, f: math.NaN()}})}})
	require.False(t, ok, "a NaN: no summary")
	// A sample with a start timestamp switches to XOR2, which stores them.
	w, err = encodeSamples([]sample{{t: 1000, f: 1}, {st: 500, t: 16000, f: 2}})
	require.NoError(t, err)
	require.Equal(t, "02"+ // two chunks
		"01"+"d00f"+"d00f"+"0c"+"0001d00f3ff0000000000000"+ // XOR, 1000 to 1000: 1 sample
		"04"+"80fa01"+"80fa01"+"11"+"00018080fa01400000000000000098f201", // XOR2, 16000 to 16000: 1 sample with its start time
		hex.EncodeToString(appendWindow(nil, w.chunks)))
	// A closed window of integers, packed (packed.go): 3 samples at 15 s,
	// values 1, 2, 4.
	var pk packer
	w, err = encodeSamples([]sample{{t: 1000, f: 1}, {t: 16000, f: 2}, {t: 31000, f: 4}})
	require.NoError(t, err)
	require.Equal(t, "01"+ // one chunk
		"80"+"d00f"+"b0e403"+"0b"+ // packed, 1000 to 31000, 11 bytes:
		"03"+"d00f"+"9875"+"01"+"00"+ // 3 samples, first time 1000, time unit 15000, deltas 1 unit + 0 bits
		"02"+"02"+"01"+ // first value 1, value deltas 1 + 1 bit
		"02", // the value deltas above 1: 0, 1
		hex.EncodeToString(appendWindow(nil, pk.pack(w.chunks))))
}

func mustChunk(t *testing.T, ss []sample) chunkenc.Chunk {
	t.Helper()
	w, err := encodeSamples(ss)
	require.NoError(t, err)
	return w.chunks[0].c
}
