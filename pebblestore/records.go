package pebblestore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/proxylens/proxylens/otelanalytics"
)

// RecordFilter selects stored records. Zero fields select everything; list
// fields match any of their values.
type RecordFilter struct {
	Start, End   time.Time // end time in [Start, End); zero End means no bound
	Sources      []string
	Applications []string
	Domains      []string
	StatusCodes  []uint16 // 0 matches records without a status code
	Success      *bool
	MinDuration  time.Duration // inclusive
	MaxDuration  time.Duration // inclusive; zero means no bound
}

func (f *RecordFilter) match(r *otelanalytics.Record) bool {
	if len(f.Sources) > 0 && !slices.Contains(f.Sources, r.Source) {
		return false
	}
	if len(f.Applications) > 0 && !slices.Contains(f.Applications, r.Application) {
		return false
	}
	if len(f.Domains) > 0 && !slices.Contains(f.Domains, r.Domain) {
		return false
	}
	if len(f.StatusCodes) > 0 && !slices.Contains(f.StatusCodes, r.StatusCode) {
		return false
	}
	if f.Success != nil && *f.Success != r.Success {
		return false
	}
	d := time.Duration(r.Duration)
	if d < f.MinDuration || (f.MaxDuration > 0 && d > f.MaxDuration) {
		return false
	}
	return true
}

// ScanRecords calls fn, in end-time order, for every stored record that
// matches f. The record passed to fn is reused between calls. Returning an
// error from fn stops the scan with that error; ctx is checked as it goes.
func (d *DB) ScanRecords(ctx context.Context, f RecordFilter, fn func(*otelanalytics.Record) error) error {
	if d.dict == nil {
		return errors.New("scan records: store not loaded")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	lower := []byte{prefixRecord}
	if !f.Start.IsZero() && f.Start.UnixNano() > 0 {
		lower = binary.BigEndian.AppendUint64(lower, uint64(f.Start.UnixNano()))
	}
	upper := []byte{prefixRecord + 1}
	if !f.End.IsZero() {
		upper = binary.BigEndian.AppendUint64([]byte{prefixRecord}, uint64(max(f.End.UnixNano(), 0)))
	}
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return fmt.Errorf("scan records: %w", err)
	}
	var rec otelanalytics.Record
	n := 0
	for it.First(); it.Valid(); it.Next() {
		if n++; n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return errors.Join(err, it.Close())
			}
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return errors.Join(fmt.Errorf("scan records: %w", err), it.Close())
		}
		if err := decodeRecord(it.Key(), v, d.dict, &rec); err != nil {
			return errors.Join(fmt.Errorf("scan records: %w", err), it.Close())
		}
		if !f.match(&rec) {
			continue
		}
		if err := fn(&rec); err != nil {
			return errors.Join(err, it.Close())
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("scan records: %w", err)
	}
	return nil
}
