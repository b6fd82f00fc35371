package pebblestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// RetentionPolicy says how long each kind of data is kept. Periods are in
// days. It lives in the database (key mretention) and changes through
// SetRetention, which enforces the compliance hold.
type RetentionPolicy struct {
	RawRecordsDays int `json:"raw_records_days" yaml:"raw_records_days"`
	RawSeriesDays  int `json:"raw_series_days" yaml:"raw_series_days"`
	HourlyDays     int `json:"hourly_days" yaml:"hourly_days"`
	DailyDays      int `json:"daily_days" yaml:"daily_days"`
	BackupDays     int `json:"backup_days" yaml:"backup_days"`
	ExportDays     int `json:"export_days" yaml:"export_days"`
	AuditDays      int `json:"audit_days" yaml:"audit_days"`
	// ImmutableUntil is a compliance hold: until then nothing is deleted,
	// no period may be shortened and the hold may not be moved earlier.
	ImmutableUntil *time.Time `json:"immutable_until" yaml:"immutable_until"`
}

// DefaultRetention returns the product defaults.
func DefaultRetention() RetentionPolicy {
	return RetentionPolicy{
		RawRecordsDays: 7, RawSeriesDays: 7, HourlyDays: 30, DailyDays: 365,
		BackupDays: 30, ExportDays: 90, AuditDays: 365,
	}
}

// periods lists the policy's periods with their field names.
func (p *RetentionPolicy) periods() []struct {
	name string
	days *int
} {
	return []struct {
		name string
		days *int
	}{
		{"raw_records_days", &p.RawRecordsDays}, {"raw_series_days", &p.RawSeriesDays},
		{"hourly_days", &p.HourlyDays}, {"daily_days", &p.DailyDays},
		{"backup_days", &p.BackupDays}, {"export_days", &p.ExportDays}, {"audit_days", &p.AuditDays},
	}
}

// maxRetentionDays bounds every period (a century), so that cut-offs stay
// far from overflowing.
const maxRetentionDays = 36500

// Validate reports every problem at once, each naming the field.
func (p RetentionPolicy) Validate() error {
	var errs []error
	for _, f := range p.periods() {
		if *f.days <= 0 || *f.days > maxRetentionDays {
			errs = append(errs, fmt.Errorf("retention.%s: must be from 1 to %d days, got %d", f.name, maxRetentionDays, *f.days))
		}
	}
	if errs != nil {
		return errors.Join(errs...)
	}
	if p.HourlyDays < p.RawSeriesDays {
		errs = append(errs, fmt.Errorf("retention.hourly_days: must be at least raw_series_days (%d), got %d", p.RawSeriesDays, p.HourlyDays))
	}
	if p.HourlyDays < p.RawRecordsDays {
		errs = append(errs, fmt.Errorf("retention.hourly_days: must be at least raw_records_days (%d), got %d", p.RawRecordsDays, p.HourlyDays))
	}
	if p.DailyDays < p.HourlyDays {
		errs = append(errs, fmt.Errorf("retention.daily_days: must be at least hourly_days (%d), got %d", p.HourlyDays, p.DailyDays))
	}
	return errors.Join(errs...)
}

// Held reports whether the compliance hold is in force at now.
func (p RetentionPolicy) Held(now time.Time) bool {
	return p.ImmutableUntil != nil && now.Before(*p.ImmutableUntil)
}

// HoldError is a change the compliance hold forbids.
type HoldError struct{ Field, Reason string }

func (e *HoldError) Error() string { return "retention." + e.Field + ": " + e.Reason }

// CheckChange reports whether the policy may change from old to p at now:
// validity first, then the hold (a *HoldError).
func (p RetentionPolicy) CheckChange(old RetentionPolicy, now time.Time) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if !old.Held(now) {
		return nil
	}
	until := old.ImmutableUntil.UTC().Format(time.RFC3339)
	if p.ImmutableUntil == nil || p.ImmutableUntil.Before(*old.ImmutableUntil) {
		return &HoldError{"immutable_until", "the compliance hold until " + until + " cannot be moved earlier or removed"}
	}
	oldPeriods := old.periods()
	for i, f := range p.periods() {
		if o := *oldPeriods[i].days; *f.days < o {
			return &HoldError{f.name, fmt.Sprintf("the compliance hold until %s forbids shortening it (%d → %d days)", until, o, *f.days)}
		}
	}
	return nil
}

// Retention returns the stored policy, or the defaults if none is stored.
func (d *DB) Retention() (RetentionPolicy, error) {
	v, closer, err := d.db.Get(keyRetention)
	if errors.Is(err, pebble.ErrNotFound) {
		return DefaultRetention(), nil
	}
	if err != nil {
		return RetentionPolicy{}, err
	}
	defer closer.Close()
	var p RetentionPolicy
	if err := json.Unmarshal(v, &p); err != nil {
		return RetentionPolicy{}, fmt.Errorf("stored retention policy: %w", errCorrupt)
	}
	return p, nil
}

// SetRetention stores p if CheckChange allows it at e.Time, and audits the
// change or the refusal: e says who and when (Time, User, ClientIP); the
// action, resource and outcome are filled in.
func (d *DB) SetRetention(p RetentionPolicy, e AuditEntry) error {
	d.retentionMu.Lock()
	defer d.retentionMu.Unlock()
	old, err := d.Retention()
	if err != nil {
		return err
	}
	if p.ImmutableUntil != nil {
		t := p.ImmutableUntil.UTC()
		p.ImmutableUntil = &t
	}
	e.Action, e.Resource = "retention.update", "retention"
	if err := p.CheckChange(old, e.Time); err != nil {
		e.Error = err.Error()
		return errors.Join(err, d.Audit(e))
	}
	v, _ := json.Marshal(p)
	e.Success, e.Detail = true, string(v)
	b := d.db.NewBatch()
	defer b.Close()
	if err := b.Set(keyRetention, v, nil); err != nil {
		return err
	}
	return d.commitAudited(b, e, pebble.Sync)
}

// Enforcement is what one run of the retention policy did.
type Enforcement struct {
	// Held: the compliance hold was in force and nothing was deleted.
	Held bool `json:"held"`
	// The cut-offs, in Unix milliseconds: data before them is gone.
	RecordsBefore int64 `json:"records_before"`
	RawBefore     int64 `json:"raw_series_before"`
	HourlyBefore  int64 `json:"hourly_before"`
	DailyBefore   int64 `json:"daily_before"`
	AuditBefore   int64 `json:"audit_before"`
	// Summarized counts the raw windows whose summaries (the hourly
	// rollup) were written before the windows were deleted.
	Summarized int `json:"summarized"`
	// Compacted: the key spaces were compacted after the deletions.
	Compacted bool `json:"compacted"`
	// The bytes of the database's live tables before and after (files a
	// compaction made obsolete are deleted in the background, at a pace).
	BytesBefore uint64 `json:"bytes_before"`
	BytesAfter  uint64 `json:"bytes_after"`
}

// enforceBatchSeries bounds the series handled in one Pebble batch and
// one hold of the commit lock.
const enforceBatchSeries = 1024

// EnforceRetention deletes what policy p no longer keeps at now, with
// Pebble range deletions, then, if compact, compacts the key spaces so
// that the disk space comes back at once (else Pebble's own compactions
// reclaim it over time). Under a compliance hold it deletes nothing.
//
// Raw windows of an increment series go only once their summaries are
// written (a window that was still its series' newest gets them here,
// first); the window bases and summaries go at the hourly cut-off and the
// daily rollup at the daily one. The newest base and day of each series
// stay even when older than the cut-offs, so that increments arriving
// after a long silence carry on the series' counter; reads never go
// before the cut-offs (see the series store's floor). Every step is a
// batch of whole deletions: a crash between steps leaves a store that
// only has more than the policy keeps, and the next run goes on.
func (d *DB) EnforceRetention(ctx context.Context, p RetentionPolicy, now time.Time, compact bool) (Enforcement, error) {
	if err := p.Validate(); err != nil {
		return Enforcement{}, err
	}
	days := func(n int) int64 { return now.Add(-time.Duration(n) * 24 * time.Hour).UnixMilli() }
	e := Enforcement{
		Held:          p.Held(now),
		RecordsBefore: days(p.RawRecordsDays),
		RawBefore:     days(p.RawSeriesDays),
		HourlyBefore:  days(p.HourlyDays),
		DailyBefore:   days(p.DailyDays),
		AuditBefore:   days(p.AuditDays),
	}
	if err := d.db.Flush(); err != nil {
		return e, err
	}
	e.BytesBefore = d.db.Metrics().Table.Local.LiveSize
	if e.Held {
		e.BytesAfter = e.BytesBefore
		return e, nil
	}
	s := d.series
	if s == nil {
		return e, fmt.Errorf("enforce retention: the store is not loaded")
	}
	// Reads stop at the cut-offs first, so that nothing older is
	// answered while it is being deleted.
	s.raiseFloor(e.RawBefore, e.HourlyBefore, e.DailyBefore)
	defer s.noteBefore(max(e.RawBefore, e.HourlyBefore, e.DailyBefore)) // and once more when the deletions are done

	b := d.db.NewBatch()
	defer b.Close()
	recEnd := appendRecordKey(nil, e.RecordsBefore*int64(time.Millisecond), 0, 0)
	if err := b.DeleteRange([]byte{prefixRecord}, recEnd, nil); err != nil {
		return e, err
	}
	d.auditMu.Lock()
	err := d.auditRetentionLocked(b, time.UnixMilli(e.AuditBefore))
	if err == nil {
		err = b.Commit(pebble.Sync)
	}
	d.auditMu.Unlock()
	if err != nil {
		return e, fmt.Errorf("enforce retention: %w", err)
	}

	s.mu.RLock()
	all := make([]*memSeries, 0, len(s.byID))
	for _, ms := range s.byID {
		all = append(all, ms)
	}
	s.mu.RUnlock()
	slices.SortFunc(all, func(a, b *memSeries) int { return int(min(max(int64(a.id)-int64(b.id), -1), 1)) })
	for i := 0; i < len(all); i += enforceBatchSeries {
		if err := ctx.Err(); err != nil {
			return e, err
		}
		n, err := d.enforceSeries(all[i:min(i+enforceBatchSeries, len(all))], &e)
		if err != nil {
			return e, fmt.Errorf("enforce retention: %w", err)
		}
		e.Summarized += n
	}
	if !compact {
		e.BytesAfter = d.db.Metrics().Table.Local.LiveSize
		return e, nil
	}
	for _, prefix := range []byte{prefixRecord, prefixAudit, prefixChunks, prefixSummaries, prefixHours, prefixBases, prefixDays} {
		if err := d.db.Compact(ctx, []byte{prefix}, []byte{prefix + 1}, false); err != nil {
			return e, fmt.Errorf("enforce retention: compact: %w", err)
		}
	}
	if err := d.db.Flush(); err != nil {
		return e, err
	}
	e.Compacted, e.BytesAfter = true, d.db.Metrics().Table.Local.LiveSize
	return e, nil
}

// enforceSeries deletes the expired windows, summaries, bases and days of
// a run of series in one batch, and returns how many windows it summarized
// first.
func (d *DB) enforceSeries(run []*memSeries, e *Enforcement) (int, error) {
	s := d.series
	rawW, hourW := windowOf(e.RawBefore), windowOf(e.HourlyBefore)
	day := dayOf(e.DailyBefore)
	if !s.summarized() {
		rawW = hourW // the raw windows are the finest data left: kept as the hourly
	}
	b := d.db.NewBatch()
	defer b.Close()
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	it, err := d.db.NewIter(nil)
	if err != nil {
		return 0, err
	}
	defer it.Close()
	summarized := 0
	var buf []byte
	var hours hourDays
	for _, ms := range run {
		lower, upper := chunkKey(ms.id, math.MinInt64), chunkKey(ms.id, rawW)
		if ms.kind == KindIncrements && s.summarized() {
			// Every window about to go has its summaries: a window that was
			// its series' newest when its series fell silent has none yet.
			it.SetBounds(lower, upper)
			for valid := it.First(); valid; valid = it.Next() {
				w := periodFromKey(it.Key())
				_, closer, err := d.db.Get(summaryKey(ms.id, w))
				if err == nil {
					_ = closer.Close()
					continue
				}
				if err != pebble.ErrNotFound {
					return 0, err
				}
				chunks, err := decodeWindow(it.Value(), nil)
				if err != nil {
					return 0, fmt.Errorf("series %d window %d: %w", ms.id, w, err)
				}
				if buf, err = putSummaries(b, &hours, ms.id, w, chunks, buf); err != nil {
					return 0, err
				}
				summarized++
			}
			if err := it.Error(); err != nil {
				return 0, err
			}
		}
		if err := b.DeleteRange(lower, upper, nil); err != nil {
			return 0, err
		}
		if ms.headWindow < rawW && ms.headWindow != math.MinInt64 {
			ms.headWindow, ms.head = math.MinInt64, nil // its window is gone
		}
		// A sample series' counter summaries go with their windows; past
		// the raw cut-off an increment series keeps its hourly summaries.
		if err := b.DeleteRange(summaryKey(ms.id, math.MinInt64), summaryKey(ms.id, rawW), nil); err != nil {
			return 0, err
		}
		if ms.kind != KindIncrements {
			ms.minW.Store(max(ms.minW.Load(), rawW))
			continue
		}
		// The hourly summaries' days before the cut-off's go; that day
		// keeps its windows from the cut-off on (see the write below).
		if err := b.DeleteRange(hourKey(ms.id, math.MinInt64), hourKey(ms.id, hourDay(hourW)), nil); err != nil {
			return 0, err
		}
		hours.trim(ms.id, hourW)
		for _, lv := range []struct {
			level baseLevel
			upTo  int64
		}{{windowLevel, hourW}, {dayLevel, day}} {
			// Keep the newest key before the cut-off: the base a late or
			// resumed series carries on from.
			it.SetBounds(lv.level.periodKey(ms.id, math.MinInt64), lv.level.periodKey(ms.id, lv.upTo))
			if it.Last() {
				if err := b.DeleteRange(lv.level.periodKey(ms.id, math.MinInt64), it.Key(), nil); err != nil {
					return 0, err
				}
			}
			if err := it.Error(); err != nil {
				return 0, err
			}
		}
		ms.minW.Store(max(ms.minW.Load(), windowOf(day)))
	}
	// After the deletions above: a day written here is one they keep.
	if err := hours.write(b, d.db); err != nil {
		return 0, err
	}
	return summarized, b.Commit(pebble.Sync)
}
