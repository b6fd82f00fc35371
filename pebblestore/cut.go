package pebblestore

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
)

// Cut is what WriteCut writes, as the ingest pipeline (package
// otelanalytics) hands it over. It is an alias of an interface literal,
// not a named interface: otelanalytics declares the very same literal as
// otelanalytics.StoreCut, and Go treats the two as one type, so that *DB
// implements otelanalytics.Store without either package importing the
// other. Its methods take only the standard library's and Prometheus'
// types: this package stores bytes and series and never reads what the
// pipeline encodes.
type Cut = interface {
	// Seq is kept with the journal checkpoint and returned by Load.
	Seq() uint64
	// Records calls dict for every dictionary entry and record for every
	// record to store that one journal entry holds: its end time (Unix
	// ns), batch sequence number and index in the batch, which make its
	// key, and its value (valid during the call only).
	Records(entry []byte, dict func(id uint32, s string) error, record func(end int64, seq uint64, idx uint32, value []byte) error) error
	// Write hands over the cut: totals for the cumulative totals of every
	// series that changed (key and value), increment for every increment
	// of an increment series and sample for every sample of a sample
	// series, of any age (times in Unix milliseconds; ls is valid during
	// the call only).
	Write(totals func(key, value []byte) error, increment, sample func(ls labels.Labels, t int64, v float64) error) error
}

// CommitBatch appends one journal entry, calls written, and returns once
// the journal is synced (see otelanalytics.Store).
// While the store is read-only (a full disk) it refuses the batch with
// ErrDiskFull before writing anything.
func (d *DB) CommitBatch(entry []byte, written func()) error {
	if err := d.guard.refuse(); err != nil {
		return err
	}
	err := d.j.append(entry, written)
	if err != nil && isNoSpace(err) {
		d.guard.noSpace(err)
	}
	return err
}

// JournalBytes returns the size of the journal segment being written.
func (d *DB) JournalBytes() int64 {
	if d.j == nil {
		return 0
	}
	return d.j.bytes()
}

// Replayed reports whether Load replayed journal entries that no cut has
// written yet.
func (d *DB) Replayed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.replayed > d.checkpoint
}

// Seal closes the journal segment being written and starts the next.
func (d *DB) Seal() (uint64, error) {
	n, err := d.j.seal()
	if err != nil && isNoSpace(err) {
		d.guard.noSpace(err)
	}
	return n, err
}

// recordBatchBytes bounds one Pebble batch of materialised records.
const recordBatchBytes = 4 << 20

// WriteCut writes the records and dictionary entries that c makes of the
// entries of the journal segments up to sealed into Pebble, sorted by key
// (cheap memtable inserts); stages the cut's series samples; then writes,
// in one synced batch, the cut's totals and the new journal checkpoint,
// and applies the staged samples in bounded pieces (cut_pieces.go); only
// then are the segments removed. A crash before the checkpoint leaves the
// old one, and the segments are replayed and written again (the same
// keys, the same values); a crash after it leaves the samples not
// applied yet staged, and Load applies them. Once the checkpoint is
// written WriteCut returns nil: a piece that fails is logged and left
// staged for the next cut, which applies it first.
func (d *DB) WriteCut(sealed uint64, c Cut) (err error) {
	d.cutMu.Lock()
	defer d.cutMu.Unlock()
	// A cut writes megabytes: not while the disk is short of space. The
	// sealed segments keep what it would have written.
	if err := d.guard.refuseChecked(); err != nil {
		return err
	}
	// Then create the next spare segment, from the file of a segment this
	// cut retires: ingest goes on meanwhile. A spare that cannot be made
	// does not fail the cut (once its checkpoint is written, the pipeline
	// must not write it again): the next seal makes the segment itself.
	defer func() {
		if perr := d.j.prepare(); perr != nil {
			if isNoSpace(perr) {
				d.guard.noSpace(perr)
			}
			d.log.Warn("next journal segment not prepared; the next cut creates it", "err", perr)
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
		if err := d.materializeLocked(c, n, n == tornSeg); err != nil {
			return err
		}
	}

	// A cut before this one whose staged samples could not all be
	// applied: first those (its checkpoint is written, the journal no
	// longer holds them).
	if pending, err := d.stagedPending(); err != nil {
		return err
	} else if pending {
		if err := d.applyStagedLocked(); err != nil {
			return fmt.Errorf("apply the previous cut's series: %w", err)
		}
	}

	// The cut's series samples are staged in bounded batches, then the
	// totals, the checkpoint and the mark that staged samples wait go in
	// one synced batch, then the staged samples are applied in bounded
	// pieces (cut_pieces.go). Past the checkpoint the cut is written: a
	// crash, or a failed piece, leaves the rest staged for Load or the
	// next cut to apply.
	if d.liveCut(c) {
		return d.writeWholeLocked(sealed, c)
	}
	g := newStager(d)
	wb := d.db.NewBatch()
	defer wb.Close() // not kept: its size follows the series that changed
	var key []byte
	err = c.Write(func(k, v []byte) error {
		key = append(append(key[:0], prefixTotals), k...)
		return wb.Set(key, v, nil)
	}, g.increment, g.sample)
	if err != nil {
		return err
	}
	cp := binary.AppendUvarint(binary.AppendUvarint(nil, sealed), c.Seq())
	if err := g.flush(); err != nil {
		return err
	}
	if err := wb.Set(keyCheckpoint, cp, nil); err != nil {
		return fmt.Errorf("add journal checkpoint: %w", err)
	}
	if g.samples > 0 {
		if err := wb.Set(keyCutApply, binary.AppendUvarint(nil, sealed), nil); err != nil {
			return fmt.Errorf("add cut apply marker: %w", err)
		}
	}
	// Queries read the cut's series as they are now until every piece
	// is applied (cut_view.go).
	if g.samples > 0 {
		d.series.beginCutView(g.labels())
	}
	if err := wb.Commit(pebble.Sync); err != nil {
		return errors.Join(fmt.Errorf("commit cut: %w", err), d.series.endCutView())
	}
	d.mu.Lock()
	d.checkpoint, d.seq = sealed, c.Seq()
	d.mu.Unlock()
	if g.samples > 0 {
		if err := d.applyStagedLocked(); err != nil {
			// Not an error of the cut: it is committed, and the pipeline
			// must not write its increments again.
			d.log.Error("cut's series not all written; the rest stays staged for the next cut", "err", err)
		}
	}
	d.series.noteCheckpoint(sealed)
	return d.j.retire(sealed)
}

// liveCut reports whether c hands over nothing older than the
// out-of-order window of the store's clock (a cut of live traffic): each
// of its samples lands at the end of its series' newest window, a Merge
// operand of its own samples rather than a rewrite of an old window, so
// one batch holds it at about the size of its samples.
func (d *DB) liveCut(c Cut) bool {
	mt, ok := c.(interface{ MinTime() int64 })
	return ok && mt.MinTime() >= d.series.now().UnixMilli()-d.series.ooo
}

// writeWholeLocked writes a live cut's series samples, totals and
// checkpoint in one synced batch, all or nothing, with no staged copy; the
// caller holds cutMu.
func (d *DB) writeWholeLocked(sealed uint64, c Cut) error {
	wb := d.batchLocked()
	defer wb.Reset()
	app := d.series.newAppender()
	app.anyAge = true // the pipeline's gauges, written per interval of event time
	var key []byte
	err := c.Write(func(k, v []byte) error {
		key = append(append(key[:0], prefixTotals), k...)
		return wb.Set(key, v, nil)
	}, app.AppendIncrement, func(ls labels.Labels, t int64, v float64) error {
		_, err := app.Append(0, ls, 0, t, v, nil, nil, storage.AppendV2Options{})
		return err
	})
	if err != nil {
		return err
	}
	if err := d.series.commit(app, wb, func() error {
		cp := binary.AppendUvarint(binary.AppendUvarint(nil, sealed), c.Seq())
		if err := wb.Set(keyCheckpoint, cp, nil); err != nil {
			return fmt.Errorf("add journal checkpoint: %w", err)
		}
		if err := wb.Commit(pebble.Sync); err != nil {
			return fmt.Errorf("commit cut: %w", err)
		}
		return nil
	}); err != nil {
		return err
	}
	d.mu.Lock()
	d.checkpoint, d.seq = sealed, c.Seq()
	d.mu.Unlock()
	d.series.noteCheckpoint(sealed)
	return d.j.retire(sealed)
}

// batchLocked returns the cut's Pebble batch, empty; the caller holds
// cutMu and resets it when done.
func (d *DB) batchLocked() *pebble.Batch {
	if d.cutBatch == nil {
		d.cutBatch = d.db.NewBatch(pebble.WithMaxRetainedSizeBytes(cutBatchRetained))
	}
	return d.cutBatch
}

// cutBatchRetained bounds the memory the cut's batch keeps between cuts.
const cutBatchRetained = 64 << 20

// materializeLocked writes the dictionary entries and records that c makes
// of journal segment n into Pebble, without syncing (the cut's final batch
// syncs). The caller holds cutMu.
func (d *DB) materializeLocked(c Cut, n uint64, torn bool) error {
	// A record, sorted by its key's fields: end time, batch, index.
	type rec struct {
		end int64
		seq uint64
		idx uint32
		val span // value bytes in arena
	}
	type dictEntry struct {
		id uint32
		s  string
	}
	var (
		arena blocks
		recs  []rec
		dict  []dictEntry
	)
	addDict := func(id uint32, s string) error {
		dict = append(dict, dictEntry{id, s})
		return nil
	}
	addRecord := func(end int64, seq uint64, idx uint32, value []byte) error {
		recs = append(recs, rec{end: end, seq: seq, idx: idx, val: arena.copy(value)})
		return nil
	}
	if err := readSegment(d.journalDir(), n, torn, func(entry []byte) error {
		return c.Records(entry, addDict, addRecord)
	}); err != nil {
		return err
	}
	slices.SortFunc(recs, func(a, b rec) int {
		if a.end != b.end {
			return cmp.Compare(a.end, b.end)
		}
		if a.seq != b.seq {
			return cmp.Compare(a.seq, b.seq)
		}
		return cmp.Compare(a.idx, b.idx)
	})
	wb := d.batchLocked()
	defer wb.Reset()
	for _, de := range dict {
		if err := wb.Set(dictKey(de.id), []byte(de.s), nil); err != nil {
			return fmt.Errorf("add dictionary entry: %w", err)
		}
	}
	key := make([]byte, 0, recordKeyLen)
	for _, r := range recs {
		key = appendRecordKey(key[:0], r.end, r.seq, r.idx)
		if err := wb.Set(key, arena.bytes(r.val), nil); err != nil {
			return fmt.Errorf("add record: %w", err)
		}
		if wb.Len() >= recordBatchBytes {
			if err := d.guard.refuseChecked(); err != nil {
				return err
			}
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

// blocks holds copies of many small values in fixed-size blocks, so that
// collecting a segment's records never copies the ones already collected
// (a growing slice would, each time it doubles).
type blocks [][]byte

// span locates a value in blocks.
type span struct{ block, off, len uint32 }

// blockSize is a block's capacity; a larger value gets its own.
const blockSize = 1 << 20

func (b *blocks) copy(v []byte) span {
	n := len(*b)
	if n == 0 || len(v) > cap((*b)[n-1])-len((*b)[n-1]) {
		*b = append(*b, make([]byte, 0, max(blockSize, len(v))))
		n++
	}
	cur := &(*b)[n-1]
	off := len(*cur)
	*cur = append(*cur, v...)
	return span{uint32(n - 1), uint32(off), uint32(len(v))}
}

func (b blocks) bytes(s span) []byte {
	return b[s.block][s.off : s.off+s.len]
}
