package pebblestore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/v2/record"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// journal is the ingest write-ahead log: one entry per ingest batch in
// segment files <data dir>/journal/<n>.log, in the record format of
// Pebble's own WAL (32 KiB blocks of checksummed chunks, written by
// Pebble's record.Writer). A cut seals the current segment and starts the
// next; once the sealed segments' records and totals are in Pebble they are
// deleted.
//
// Appends share syncs (group commit) without handing work to another
// goroutine: the first appender to find no sync running syncs everything
// appended so far; appenders that arrive meanwhile wait for the next sync,
// which one of them leads. On an idle system a commit is one write and one
// fdatasync, on the committing goroutine.
//
// append is safe for concurrent use; seal must not run concurrently with
// append (the pipeline guarantees it).
type journal struct {
	dir string

	mu       sync.Mutex
	cond     sync.Cond // signalled when a sync ends
	seg      uint64    // current segment
	f        vfs.File
	w        *record.Writer
	size     int64  // bytes appended to the current segment
	appended uint64 // entries appended, all segments
	synced   uint64 // entries known durable
	syncing  bool   // a leader is syncing
	err      error  // a write or sync failed: the journal takes no more
}

// Segment files are opened as Pebble opens its WAL: space preallocated in
// blocks and synced with fdatasync, and dirty data flushed in the
// background every bytesPerSync, so that a sync never has much to write.
const (
	journalPreallocate  = 4 << 20
	journalBytesPerSync = 512 << 10
)

func segmentName(n uint64) string { return fmt.Sprintf("%020d.log", n) }

// listSegments returns the segment numbers in dir, ascending.
func listSegments(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var segs []uint64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".log")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("unexpected file %s in journal directory %s", e.Name(), dir)
		}
		segs = append(segs, n)
	}
	slices.Sort(segs)
	return segs, nil
}

// openJournal starts a new segment numbered seg in dir.
func openJournal(dir string, seg uint64) (*journal, error) {
	j := &journal{dir: dir}
	j.cond.L = &j.mu
	if err := j.start(seg); err != nil {
		return nil, err
	}
	return j, nil
}

func (j *journal) start(seg uint64) error {
	path := filepath.Join(j.dir, segmentName(seg))
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("create journal segment: %s exists", path)
	}
	f, err := vfs.Default.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("create journal segment: %w", err)
	}
	if err := syncDir(j.dir); err != nil {
		return errors.Join(err, f.Close())
	}
	j.f = vfs.NewSyncingFile(f, vfs.SyncingFileOptions{
		BytesPerSync:    journalBytesPerSync,
		PreallocateSize: journalPreallocate,
	})
	j.w = record.NewWriter(j.f)
	j.seg, j.size = seg, 0
	return nil
}

// append writes one entry and returns once it is synced to disk.
func (j *journal) append(entry []byte) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err != nil {
		return j.err
	}
	if _, err := j.w.WriteRecord(entry); err != nil {
		j.err = fmt.Errorf("append to journal: %w", err)
		return j.err
	}
	j.size += int64(len(entry))
	j.appended++
	me := j.appended
	for j.synced < me {
		if j.err != nil {
			return j.err
		}
		if j.syncing {
			j.cond.Wait()
			continue
		}
		// Lead a sync of everything appended so far. Others may append
		// while it runs; they wait for the next one.
		j.syncing = true
		target := j.appended
		err := j.w.Flush()
		f := j.f
		j.mu.Unlock()
		if err == nil {
			err = f.Sync()
		}
		j.mu.Lock()
		j.syncing = false
		if err != nil {
			j.err = fmt.Errorf("sync journal: %w", err)
		} else {
			j.synced = max(j.synced, target)
		}
		j.cond.Broadcast()
	}
	return nil
}

// bytes returns the size of the entries in the current segment.
func (j *journal) bytes() int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.size
}

// seal closes the current segment (every entry appended so far is then
// synced and in a sealed segment) and starts the next one. It returns the
// number of the sealed segment.
func (j *journal) seal() (uint64, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err != nil {
		return 0, j.err
	}
	sealed := j.seg
	if err := j.closeSegment(); err != nil {
		j.err = err
		return 0, err
	}
	if err := j.start(sealed + 1); err != nil {
		j.err = err
		return 0, err
	}
	return sealed, nil
}

// closeSegment writes what is buffered, syncs and closes the segment.
func (j *journal) closeSegment() error {
	err := j.w.Close()
	if err == nil {
		err = j.f.Sync()
	}
	if cerr := j.f.Close(); err == nil {
		err = cerr
	}
	j.f, j.w = nil, nil
	if err != nil {
		return fmt.Errorf("close journal segment %d: %w", j.seg, err)
	}
	j.synced = j.appended
	return nil
}

// close closes the current segment.
func (j *journal) close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	return j.closeSegment()
}

// removeSegments deletes the segments of dir numbered up to upTo.
func removeSegments(dir string, upTo uint64) error {
	segs, err := listSegments(dir)
	if err != nil {
		return fmt.Errorf("list journal: %w", err)
	}
	for _, n := range segs {
		if n > upTo {
			break
		}
		if err := os.Remove(filepath.Join(dir, segmentName(n))); err != nil {
			return fmt.Errorf("remove journal segment: %w", err)
		}
	}
	return syncDir(dir)
}

// readSegment calls fn for every entry of segment n, in order. A segment
// whose end was torn by a crash ends at its last whole entry when last is
// true (only the newest segment can have been cut short); any other damage
// is an error.
func readSegment(dir string, n uint64, last bool, fn func(entry []byte) error) error {
	f, err := os.Open(filepath.Join(dir, segmentName(n)))
	if err != nil {
		return fmt.Errorf("open journal segment: %w", err)
	}
	defer f.Close()
	r := record.NewReader(f, 0) // record.Writer writes chunks without a log number
	var buf []byte
	for {
		rr, err := r.Next()
		if err == nil {
			buf = buf[:0]
			buf, err = readAll(rr, buf)
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			return nil
		case errors.Is(err, record.ErrUnexpectedEOF) && last:
			return nil // torn tail: the entry was never acknowledged
		default:
			return fmt.Errorf("journal segment %s is damaged: %w", segmentName(n), err)
		}
		if err := fn(buf); err != nil {
			return fmt.Errorf("journal segment %s: %w", segmentName(n), err)
		}
	}
}

func readAll(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory to sync: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
