package pebblestore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2"

	"github.com/proxylens/proxylens/internal/varint"
)

// Load hands the caller what the database keeps for it, then replays the
// journal segments no cut has written to Pebble yet, so that the caller
// can rebuild every batch acknowledged before the last stop or crash: dict
// is called for every dictionary entry, totals for every stored total (its
// key without the key space's prefix byte, and its value), and replay for
// every journal entry after the checkpoint, in the order they were
// appended. It returns the sequence number the last cut kept with its
// checkpoint (Cut.Seq), and opens a new journal segment. Call it once,
// before the first CommitBatch; the bytes handed to the callbacks are only
// valid during the call.
func (d *DB) Load(dict func(id uint32, s string) error, totals func(key, value []byte) error, replay func(entry []byte) error) (uint64, error) {
	if d.j != nil {
		return 0, errors.New("store already loaded")
	}
	// A cut that crashed while applying its staged samples: the rest of
	// them, before anything is read (cut_pieces.go). With the disk short
	// of space they wait for the first cut, which applies them first.
	if pending, err := d.stagedPending(); err != nil {
		return 0, err
	} else if pending && d.guard.err() != nil {
		d.log.Warn("the series of a cut interrupted by a stop wait for disk space; until then queries read them without it")
	} else if pending {
		d.cutMu.Lock()
		err := d.applyStagedLocked()
		d.cutMu.Unlock()
		if err != nil {
			return 0, fmt.Errorf("apply the interrupted cut's series: %w", err)
		}
		d.log.Info("applied the series of a cut interrupted by a stop")
	}
	if err := d.scan([]byte{prefixDict}, func(k, v []byte) error {
		if len(k) != 5 {
			return fmt.Errorf("dictionary key of %d bytes: %w", len(k), errCorrupt)
		}
		return dict(binary.BigEndian.Uint32(k[1:]), string(v))
	}); err != nil {
		return 0, fmt.Errorf("load dictionary: %w", err)
	}
	if err := d.scan([]byte{prefixTotals}, func(k, v []byte) error {
		return totals(k[1:], v)
	}); err != nil {
		return 0, fmt.Errorf("load aggregate totals: %w", err)
	}
	if v, closer, err := d.db.Get(keyCheckpoint); err == nil {
		rd := varint.Reader{B: v}
		d.checkpoint, d.seq = rd.Uvarint(), rd.Uvarint()
		_ = closer.Close()
		d.series.openCheckpoint.Store(d.checkpoint)
		d.series.noteCheckpoint(d.checkpoint)
		if rd.Err != nil {
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
	entries, replayedSegs := 0, 0
	for i, n := range segs {
		if n <= d.checkpoint {
			continue
		}
		last := i == len(segs)-1
		if last {
			d.tornSeg = n
		}
		if err := readSegment(d.journalDir(), n, last, func(entry []byte) error {
			entries++
			return replay(entry)
		}); err != nil {
			return 0, fmt.Errorf("replay journal: %w", err)
		}
		next = n + 1
		d.replayed = n
		replayedSegs++
	}
	if entries > 0 {
		d.log.Info("replayed ingest journal", "entries", entries, "segments", replayedSegs)
	}
	j, err := openJournal(d.journalDir(), next, d.journalSyncs)
	if err != nil {
		return 0, err
	}
	// The spare: with the disk short of space, the first cut makes it.
	if d.guard.err() == nil {
		if err := j.prepare(); isNoSpace(err) {
			d.guard.noSpace(err)
		} else if err != nil {
			return 0, errors.Join(err, j.close())
		}
	}
	d.j = j
	return d.seq, nil
}

// errHasEntries stops the read of a journal segment at its first entry.
var errHasEntries = errors.New("journal segment has entries")
