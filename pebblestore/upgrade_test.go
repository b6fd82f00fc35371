package pebblestore

import (
	"bytes"
	"encoding/binary"
	"maps"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/stretchr/testify/require"
)

// TestUpgradeSplitsHourlySummaries: a version 5 database, whose u values
// hold the hourly summary with the finer ones (or alone, past the raw
// retention), opens as version 6 with the same summaries as version 6
// writes them; windows split before a crash cut the upgrade short are
// left as they are.
func TestUpgradeSplitsHourlySummaries(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, Options{})
	require.NoError(t, err)
	s := db.Series()
	start := int64(1_764_331_200_000)
	var series []labels.Labels
	for _, name := range []string{"a_total", "b_total", "c_total"} {
		series = append(series, labels.FromStrings("__name__", name))
	}
	require.NoError(t, s.AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
		for i, ls := range series {
			for ts := start + int64(i)*15_000; ts < start+24*windowMs; ts += 45_000 {
				if err := add(ls, ts, float64(1+ts%7)); err != nil {
					return err
				}
			}
		}
		return nil
	}))
	want := dumpPrefixes(t, db.db, prefixSummaries, prefixHours)
	require.NotEmpty(t, want)

	// Back to version 5's layout: every other window's hourly summary into
	// its u value, the first window's u value holding it alone.
	b := db.db.NewBatch()
	keys := slices.Sorted(maps.Keys(want))
	for n, k := range keys {
		if k[0] != prefixHours {
			continue
		}
		id, d := binary.BigEndian.Uint64([]byte(k)[1:9]), periodFromKey([]byte(k))
		if n%2 == 0 && d != hourDay(start) {
			continue // upgraded before the crash
		}
		recs, err := decodeHourDay([]byte(want[k]), d)
		require.NoError(t, err)
		for _, rec := range recs {
			c := chunkenc.NewXORChunk()
			app, err := c.Appender()
			require.NoError(t, err)
			for _, p := range rec.pts {
				app.Append(0, p.t, p.f)
			}
			sums, err := decodeSummaries([]byte(want[string(summaryKey(id, rec.w))]), nil)
			require.NoError(t, err)
			if rec.w == windowOf(start) {
				sums = nil
			}
			require.NoError(t, b.Set(summaryKey(id, rec.w), appendSummaries(nil, append(sums, summary{res: hourRes, c: c})), nil))
		}
		require.NoError(t, b.Delete([]byte(k), nil))
	}
	require.NoError(t, b.Set(keyFormat, binary.AppendUvarint(nil, 5), nil))
	require.NoError(t, b.Commit(pebble.Sync))
	require.NoError(t, b.Close())
	require.NoError(t, db.Close())

	db, err = Open(dir, Options{})
	require.NoError(t, err)
	defer db.Close()
	got := dumpPrefixes(t, db.db, prefixSummaries, prefixHours)
	for id := range uint64(3) {
		delete(want, string(summaryKey(id+1, windowOf(start)))) // held the hourly summary alone
	}
	require.Equal(t, want, got)
	v, closer, err := db.db.Get(keyFormat)
	require.NoError(t, err)
	require.Equal(t, binary.AppendUvarint(nil, FormatVersion), v)
	require.NoError(t, closer.Close())
}

// dumpPrefixes returns every key and value under the prefixes.
func dumpPrefixes(t *testing.T, r pebble.Reader, prefixes ...byte) map[string]string {
	out := map[string]string{}
	for _, p := range prefixes {
		it, err := r.NewIter(&pebble.IterOptions{LowerBound: []byte{p}, UpperBound: []byte{p + 1}})
		require.NoError(t, err)
		for valid := it.First(); valid; valid = it.Next() {
			out[string(bytes.Clone(it.Key()))] = string(it.Value())
		}
		require.NoError(t, it.Close())
	}
	return out
}
