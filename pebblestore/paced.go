package pebblestore

import (
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Every acknowledgement waits for a journal fdatasync, and on the
// development machine's virtual disk a sync costs in proportion to all that
// was written to the disk since the previous one, by any file: the cache
// flush that ends it makes all of it durable. Pebble writes in bursts: a
// cut commits a batch of several megabytes to its WAL and syncs it, and
// flushes and compactions write tables of megabytes. A journal sync that
// came after such a burst waited 10–20 ms for it.
//
// So every file Pebble writes is synced (fdatasync) after every
// writebackPiece bytes, as it is written: the writer waits for one piece
// to be durable before it writes the next, and a journal sync then pays
// for one piece at most. This is the job of RocksDB's rate limiter, without
// a rate to tune: Pebble writes as fast as the disk makes one piece
// durable after another. Pebble's own syncs still decide what is durable
// when; these only come earlier.
//
// The journal's own appends are not paced: they are what the pacing is for.
const writebackPiece = 128 << 10

// pacedFS is vfs.Default, with every file opened for writing paced.
type pacedFS struct{ vfs.FS }

func (fs pacedFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	return pace(fs.FS.Create(name, category))
}

func (fs pacedFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	return pace(fs.FS.ReuseForWrite(oldname, newname, category))
}

func (fs pacedFS) OpenReadWrite(name string, category vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	return pace(fs.FS.OpenReadWrite(name, category, opts...))
}

func pace(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return &pacedFile{File: f}, nil
}

// pacedFile syncs itself whenever a piece has been written to it. Writes
// are not safe for concurrent use, as with any vfs.File Pebble writes.
type pacedFile struct {
	vfs.File
	pending int // bytes written since the last sync
}

func (f *pacedFile) Write(p []byte) (int, error) {
	return f.inPieces(p, func(piece []byte, _ int64) (int, error) { return f.File.Write(piece) })
}

func (f *pacedFile) WriteAt(p []byte, off int64) (int, error) {
	return f.inPieces(p, func(piece []byte, at int64) (int, error) { return f.File.WriteAt(piece, off+at) })
}

// inPieces writes p with write, split where pieces end, and syncs after
// each piece; write gets each part and its offset in p.
func (f *pacedFile) inPieces(p []byte, write func(part []byte, at int64) (int, error)) (int, error) {
	n := 0
	for n < len(p) {
		k := min(len(p)-n, writebackPiece-f.pending)
		m, err := write(p[n:n+k], int64(n))
		n += m
		if err == nil {
			err = f.wrote(m)
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// wrote counts n bytes written and syncs the file once a piece has
// accumulated. A failed sync fails the write: after a failed fsync, Linux
// may report the next one as successful though the data was lost.
func (f *pacedFile) wrote(n int) error {
	f.pending += n
	if f.pending < writebackPiece {
		return nil
	}
	f.pending = 0
	return f.File.SyncData()
}
