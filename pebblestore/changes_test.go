package pebblestore_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/internal/changes"
	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
)

// TestSeriesCommitsNoteChanges: every committed append tells the change
// tracker the sample times it wrote (remote write, a cut's increments),
// a refused one tells it nothing, and retention tells it everything up
// to its newest cut-off may have changed.
func TestSeriesCommitsNoteChanges(t *testing.T) {
	tr := changes.New()
	db, err := pebblestore.Open(t.TempDir(), pebblestore.Options{Series: pebblestore.SeriesOptions{Changes: tr}})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	dict, agg := otelanalytics.NewDict(0), otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, 15*time.Second, nil)
	_, err = otelanalytics.Restore(db, dict, agg)
	require.NoError(t, err)
	s := db.Series()

	day := int64(24 * changes.BucketMs)
	t0 := 20_000 * day
	e := tr.Epoch()
	app := s.AppenderV2(context.Background())
	_, err = app.Append(0, labels.FromStrings("__name__", "up"), 0, t0+day+5, 1, nil, nil, storage.AppendV2Options{})
	require.NoError(t, err)
	_, err = app.Append(0, labels.FromStrings("__name__", "up"), 0, t0+3*day+5, 1, nil, nil, storage.AppendV2Options{})
	require.NoError(t, err)
	require.False(t, tr.ChangedSince(e, t0, t0+4*day), "nothing is noted before the commit")
	require.NoError(t, app.Commit())
	for d, changed := range map[int64]bool{0: false, 1: true, 2: false, 3: true, 4: false} { // the hours of its samples, not those between
		require.Equal(t, changed, tr.ChangedSince(e, t0+d*day, t0+d*day), "day %d", d)
	}

	// A refused append notes nothing.
	e = tr.Epoch()
	app = s.AppenderV2(context.Background())
	_, err = app.Append(0, labels.FromStrings("__name__", "up"), 0, t0+5, 1, nil, nil, storage.AppendV2Options{})
	require.ErrorIs(t, err, storage.ErrTooOldSample)
	require.NoError(t, app.Rollback())
	require.False(t, tr.ChangedSince(e, t0-day, t0+10*day))

	// A cut's increments, stamped at the end of their interval.
	e = tr.Epoch()
	end := time.UnixMilli(t0 + 7*day + 1000)
	recs := []otelanalytics.Record{{EndTime: end.UnixNano(), Source: "s", Tier: "free", Proxy: "p:1", StatusCode: 200, Success: true, Weight: 1}}
	refs := make([]otelanalytics.Refs, len(recs))
	pending := dict.Intern(recs, refs, nil)
	batch := &otelanalytics.Batch{Records: recs, Refs: refs, Kept: []bool{true}, Probability: 1, Dict: pending}
	require.NoError(t, db.CommitBatch(batch.AppendEntry(nil), nil))
	agg.Apply(recs, refs)
	dict.MarkDurable(pending)
	sealed, err := db.Seal()
	require.NoError(t, err)
	require.NoError(t, db.WriteCut(sealed, otelanalytics.NewStoreCut(agg.Cut(), dict, nil, 0)))
	require.True(t, tr.ChangedSince(e, t0+7*day, t0+7*day))
	require.False(t, tr.ChangedSince(e, t0+5*day, t0+6*day))

	e = tr.Epoch()
	_, err = db.EnforceRetention(context.Background(), pebblestore.DefaultRetention(), time.UnixMilli(t0+8*day), false)
	require.NoError(t, err)
	require.True(t, tr.ChangedSince(e, t0-100*day, t0-100*day), "retention changes the days before its cut-offs")
	require.True(t, tr.ChangedSince(e, t0, t0+day))
	require.False(t, tr.ChangedSince(e, t0+2*day, t0+8*day), "and not those after the newest (raw series, 7 days)")
}
