package pebblestore

import (
	"context"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/selfmetrics"
)

// tryCommit commits recs as one batch, as the pipeline does, applying them
// to the aggregates in written; it returns the store's error and whether
// written was called.
func (e *env) tryCommit(t *testing.T, recs []otelanalytics.Record) (bool, error) {
	t.Helper()
	refs := make([]otelanalytics.Refs, len(recs))
	pending := e.dict.Intern(recs, refs, nil)
	b := &otelanalytics.Batch{Seq: e.next, Records: recs, Refs: refs, Kept: make([]bool, len(recs)), Probability: 1, Dict: pending}
	written := false
	err := e.db.CommitBatch(b.AppendEntry(nil), func() { written = true; e.agg.Apply(recs, refs) })
	if err == nil {
		e.next++
		e.dict.MarkDurable(pending)
	}
	return written, err
}

// reopened closes e's store, opens dir again and returns it with the
// aggregates Load rebuilt.
func reopened(t *testing.T, e *env, dir string) *env {
	t.Helper()
	require.NoError(t, e.db.Close())
	return open(t, dir)
}

// TestDiskGuard drives the free-space guard full → free → full: below the
// bound every bulk write is refused with ErrDiskFull before anything is
// written (the batch is not applied, the cut not started, the series
// commit not made), reads go on, it holds until a quarter more is free,
// and what was acknowledged before and after is what a restart loads.
func TestDiskGuard(t *testing.T) {
	dir := t.TempDir()
	var free atomic.Uint64
	free.Store(10 << 30)
	reg := selfmetrics.New()
	db, err := Open(dir, Options{Now: func() time.Time { return t0 }, Metrics: reg, MinFreeBytes: 100 << 20,
		FreeBytes: func(string) (uint64, error) { return free.Load(), nil }, DiskCheckInterval: time.Hour})
	require.NoError(t, err)
	e := &env{db: db, dict: otelanalytics.NewDict(0), agg: otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, 15*time.Second, nil)}
	e.next, err = otelanalytics.Restore(db, e.dict, e.agg)
	require.NoError(t, err)
	recs := requests(300, 7, t0, time.Second)
	gauge := func(name string) float64 {
		mfs, err := reg.Gather()
		require.NoError(t, err)
		for _, mf := range mfs {
			if mf.GetName() == name {
				m := mf.GetMetric()[0]
				if m.GetCounter() != nil {
					return m.GetCounter().GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
		t.Fatalf("no metric %s", name)
		return 0
	}

	written, err := e.tryCommit(t, recs[:100])
	require.NoError(t, err)
	require.True(t, written)
	require.NoError(t, db.Writable())
	require.Zero(t, gauge("proxylens_storage_read_only"))

	free.Store(60 << 20)
	err = db.CheckDisk()
	require.ErrorIs(t, err, ErrDiskFull)
	require.ErrorIs(t, err, syscall.ENOSPC, "callers that do not import the store see ENOSPC")
	require.ErrorContains(t, err, "60.0 MiB free on the data disk, below the 100.0 MiB bound")
	require.Equal(t, 1.0, gauge("proxylens_storage_read_only"))
	require.Equal(t, float64(60<<20), gauge("proxylens_storage_free_bytes"))

	written, err = e.tryCommit(t, recs[100:200])
	require.ErrorIs(t, err, ErrDiskFull)
	require.False(t, written, "a refused batch is never applied")
	sealed, err := db.Seal()
	require.NoError(t, err)
	c := e.agg.Cut()
	require.ErrorIs(t, db.WriteCut(sealed, otelanalytics.NewStoreCut(c, e.dict, nil, e.next-1)), ErrDiskFull)
	e.agg.Restore(c) // as the pipeline does
	ls := labels.FromStrings("__name__", "node_load1", "instance", "a")
	app := db.Series().Appender(context.Background())
	_, err = app.Append(0, ls, t0.UnixMilli(), 1)
	require.NoError(t, err)
	require.ErrorIs(t, app.Commit(), ErrDiskFull)

	// Hysteresis: above the bound but under a quarter more, still read-only.
	free.Store(110 << 20)
	require.ErrorIs(t, db.CheckDisk(), ErrDiskFull)
	free.Store(130 << 20)
	require.NoError(t, db.CheckDisk())
	require.Zero(t, gauge("proxylens_storage_read_only"))
	require.Positive(t, gauge("proxylens_storage_writes_refused_total"))

	// A cut now writes everything sealed since the last checkpoint.
	written, err = e.tryCommit(t, recs[200:])
	require.NoError(t, err)
	require.True(t, written)
	app = db.Series().Appender(context.Background())
	_, err = app.Append(0, ls, t0.UnixMilli(), 1)
	require.NoError(t, err)
	require.NoError(t, app.Commit())
	e.cut(t)

	want := totals(e.agg, otelanalytics.FamilyRequests, e.dict)
	var sum float64
	for _, v := range want {
		sum += v[0]
	}
	require.Equal(t, 200.0, sum, "the 200 acknowledged records, not the 100 refused")
	e2 := reopened(t, e, dir)
	defer func() { require.NoError(t, e2.db.Close()) }()
	require.Equal(t, want, totals(e2.agg, otelanalytics.FamilyRequests, e2.dict))
}

// TestStartReadOnly: a store opened with too little space opens (reads
// served), refuses writes, leaves a cut's staged samples and the spare
// segment for later, and takes writes once space is back.
func TestStartReadOnly(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir)
	e.commit(t, requests(50, 3, t0, time.Second), nil, 1)
	want := totals(e.agg, otelanalytics.FamilyRequests, e.dict)
	require.NoError(t, e.db.Close()) // the batch is in the journal only

	var free atomic.Uint64
	free.Store(1 << 20)
	db, err := Open(dir, Options{Now: func() time.Time { return t0 }, MinFreeBytes: 64 << 20,
		FreeBytes: func(string) (uint64, error) { return free.Load(), nil }, DiskCheckInterval: time.Hour})
	require.NoError(t, err)
	defer func() { require.NoError(t, db.Close()) }()
	require.ErrorIs(t, db.Writable(), ErrDiskFull)
	dict, agg := otelanalytics.NewDict(0), otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, 15*time.Second, nil)
	next, err := otelanalytics.Restore(db, dict, agg)
	require.NoError(t, err)
	require.Equal(t, want, totals(agg, otelanalytics.FamilyRequests, dict), "the journal replays while read-only")
	require.True(t, db.Replayed())
	segs, err := listSegments(db.journalDir())
	require.NoError(t, err)
	require.Len(t, segs, 2, "the replayed segment and the new one; no spare while read-only")
	sealed, err := db.Seal()
	require.NoError(t, err)
	c := agg.Cut()
	require.ErrorIs(t, db.WriteCut(sealed, otelanalytics.NewStoreCut(c, dict, nil, next-1)), ErrDiskFull)
	agg.Restore(c)

	free.Store(1 << 30)
	require.NoError(t, db.CheckDisk())
	c = agg.Cut()
	sealed, err = db.Seal()
	require.NoError(t, err)
	require.NoError(t, db.WriteCut(sealed, otelanalytics.NewStoreCut(c, dict, nil, next-1)))
	require.False(t, db.Replayed())
}

// TestJournalFullDisk fills a real file system under the journal until it
// has no space left: an entry that does not fit is refused before it is
// queued (written is not called, so the aggregates never count it), the
// store turns read-only, and once files are deleted the journal goes on,
// with every acknowledged entry, and only those, loaded after a restart.
// It needs root, to mount a small tmpfs.
func TestJournalFullDisk(t *testing.T) {
	dir := mountTmpfs(t, "16m")
	e := open(t, dir)
	t.Cleanup(func() { _ = e.db.Close() }) // before the unmount, if the test failed
	filler := fillUp(t, filepath.Join(e.db.journalDir(), "filler"))

	// Batches fit in the segment's prefilled bytes, then one does not.
	acked, refused := 0, 0
	for i := 0; refused == 0; i++ {
		require.Less(t, i, 200, "no batch refused")
		written, err := e.tryCommit(t, requests(500, uint64(i), t0, time.Millisecond))
		if err != nil {
			require.ErrorIs(t, err, syscall.ENOSPC)
			require.False(t, written, "a refused entry is not applied")
			refused++
			continue
		}
		acked++
	}
	require.Positive(t, acked)
	require.ErrorIs(t, e.db.Writable(), ErrDiskFull, "a write that found no space makes the store read-only")
	_, err := e.tryCommit(t, requests(10, 999, t0, time.Second))
	require.ErrorIs(t, err, ErrDiskFull)

	require.NoError(t, os.Remove(filler))
	require.NoError(t, e.db.CheckDisk(), "no bound set: the next check that sees space resumes")
	for i := range 3 {
		written, err := e.tryCommit(t, requests(500, uint64(1000+i), t0, time.Millisecond))
		require.NoError(t, err, "the journal goes on after a refusal: no restart needed")
		require.True(t, written)
	}
	e.cut(t)
	want := totals(e.agg, otelanalytics.FamilyRequests, e.dict)
	e = reopened(t, e, dir)
	require.Equal(t, want, totals(e.agg, otelanalytics.FamilyRequests, e.dict))
	require.NoError(t, e.db.Close())
}

// mountTmpfs mounts a tmpfs of the given size on <new dir>/journal and
// unmounts it at the end of the test; it skips the test where that is not
// allowed. It returns the new directory.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	mountTmpfsAt(t, filepath.Join(dir, "journal"), size)
	return dir
}

// mountTmpfsAt mounts a tmpfs of the given size on dir, which it creates.
func mountTmpfsAt(t *testing.T, dir, size string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	require.NoError(t, os.Mkdir(dir, 0o750))
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (%v): %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
}

// TestSpareFullDisk: a start finds room for its journal segment but not
// for the spare after it. The store starts read-only instead of failing,
// the half-made spare is removed (left behind, every later attempt would
// find it existing and fail: the journal would stay stuck after space
// came back), and once files are deleted the next seal makes the segment
// itself and nothing acknowledged is lost.
func TestSpareFullDisk(t *testing.T) {
	dir := mountTmpfs(t, "16m")
	e := open(t, dir)
	t.Cleanup(func() { _ = e.db.Close() })
	e.commit(t, requests(200, 1, t0, time.Second), nil, 1)
	want := totals(e.agg, otelanalytics.FamilyRequests, e.dict)
	require.NoError(t, e.db.Close())
	// Leave room for one prefilled segment, not two.
	jdir := filepath.Join(dir, "journal")
	free, err := FreeBytes(jdir)
	require.NoError(t, err)
	filler := filepath.Join(jdir, "filler")
	require.NoError(t, os.WriteFile(filler, make([]byte, int(free)-journalPrefill-journalPrefill/2), 0o600))

	e = open(t, dir)
	require.Equal(t, want, totals(e.agg, otelanalytics.FamilyRequests, e.dict))
	require.ErrorIs(t, e.db.Writable(), ErrDiskFull, "no spare for lack of space: read-only")
	_, err = e.tryCommit(t, requests(10, 2, t0, time.Second))
	require.ErrorIs(t, err, ErrDiskFull)
	require.Len(t, e.segments(t), 2, "the replayed segment and the new one; no half-made spare")

	require.NoError(t, os.Remove(filler))
	require.NoError(t, e.db.CheckDisk())
	written, err := e.tryCommit(t, requests(300, 3, t0, time.Second))
	require.NoError(t, err)
	require.True(t, written)
	e.cut(t)
	want = totals(e.agg, otelanalytics.FamilyRequests, e.dict)
	e = reopened(t, e, dir)
	require.Equal(t, want, totals(e.agg, otelanalytics.FamilyRequests, e.dict))
	require.NoError(t, e.db.Close())
}

// fillUp writes a file at path until its file system is full.
func fillUp(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			require.ErrorIs(t, err, syscall.ENOSPC)
			break
		}
	}
	require.NoError(t, f.Close())
	return path
}

// TestPebbleFullDiskBallast fills a real file system under Pebble itself,
// with no bound to foresee it: the Pebble write that finds the disk full,
// which Pebble cannot survive (Logger.Fatalf on a WAL write, a panic in
// rotateWAL), deletes the ballast and is retried, so it succeeds and the
// store turns read-only; once the filler is deleted the ballast is made
// again and the store takes writes, every acknowledged sample kept.
func TestPebbleFullDiskBallast(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	mountTmpfsAt(t, dir, "64m")
	opts := Options{Now: func() time.Time { return t0 }, MemTableSize: 4 << 20, BallastBytes: 16 << 20, DiskCheckInterval: time.Hour}
	db, err := Open(dir, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	_, err = otelanalytics.Restore(db, otelanalytics.NewDict(0), otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, 15*time.Second, nil))
	require.NoError(t, err)
	fi, err := os.Stat(filepath.Join(dir, ballastName))
	require.NoError(t, err)
	require.Equal(t, int64(16<<20), fi.Size())
	filler := fillUp(t, filepath.Join(dir, "filler"))

	acked := 0
	commit := func(round int) error {
		app := db.Series().Appender(context.Background())
		for i := range 2000 {
			_, err := app.Append(0, labels.FromStrings("__name__", "node_load1", "instance", strconv.Itoa(i)), t0.UnixMilli()+int64(round)*1000, float64(round))
			require.NoError(t, err)
		}
		err := app.Commit()
		if err == nil {
			acked++
		}
		return err
	}
	for round := 0; db.Writable() == nil; round++ {
		require.Less(t, round, 500, "the disk never filled")
		require.NoError(t, commit(round), "a write the guard let through succeeds, the ballast deleted")
	}
	require.ErrorIs(t, db.Writable(), ErrDiskFull)
	_, err = os.Stat(filepath.Join(dir, ballastName))
	require.ErrorIs(t, err, os.ErrNotExist)
	require.ErrorIs(t, commit(1000), ErrDiskFull)
	require.ErrorIs(t, db.CheckDisk(), ErrDiskFull, "not writable again before the ballast can be made again")

	require.NoError(t, os.Remove(filler))
	require.NoError(t, db.CheckDisk())
	_, err = os.Stat(filepath.Join(dir, ballastName))
	require.NoError(t, err, "the ballast is back")
	require.NoError(t, commit(1001))
	require.NoError(t, db.Close())

	db, err = Open(dir, opts)
	require.NoError(t, err)
	got := read(t, db.Series(), math.MinInt64, math.MaxInt64, eq("instance", "7"))
	require.Len(t, got[labels.FromStrings("__name__", "node_load1", "instance", "7").String()], acked, "every acknowledged sample")
	require.NoError(t, db.Close())
}
