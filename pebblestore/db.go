package pebblestore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/proxylens/proxylens/internal/selfmetrics"
	"github.com/proxylens/proxylens/otelanalytics"
)

// Options configures a DB. The zero value is usable.
type Options struct {
	// Logger receives Pebble's own messages (nil: discarded).
	Logger *slog.Logger
	// Metrics receives the store's self-metrics (nil: a private registry).
	Metrics *selfmetrics.Registry
	// MemTableSize is the size of one memtable. Default 64 MiB.
	MemTableSize uint64
	// DisableCompression writes uncompressed blocks, so that tests can read
	// the files on disk byte for byte.
	DisableCompression bool
	// Now supplies the creation time of a new store (nil: time.Now).
	Now func() time.Time
}

// DB is proxylens' Pebble database.
type DB struct {
	db      *pebble.DB
	dir     string
	created time.Time
	log     *slog.Logger

	dict *otelanalytics.Dict // set by Load, for record scans

	seqMu  sync.Mutex
	maxSeq uint64 // highest journal seq accounted for by a written cut

	bufs sync.Pool // *[]byte encode buffers
}

// Open opens (creating if needed) the database in dir.
func Open(dir string, opts Options) (*DB, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create data dir %s: %w", dir, err)
	}
	po := &pebble.Options{
		Logger:             pebbleLogger{log},
		MemTableSize:       64 << 20,
		FormatMajorVersion: pebble.FormatNewest,
	}
	if opts.MemTableSize > 0 {
		po.MemTableSize = opts.MemTableSize
	}
	if opts.DisableCompression {
		po.ApplyCompressionSettings(func() pebble.DBCompressionSettings { return pebble.DBCompressionNone })
	} else {
		po.ApplyCompressionSettings(func() pebble.DBCompressionSettings { return pebble.DBCompressionBalanced })
	}
	pdb, err := pebble.Open(dir, po)
	if err != nil {
		return nil, fmt.Errorf("open pebble database %s: %w", dir, err)
	}
	d := &DB{db: pdb, dir: dir, log: log}
	d.bufs.New = func() any { b := make([]byte, 0, 64<<10); return &b }
	if err := d.checkFormat(now()); err != nil {
		return nil, errors.Join(err, pdb.Close())
	}
	reg := selfmetrics.OrNew(opts.Metrics)
	reg.Gauge("proxylens_storage_bytes", "Disk space used by the Pebble database.", func() float64 {
		return float64(d.db.Metrics().DiskSpaceUsage())
	})
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

// Close flushes nothing (every acknowledged write is already synced) and
// closes the database.
func (d *DB) Close() error {
	if d.db == nil {
		return nil
	}
	err := d.db.Close()
	d.db = nil
	if err != nil {
		return fmt.Errorf("close pebble database %s: %w", d.dir, err)
	}
	return nil
}

// Load restores the dictionary and the aggregate totals into dict and agg,
// then replays the journal entries that no cut accounted for yet, so the
// aggregates hold every span acknowledged before the last stop or crash. It
// returns the next journal sequence number.
func (d *DB) Load(dict *otelanalytics.Dict, agg *otelanalytics.Aggregator) (uint64, error) {
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

	if v, closer, err := d.db.Get(keySeq); err == nil {
		d.maxSeq, _ = binary.Uvarint(v)
		_ = closer.Close()
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return 0, fmt.Errorf("read journal sequence: %w", err)
	}
	next := d.maxSeq + 1
	var recs []otelanalytics.Record
	var refs []otelanalytics.Refs
	replayed := 0
	if err := d.scan([]byte{prefixJournal}, func(k, v []byte) error {
		if len(k) != 9 {
			return fmt.Errorf("journal key of %d bytes: %w", len(k), errCorrupt)
		}
		seq := binary.BigEndian.Uint64(k[1:])
		var err error
		recs, refs, err = decodeJournal(v, recs[:0], refs[:0])
		if err != nil {
			return fmt.Errorf("journal entry %d: %w", seq, err)
		}
		agg.Apply(seq, recs, refs)
		replayed += len(recs)
		next = max(next, seq+1)
		return nil
	}); err != nil {
		return 0, fmt.Errorf("replay journal: %w", err)
	}
	if replayed > 0 {
		d.log.Info("replayed ingest journal", "records", replayed)
	}
	return next, nil
}

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

// CommitBatch implements otelanalytics.Store.
func (d *DB) CommitBatch(b *otelanalytics.Batch) error {
	bp := d.bufs.Get().(*[]byte)
	defer d.bufs.Put(bp)
	buf := (*bp)[:0]

	wb := d.db.NewBatch()
	defer wb.Close()
	for _, e := range b.Dict {
		if err := wb.Set(dictKey(e.ID), []byte(e.Str), nil); err != nil {
			return fmt.Errorf("add dictionary entry: %w", err)
		}
	}
	buf = appendJournal(buf, b.Records, b.Refs)
	if err := wb.Set(journalKey(b.Seq), buf, nil); err != nil {
		return fmt.Errorf("add journal entry: %w", err)
	}
	for _, i := range b.Kept {
		r := &b.Records[i]
		start := len(buf)
		buf = appendRecordKey(buf, r.EndTime, b.Seq, uint32(i))
		mid := len(buf)
		buf = appendRecord(buf, r, &b.Refs[i], r.Weight/b.Probability)
		if err := wb.Set(buf[start:mid], buf[mid:], nil); err != nil {
			return fmt.Errorf("add record: %w", err)
		}
	}
	*bp = buf
	if err := wb.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("commit batch %d: %w", b.Seq, err)
	}
	return nil
}

// WriteCut implements otelanalytics.Store: it writes the new totals of the
// cut's series and deletes the journal entries the cut accounts for, in one
// synced write.
func (d *DB) WriteCut(c *otelanalytics.Cut) error {
	wb := d.db.NewBatch()
	defer wb.Close()
	var key []byte
	var val []byte
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
	// Increments by event time (fc.IncKeys…) are the hand-off to the series
	// store; see docs/architecture.md.

	seqs := append([]uint64(nil), c.Journal...)
	slices.Sort(seqs)
	for i := 0; i < len(seqs); {
		j := i + 1
		for j < len(seqs) && seqs[j] == seqs[j-1]+1 {
			j++
		}
		if j-i == 1 {
			if err := wb.Delete(journalKey(seqs[i]), nil); err != nil {
				return fmt.Errorf("delete journal entry: %w", err)
			}
		} else if err := wb.DeleteRange(journalKey(seqs[i]), journalKey(seqs[j-1]+1), nil); err != nil {
			return fmt.Errorf("delete journal entries: %w", err)
		}
		i = j
	}
	d.seqMu.Lock()
	defer d.seqMu.Unlock()
	maxSeq := d.maxSeq
	if len(seqs) > 0 {
		maxSeq = max(maxSeq, seqs[len(seqs)-1])
	}
	if err := wb.Set(keySeq, binary.AppendUvarint(nil, maxSeq), nil); err != nil {
		return fmt.Errorf("add journal sequence: %w", err)
	}
	if err := wb.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("commit cut: %w", err)
	}
	d.maxSeq = maxSeq
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
