package pebblestore

import (
	"bytes"
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/otelanalytics"
)

// TestManyRecordsOneCut: a cut with more records than one Pebble batch
// holds writes them all, in order, and the journal size is reported until
// the cut.
func TestManyRecordsOneCut(t *testing.T) {
	t.Parallel() // among the slowest under -race: CI runs them side by side
	e := open(t, t.TempDir())
	defer func() { require.NoError(t, e.db.Close()) }()
	require.Zero(t, e.db.JournalBytes())
	require.False(t, e.db.Replayed())
	total := 0
	for b := range 20 {
		recs := requests(5000, uint64(100+b), t0.Add(time.Duration(b)*time.Hour), time.Millisecond)
		e.commit(t, recs, all(len(recs)), 1)
		total += len(recs)
	}
	require.Greater(t, e.db.JournalBytes(), int64(recordBatchBytes), "more than one batch of records")
	e.cut(t)
	require.Zero(t, e.db.JournalBytes())
	require.NoError(t, e.db.Flush())
	require.Equal(t, total, countRecords(t, e.db))
	prev := int64(0)
	require.NoError(t, e.scan(context.Background(), otelanalytics.RecordFilter{}, func(r *otelanalytics.Record) error {
		require.GreaterOrEqual(t, r.EndTime, prev)
		prev = r.EndTime
		return nil
	}))
}

// TestInlineStringsThroughTheStore: strings the dictionary had no room for
// are kept inline and come back with the record.
func TestInlineStringsThroughTheStore(t *testing.T) {
	t.Parallel() // among the slowest under -race: CI runs them side by side
	dir := t.TempDir()
	db, err := Open(dir, Options{})
	require.NoError(t, err)
	dict := otelanalytics.NewDict(1024)
	agg := otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, time.Second, nil)
	next, err := otelanalytics.Restore(db, dict, agg)
	require.NoError(t, err)
	e := &env{db: db, dict: dict, agg: agg, next: next}
	var recs []otelanalytics.Record
	for i := range 1100 { // more distinct domains than the dictionary holds
		r := requests(1, uint64(i), t0.Add(time.Duration(i)*time.Second), time.Second)[0]
		r.Domain = "d" + string(rune('a'+i%26)) + "-" + time.Duration(i).String() + ".example"
		recs = append(recs, r)
	}
	e.commit(t, recs, all(len(recs)), 1)
	e.cut(t)
	got := map[string]bool{}
	require.NoError(t, e.scan(context.Background(), otelanalytics.RecordFilter{}, func(r *otelanalytics.Record) error {
		got[r.Domain] = true
		return nil
	}))
	for _, r := range recs {
		require.True(t, got[r.Domain], r.Domain)
	}
	require.NoError(t, db.Close())

	// After a restart the ids still resolve and the inline strings are there.
	e2 := open(t, dir)
	defer func() { require.NoError(t, e2.db.Close()) }()
	n := 0
	require.NoError(t, e2.scan(context.Background(), otelanalytics.RecordFilter{Domains: []string{recs[1099].Domain}}, func(r *otelanalytics.Record) error {
		n++
		require.Equal(t, recs[1099].Source, r.Source)
		return nil
	}))
	require.Equal(t, 1, n)
}

func TestScanBounds(t *testing.T) {
	e := open(t, t.TempDir())
	defer func() { require.NoError(t, e.db.Close()) }()
	recs := requests(10, 1, t0, time.Second)
	e.commit(t, recs, all(10), 1)
	e.cut(t)
	count := func(f otelanalytics.RecordFilter) int {
		n := 0
		require.NoError(t, e.scan(context.Background(), f, func(*otelanalytics.Record) error { n++; return nil }))
		return n
	}
	require.Equal(t, 10, count(otelanalytics.RecordFilter{Start: time.Unix(-5, 0)}), "a start before 1970 is no bound")
	require.Zero(t, count(otelanalytics.RecordFilter{End: time.Unix(-5, 0)}))
	require.Equal(t, 3, count(otelanalytics.RecordFilter{Start: t0.Add(2 * time.Second), End: t0.Add(5 * time.Second)}), "[start, end)")
	require.Equal(t, 1, count(otelanalytics.RecordFilter{Applications: []string{recs[0].Application}, Start: t0, End: t0.Add(time.Second)}))
}

func TestPrefixEnd(t *testing.T) {
	require.Equal(t, []byte("s"), prefixEnd([]byte("r")))
	require.Equal(t, []byte{'a', 2}, prefixEnd([]byte{'a', 1, 0xff}))
	require.Nil(t, prefixEnd([]byte{0xff, 0xff}))
}

func TestPebbleLogger(t *testing.T) {
	var buf bytes.Buffer
	l := pebbleLogger{log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	l.Infof("flushed %d", 3)
	l.Errorf("background error: %s", "disk")
	require.Contains(t, buf.String(), "pebble: flushed 3")
	require.Contains(t, buf.String(), "level=ERROR msg=\"pebble: background error: disk\"")
	require.PanicsWithValue(t, "pebble: invariant", func() { l.Fatalf("invariant") })
	require.Contains(t, buf.String(), "pebble fatal: invariant")
}
