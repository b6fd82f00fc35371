package pebblestore

import (
	"errors"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// CostModels returns the stored cost models as the caller stored them
// (nil if never set).
func (d *DB) CostModels() ([]byte, error) {
	v, closer, err := d.db.Get(keyCosts)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return slices.Clone(v), nil
}

// SetCostModels stores the cost models, which the caller validated and
// encoded, and audits the change in the same synced batch: e says who and
// when (Time, User, ClientIP); the action, resource and detail are filled
// in.
func (d *DB) SetCostModels(v []byte, e AuditEntry) error {
	b := d.db.NewBatch()
	defer b.Close()
	if err := b.Set(keyCosts, v, nil); err != nil {
		return err
	}
	e.Action, e.Resource, e.Success, e.Detail = "costs.update", "costs", true, string(v)
	return d.commitAudited(b, e, pebble.Sync)
}
