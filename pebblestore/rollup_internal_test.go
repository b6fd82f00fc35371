package pebblestore

import (
	"context"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
)

// TestRollupRepairsMissingSummaries: a closed window without summaries
// gets them from Rollup, the same bytes its close wrote; open windows are
// left alone.
func TestRollupRepairsMissingSummaries(t *testing.T) {
	db, err := Open(t.TempDir(), Options{})
	require.NoError(t, err)
	defer db.Close()
	s := db.Series()
	ls := labels.FromStrings("__name__", "x_total")
	start := int64(1_764_331_200_000)
	require.NoError(t, s.AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
		for ts := start; ts < start+5*windowMs; ts += 60_000 {
			if err := add(ls, ts, 2); err != nil {
				return err
			}
		}
		return nil
	}))
	id := s.lookup(ls, ls.Hash()).id
	w := windowOf(start) + windowMs
	keys := [][]byte{summaryKey(id, w), hourKey(id, hourDay(w))}
	var want [][]byte
	for _, key := range keys {
		v, closer, err := db.db.Get(key)
		require.NoError(t, err)
		want = append(want, append([]byte(nil), v...))
		require.NoError(t, closer.Close())
	}
	// The window's summaries gone: its u value, its record of the day's
	// hourly summaries.
	require.NoError(t, db.db.Delete(keys[0], pebble.Sync))
	recs, err := decodeHourDay(want[1], hourDay(w))
	require.NoError(t, err)
	recs = slices.DeleteFunc(recs, func(rec hourRec) bool { return rec.w == w })
	require.NoError(t, db.db.Set(keys[1], appendHourDay(nil, hourDay(w), recs), pebble.Sync))

	res, err := s.Rollup(context.Background(), start, start+10*windowMs)
	require.NoError(t, err)
	require.Equal(t, RollupResult{Series: 1, Windows: 4, Summarized: 1}, res)
	for i, key := range keys {
		got, closer, err := db.db.Get(key)
		require.NoError(t, err)
		require.Equal(t, want[i], got)
		require.NoError(t, closer.Close())
	}
	open := windowOf(start + 5*windowMs - 1)
	_, _, err = db.db.Get(summaryKey(id, open))
	require.ErrorIs(t, err, pebble.ErrNotFound, "the open window has none")
	v, closer, err := db.db.Get(hourKey(id, hourDay(open)))
	require.NoError(t, err)
	recs, err = decodeHourDay(v, hourDay(open))
	require.NoError(t, err)
	require.NoError(t, closer.Close())
	require.False(t, slices.ContainsFunc(recs, func(rec hourRec) bool { return rec.w == open }), "the open window has none")
}
