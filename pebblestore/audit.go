package pebblestore

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// prefixAudit keys the audit log: l<time:8 BE ns><seq:8 BE> → JSON entry.
const prefixAudit = 'l'

// AuditEntry is one entry of the audit log: who did what, when, and
// whether it succeeded.
type AuditEntry struct {
	Time     time.Time `json:"time"`
	User     string    `json:"user"`
	Action   string    `json:"action"`
	Resource string    `json:"resource,omitempty"`
	ClientIP string    `json:"client_ip,omitempty"`
	Success  bool      `json:"success"`
	// Detail is what changed (such as the new policy); Error why a refused
	// attempt was refused.
	Detail string `json:"detail,omitempty"`
	Error  string `json:"error,omitempty"`
}

func auditKey(t time.Time, seq uint64) []byte {
	k := binary.BigEndian.AppendUint64([]byte{prefixAudit}, uint64(t.UnixNano()))
	return binary.BigEndian.AppendUint64(k, seq)
}

// Audit appends an entry to the audit log, durably.
func (d *DB) Audit(e AuditEntry) error {
	b := d.db.NewBatch()
	defer b.Close()
	if err := d.auditTo(b, e); err != nil {
		return err
	}
	return b.Commit(pebble.Sync)
}

func (d *DB) auditTo(b *pebble.Batch, e AuditEntry) error {
	e.Time = e.Time.UTC()
	v, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return b.Set(auditKey(e.Time, d.auditSeq.Add(1)), v, nil)
}

// AuditEntries returns the entries in [from, to), oldest first.
func (d *DB) AuditEntries(from, to time.Time) ([]AuditEntry, error) {
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: auditKey(from, 0), UpperBound: auditKey(to, 0)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []AuditEntry
	for valid := it.First(); valid; valid = it.Next() {
		var e AuditEntry
		if err := json.Unmarshal(it.Value(), &e); err != nil {
			return nil, fmt.Errorf("audit entry: %w", errCorrupt)
		}
		out = append(out, e)
	}
	return out, it.Error()
}
