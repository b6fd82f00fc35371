package pebblestore

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/cockroachdb/pebble/v2"
)

// upgradeBatchBytes bounds one batch of a format upgrade.
const upgradeBatchBytes = 4 << 20

// upgrade brings a database of format version 4 or 5 to FormatVersion and
// stamps it, so that the versions before, which would misread it, refuse
// it.
//
//   - Version 4 is version 5 without window values of several groups: it
//     is read as it is.
//   - Version 5 kept a window's hourly summary in its u value with the
//     finer ones; version 6 keeps it under h. The split is written in
//     bounded batches and is idempotent: a u value without an hourly
//     summary is done, so an upgrade cut short by a crash goes on where
//     it stopped at the next start. Only then is the version stamped.
func (d *DB) upgrade(from uint64) error {
	start := []byte{prefixSummaries}
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: start, UpperBound: prefixEnd(start)})
	if err != nil {
		return err
	}
	defer it.Close()
	b := d.db.NewBatch()
	defer func() { _ = b.Close() }()
	var hours hourDays
	var buf []byte
	split := 0
	group := hourDayKey{day: math.MinInt64}
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		if len(k) != 17 {
			return fmt.Errorf("summary key %x: %w", k, errCorrupt)
		}
		sums, err := decodeSummaries(it.Value(), nil)
		if err != nil {
			return fmt.Errorf("summary %x: %w", k, err)
		}
		if len(sums) == 0 || sums[len(sums)-1].res != hourRes {
			continue // split already
		}
		id, w := binary.BigEndian.Uint64(k[1:9]), periodFromKey(k)
		if g := (hourDayKey{id, hourDay(w)}); g != group {
			// A day's records and the u values they came from are
			// committed together.
			if b.Len() >= upgradeBatchBytes {
				if err := hours.write(b, d.db); err != nil {
					return err
				}
				if err := b.Commit(pebble.NoSync); err != nil {
					return err
				}
				_ = b.Close()
				b = d.db.NewBatch()
			}
			group = g
		}
		if err := hours.put(id, w, sums[len(sums)-1].c); err != nil {
			return fmt.Errorf("summary %x: %w", k, err)
		}
		if fine := sums[:len(sums)-1]; len(fine) > 0 {
			buf = appendSummaries(buf[:0], fine)
			err = b.Set(k, buf, nil)
		} else {
			err = b.Delete(k, nil) // past the raw retention only the hourly one was left
		}
		if err != nil {
			return err
		}
		split++
	}
	if err := it.Error(); err != nil {
		return err
	}
	if err := hours.write(b, d.db); err != nil {
		return err
	}
	if err := b.Set(keyFormat, binary.AppendUvarint(nil, FormatVersion), nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	if split > 0 {
		// Rewritten in place, the two key spaces would be read through
		// every level until compactions reach them.
		for _, p := range []byte{prefixSummaries, prefixHours} {
			if err := d.db.Compact(context.Background(), []byte{p}, []byte{p + 1}, true); err != nil {
				return fmt.Errorf("compact: %w", err)
			}
		}
		d.log.Info("upgraded the database format", "from", from, "to", FormatVersion, "hourly_summaries_moved", split)
	}
	return nil
}
