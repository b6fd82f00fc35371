package pebblestore

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// AuditEntry is one entry of the audit log: who did what, when, on what,
// and whether it succeeded. Entries are chained: each holds the hash of
// the one before, and its own hash covers every other field.
type AuditEntry struct {
	Time      time.Time `json:"time"`
	User      string    `json:"user"`
	Action    string    `json:"action"`
	Resource  string    `json:"resource,omitempty"`
	Start     string    `json:"start,omitempty"` // the time range asked for, RFC 3339
	End       string    `json:"end,omitempty"`
	Filters   string    `json:"filters,omitempty"`
	ClientIP  string    `json:"client_ip,omitempty"`
	UserAgent string    `json:"user_agent,omitempty"`
	Results   int64     `json:"results,omitempty"`
	Duration  float64   `json:"duration_seconds,omitempty"`
	Success   bool      `json:"success"`
	// Detail is what changed (such as the new policy); Error why a refused
	// or failed action failed.
	Detail string `json:"detail,omitempty"`
	Error  string `json:"error,omitempty"`

	Seq      uint64 `json:"seq"`       // position in the log, from 1
	PrevHash string `json:"prev_hash"` // hex SHA-256 of the entry before ("" for the first)
	Hash     string `json:"hash"`      // hex SHA-256 of this entry with Hash empty
}

// hash returns the entry's hash: SHA-256 of its JSON with Hash empty.
func (e AuditEntry) hash() string {
	e.Hash = ""
	b, _ := json.Marshal(e)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// auditState is the chain's newest link, loaded at open.
type auditState struct {
	seq  uint64
	hash string
	keyT time.Time // the newest key's time
}

// loadAudit reads the newest audit entry.
func (d *DB) loadAudit() error {
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixAudit}, UpperBound: []byte{prefixAudit + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	if it.Last() {
		var e AuditEntry
		if err := json.Unmarshal(it.Value(), &e); err != nil {
			return fmt.Errorf("audit entry: %w", errCorrupt)
		}
		d.audit = auditState{seq: e.Seq, hash: e.Hash, keyT: time.Unix(0, int64(binary.BigEndian.Uint64(it.Key()[1:9])))}
		return nil
	}
	if err := it.Error(); err != nil {
		return err
	}
	// None left (or none yet): the chain goes on from the anchor.
	v, closer, err := d.db.Get(keyAuditAnchor)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	defer closer.Close()
	var a auditAnchor
	if err := json.Unmarshal(v, &a); err != nil {
		return fmt.Errorf("audit anchor: %w", errCorrupt)
	}
	d.audit = auditState{seq: a.Seq, hash: a.Hash}
	return nil
}

// auditAnchor is the newest entry retention deleted.
type auditAnchor struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// Audit appends an entry to the audit log, durably.
func (d *DB) Audit(e AuditEntry) error {
	b := d.db.NewBatch()
	defer b.Close()
	return d.commitAudited(b, e, pebble.Sync)
}

// AuditRead appends the entry of a read (a query, a lookup) without
// waiting for the disk: the next synced write, or the memtable's flush,
// makes it durable; a crash may lose the newest such entries, never
// break the chain (entry and head are one batch).
func (d *DB) AuditRead(e AuditEntry) error {
	b := d.db.NewBatch()
	defer b.Close()
	return d.commitAudited(b, e, pebble.NoSync)
}

// commitAudited appends e to the audit log in batch b and commits b: the
// change an entry records and the entry are written together, and
// entries are chained in the order they are committed.
func (d *DB) commitAudited(b *pebble.Batch, e AuditEntry, opts *pebble.WriteOptions) error {
	d.auditMu.Lock()
	defer d.auditMu.Unlock()
	e.Time = e.Time.UTC()
	keyT := e.Time
	if keyT.Before(d.audit.keyT) {
		keyT = d.audit.keyT // keys stay in append order
	}
	e.Seq, e.PrevHash = d.audit.seq+1, d.audit.hash
	e.Hash = e.hash()
	v, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := b.Set(auditKey(keyT, e.Seq), v, nil); err != nil {
		return err
	}
	if err := b.Set(keyAuditHead, []byte(e.Hash), nil); err != nil {
		return err
	}
	if err := b.Commit(opts); err != nil {
		return err
	}
	d.audit = auditState{seq: e.Seq, hash: e.Hash, keyT: keyT}
	return nil
}

// AuditFilter selects audit entries.
type AuditFilter struct {
	From, To time.Time // [From, To); zero: unbounded
	Users    []string  // empty: any
	Actions  []string  // empty: any
	Limit    int       // 0: no limit; else the newest Limit
}

// AuditEntries returns the entries f selects, oldest first.
func (d *DB) AuditEntries(f AuditFilter) ([]AuditEntry, error) {
	opts := &pebble.IterOptions{LowerBound: []byte{prefixAudit}, UpperBound: []byte{prefixAudit + 1}}
	if !f.From.IsZero() {
		opts.LowerBound = auditKey(f.From, 0)
	}
	if !f.To.IsZero() {
		opts.UpperBound = auditKey(f.To, 0)
	}
	it, err := d.db.NewIter(opts)
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
		if (len(f.Users) > 0 && !slices.Contains(f.Users, e.User)) || (len(f.Actions) > 0 && !slices.Contains(f.Actions, e.Action)) {
			continue
		}
		out = append(out, e)
		if f.Limit > 0 && len(out) > f.Limit {
			out = out[1:]
		}
	}
	return out, it.Error()
}

// AuditBreak is where the audit log's chain breaks: an entry edited,
// removed or added out of the chain.
type AuditBreak struct {
	Seq    uint64 // the entry at or after the break (0: the end of the log)
	Reason string
}

func (e *AuditBreak) Error() string {
	if e.Seq == 0 {
		return "audit log: " + e.Reason
	}
	return fmt.Sprintf("audit log: entry %d: %s", e.Seq, e.Reason)
}

// VerifyAudit walks the audit log from its anchor (the newest entry
// retention deleted) to its head and checks every link: each entry's
// hash, its link to the entry before, and the head. It returns the number
// of entries checked, and an *AuditBreak at the first break.
func (d *DB) VerifyAudit() (int, error) {
	var prev string
	var prevSeq uint64
	v, closer, err := d.db.Get(keyAuditAnchor)
	switch {
	case err == nil:
		var a auditAnchor
		err = json.Unmarshal(v, &a)
		_ = closer.Close()
		if err != nil {
			return 0, &AuditBreak{Reason: "the anchor is unreadable"}
		}
		prev, prevSeq = a.Hash, a.Seq
	case !errors.Is(err, pebble.ErrNotFound):
		return 0, err
	}
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixAudit}, UpperBound: []byte{prefixAudit + 1}})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	n := 0
	for valid := it.First(); valid; valid = it.Next() {
		var e AuditEntry
		if err := json.Unmarshal(it.Value(), &e); err != nil {
			return n, &AuditBreak{Seq: prevSeq + 1, Reason: "unreadable"}
		}
		switch {
		case e.Hash != e.hash():
			return n, &AuditBreak{Seq: e.Seq, Reason: "its content does not match its hash (edited)"}
		case e.Seq != prevSeq+1 || e.PrevHash != prev:
			return n, &AuditBreak{Seq: e.Seq, Reason: fmt.Sprintf("it does not follow entry %d (an entry before it was removed or replaced)", prevSeq)}
		}
		prev, prevSeq = e.Hash, e.Seq
		n++
	}
	if err := it.Error(); err != nil {
		return n, err
	}
	head, closer, err := d.db.Get(keyAuditHead)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		if prev != "" && n > 0 {
			return n, &AuditBreak{Reason: "the head is missing"}
		}
	case err != nil:
		return n, err
	default:
		ok := string(head) == prev
		_ = closer.Close()
		if !ok {
			return n, &AuditBreak{Reason: fmt.Sprintf("the newest entries after entry %d were removed", prevSeq)}
		}
	}
	return n, nil
}

// auditRetentionLocked adds to b the deletion of the entries before t, and the
// anchor the first entry left links to.
func (d *DB) auditRetentionLocked(b *pebble.Batch, t time.Time) error {
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixAudit}, UpperBound: auditKey(t, 0)})
	if err != nil {
		return err
	}
	defer it.Close()
	if !it.Last() {
		return it.Error()
	}
	var e AuditEntry
	if err := json.Unmarshal(it.Value(), &e); err != nil {
		return fmt.Errorf("audit entry: %w", errCorrupt)
	}
	a, _ := json.Marshal(auditAnchor{Seq: e.Seq, Hash: e.Hash})
	if err := b.Set(keyAuditAnchor, a, nil); err != nil {
		return err
	}
	return b.DeleteRange([]byte{prefixAudit}, auditKey(t, 0), nil)
}
