package pebblestore

import (
	"errors"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// The settings the admin API changes and the store keeps as the caller
// encoded them: the cost models, the sampling thresholds and the retired sources. (The
// retention policy, which the store itself applies, is in retention.go.)

// CostModels returns the stored cost models as the caller stored them
// (nil if never set).
func (d *DB) CostModels() ([]byte, error) { return d.setting(keyCosts) }

// SetCostModels stores the cost models, which the caller validated and
// encoded, and audits the change in the same synced batch: e says who and
// when (Time, User, ClientIP); the action, resource and detail are filled
// in.
func (d *DB) SetCostModels(v []byte, e AuditEntry) error {
	return d.setSetting(keyCosts, v, e, "costs.update", "costs")
}

// Sampling returns the sampling settings as the caller stored them (nil
// if never set).
func (d *DB) Sampling() ([]byte, error) { return d.setting(keySampling) }

// SetSampling stores the sampling settings and audits the change in the
// same synced batch, as SetCostModels does.
func (d *DB) SetSampling(v []byte, e AuditEntry) error {
	return d.setSetting(keySampling, v, e, "sampling.update", "sampling")
}

// RetiredSources returns the retired sources as the caller stored them
// (nil if never set).
func (d *DB) RetiredSources() ([]byte, error) { return d.setting(keyRetired) }

// SetRetiredSources stores the retired sources and audits the change in
// the same synced batch, as SetCostModels does.
func (d *DB) SetRetiredSources(v []byte, e AuditEntry) error {
	return d.setSetting(keyRetired, v, e, "sources.retire", "sources")
}

func (d *DB) setting(key []byte) ([]byte, error) {
	v, closer, err := d.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return slices.Clone(v), nil
}

func (d *DB) setSetting(key, v []byte, e AuditEntry, action, resource string) error {
	b := d.db.NewBatch()
	defer b.Close()
	if err := b.Set(key, v, nil); err != nil {
		return err
	}
	e.Action, e.Resource, e.Success, e.Detail = action, resource, true, string(v)
	return d.commitAudited(b, e, pebble.Sync)
}
