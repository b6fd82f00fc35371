// Package backup writes, lists, verifies, prunes, restores and uploads
// backups of a proxylens data directory. It knows nothing of Pebble's
// contents: the caller supplies a Snapshot function that fills a directory
// with a consistent copy of the data directory (a Pebble checkpoint and the
// journal segments), and this package turns it into a backup.
//
// A backup lives in a root directory, either as a directory
//
//	<root>/<id>/MANIFEST.json
//	<root>/<id>/data/...
//
// or as one archive, <root>/<id>.tar.zst, a zstd-compressed tar stream of
// the same entries whose last entry is MANIFEST.json. The manifest lists
// every directory and every file with its size and SHA-256, and is written
// last: a backup without a valid manifest is never complete. Ids are UTC
// times, 20261129T023000Z, with a suffix (-1, -2, …) when one is taken, so
// they sort by time. Work in progress lives under <root>/.<id>.partial and
// only becomes visible under its final name, by a rename, once everything
// in it is on disk.
//
// Concurrency: Create may run concurrently with itself, List and Verify;
// ids are reserved atomically. Prune only deletes unfinished backups that
// have not been written to for IncompleteGrace, so it may run alongside
// Create too. Restore writes only to a hidden directory of its own until
// everything is verified.
package backup

import "errors"

// Sentinel errors; test with errors.Is.
var (
	// ErrIncomplete: the backup has no manifest (it was interrupted, or is
	// still being written).
	ErrIncomplete = errors.New("backup is incomplete")
	// ErrCorrupt: the manifest is unreadable, or the files do not match it.
	ErrCorrupt = errors.New("backup is corrupt")
	// ErrNotEmpty: Restore was asked to write into a non-empty directory.
	ErrNotEmpty = errors.New("data directory is not empty")
	// ErrLocked: Restore was asked to write into the data directory of a
	// running database.
	ErrLocked = errors.New("data directory is in use")
	// ErrInsideDataDir: a backup root is the data directory or inside it,
	// its symbolic links resolved (CheckDirs).
	ErrInsideDataDir = errors.New("must be outside the data directory")
)
