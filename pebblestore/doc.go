// Package pebblestore keeps everything proxylens puts on disk: one Pebble
// database in <data dir>/pebble and the ingest journal in <data
// dir>/journal. It stores bytes and series and decides nothing about
// them: the ingest pipeline (package otelanalytics) encodes its journal
// entries, records and totals, prices its cuts and replays what Load
// hands back; this package gives each its place in the key space
// (keys.go, which mirrors docs/format.md), makes it durable and reads it
// back.
//
// The pieces, by file:
//
//   - db.go: opening, the format version, closing;
//   - journal.go, replay.go, cut.go, cut_pieces.go: the ingest journal
//     (group-committed segments), Load's replay of it, and the cut that
//     writes a sealed segment's records and the pipeline's totals and
//     series, the series staged and applied in bounded pieces;
//   - records.go: scans of the stored records, as bytes;
//   - series.go, series_append.go, series_commit.go, series_read.go,
//     window.go: the time-series store (storage.Storage): the label
//     index, appends of samples and increments (staged, then committed in
//     one batch), reads, and the chunk encoding of a window;
//   - rollup.go, pushdown.go: the window bases, summaries and daily rollup
//     written with the data, and the reads that use them;
//   - overlay.go: the increments not committed yet, served by queriers on
//     top of the store, each exactly once;
//   - space.go: the free-space guard, which turns the store read-only
//     (ErrDiskFull) while the disk is short of space, before Pebble,
//     which cannot survive a full disk, would find it full;
//   - retention.go, audit.go, snapshot.go, costs.go, metadata.go: the
//     retention policy and its enforcement, the audit log, consistent
//     copies, the cost models and family metadata.
//
// The key layout and every value encoding are documented in
// docs/format.md and frozen by tests; the database carries a format
// version key and refuses to open a version it does not know.
//
// Durability: CommitBatch, WriteCut and series commits write with Pebble's
// Sync option (the journal with fdatasync), so a write that returned
// survives kill -9 and power loss. Concurrent commits share one sync.
//
// All methods of DB and SeriesStore are safe for concurrent use, except
// Load, which must run once, before the first CommitBatch.
//
// Locks, in the order they are taken (a lock is never taken while one
// after it is held):
//
//	DB.retentionMu        one policy change at a time
//	DB.cutMu              one cut or snapshot at a time
//	journal.prepMu        the spare segment
//	journal.mu            the segment being written
//	SeriesStore.viewMu    the view of a cut being applied (cut_view.go)
//	SeriesStore.commitMu  one series commit at a time; guards every series' head
//	SeriesStore.mu        the label index
//	DB.auditMu            the audit chain
//	DB.mu                 the journal checkpoint
//
// metadataStore.mu, querier.mu, cutView.mu and diskGuard.mu are leaves. A querier
// takes its snapshot and the cut view together under viewMu (read-locked,
// for the time of a Pebble NewSnapshot: it never waits for a cut's
// pieces) and reads the overlay (overlay.go) with no lock; it only
// waits, taking and releasing commitMu while it holds nothing, when its
// snapshot holds a cut whose commit has not updated the index yet. The
// overlay's implementation takes its own locks (otelanalytics: the
// overlay's, then the aggregator's), never while it holds one of these. A function that needs a
// lock held says so in its name (…Locked) and its comment names the lock.
package pebblestore
