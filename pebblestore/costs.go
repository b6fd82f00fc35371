package pebblestore

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/proxylens/proxylens/otelanalytics"
)

var keyCosts = []byte("mcosts")

// CostModels returns the stored cost models (none if never set).
func (d *DB) CostModels() ([]otelanalytics.CostModel, error) {
	v, closer, err := d.db.Get(keyCosts)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	var models []otelanalytics.CostModel
	if err := json.Unmarshal(v, &models); err != nil {
		return nil, fmt.Errorf("stored cost models: %w", errCorrupt)
	}
	return models, nil
}

// SetCostModels stores the cost models, which the caller validated, and
// audits the change.
func (d *DB) SetCostModels(models []otelanalytics.CostModel, now time.Time, user, clientIP string) error {
	v, err := json.Marshal(models)
	if err != nil {
		return err
	}
	b := d.db.NewBatch()
	defer b.Close()
	if err := b.Set(keyCosts, v, nil); err != nil {
		return err
	}
	entry := AuditEntry{Time: now, User: user, Action: "costs.update", Resource: "costs", ClientIP: clientIP, Success: true, Detail: string(v)}
	return d.commitAudited(b, entry, pebble.Sync)
}
