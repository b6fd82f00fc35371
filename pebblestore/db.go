package pebblestore

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"

	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/selfmetrics"
)

// DefaultCacheSize is the block cache's default size.
const DefaultCacheSize = 256 << 20

// Options configures a DB. The zero value is usable.
type Options struct {
	// Logger receives Pebble's own messages (nil: discarded).
	Logger *slog.Logger
	// Metrics receives the store's self-metrics (nil: a private registry).
	Metrics *selfmetrics.Registry
	// MemTableSize is the size of one memtable. Default 64 MiB.
	MemTableSize uint64
	// CacheSize is the size of the block cache, which holds decompressed
	// blocks for queries. Default 256 MiB.
	CacheSize int64
	// DisableCompression writes uncompressed blocks, so that tests can read
	// the files on disk byte for byte.
	DisableCompression bool
	// Now supplies the creation time of a new store (nil: time.Now).
	Now func() time.Time
	// Series configures the series store.
	Series SeriesOptions
	// Costs prices the cuts: proxy_cost_total increments and the
	// proxy_subscription_cost gauges are written with every cut (nil: no
	// cost series).
	Costs *otelanalytics.Costs
}

// DB is proxylens' store: a Pebble database in <dir>/pebble and the ingest
// journal in <dir>/journal.
type DB struct {
	db      *pebble.DB
	dir     string
	created time.Time
	log     *slog.Logger

	dict   *otelanalytics.Dict // set by Load
	j      *journal            // set by Load
	series *SeriesStore        // set by Load
	sopts  SeriesOptions
	costs  *otelanalytics.Costs

	mu         sync.Mutex
	checkpoint uint64 // last journal segment whose contents are in Pebble
	maxSeq     uint64 // highest batch sequence number committed
	tornSeg    uint64 // the segment that was being written at a crash, if any
	replayed   uint64 // the last segment replayed at Load, if any

	bufs         sync.Pool                    // *[]byte encode buffers
	journalSyncs *metrics.PrometheusHistogram // journal fdatasync latency

	// The Pebble batch of the cuts' writes (held under cutMu), kept from
	// cut to cut with its memory: a cut's batch is megabytes.
	cutBatch *pebble.Batch

	retentionMu sync.Mutex // serializes policy changes
	cutMu       sync.Mutex // held by a cut and by a backup's snapshot
	auditMu     sync.Mutex // orders audit entries; guards audit
	audit       auditState
}

// Open opens (creating if needed) the store in dir. Call Load before using it.
func Open(dir string, opts Options) (*DB, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	for _, sub := range []string{"pebble", "journal"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o750); err != nil {
			return nil, fmt.Errorf("create data dir %s: %w", dir, err)
		}
	}
	po := &pebble.Options{
		Logger:             pebbleLogger{log},
		MemTableSize:       64 << 20,
		FormatMajorVersion: pebble.FormatNewest,
		FS:                 pacedFS{vfs.Default},
	}
	if opts.MemTableSize > 0 {
		po.MemTableSize = opts.MemTableSize
	}
	cacheSize := opts.CacheSize
	if cacheSize <= 0 {
		cacheSize = DefaultCacheSize
	}
	cache := pebble.NewCache(cacheSize)
	defer cache.Unref() // the database holds its own reference
	po.Cache = cache
	if opts.DisableCompression {
		po.ApplyCompressionSettings(func() pebble.DBCompressionSettings { return pebble.DBCompressionNone })
	} else {
		po.ApplyCompressionSettings(func() pebble.DBCompressionSettings { return pebble.DBCompressionBalanced })
	}
	pdb, err := pebble.Open(filepath.Join(dir, "pebble"), po)
	if err != nil {
		return nil, fmt.Errorf("open pebble database in %s: %w", dir, err)
	}
	d := &DB{db: pdb, dir: dir, log: log, sopts: opts.Series, costs: opts.Costs}
	d.bufs.New = func() any { b := make([]byte, 0, 64<<10); return &b }
	if err := d.checkFormat(now()); err != nil {
		return nil, errors.Join(err, pdb.Close())
	}
	if err := d.loadAudit(); err != nil {
		return nil, errors.Join(fmt.Errorf("load audit log: %w", err), pdb.Close())
	}
	reg := selfmetrics.OrNew(opts.Metrics)
	reg.Gauge("proxylens_storage_bytes", "Disk space used by the Pebble database (the journal not included).", func() float64 {
		return float64(d.db.Metrics().DiskSpaceUsage())
	})
	reg.Gauge("proxylens_journal_bytes", "Bytes of ingest batches in the journal segment being written.", func() float64 {
		return float64(d.JournalBytes())
	})
	d.journalSyncs = reg.Histogram("proxylens_journal_sync_duration_seconds", "Time of one journal fdatasync; concurrent batches share one.",
		selfmetrics.LatencyBuckets)
	return d, nil
}

// checkFormat stamps a new database with the format version and creation
// time, and refuses a database of another version.
func (d *DB) checkFormat(now time.Time) error {
	v, closer, err := d.db.Get(keyFormat)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		it, err := d.db.NewIter(nil)
		if err != nil {
			return fmt.Errorf("check database is empty: %w", err)
		}
		empty := !it.First()
		if err := it.Close(); err != nil {
			return fmt.Errorf("check database is empty: %w", err)
		}
		if !empty {
			return fmt.Errorf("database in %s has data but no format version: not a proxylens database", d.dir)
		}
		b := d.db.NewBatch()
		defer b.Close()
		_ = b.Set(keyFormat, binary.AppendUvarint(nil, FormatVersion), nil)
		_ = b.Set(keyCreated, binary.BigEndian.AppendUint64(nil, uint64(now.UnixNano())), nil)
		if err := b.Commit(pebble.Sync); err != nil {
			return fmt.Errorf("write format version: %w", err)
		}
		d.created = time.Unix(0, now.UnixNano()).UTC()
		return nil
	case err != nil:
		return fmt.Errorf("read format version: %w", err)
	}
	ver, n := binary.Uvarint(v)
	_ = closer.Close()
	if n > 0 && ver == FormatVersion-1 {
		// Version 4 is version 5 without window values of several groups:
		// this version reads it as it is, and stamps it so that the
		// versions before, which would refuse such values, refuse it.
		if err := d.db.Set(keyFormat, binary.AppendUvarint(nil, FormatVersion), pebble.Sync); err != nil {
			return fmt.Errorf("upgrade format version: %w", err)
		}
		ver = FormatVersion
	}
	if n <= 0 || ver != FormatVersion {
		return fmt.Errorf("database in %s has format version %d; this proxylens reads version %d", d.dir, ver, FormatVersion)
	}
	c, closer, err := d.db.Get(keyCreated)
	if err != nil {
		return fmt.Errorf("read creation time: %w", err)
	}
	defer closer.Close()
	if len(c) != 8 {
		return fmt.Errorf("creation time: %w", errCorrupt)
	}
	d.created = time.Unix(0, int64(binary.BigEndian.Uint64(c))).UTC()
	return nil
}

// Created returns when the database was created: the start of every
// cumulative counter.
func (d *DB) Created() time.Time { return d.created }

// Dir returns the database directory.
func (d *DB) Dir() string { return d.dir }

// Close closes the journal and the database. Every acknowledged batch is
// already synced; a final cut (the pipeline's Shutdown) is not required for
// durability, only to spare the next start a journal replay.
func (d *DB) Close() error {
	if d.db == nil {
		return nil
	}
	var errs []error
	if d.j != nil {
		errs = append(errs, d.j.close())
	}
	d.cutMu.Lock()
	if d.cutBatch != nil {
		errs = append(errs, d.cutBatch.Close())
		d.cutBatch = nil
	}
	d.cutMu.Unlock()
	if err := d.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close pebble database in %s: %w", d.dir, err))
	}
	d.db = nil
	return errors.Join(errs...)
}

func (d *DB) journalDir() string { return filepath.Join(d.dir, "journal") }

// Flush writes Pebble's memtables to sstables. Durability does not need
// it; tests that inspect the files on disk and backups do.
func (d *DB) Flush() error {
	if err := d.db.Flush(); err != nil {
		return fmt.Errorf("flush memtables: %w", err)
	}
	return nil
}

// Load restores the dictionary and the aggregate totals into dict and agg,
// then replays the journal segments no cut has written to Pebble yet, so
// the aggregates hold every batch acknowledged before the last stop or
// crash. It opens a new journal segment and returns the next batch
// sequence number.
func (d *DB) Load(dict *otelanalytics.Dict, agg *otelanalytics.Aggregator) (uint64, error) {
	if d.j != nil {
		return 0, errors.New("store already loaded")
	}
	d.dict = dict
	if err := d.scan([]byte{prefixDict}, func(k, v []byte) error {
		if len(k) != 5 {
			return fmt.Errorf("dictionary key of %d bytes: %w", len(k), errCorrupt)
		}
		return dict.Load(otelanalytics.DictEntry{ID: binary.BigEndian.Uint32(k[1:]), Str: string(v)})
	}); err != nil {
		return 0, fmt.Errorf("load dictionary: %w", err)
	}
	var vals []float64
	if err := d.scan([]byte{prefixTotals}, func(k, v []byte) error {
		f, key, err := decodeTotalsKey(k)
		if err != nil {
			return err
		}
		if vals, err = decodeFloats(v, vals[:0]); err != nil {
			return err
		}
		return agg.LoadTotals(f, key, vals)
	}); err != nil {
		return 0, fmt.Errorf("load aggregate totals: %w", err)
	}
	if v, closer, err := d.db.Get(keyCheckpoint); err == nil {
		rd := reader{b: v}
		d.checkpoint, d.maxSeq = rd.uvarint(), rd.uvarint()
		_ = closer.Close()
		if rd.err != nil {
			return 0, fmt.Errorf("journal checkpoint: %w", errCorrupt)
		}
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return 0, fmt.Errorf("read journal checkpoint: %w", err)
	}

	segs, err := listSegments(d.journalDir())
	if err != nil {
		return 0, fmt.Errorf("list journal: %w", err)
	}
	// Segments up to the checkpoint are in Pebble already: a crash came
	// between the checkpoint and their removal.
	if err := removeSegments(d.journalDir(), d.checkpoint, nil); err != nil {
		return 0, err
	}
	// The newest segments may hold no entries: the spare prepared for the
	// next cut (a new file, or a recycled one holding an older segment's
	// stale chunks), or a segment started just before a stop. The newest
	// segment with entries is the one whose tail a crash may have torn.
	for len(segs) > 0 && segs[len(segs)-1] > d.checkpoint {
		n := segs[len(segs)-1]
		// Read up to the first entry only: the replay below reads the rest.
		err := readSegment(d.journalDir(), n, true, func([]byte) error { return errHasEntries })
		if errors.Is(err, errHasEntries) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("replay journal: %w", err)
		}
		if err := os.Remove(filepath.Join(d.journalDir(), segmentName(n))); err != nil {
			return 0, fmt.Errorf("remove empty journal segment: %w", err)
		}
		segs = segs[:len(segs)-1]
	}
	next := d.checkpoint + 1
	var e journalEntry
	replayed := 0
	for i, n := range segs {
		if n <= d.checkpoint {
			continue
		}
		last := i == len(segs)-1
		if last {
			d.tornSeg = n
		}
		if err := readSegment(d.journalDir(), n, last, func(entry []byte) error {
			if err := decodeJournalEntry(entry, &e); err != nil {
				return err
			}
			for _, de := range e.dict {
				if err := dict.Load(de); err != nil {
					return err
				}
			}
			agg.Apply(e.recs, e.refs)
			replayed += len(e.recs)
			d.maxSeq = max(d.maxSeq, e.seq)
			return nil
		}); err != nil {
			return 0, fmt.Errorf("replay journal: %w", err)
		}
		next = n + 1
		d.replayed = n
	}
	if replayed > 0 {
		d.log.Info("replayed ingest journal", "records", replayed, "segments", len(segs))
	}
	if d.series, err = d.Series(d.sopts); err != nil {
		return 0, err
	}
	if d.j, err = openJournal(d.journalDir(), next, d.journalSyncs); err != nil {
		return 0, err
	}
	return d.maxSeq + 1, nil
}

// errHasEntries stops the read of a journal segment at its first entry.
var errHasEntries = errors.New("journal segment has entries")

// SeriesStore returns the series store (after Load).
func (d *DB) SeriesStore() *SeriesStore { return d.series }

// scan calls fn for every key with the given prefix, in order. k and v are
// only valid during the call.
func (d *DB) scan(prefix []byte, fn func(k, v []byte) error) error {
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return errors.Join(err, it.Close())
		}
		if err := fn(it.Key(), v); err != nil {
			return errors.Join(err, it.Close())
		}
	}
	return it.Close()
}

// prefixEnd returns the smallest key after every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// CommitBatch implements otelanalytics.Store: it appends the batch to the
// journal, calls written, and returns once the journal is synced.
func (d *DB) CommitBatch(b *otelanalytics.Batch, written func()) error {
	bp := d.bufs.Get().(*[]byte)
	defer d.bufs.Put(bp)
	*bp = appendJournalEntry((*bp)[:0], b)
	if err := d.j.append(*bp, written); err != nil {
		return err
	}
	d.mu.Lock()
	d.maxSeq = max(d.maxSeq, b.Seq)
	d.mu.Unlock()
	return nil
}

// JournalBytes implements otelanalytics.Store.
func (d *DB) JournalBytes() int64 {
	if d.j == nil {
		return 0
	}
	return d.j.bytes()
}

// recordBytes flushes and compacts the records and returns their size on
// disk, for measurements.
func (d *DB) recordBytes() (uint64, error) {
	start, end := []byte{prefixRecord}, []byte{prefixRecord + 1}
	if err := d.db.Flush(); err != nil {
		return 0, err
	}
	if err := d.db.Compact(context.Background(), start, end, true); err != nil {
		return 0, err
	}
	return d.db.EstimateDiskUsage(start, end)
}

// SeriesBytes flushes and compacts the series store and returns its size
// on disk: samples (the index, chunks and window bases) and rollups (the
// window summaries and the daily rollup), for measurements.
func (d *DB) SeriesBytes() (samples, summaries uint64, err error) {
	if err := d.db.Flush(); err != nil {
		return 0, 0, err
	}
	for _, p := range []byte{prefixBases, prefixChunks, prefixPostings, prefixSeries, prefixSummaries, prefixDays} {
		start, end := []byte{p}, []byte{p + 1}
		if err := d.db.Compact(context.Background(), start, end, true); err != nil {
			return 0, 0, err
		}
		n, err := d.db.EstimateDiskUsage(start, end)
		if err != nil {
			return 0, 0, err
		}
		if p == prefixSummaries || p == prefixDays {
			summaries += n
		} else {
			samples += n
		}
	}
	return samples, summaries, nil
}

// Replayed implements otelanalytics.Store.
func (d *DB) Replayed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.replayed > d.checkpoint
}

// Seal implements otelanalytics.Store: it closes the journal segment being
// written and starts the next.
func (d *DB) Seal() (uint64, error) { return d.j.seal() }

// recordBatchBytes bounds one Pebble batch of materialised records.
const recordBatchBytes = 4 << 20

// WriteCut implements otelanalytics.Store. It writes the kept records of
// the journal segments up to sealed into Pebble, sorted by key (cheap
// memtable inserts), then, in one synced batch, the cut's totals and the
// new journal checkpoint; only then are the segments removed. A crash at
// any point leaves either the old checkpoint, and the segments are
// replayed and written again (the same keys, the same values), or the new
// one.
func (d *DB) WriteCut(c *otelanalytics.Cut, sealed uint64) (err error) {
	d.cutMu.Lock()
	defer d.cutMu.Unlock()
	// Then create the next spare segment, from the file of a segment this
	// cut retires: ingest goes on meanwhile.
	defer func() {
		if perr := d.j.prepare(); err == nil {
			err = perr
		}
	}()
	segs, err := listSegments(d.journalDir())
	if err != nil {
		return fmt.Errorf("list journal: %w", err)
	}
	d.mu.Lock()
	from, tornSeg := d.checkpoint, d.tornSeg
	d.mu.Unlock()
	for _, n := range segs {
		if n <= from || n > sealed {
			continue
		}
		if err := d.materialize(n, n == tornSeg); err != nil {
			return err
		}
	}

	// The cut's increments by event time go to their series in the same
	// batch as the totals and the checkpoint: all or nothing.
	app := d.series.newAppender()
	if err := c.Increments(d.dict, app.AppendIncrement); err != nil {
		return fmt.Errorf("cut increments: %w", err)
	}
	if err := d.priceCut(c, app); err != nil {
		return fmt.Errorf("cut costs: %w", err)
	}
	wb := d.batch()
	defer wb.Reset()
	d.series.commitMu.Lock()
	defer d.series.commitMu.Unlock()
	applyHeads, err := app.write(wb)
	committed := false
	defer func() {
		if !committed {
			app.invalidate()
		}
	}()
	if err != nil {
		return fmt.Errorf("cut increments: %w", err)
	}
	var key, val []byte
	for f := range c.Families {
		fc := &c.Families[f]
		w := otelanalytics.Family(f).Width()
		for i := range fc.Keys {
			key = appendTotalsKey(key[:0], otelanalytics.Family(f), &fc.Keys[i])
			val = appendFloats(val[:0], fc.Totals[i*w:(i+1)*w])
			if err := wb.Set(key, val, nil); err != nil {
				return fmt.Errorf("add totals: %w", err)
			}
		}
	}
	d.mu.Lock()
	maxSeq := d.maxSeq
	d.mu.Unlock()
	cp := binary.AppendUvarint(binary.AppendUvarint(nil, sealed), maxSeq)
	if err := wb.Set(keyCheckpoint, cp, nil); err != nil {
		return fmt.Errorf("add journal checkpoint: %w", err)
	}
	if err := wb.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("commit cut: %w", err)
	}
	committed = true
	applyHeads()
	d.mu.Lock()
	d.checkpoint = sealed
	d.mu.Unlock()
	return d.j.retire(sealed)
}

// priceCut adds the cut's costs to app: proxy_cost_total increments by
// the model valid at each interval, and the subscription gauges at every
// interval end the cut has increments for (the server also writes them at
// every flush interval, traffic or not).
func (d *DB) priceCut(c *otelanalytics.Cut, app *appender) error {
	if d.costs == nil {
		return nil
	}
	book := d.costs.Book()
	if book == nil {
		return nil
	}
	if err := c.CostIncrements(d.dict, book, app.AppendIncrement); err != nil {
		return err
	}
	times := map[int64]struct{}{}
	for f := range c.Families {
		for _, t := range c.Families[f].IncTimes {
			times[t/1e6] = struct{}{}
		}
	}
	app.anyAge = true
	for t := range times {
		err := book.SubscriptionSamples(t, func(ls labels.Labels, v float64) error {
			_, err := app.Append(0, ls, 0, t, v, nil, nil, storage.AppendV2Options{})
			if errors.Is(err, storage.ErrDuplicateSampleForTimestamp) {
				return nil // a price changed for a time already written: history stays
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// batch returns the cut's Pebble batch, empty; the caller holds cutMu and
// resets it when done.
func (d *DB) batch() *pebble.Batch {
	if d.cutBatch == nil {
		d.cutBatch = d.db.NewBatch(pebble.WithMaxRetainedSizeBytes(cutBatchRetained))
	}
	return d.cutBatch
}

// cutBatchRetained bounds the memory the cut's batch keeps between cuts.
const cutBatchRetained = 64 << 20

// materialize writes the dictionary entries and kept records of journal
// segment n into Pebble, without syncing (the cut's final batch syncs).
func (d *DB) materialize(n uint64, torn bool) error {
	// A kept record, sorted by its key's fields: end time, batch, index.
	type kept struct {
		end      int64
		seq      uint64
		idx      uint32
		off, len uint32 // value bytes in arena
	}
	var (
		arena []byte
		recs  []kept
		dict  []otelanalytics.DictEntry
		e     journalEntry
	)
	if fi, err := os.Stat(filepath.Join(d.journalDir(), segmentName(n))); err == nil {
		arena = make([]byte, 0, fi.Size()/4) // kept records are a part of the journal
	}
	err := readSegment(d.journalDir(), n, torn, func(entry []byte) error {
		if err := decodeJournalEntry(entry, &e); err != nil {
			return err
		}
		dict = append(dict, e.dict...)
		for i := range e.recs {
			if !e.kept[i] {
				continue
			}
			r := &e.recs[i]
			r.SetStrings(&e.inline[i])
			off := len(arena)
			arena = appendRecord(arena, r, &e.refs[i], r.Weight/e.prob, 0, true)
			recs = append(recs, kept{end: r.EndTime, seq: e.seq, idx: uint32(i), off: uint32(off), len: uint32(len(arena) - off)})
		}
		return nil
	})
	if err != nil {
		return err
	}
	slices.SortFunc(recs, func(a, b kept) int {
		if c := cmp.Compare(a.end, b.end); c != 0 {
			return c
		}
		if c := cmp.Compare(a.seq, b.seq); c != 0 {
			return c
		}
		return cmp.Compare(a.idx, b.idx)
	})
	wb := d.batch()
	defer wb.Reset()
	for _, de := range dict {
		if err := wb.Set(dictKey(de.ID), []byte(de.Str), nil); err != nil {
			return fmt.Errorf("add dictionary entry: %w", err)
		}
	}
	key := make([]byte, 0, recordKeyLen)
	for _, r := range recs {
		key = appendRecordKey(key[:0], r.end, r.seq, r.idx)
		if err := wb.Set(key, arena[r.off:r.off+r.len], nil); err != nil {
			return fmt.Errorf("add record: %w", err)
		}
		if wb.Len() >= recordBatchBytes {
			if err := wb.Commit(pebble.NoSync); err != nil {
				return fmt.Errorf("write records: %w", err)
			}
			wb.Reset()
		}
	}
	if err := wb.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("write records: %w", err)
	}
	return nil
}

// pebbleLogger sends Pebble's messages to slog.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug("pebble: " + fmt.Sprintf(format, args...))
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error("pebble: " + fmt.Sprintf(format, args...))
}

// Fatalf is called by Pebble on an invariant violation it cannot survive;
// Pebble expects it not to return.
func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log.Error("pebble fatal: " + msg)
	panic("pebble: " + msg)
}
