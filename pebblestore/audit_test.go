package pebblestore

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/stretchr/testify/require"
)

// TestAuditChain: every entry is chained to the one before; editing,
// removing or reordering any entry, or removing the newest ones, breaks
// the chain where it happened. Retention deletes the oldest entries and
// the chain goes on from its anchor, across restarts.
func TestAuditChain(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, Options{})
	require.NoError(t, err)
	t0 := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	for i := range 10 {
		e := AuditEntry{Time: t0.Add(time.Duration(i) * time.Minute), User: []string{"alice", "bob"}[i%2], Action: []string{"query", "export"}[i%3%2], Success: true, Results: int64(i)}
		if i == 7 {
			e.Time = t0 // a clock that went back: the entry still goes last
		}
		require.NoError(t, db.Audit(e))
	}
	n, err := db.VerifyAudit()
	require.NoError(t, err)
	require.Equal(t, 10, n)
	all, err := db.AuditEntries(AuditFilter{})
	require.NoError(t, err)
	require.Len(t, all, 10)
	require.Equal(t, uint64(8), all[7].Seq)
	require.Equal(t, t0, all[7].Time, "the entry keeps its own time")
	bob, err := db.AuditEntries(AuditFilter{Users: []string{"bob"}, Actions: []string{"query"}, Limit: 2})
	require.NoError(t, err)
	require.Len(t, bob, 2)
	require.Equal(t, []uint64{6, 10}, []uint64{bob[0].Seq, bob[1].Seq})
	window, err := db.AuditEntries(AuditFilter{From: t0.Add(2 * time.Minute), To: t0.Add(4 * time.Minute)})
	require.NoError(t, err)
	require.Len(t, window, 2)

	keys := auditKeys(t, db)
	breaks := func() *AuditBreak {
		_, err := db.VerifyAudit()
		var ab *AuditBreak
		require.True(t, errors.As(err, &ab), "%v", err)
		return ab
	}
	restore := func(k, v []byte) { require.NoError(t, db.db.Set(k, v, pebble.Sync)) }

	// Edited: the user of entry 4.
	v := get(t, db, keys[3])
	var e AuditEntry
	require.NoError(t, json.Unmarshal(v, &e))
	e.User = "mallory"
	edited, _ := json.Marshal(e)
	restore(keys[3], edited)
	require.Equal(t, &AuditBreak{Seq: 4, Reason: "its content does not match its hash (edited)"}, breaks())
	// Edited and rehashed: the next entry no longer follows it.
	e.Hash = e.hash()
	edited, _ = json.Marshal(e)
	restore(keys[3], edited)
	require.Equal(t, uint64(5), breaks().Seq)
	restore(keys[3], v)
	// Removed: entry 6.
	v6 := get(t, db, keys[5])
	require.NoError(t, db.db.Delete(keys[5], pebble.Sync))
	require.Equal(t, &AuditBreak{Seq: 7, Reason: "it does not follow entry 5 (an entry before it was removed or replaced)"}, breaks())
	restore(keys[5], v6)
	// Removed: the newest.
	v10 := get(t, db, keys[9])
	require.NoError(t, db.db.Delete(keys[9], pebble.Sync))
	require.Equal(t, &AuditBreak{Reason: "the newest entries after entry 9 were removed"}, breaks())
	restore(keys[9], v10)
	_, err = db.VerifyAudit()
	require.NoError(t, err)

	// Retention: entries before t0+5m go; the chain holds from the anchor,
	// and goes on after a restart.
	b := db.db.NewBatch()
	db.auditMu.Lock()
	require.NoError(t, db.auditRetentionLocked(b, t0.Add(5*time.Minute)))
	require.NoError(t, b.Commit(pebble.Sync))
	db.auditMu.Unlock()
	require.NoError(t, b.Close())
	n, err = db.VerifyAudit()
	require.NoError(t, err)
	require.Equal(t, 5, n)
	require.NoError(t, db.Close())
	db, err = Open(dir, Options{})
	require.NoError(t, err)
	require.NoError(t, db.Audit(AuditEntry{Time: t0.Add(time.Hour), User: "alice", Action: "backup.create", Success: true}))
	n, err = db.VerifyAudit()
	require.NoError(t, err)
	require.Equal(t, 6, n)
	// Removing the oldest entry left breaks the link to the anchor.
	first := auditKeys(t, db)[0]
	v1 := get(t, db, first)
	require.NoError(t, db.db.Delete(first, pebble.Sync))
	_, err = db.VerifyAudit()
	var ab *AuditBreak
	require.ErrorAs(t, err, &ab)
	require.Equal(t, "audit log: entry 7: it does not follow entry 5 (an entry before it was removed or replaced)", ab.Error())
	require.NoError(t, db.db.Set(first, v1, pebble.Sync))

	// Retention of every entry: the chain goes on from the anchor alone,
	// also after a restart; reads are appended unsynced, chained the same.
	b = db.db.NewBatch()
	db.auditMu.Lock()
	require.NoError(t, db.auditRetentionLocked(b, t0.Add(2*time.Hour)))
	require.NoError(t, b.Commit(pebble.Sync))
	db.auditMu.Unlock()
	require.NoError(t, b.Close())
	require.Empty(t, auditKeys(t, db))
	require.NoError(t, db.Close())
	db, err = Open(dir, Options{})
	require.NoError(t, err)
	require.NoError(t, db.AuditRead(AuditEntry{Time: t0.Add(3 * time.Hour), User: "vera", Action: "query", Success: true}))
	all, err = db.AuditEntries(AuditFilter{})
	require.NoError(t, err)
	require.Len(t, all, 1)
	require.Equal(t, uint64(12), all[0].Seq)
	n, err = db.VerifyAudit()
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.NoError(t, db.Close())
}

func auditKeys(t *testing.T, db *DB) [][]byte {
	it, err := db.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixAudit}, UpperBound: []byte{prefixAudit + 1}})
	require.NoError(t, err)
	defer it.Close()
	var keys [][]byte
	for valid := it.First(); valid; valid = it.Next() {
		keys = append(keys, append([]byte(nil), it.Key()...))
	}
	return keys
}

func get(t *testing.T, db *DB, k []byte) []byte {
	v, closer, err := db.db.Get(k)
	require.NoError(t, err)
	defer closer.Close()
	return append([]byte(nil), v...)
}
