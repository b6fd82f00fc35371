package pebblestore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// ScanRecords calls fn, in end-time order, with the end time (Unix ns) and
// the value of every stored record that ended in [start, end) (a zero start
// or end: no bound), checking ctx as it goes. value is only valid during
// the call. Returning an error from fn stops the scan with that error.
func (d *DB) ScanRecords(ctx context.Context, start, end time.Time, fn func(end int64, value []byte) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	lower := []byte{prefixRecord}
	if !start.IsZero() && start.UnixNano() > 0 {
		lower = binary.BigEndian.AppendUint64(lower, uint64(start.UnixNano()))
	}
	upper := []byte{prefixRecord + 1}
	if !end.IsZero() {
		upper = binary.BigEndian.AppendUint64([]byte{prefixRecord}, uint64(max(end.UnixNano(), 0)))
	}
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return fmt.Errorf("scan records: %w", err)
	}
	n := 0
	for it.First(); it.Valid(); it.Next() {
		if n++; n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return errors.Join(err, it.Close())
			}
		}
		k := it.Key()
		if len(k) != recordKeyLen {
			return errors.Join(fmt.Errorf("scan records: record key of %d bytes: %w", len(k), errCorrupt), it.Close())
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return errors.Join(fmt.Errorf("scan records: %w", err), it.Close())
		}
		if err := fn(int64(binary.BigEndian.Uint64(k[1:])), v); err != nil {
			return errors.Join(err, it.Close())
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("scan records: %w", err)
	}
	return nil
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
