package pebblestore

import (
	"context"
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
	key := summaryKey(id, windowOf(start)+windowMs)
	want, closer, err := db.db.Get(key)
	require.NoError(t, err)
	want = append([]byte(nil), want...)
	require.NoError(t, closer.Close())
	require.NoError(t, db.db.Delete(key, pebble.Sync))

	res, err := s.Rollup(context.Background(), start, start+10*windowMs)
	require.NoError(t, err)
	require.Equal(t, RollupResult{Series: 1, Windows: 4, Summarized: 1}, res)
	got, closer, err := db.db.Get(key)
	require.NoError(t, err)
	require.Equal(t, want, got)
	require.NoError(t, closer.Close())
	_, _, err = db.db.Get(summaryKey(id, windowOf(start+5*windowMs-1)))
	require.ErrorIs(t, err, pebble.ErrNotFound, "the open window has none")
}
