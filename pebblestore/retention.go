package pebblestore

import (
	"encoding/json"
	"errors"
	"fmt"
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

var keyRetention = []byte("mretention")

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

// SetRetention stores p if CheckChange allows it, and audits the change or
// the refusal.
func (d *DB) SetRetention(p RetentionPolicy, now time.Time, user string) error {
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
	entry := AuditEntry{Time: now, User: user, Action: "retention.update", Resource: "retention"}
	if err := p.CheckChange(old, now); err != nil {
		entry.Error = err.Error()
		return errors.Join(err, d.Audit(entry))
	}
	v, _ := json.Marshal(p)
	entry.Success, entry.Detail = true, string(v)
	b := d.db.NewBatch()
	defer b.Close()
	if err := b.Set(keyRetention, v, nil); err != nil {
		return err
	}
	return d.commitAudited(b, entry, pebble.Sync)
}
