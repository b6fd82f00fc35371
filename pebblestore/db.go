package pebblestore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/proxylens/proxylens/internal/varint"
	"github.com/proxylens/proxylens/selfmetrics"
)

// errCorrupt marks a stored value that does not decode.
var errCorrupt = varint.ErrCorrupt

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
	// MinFreeBytes is the free space on the data directory's file system
	// below which the store turns read-only (space.go): ingest batches,
	// cuts and series commits are refused with ErrDiskFull until a check
	// finds a quarter more free. Zero: no bound (a write that finds no
	// space still turns the store read-only until the next check).
	MinFreeBytes uint64
	// FreeBytes returns the free bytes of the file system that holds dir
	// (nil: FreeBytes, statfs); tests drive the guard with it.
	FreeBytes func(dir string) (uint64, error)
	// DiskCheckInterval is how often the free space is checked, besides
	// before each cut. Default 1s.
	DiskCheckInterval time.Duration
	// BallastBytes is the size of the ballast file <dir>/ballast, deleted
	// when a Pebble write finds the disk full so that the write succeeds
	// (space.go). Zero: no ballast.
	BallastBytes int64
}

// DB is proxylens' store: a Pebble database in <dir>/pebble and the ingest
// journal in <dir>/journal. See the package comment for its locks.
type DB struct {
	db      *pebble.DB
	dir     string
	created time.Time
	log     *slog.Logger
	series  *SeriesStore // the one series store over the database's series keys

	j *journal // set by Load

	mu         sync.Mutex
	checkpoint uint64 // last journal segment whose contents are in Pebble
	seq        uint64 // the caller's sequence number kept with the checkpoint
	tornSeg    uint64 // the segment that was being written at a crash, if any
	replayed   uint64 // the last segment replayed at Load, if any

	journalSyncs *metrics.PrometheusHistogram // journal fdatasync latency
	guard        *diskGuard                   // read-only while the disk is short of space

	// The Pebble batch of the cuts' records (held under cutMu), kept from
	// cut to cut with its memory: a few megabytes.
	cutBatch *pebble.Batch
	// pieces bounds what a cut stages and applies at once (cut_pieces.go).
	pieces pieceLimits

	retentionMu sync.Mutex // serializes policy changes
	cutMu       sync.Mutex // held by a cut and by a backup's snapshot
	auditMu     sync.Mutex // orders audit entries; guards audit
	audit       auditState
}

// Open opens (creating if needed) the store in dir and loads its series
// index. Call Load before ingesting into it.
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
	}
	if opts.MemTableSize > 0 {
		po.MemTableSize = opts.MemTableSize
	}
	cacheSize := opts.CacheSize
	if cacheSize <= 0 {
		cacheSize = DefaultCacheSize
	}
	reg := selfmetrics.OrNew(opts.Metrics)
	guard := newDiskGuard(dir, opts, log, reg)
	// Before Pebble writes anything: a start with too little space opens
	// read-only (queries served, writes refused) rather than crashing at
	// its first write.
	_ = guard.check()
	// A Pebble write that finds the disk full anyway deletes the ballast
	// and is retried once, instead of stopping the process.
	po.FS = pacedFS{vfs.OnDiskFull(vfs.Default, guard.onDiskFull)}
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
	d := &DB{db: pdb, dir: dir, log: log, pieces: defaultPieces, guard: guard}
	if err := d.checkFormat(now()); err != nil {
		return nil, errors.Join(err, pdb.Close())
	}
	if err := d.loadAudit(); err != nil {
		return nil, errors.Join(fmt.Errorf("load audit log: %w", err), pdb.Close())
	}
	if opts.Series.Now == nil {
		opts.Series.Now = now
	}
	if d.series, err = openSeries(pdb, opts.Series); err != nil {
		return nil, errors.Join(err, pdb.Close())
	}
	d.series.guard = guard
	guard.start(opts.DiskCheckInterval)
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
	if n > 0 && (ver == 4 || ver == 5) {
		// Versions 4 and 5 kept the hourly summaries in u: they move to h.
		if err := d.upgrade(ver); err != nil {
			return fmt.Errorf("upgrade format version %d to %d: %w", ver, FormatVersion, err)
		}
		ver = FormatVersion
	}
	if n > 0 && ver >= 6 && ver <= 9 {
		// Version 6 is version 7 without the counter summaries of sample
		// series' closed windows (a window without one is read from its
		// samples), version 7 is version 8 without a cut's staged samples
		// (the z key space), version 8 is version 9 without counter
		// summaries that hold their window's second sample (0x82), version
		// 9 is version 10 without packed chunks (packed.go): this version
		// reads them as they are, and stamps them so that the versions
		// before, which would rewrite a window without updating its
		// summary, ignore staged samples, or fail on a 0x82 summary or a
		// packed chunk, refuse it.
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
	d.guard.close()
	var errs []error
	if d.j != nil {
		errs = append(errs, d.j.close())
	}
	d.cutMu.Lock()
	if d.cutBatch != nil {
		errs = append(errs, d.cutBatch.Close())
		d.cutBatch = nil
	}
	// A cut whose apply failed leaves its view up (cut_view.go).
	errs = append(errs, d.series.endCutView())
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

// Series returns the series store.
func (d *DB) Series() *SeriesStore { return d.series }

// scan calls fn for every key with the given prefix, in order. k and v are
// only valid during the call.
func (d *DB) scan(prefix []byte, fn func(k, v []byte) error) error {
	return scan(d.db, prefix, fn)
}

// scan calls fn for every key of r with the given prefix, in order. k and v
// are only valid during the call.
func scan(r pebble.Reader, prefix []byte, fn func(k, v []byte) error) error {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
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

// SeriesBytes flushes and compacts the series store and returns its size
// on disk: samples (the index, chunks and window bases) and rollups (the
// window summaries and the daily rollup), for measurements.
func (d *DB) SeriesBytes() (samples, summaries uint64, err error) {
	if err := d.db.Flush(); err != nil {
		return 0, 0, err
	}
	for _, p := range []byte{prefixBases, prefixChunks, prefixSeries, prefixSummaries, prefixHours, prefixDays} {
		start, end := []byte{p}, []byte{p + 1}
		if err := d.db.Compact(context.Background(), start, end, true); err != nil {
			return 0, 0, err
		}
		n, err := d.db.EstimateDiskUsage(start, end)
		if err != nil {
			return 0, 0, err
		}
		if p == prefixSummaries || p == prefixHours || p == prefixDays {
			summaries += n
		} else {
			samples += n
		}
	}
	return samples, summaries, nil
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
