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
// A cut must not stall ingest, so sealing does no I/O: the next segment
// is created (and its directory entry synced) ahead of time, as a spare,
// and seal only switches to it. When the pipeline seals, no append is in
// progress and every entry of the sealed segment is already synced (a
// snapshot may seal with appends in flight: seal then syncs them first).
// The sealed file is synced again and closed by prepare, which the cut
// calls after ingest has resumed and which creates the next spare.
//
// append and seal are safe for concurrent use.
type journal struct {
	dir string

	prepMu sync.Mutex // held by prepare, seal and close; taken before mu

	mu       sync.Mutex
	cond     sync.Cond // signalled when a sync ends
	seg      uint64    // current segment
	f        vfs.File
	w        *record.Writer
	spare    vfs.File   // segment seg+1, created and empty; nil until prepared
	sealed   []vfs.File // sealed segments that prepare has not closed yet
	size     int64      // bytes appended to the current segment
	appended uint64     // entries appended, all segments
	synced   uint64     // entries known durable
	syncing  bool       // a leader is syncing
	err      error      // a write or sync failed: the journal takes no more
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

// openJournal starts a new segment numbered seg in dir, and prepares the
// spare that follows it.
func openJournal(dir string, seg uint64) (*journal, error) {
	j := &journal{dir: dir}
	j.cond.L = &j.mu
	f, err := createSegment(dir, seg)
	if err != nil {
		return nil, err
	}
	j.use(seg, f)
	if err := j.prepare(); err != nil {
		return nil, errors.Join(err, j.close())
	}
	return j, nil
}

// createSegment creates the empty segment seg and syncs its directory
// entry, so that entries written to it once it is in use survive a crash.
func createSegment(dir string, seg uint64) (vfs.File, error) {
	path := filepath.Join(dir, segmentName(seg))
	if _, err := os.Stat(path); err == nil {
		return nil, fmt.Errorf("create journal segment: %s exists", path)
	}
	f, err := vfs.Default.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, fmt.Errorf("create journal segment: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return nil, errors.Join(err, f.Close())
	}
	return vfs.NewSyncingFile(f, vfs.SyncingFileOptions{
		BytesPerSync:    journalBytesPerSync,
		PreallocateSize: journalPreallocate,
	}), nil
}

// use makes f, segment seg, the segment being written.
func (j *journal) use(seg uint64, f vfs.File) {
	j.f, j.w = f, record.NewWriter(f)
	j.seg, j.size = seg, 0
}

// prepare closes the sealed segments (syncing them once more) and creates
// the spare segment if there is none. It does its I/O outside the lock
// appends take, so ingest goes on meanwhile.
func (j *journal) prepare() error {
	j.prepMu.Lock()
	defer j.prepMu.Unlock()
	j.mu.Lock()
	sealed, next, need := j.sealed, j.seg+1, j.spare == nil && j.f != nil
	j.sealed = nil
	j.mu.Unlock()
	var errs []error
	for _, f := range sealed {
		errs = append(errs, closeFile(f))
	}
	if need {
		f, err := createSegment(j.dir, next)
		if err == nil {
			j.mu.Lock()
			j.spare = f // seal, which would move seg, waits for prepMu
			j.mu.Unlock()
		}
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("prepare journal: %w", err)
	}
	return nil
}

func closeFile(f vfs.File) error {
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
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

// seal ends the current segment and switches to the next one; every entry
// appended so far is synced and in a sealed segment. It returns the number
// of the sealed segment. With a spare prepared it does no I/O; the caller
// calls prepare afterwards, outside its own locks.
func (j *journal) seal() (uint64, error) {
	j.prepMu.Lock() // a prepare in progress finishes its spare first
	defer j.prepMu.Unlock()
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err != nil {
		return 0, j.err
	}
	// The pipeline seals with no append in progress, so every entry is
	// synced; a snapshot may seal while appends are in flight, and then
	// syncs them here.
	for j.syncing {
		j.cond.Wait()
	}
	if j.err != nil {
		return 0, j.err
	}
	if j.synced < j.appended {
		err := j.w.Flush()
		if err == nil {
			err = j.f.Sync()
		}
		if err != nil {
			j.err = fmt.Errorf("sync journal: %w", err)
			j.cond.Broadcast()
			return 0, j.err
		}
		j.synced = j.appended
		j.cond.Broadcast()
	}
	next := j.spare
	if next == nil {
		// The last prepare failed; create the next segment here. If that
		// fails too, appends go on in the current segment.
		f, err := createSegment(j.dir, j.seg+1)
		if err != nil {
			return 0, err
		}
		next = f
	}
	// Every entry is flushed and synced, so closing the record writer
	// writes nothing.
	if err := j.w.Close(); err != nil {
		j.err = fmt.Errorf("close journal segment %d: %w", j.seg, err)
		return 0, j.err
	}
	sealed := j.seg
	j.sealed = append(j.sealed, j.f)
	j.spare = nil
	j.use(sealed+1, next)
	return sealed, nil
}

// close syncs and closes every segment file and removes the spare, which
// holds nothing.
func (j *journal) close() error {
	j.prepMu.Lock()
	defer j.prepMu.Unlock()
	j.mu.Lock()
	defer j.mu.Unlock()
	var errs []error
	for _, f := range j.sealed {
		errs = append(errs, closeFile(f))
	}
	j.sealed = nil
	if j.f != nil {
		err := j.w.Close()
		if err == nil {
			err = closeFile(j.f)
		} else {
			_ = j.f.Close()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("close journal segment %d: %w", j.seg, err))
		}
		j.synced = j.appended
		j.f, j.w = nil, nil
	}
	if j.spare != nil {
		errs = append(errs, j.spare.Close(), os.Remove(filepath.Join(j.dir, segmentName(j.seg+1))))
		j.spare = nil
	}
	return errors.Join(errs...)
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
