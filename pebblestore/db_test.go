package pebblestore

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/proxylens/proxylens/internal/traffic"
	"github.com/proxylens/proxylens/otelanalytics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

type env struct {
	db   *DB
	dict *otelanalytics.Dict
	agg  *otelanalytics.Aggregator
	next uint64
}

func open(t *testing.T, dir string) *env {
	t.Helper()
	db, err := Open(dir, Options{Now: func() time.Time { return t0 }})
	require.NoError(t, err)
	e := &env{db: db, dict: otelanalytics.NewDict(0), agg: otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, 15*time.Second, nil)}
	e.next, err = db.Load(e.dict, e.agg)
	require.NoError(t, err)
	return e
}

// commit writes recs as one batch keeping those in kept, as the pipeline
// does, and applies them to the aggregates.
func (e *env) commit(t *testing.T, recs []otelanalytics.Record, kept []int32, prob float64) {
	t.Helper()
	refs := make([]otelanalytics.Refs, len(recs))
	pending := e.dict.Intern(recs, refs, nil)
	b := &otelanalytics.Batch{Seq: e.next, Records: recs, Refs: refs, Kept: kept, Probability: prob, Dict: pending}
	e.next++
	require.NoError(t, e.db.CommitBatch(b))
	e.agg.Apply(b.Seq, recs, refs)
	e.dict.MarkDurable(pending)
}

func requests(n int, seed uint64, start time.Time, step time.Duration) []otelanalytics.Record {
	g := traffic.NewGenerator(traffic.NewModel(50), seed)
	out := make([]otelanalytics.Record, n)
	for i := range out {
		r := g.Next(start.Add(time.Duration(i) * step))
		out[i] = r.Record()
	}
	return out
}

func all(n int) []int32 {
	k := make([]int32, n)
	for i := range k {
		k[i] = int32(i)
	}
	return k
}

func totals(agg *otelanalytics.Aggregator, f otelanalytics.Family, d *otelanalytics.Dict) map[string][]float64 {
	keys, vals := agg.Snapshot(f)
	w := f.Width()
	out := map[string][]float64{}
	for i, k := range keys {
		name := ""
		for _, v := range f.LabelValues(k, d) {
			name += v + "|"
		}
		if k.Overflow {
			name = "overflow"
		}
		out[name] = vals[i*w : (i+1)*w]
	}
	return out
}

func TestCommitScanAndFilters(t *testing.T) {
	e := open(t, t.TempDir())
	defer func() { require.NoError(t, e.db.Close()) }()

	recs := requests(500, 1, t0, time.Second)
	e.commit(t, recs[:250], all(250), 1)
	half := []int32{}
	for i := 0; i < 250; i += 2 {
		half = append(half, int32(i))
	}
	e.commit(t, recs[250:], half, 0.5)

	var got []otelanalytics.Record
	require.NoError(t, e.db.ScanRecords(context.Background(), RecordFilter{}, func(r *otelanalytics.Record) error {
		got = append(got, *r)
		return nil
	}))
	require.Len(t, got, 250+125)
	for i := 1; i < len(got); i++ {
		require.LessOrEqual(t, got[i-1].EndTime, got[i].EndTime, "records come in time order")
	}
	require.Equal(t, recs[0], got[0])
	require.Equal(t, 2.0, got[250].Weight, "a record kept at p=0.5 stands for two")
	want := recs[250]
	want.Weight = 2
	require.Equal(t, want, got[250])

	// Filters: time range, source, success, status and latency bounds.
	count := func(f RecordFilter) int {
		n := 0
		require.NoError(t, e.db.ScanRecords(context.Background(), f, func(*otelanalytics.Record) error { n++; return nil }))
		return n
	}
	require.Equal(t, 100, count(RecordFilter{Start: t0.Add(50 * time.Second), End: t0.Add(150 * time.Second)}))
	src := recs[0].Source
	no := false
	wantN, wantFail, want200, wantSlow := 0, 0, 0, 0
	for _, r := range got {
		if r.Source == src {
			wantN++
		}
		if !r.Success {
			wantFail++
		}
		if r.StatusCode == 200 {
			want200++
		}
		if r.Duration >= int64(time.Second) && r.Duration <= int64(5*time.Second) {
			wantSlow++
		}
	}
	require.Equal(t, wantN, count(RecordFilter{Sources: []string{src}}))
	require.Equal(t, wantFail, count(RecordFilter{Success: &no}))
	require.Equal(t, want200, count(RecordFilter{StatusCodes: []uint16{200}}))
	require.Equal(t, wantSlow, count(RecordFilter{MinDuration: time.Second, MaxDuration: 5 * time.Second}))
	require.Zero(t, count(RecordFilter{Domains: []string{"nowhere.example"}}))

	stop := errors.New("stop")
	n := 0
	err := e.db.ScanRecords(context.Background(), RecordFilter{}, func(*otelanalytics.Record) error {
		if n++; n == 3 {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, e.db.ScanRecords(ctx, RecordFilter{}, func(*otelanalytics.Record) error { return nil }), context.Canceled)
}

// TestRecoveryReplaysJournal is the crash test of the store: batches that
// were committed but never cut are back in the aggregates after a restart,
// and a cut makes them totals and empties the journal.
func TestRecoveryReplaysJournal(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir)
	recs := requests(400, 2, t0, 100*time.Millisecond)
	e.commit(t, recs[:100], nil, 0.1)
	require.NoError(t, e.db.WriteCut(e.agg.Cut()))
	e.commit(t, recs[100:300], nil, 0.1)
	e.commit(t, recs[300:], all(100), 1)
	want := map[otelanalytics.Family]map[string][]float64{}
	for f := range otelanalytics.NumFamilies {
		want[f] = totals(e.agg, f, e.dict)
	}
	// No cut and no clean close of the aggregates: as after kill -9.
	require.NoError(t, e.db.Close())

	e2 := open(t, dir)
	require.Equal(t, uint64(4), e2.next, "journal sequence continues after the replayed entries")
	for f := range otelanalytics.NumFamilies {
		require.Equal(t, want[f], totals(e2.agg, f, e2.dict), f.Name())
	}
	var sum float64
	for _, v := range totals(e2.agg, otelanalytics.FamilyRequests, e2.dict) {
		sum += v[0]
	}
	require.Equal(t, 400.0, sum)

	// Cutting accounts for the replayed entries: the journal empties.
	c := e2.agg.Cut()
	require.ElementsMatch(t, []uint64{2, 3}, c.Journal)
	require.NoError(t, e2.db.WriteCut(c))
	journal := 0
	require.NoError(t, e2.db.scan([]byte{prefixJournal}, func(k, v []byte) error { journal++; return nil }))
	require.Zero(t, journal)
	require.NoError(t, e2.db.Close())

	e3 := open(t, dir)
	defer func() { require.NoError(t, e3.db.Close()) }()
	require.Equal(t, uint64(4), e3.next, "the sequence survives an empty journal")
	for f := range otelanalytics.NumFamilies {
		require.Equal(t, want[f], totals(e3.agg, f, e3.dict), f.Name())
	}
	n := 0
	require.NoError(t, e3.db.ScanRecords(context.Background(), RecordFilter{}, func(*otelanalytics.Record) error { n++; return nil }))
	require.Equal(t, 100, n)
}

func TestWriteCutCoalescesJournalDeletes(t *testing.T) {
	e := open(t, t.TempDir())
	defer func() { require.NoError(t, e.db.Close()) }()
	recs := requests(10, 3, t0, time.Second)
	for i := range 10 {
		e.commit(t, recs[i:i+1], nil, 1)
	}
	c := e.agg.Cut()
	c.Journal = []uint64{7, 1, 2, 3, 9, 5} // out of order, with gaps
	require.NoError(t, e.db.WriteCut(c))
	var left []uint64
	require.NoError(t, e.db.scan([]byte{prefixJournal}, func(k, v []byte) error {
		left = append(left, binary.BigEndian.Uint64(k[1:]))
		return nil
	}))
	require.Equal(t, []uint64{4, 6, 8, 10}, left)
}

func TestFormatVersion(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir)
	require.Equal(t, t0, e.db.Created())
	require.Equal(t, dir, e.db.Dir())
	require.NoError(t, e.db.Close())
	require.NoError(t, e.db.Close(), "Close twice")

	// Another version is refused with a message that says which.
	pdb, err := pebble.Open(dir, &pebble.Options{Logger: pebbleLogger{log: discard()}})
	require.NoError(t, err)
	require.NoError(t, pdb.Set(keyFormat, binary.AppendUvarint(nil, 99), pebble.Sync))
	require.NoError(t, pdb.Close())
	_, err = Open(dir, Options{})
	require.ErrorContains(t, err, "format version 99")

	// A database with data but no version is not ours.
	other := t.TempDir()
	pdb, err = pebble.Open(other, &pebble.Options{Logger: pebbleLogger{log: discard()}})
	require.NoError(t, err)
	require.NoError(t, pdb.Set([]byte("x"), []byte("y"), pebble.Sync))
	require.NoError(t, pdb.Close())
	_, err = Open(other, Options{})
	require.ErrorContains(t, err, "not a proxylens database")

	// A data dir that cannot be created.
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	_, err = Open(filepath.Join(file, "sub"), Options{})
	require.Error(t, err)
}

func TestScanBeforeLoad(t *testing.T) {
	db, err := Open(t.TempDir(), Options{})
	require.NoError(t, err)
	defer func() { require.NoError(t, db.Close()) }()
	require.Error(t, db.ScanRecords(context.Background(), RecordFilter{}, func(*otelanalytics.Record) error { return nil }))
}
