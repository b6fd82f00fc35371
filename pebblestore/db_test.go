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
	"github.com/cockroachdb/pebble/v2/record"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/proxylens/proxylens/internal/traffic"
	"github.com/proxylens/proxylens/otelanalytics"
)

func TestMain(m *testing.M) {
	journalPrefill = 256 << 10
	goleak.VerifyTestMain(m)
}

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
	e.next, err = otelanalytics.Restore(db, e.dict, e.agg)
	require.NoError(t, err)
	return e
}

// commit writes recs as one batch keeping those in kept, as the pipeline
// does, and applies them to the aggregates.
func (e *env) commit(t *testing.T, recs []otelanalytics.Record, kept []int32, prob float64) {
	t.Helper()
	refs := make([]otelanalytics.Refs, len(recs))
	pending := e.dict.Intern(recs, refs, nil)
	keep := make([]bool, len(recs))
	for _, i := range kept {
		keep[i] = true
	}
	b := &otelanalytics.Batch{Seq: e.next, Records: recs, Refs: refs, Kept: keep, Probability: prob, Dict: pending}
	e.next++
	written := 0
	require.NoError(t, e.db.CommitBatch(b.AppendEntry(nil), func() { written++; e.agg.Apply(recs, refs) }))
	require.Equal(t, 1, written, "written is called once, before the sync")
	e.dict.MarkDurable(pending)
}

// cut seals the journal and writes a cut, as the pipeline's Flush does.
func (e *env) cut(t *testing.T) {
	t.Helper()
	sealed, err := e.db.Seal()
	require.NoError(t, err)
	require.NoError(t, e.db.WriteCut(sealed, otelanalytics.NewStoreCut(e.agg.Cut(), e.dict, nil, e.next-1)))
}

// scan calls fn for every stored record f matches, as exports read them.
func (e *env) scan(ctx context.Context, f otelanalytics.RecordFilter, fn func(*otelanalytics.Record) error) error {
	return otelanalytics.ScanRecords(ctx, e.db, e.dict, f, fn)
}

func (e *env) segments(t *testing.T) []uint64 {
	t.Helper()
	segs, err := listSegments(e.db.journalDir())
	require.NoError(t, err)
	return segs
}

// requireLoadError opens the store in dir and requires Load to fail with
// an error that contains msg.
func requireLoadError(t *testing.T, dir, msg string) {
	t.Helper()
	db, err := Open(dir, Options{})
	require.NoError(t, err)
	_, err = otelanalytics.Restore(db, otelanalytics.NewDict(0), otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, time.Second, nil))
	require.ErrorContains(t, err, msg)
	require.NoError(t, db.Close())
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
	e.cut(t)

	var got []otelanalytics.Record
	require.NoError(t, e.scan(context.Background(), otelanalytics.RecordFilter{}, func(r *otelanalytics.Record) error {
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
	count := func(f otelanalytics.RecordFilter) int {
		n := 0
		require.NoError(t, e.scan(context.Background(), f, func(*otelanalytics.Record) error { n++; return nil }))
		return n
	}
	require.Equal(t, 100, count(otelanalytics.RecordFilter{Start: t0.Add(50 * time.Second), End: t0.Add(150 * time.Second)}))
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
	require.Equal(t, wantN, count(otelanalytics.RecordFilter{Sources: []string{src}}))
	require.Equal(t, wantFail, count(otelanalytics.RecordFilter{Success: &no}))
	require.Equal(t, want200, count(otelanalytics.RecordFilter{StatusCodes: []uint16{200}}))
	require.Equal(t, wantSlow, count(otelanalytics.RecordFilter{MinDuration: time.Second, MaxDuration: 5 * time.Second}))
	require.Zero(t, count(otelanalytics.RecordFilter{Domains: []string{"nowhere.example"}}))

	stop := errors.New("stop")
	n := 0
	err := e.scan(context.Background(), otelanalytics.RecordFilter{}, func(*otelanalytics.Record) error {
		if n++; n == 3 {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, e.scan(ctx, otelanalytics.RecordFilter{}, func(*otelanalytics.Record) error { return nil }), context.Canceled)
}

// TestRecoveryReplaysJournal is the crash test of the store: batches that
// were committed but never cut are back in the aggregates after a restart,
// and the next cut writes their records and removes the journal segments.
func TestRecoveryReplaysJournal(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir)
	recs := requests(400, 2, t0, 100*time.Millisecond)
	e.commit(t, recs[:100], all(100), 1)
	e.cut(t)
	e.commit(t, recs[100:300], nil, 0.1)
	e.commit(t, recs[300:], all(100), 1)
	want := map[otelanalytics.Family]map[string][]float64{}
	for f := range otelanalytics.NumFamilies {
		want[f] = totals(e.agg, f, e.dict)
	}
	// No cut before closing: as after kill -9, the journal holds the rest.
	require.NoError(t, e.db.Close())

	e2 := open(t, dir)
	require.Equal(t, uint64(4), e2.next, "sequence numbers continue after the replayed batches")
	for f := range otelanalytics.NumFamilies {
		require.Equal(t, want[f], totals(e2.agg, f, e2.dict), f.Name())
	}
	var sum float64
	for _, v := range totals(e2.agg, otelanalytics.FamilyRequests, e2.dict) {
		sum += v[0]
	}
	require.Equal(t, 400.0, sum)
	require.Equal(t, 100, countRecords(t, e2.db), "replayed records are not in the database before a cut")

	e2.cut(t)
	require.Equal(t, 200, countRecords(t, e2.db))
	require.Len(t, e2.segments(t), 2, "only the segment being written and the empty spare are left")
	require.NoError(t, e2.db.Close())

	e3 := open(t, dir)
	defer func() { require.NoError(t, e3.db.Close()) }()
	require.Equal(t, uint64(4), e3.next, "the sequence survives an empty journal")
	for f := range otelanalytics.NumFamilies {
		require.Equal(t, want[f], totals(e3.agg, f, e3.dict), f.Name())
	}
	require.Equal(t, 200, countRecords(t, e3.db))
}

func countRecords(t *testing.T, db *DB) int {
	t.Helper()
	n := 0
	require.NoError(t, db.ScanRecords(context.Background(), time.Time{}, time.Time{}, func(int64, []byte) error { n++; return nil }))
	return n
}

// TestCrashBetweenRecordsAndCheckpoint: if the process dies after a cut
// wrote records but before its checkpoint, the restart replays the same
// segments and the next cut writes the same records again, once.
func TestCrashBetweenRecordsAndCheckpoint(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir)
	e.commit(t, requests(50, 4, t0, time.Second), all(50), 1)
	sealed, err := e.db.Seal()
	require.NoError(t, err)
	e.db.cutMu.Lock()
	err = e.db.materializeLocked(otelanalytics.NewStoreCut(&otelanalytics.Cut{}, e.dict, nil, 0), sealed, false) // the cut got this far
	e.db.cutMu.Unlock()
	require.NoError(t, err)
	require.Equal(t, 50, countRecords(t, e.db))
	require.NoError(t, e.db.Close())

	e2 := open(t, dir)
	defer func() { require.NoError(t, e2.db.Close()) }()
	var sum float64
	for _, v := range totals(e2.agg, otelanalytics.FamilyRequests, e2.dict) {
		sum += v[0]
	}
	require.Equal(t, 50.0, sum, "counted once")
	e2.cut(t)
	require.Equal(t, 50, countRecords(t, e2.db), "written once")
}

// TestLeftoverSegmentsAreRemoved: a crash after a checkpoint but before
// its segments were removed leaves them; the next start removes them
// without replaying them.
func TestLeftoverSegmentsAreRemoved(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir)
	e.commit(t, requests(10, 5, t0, time.Second), all(10), 1)
	e.cut(t)
	segs := e.segments(t)
	require.NoError(t, e.db.Close())
	// Put a copy of an old, already checkpointed segment back.
	old := filepath.Join(e.db.journalDir(), segmentName(segs[0]-1))
	require.NoError(t, os.WriteFile(old, []byte("stale"), 0o600))

	e2 := open(t, dir)
	defer func() { require.NoError(t, e2.db.Close()) }()
	_, err := os.Stat(old)
	require.True(t, os.IsNotExist(err))
	var sum float64
	for _, v := range totals(e2.agg, otelanalytics.FamilyRequests, e2.dict) {
		sum += v[0]
	}
	require.Equal(t, 10.0, sum)
}

// TestTornJournalTail: a crash in the middle of a journal write leaves a
// partial entry at the end of the newest segment; it was never
// acknowledged, so recovery ends at the last whole entry. Damage anywhere
// else is refused.
func TestTornJournalTail(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir)
	path := filepath.Join(e.db.journalDir(), segmentName(e.segments(t)[0]))
	size := func() int64 { // the end of the entries written
		e.db.j.mu.Lock()
		defer e.db.j.mu.Unlock()
		return e.db.j.w.Size()
	}
	e.commit(t, requests(10, 6, t0, time.Second), nil, 1)
	first := size() // synced: the whole first entry is in the file
	e.commit(t, requests(20, 7, t0, time.Second), nil, 1)
	second := size()
	segs := e.segments(t)
	require.Len(t, segs, 2, "the segment being written and the spare prepared for the next cut")
	require.NoError(t, e.db.Close())
	require.Len(t, e.segments(t), 1, "a clean close removes the empty spare")
	// Zero the second half of the second entry, as a crash in its write
	// would leave the prefilled file, and leave the empty spare behind
	// it, as a crash does.
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	clear(data[first+(second-first)/2:]) // and the end marker the close wrote
	require.NoError(t, os.WriteFile(path, data, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(e.db.journalDir(), segmentName(segs[1])), nil, 0o600))

	e2 := open(t, dir)
	var sum float64
	for _, v := range totals(e2.agg, otelanalytics.FamilyRequests, e2.dict) {
		sum += v[0]
	}
	require.Equal(t, 10.0, sum, "the first entry is replayed, the torn second one is not")
	e2.cut(t)
	require.NoError(t, e2.db.Close())

	// Damage inside a segment that is not the newest is corruption.
	dir2 := t.TempDir()
	e3 := open(t, dir2)
	e3.commit(t, requests(10, 8, t0, time.Second), nil, 1)
	_, err = e3.db.Seal()
	require.NoError(t, err)
	e3.commit(t, requests(10, 9, t0, time.Second), nil, 1)
	p := filepath.Join(e3.db.journalDir(), segmentName(e3.segments(t)[0]))
	require.NoError(t, e3.db.Close())
	data, err = os.ReadFile(p)
	require.NoError(t, err)
	data[20] ^= 0xff
	require.NoError(t, os.WriteFile(p, data, 0o600))
	requireLoadError(t, dir2, "damaged")
}

// TestJournalRecycling: retired segments become later segments, written
// over in place. After a crash, the newest segment holds its own entries
// and, behind them, the stale chunks of the segment whose file it reuses:
// recovery replays the entries and none of the stale chunks, and damage
// before a later sync is refused rather than read as a torn tail.
func TestJournalRecycling(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir)
	stat := func(n uint64) os.FileInfo {
		fi, err := os.Stat(filepath.Join(e.db.journalDir(), segmentName(n)))
		require.NoError(t, err)
		return fi
	}
	first := e.segments(t)[0]
	e.commit(t, requests(400, 11, t0, time.Second), all(400), 1) // a large segment to reuse
	old := stat(first)
	e.cut(t)
	e.commit(t, requests(10, 12, t0, time.Second), nil, 1)
	e.cut(t)
	segs := e.segments(t)
	require.Len(t, segs, 2, "the segment being written and the spare")
	cur := stat(segs[0])
	require.True(t, os.SameFile(old, cur), "the first segment's file is reused")
	require.Greater(t, cur.Size(), int64(1000), "and holds its stale chunks")

	e.commit(t, requests(5, 14, t0, time.Second), all(5), 1)
	want := totals(e.agg, otelanalytics.FamilyRequests, e.dict)
	// What a crash leaves: the synced entry, the stale chunks behind it,
	// and the spare, itself a reused file.
	path := filepath.Join(e.db.journalDir(), segmentName(segs[0]))
	crashed, err := os.ReadFile(path)
	require.NoError(t, err)
	spare, err := os.ReadFile(filepath.Join(e.db.journalDir(), segmentName(segs[1])))
	require.NoError(t, err)
	require.NotEmpty(t, spare, "the spare reuses a retired segment too")
	require.NoError(t, e.db.Close())
	require.NoError(t, os.WriteFile(path, crashed, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(e.db.journalDir(), segmentName(segs[1])), spare, 0o600))

	e2 := open(t, dir)
	require.Equal(t, want, totals(e2.agg, otelanalytics.FamilyRequests, e2.dict), "the new entry replayed, no stale one")
	require.Equal(t, []uint64{segs[0], segs[0] + 1, segs[0] + 2}, e2.segments(t),
		"the spare without entries is removed; the replayed segment stays until the next cut")
	e2.cut(t)
	require.Equal(t, 405, countRecords(t, e2.db))
	_, err = os.Stat(filepath.Join(e2.db.journalDir(), segmentName(segs[0])))
	require.True(t, os.IsNotExist(err), "the replayed segment is retired")
	// Several syncs in the newest segment, the first entry damaged: the
	// chunks in the blocks after it say it was synced, so this is not a
	// torn tail.
	for i := range 3 {
		e2.commit(t, requests(2000, uint64(20+i), t0, time.Second), nil, 1)
	}
	newest := filepath.Join(e2.db.journalDir(), segmentName(e2.segments(t)[0]))
	data, err := os.ReadFile(newest)
	require.NoError(t, err)
	require.NoError(t, e2.db.Close())
	data[30] ^= 0xff
	require.NoError(t, os.WriteFile(newest, data, 0o600))
	requireLoadError(t, dir, "damaged")
}

// TestJournalAfterWriteFailure: once a journal write fails, every append
// is refused at once, and journals opened later are not affected.
func TestJournalAfterWriteFailure(t *testing.T) {
	e := open(t, t.TempDir())
	e.commit(t, requests(5, 16, t0, time.Second), nil, 1)
	e.db.j.mu.Lock()
	require.NoError(t, e.db.j.w.Close()) // the writer fails from now on
	e.db.j.mu.Unlock()
	batch := func(seq uint64) *otelanalytics.Batch {
		recs := requests(5, seq, t0, time.Second)
		return &otelanalytics.Batch{Seq: seq, Records: recs, Refs: make([]otelanalytics.Refs, len(recs)), Kept: make([]bool, len(recs)), Probability: 1}
	}
	for seq := range uint64(3) {
		require.ErrorContains(t, e.db.CommitBatch(batch(10+seq).AppendEntry(nil), func() { t.Error("written called for a batch not written") }), "append to journal")
	}
	_, err := e.db.Seal()
	require.Error(t, err)
	require.Error(t, e.db.Close())

	e2 := open(t, t.TempDir())
	defer func() { require.NoError(t, e2.db.Close()) }()
	for range 3 {
		e2.commit(t, requests(5, 17, t0, time.Second), nil, 1)
	}
}

// TestLegacyJournalSegment: a segment an earlier version wrote (legacy
// chunks, without a segment number), left by a crash, is replayed.
func TestLegacyJournalSegment(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir)
	n := e.segments(t)[0]
	require.NoError(t, e.db.Close())
	recs := requests(30, 15, t0, time.Second)
	refs := make([]otelanalytics.Refs, len(recs))
	dict := otelanalytics.NewDict(0)
	pending := dict.Intern(recs, refs, nil)
	entry := (&otelanalytics.Batch{Seq: 1, Records: recs, Refs: refs, Kept: make([]bool, len(recs)), Probability: 1, Dict: pending}).AppendEntry(nil)
	f, err := os.Create(filepath.Join(dir, "journal", segmentName(n)))
	require.NoError(t, err)
	w := record.NewWriter(f)
	_, err = w.WriteRecord(entry)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	require.NoError(t, f.Close())

	e2 := open(t, dir)
	defer func() { require.NoError(t, e2.db.Close()) }()
	var sum float64
	for _, v := range totals(e2.agg, otelanalytics.FamilyRequests, e2.dict) {
		sum += v[0]
	}
	require.Equal(t, 30.0, sum)
}

func TestJournalFilesAreOurs(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir)
	require.NoError(t, e.db.Close())
	require.NoError(t, os.WriteFile(filepath.Join(e.db.journalDir(), "notes.log"), nil, 0o600))
	requireLoadError(t, dir, "unexpected file notes.log")
}

func TestFormatVersion(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir)
	require.Equal(t, t0, e.db.Created())
	require.Equal(t, dir, e.db.Dir())
	_, err := otelanalytics.Restore(e.db, e.dict, e.agg)
	require.Error(t, err, "Load twice")
	require.NoError(t, e.db.Close())
	require.NoError(t, e.db.Close(), "Close twice")

	// Another version is refused with a message that says which.
	pdb, err := pebble.Open(filepath.Join(dir, "pebble"), &pebble.Options{Logger: pebbleLogger{log: discard()}})
	require.NoError(t, err)
	require.NoError(t, pdb.Set(keyFormat, binary.AppendUvarint(nil, 99), pebble.Sync))
	require.NoError(t, pdb.Close())
	_, err = Open(dir, Options{})
	require.ErrorContains(t, err, "format version 99")

	// Versions 4 to 9 are read (4 and 5 upgraded) and stamped with this
	// version.
	for _, old := range []uint64{4, 5, 6, 7, 8, 9} {
		pdb, err = pebble.Open(filepath.Join(dir, "pebble"), &pebble.Options{Logger: pebbleLogger{log: discard()}})
		require.NoError(t, err)
		require.NoError(t, pdb.Set(keyFormat, binary.AppendUvarint(nil, old), pebble.Sync))
		require.NoError(t, pdb.Close())
		db, err := Open(dir, Options{})
		require.NoError(t, err)
		v, closer, err := db.db.Get(keyFormat)
		require.NoError(t, err)
		require.Equal(t, binary.AppendUvarint(nil, FormatVersion), v)
		require.NoError(t, closer.Close())
		require.NoError(t, db.Close())
	}

	// A database with data but no version is not ours.
	other := t.TempDir()
	pdb, err = pebble.Open(filepath.Join(other, "pebble"), &pebble.Options{Logger: pebbleLogger{log: discard()}})
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
	require.Error(t, otelanalytics.ScanRecords(context.Background(), db, nil, otelanalytics.RecordFilter{}, func(*otelanalytics.Record) error { return nil }))
}
