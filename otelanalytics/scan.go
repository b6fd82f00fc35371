package otelanalytics

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
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

func (f *RecordFilter) match(r *Record) bool {
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

// RecordScanner is the store's side of ScanRecords: it calls fn, in end
// time order, with the end time (Unix ns) and the encoded value of every
// stored record that ended in [start, end) (a zero start or end: no bound),
// checking ctx as it goes. *pebblestore.DB implements it.
type RecordScanner interface {
	ScanRecords(ctx context.Context, start, end time.Time, fn func(end int64, value []byte) error) error
}

// ScanRecords calls fn, in end-time order, for every record in s that
// matches f, its strings resolved with dict. The record passed to fn is
// reused between calls. Returning an error from fn stops the scan with
// that error.
func ScanRecords(ctx context.Context, s RecordScanner, dict *Dict, f RecordFilter, fn func(*Record) error) error {
	if dict == nil {
		return errors.New("scan records: store not loaded")
	}
	var rec Record
	return s.ScanRecords(ctx, f.Start, f.End, func(end int64, value []byte) error {
		if err := decodeRecord(end, value, dict, &rec); err != nil {
			return fmt.Errorf("scan records: %w", err)
		}
		if !f.match(&rec) {
			return nil
		}
		return fn(&rec)
	})
}
