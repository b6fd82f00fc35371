// Package pebblestore keeps everything proxylens puts on disk in one Pebble
// database: the string dictionary, the ingest journal, the sampled usage
// records and the aggregate totals. The key layout and every value encoding
// are documented in docs/format.md and frozen by tests; the database carries
// a format version key and refuses to open a version it does not know.
//
// Durability: CommitBatch and WriteCut write with Pebble's Sync option, so a
// write that returned survives kill -9 and power loss. Concurrent commits
// share one fsync (Pebble's commit pipeline groups them).
//
// All methods of DB are safe for concurrent use, except Load, which must run
// once, before ingest starts.
package pebblestore
