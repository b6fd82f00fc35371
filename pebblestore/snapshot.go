package pebblestore

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2"
)

// Snapshot writes a consistent copy of the data directory into dir, which
// may exist but must not hold pebble/ or journal/: a Pebble checkpoint in
// dir/pebble and, in dir/journal,
// the journal segments whose batches the checkpoint does not hold yet.
// Every batch acknowledged before the call is in the copy; ingest goes on
// meanwhile (only cuts wait). Opening the copy replays those segments, as
// a restart after a crash would.
func (d *DB) Snapshot(ctx context.Context, dir string) error {
	if d.j == nil {
		return fmt.Errorf("snapshot: the store is not loaded")
	}
	d.cutMu.Lock()
	defer d.cutMu.Unlock()
	// Sealing syncs every batch acknowledged so far into a closed segment;
	// with no cut running, the checkpoint cannot move past the segments.
	sealed, err := d.j.seal()
	if err != nil {
		return fmt.Errorf("snapshot: seal journal: %w", err)
	}
	if err := d.j.prepare(); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if err := d.db.Checkpoint(filepath.Join(dir, "pebble"), pebble.WithFlushedWAL()); err != nil {
		return fmt.Errorf("snapshot: pebble checkpoint: %w", err)
	}
	d.mu.Lock()
	from := d.checkpoint
	d.mu.Unlock()
	segs, err := listSegments(d.journalDir())
	if err != nil {
		return fmt.Errorf("snapshot: list journal: %w", err)
	}
	dst := filepath.Join(dir, "journal")
	if err := os.MkdirAll(dst, 0o750); err != nil {
		return err
	}
	for _, n := range segs {
		if n <= from || n > sealed {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		name := segmentName(n)
		if err := copyFile(filepath.Join(d.journalDir(), name), filepath.Join(dst, name)); err != nil {
			return fmt.Errorf("snapshot: copy journal segment %d: %w", n, err)
		}
	}
	return nil
}

// copyFile copies src to a new file dst and syncs it.
func copyFile(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	if _, err := io.Copy(out, in); err != nil {
		return err
	}
	return out.Sync()
}
