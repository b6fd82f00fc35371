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
	"syscall"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/pebble/v2/record"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
)

// journal is the ingest write-ahead log: one entry per ingest batch in
// segment files <data dir>/journal/<n>.log, written by Pebble's own WAL
// writer (record.LogWriter: 32 KiB blocks of checksummed chunks that carry
// the segment number and the offset synced before them). A cut seals the
// current segment and starts the next; once the sealed segments' records
// and totals are in Pebble they are retired.
//
// Appends share syncs (group commit): the writer's flush loop writes and
// syncs everything queued since its last sync, and every append waits for
// the sync that covers its entry.
//
// A sync must not wait for file system metadata, or every acknowledgement
// waits for whatever else the file system is committing (on ext4, the
// journal commit that an fdatasync of a growing file forces also writes
// out the data of other files: the cut's Pebble writes). So segments are
// recycled, as Pebble recycles its WAL files: a retired segment this
// journal wrote is renamed to a free file and becomes a later segment,
// overwritten in place, so that its syncs write data only. The segment
// number in every chunk tells the new entries from the stale ones behind
// them.
//
// A cut must not stall ingest, so the next segment is created (and its
// directory entry synced) ahead of time, as a spare, and seal switches to
// it after closing the current one, which syncs only its end marker: when
// the pipeline seals, every entry is already synced (a snapshot may seal
// with appends in flight: closing syncs them first). Every sealed segment
// is closed, so only the newest segment can end in a torn entry.
//
// append and seal are safe for concurrent use.
type journal struct {
	dir   string
	sem   chan struct{} // bounds the appends waiting for a sync (the writer's queue)
	syncs syncLatency

	prepMu sync.Mutex // held by prepare, seal, retire and close; taken before mu
	spare  vfs.File   // segment seg+1, created; nil until prepared
	free   []string   // retired segments' files, kept for reuse as spares
	first  uint64     // the first segment this journal wrote: older ones are not recycled

	mu       sync.Mutex
	seg      uint64 // current segment
	w        *record.LogWriter
	f        vfs.File // the current segment's file
	size     int64    // bytes appended to the current segment
	reserved int64    // bytes of the current segment's file known to be allocated
	// noReserve: the file system cannot reserve space (no fallocate);
	// appends then rely on the free-space guard alone.
	noReserve bool
	err       error // a write or sync failed: the journal takes no more
}

// Segment files are opened as Pebble opens its WAL: space preallocated in
// blocks and synced with fdatasync, and dirty data flushed in the
// background every bytesPerSync, so that a sync never has much to write.
// At most maxFree retired segments wait for reuse, none larger than
// maxRecycle.
const (
	journalPreallocate  = 4 << 20 // also the step of reserveLocked
	journalBytesPerSync = 512 << 10
	maxFree             = 2
	maxRecycle          = 64 << 20
)

// journalPrefill is the size new segment files start at, in zeros: a
// segment of 15 s at 20,000 spans/s is about 7.5 MB. (A variable so that
// the package's tests, which open many journals, write less.)
var journalPrefill = 8 << 20

func segmentName(n uint64) string { return fmt.Sprintf("%020d.log", n) }

// freePrefix names the retired segment files kept for reuse.
const freePrefix = "free-"

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

// logNum converts a segment number to the log number type of Pebble's
// record package, which Pebble keeps internal: its reader's signature
// names it.
func logNum[N ~uint64](_ func(io.Reader, N) *record.Reader, seg uint64) N { return N(seg) }

// openJournal starts a new segment numbered seg in dir; the caller
// prepares the spare that follows it. Free files a previous run left are
// removed: they may hold entries of an older format.
func openJournal(dir string, seg uint64, syncs *metrics.PrometheusHistogram) (*journal, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), freePrefix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return nil, fmt.Errorf("open journal: %w", err)
			}
		}
	}
	j := &journal{dir: dir, first: seg, sem: make(chan struct{}, record.SyncConcurrency-1), syncs: syncLatency{h: syncs}}
	f, err := createSegment(dir, seg, "")
	if err != nil {
		return nil, err
	}
	j.use(seg, f)
	return j, nil
}

// createSegment creates segment seg and syncs its directory entry, so that
// entries written to it once it is in use survive a crash. The segment
// reuses the free file reuse when there is one; a new file is first filled
// with journalPrefill zeros (as PostgreSQL fills its WAL segments), so
// that it too is written over in place. Zeros read as the end of the
// segment.
func createSegment(dir string, seg uint64, reuse string) (vfs.File, error) {
	path := filepath.Join(dir, segmentName(seg))
	if _, err := os.Stat(path); err == nil {
		return nil, fmt.Errorf("create journal segment: %s exists", path)
	}
	var f vfs.File
	var err error
	if reuse != "" {
		f, err = vfs.Default.ReuseForWrite(reuse, path, vfs.WriteCategoryUnspecified)
	} else if err = prefill(path); err == nil {
		f, err = vfs.Default.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
	}
	if err != nil {
		// A file half filled (the disk was full) would make every later
		// attempt find the segment existing: remove it.
		if reuse == "" {
			_ = os.Remove(path)
		}
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

// prefill creates the file path holding journalPrefill zeros, synced a
// piece at a time, as Pebble's files are (see pacedFS), so that the syncs
// of the current segment meanwhile wait for one piece at most.
func prefill(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return err
	}
	zeros := make([]byte, writebackPiece)
	for written := 0; written < journalPrefill && err == nil; written += len(zeros) {
		if _, err = f.Write(zeros); err == nil {
			err = f.Sync()
		}
	}
	if err = errors.Join(err, f.Close()); err != nil {
		return errors.Join(err, os.Remove(path))
	}
	return nil
}

// use makes f, segment seg, the segment being written. Its file is
// known to hold at least journalPrefill bytes (a new file is filled with
// them; a reused one held a segment).
func (j *journal) use(seg uint64, f vfs.File) {
	j.w = record.NewLogWriter(f, logNum(record.NewReader, seg), record.LogWriterConfig{
		QueueSemChan:        j.sem,
		WALFsyncLatency:     j.syncs,
		WriteWALSyncOffsets: func() bool { return true },
	})
	j.seg, j.size, j.f = seg, 0, f
	j.reserved = 0
	if fi, err := f.Stat(); err == nil {
		j.reserved = fi.Size()
	}
}

// reserveLocked makes sure the current segment's file has the blocks an
// entry of n bytes will be written to, before the entry is queued: the
// writer's flush loop writes it later, and a write that found the disk
// full there would fail the entry after the pipeline counted it, which
// only a restart can undo. Space reserved (fallocate, the file's size
// kept) cannot run out, so a full disk refuses the entry here, cleanly,
// and the journal goes on taking entries once space is back. The caller
// holds mu.
func (j *journal) reserveLocked(n int) error {
	if j.noReserve {
		return nil
	}
	// The writer's file offset, the entry, a chunk header per fragment,
	// and a block for the end marker and the last block's padding.
	const block, header = 32 << 10, 32
	need := j.w.Size() + int64(n) + int64(n/(block-header)+2)*header + block
	if need <= j.reserved {
		return nil
	}
	want := (need + journalPreallocate - 1) / journalPreallocate * journalPreallocate
	if err := j.f.Preallocate(0, want); err != nil {
		if errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS) {
			j.noReserve = true
			return nil
		}
		return fmt.Errorf("reserve journal space: %w", err)
	}
	j.reserved = want
	return nil
}

// prepare creates the spare segment if there is none, reusing a free file
// if there is one. It does its I/O outside the lock appends take, so
// ingest goes on meanwhile.
func (j *journal) prepare() error {
	j.prepMu.Lock()
	defer j.prepMu.Unlock()
	j.mu.Lock()
	next, need := j.seg+1, j.spare == nil && j.w != nil
	j.mu.Unlock()
	if !need {
		return nil
	}
	var reuse string
	if n := len(j.free); n > 0 {
		reuse, j.free = j.free[n-1], j.free[:n-1]
	}
	f, err := createSegment(j.dir, next, reuse)
	if err != nil {
		return fmt.Errorf("prepare journal: %w", err)
	}
	j.spare = f // seal, which would move seg, waits for prepMu
	return nil
}

// syncLatency takes the sync latencies the writer observes (nanoseconds)
// into the journal's sync duration histogram. The writer records in each
// chunk the offset synced before it only when it has this histogram, and
// recovery needs that offset to tell damage from a torn tail.
type syncLatency struct {
	prometheus.Histogram // nil: the writer calls only Observe
	h                    *metrics.PrometheusHistogram
}

func (s syncLatency) Observe(ns float64) { s.h.Update(ns / 1e9) }

// waiter is what an append waits on: the sync of its entry.
type waiter struct {
	wg  sync.WaitGroup
	err error
}

var waiters = sync.Pool{New: func() any { return new(waiter) }}

// append writes one entry, calls written (if not nil) while the entry's
// sync is pending, and returns once the entry is synced to disk.
func (j *journal) append(entry []byte, written func()) error {
	w := waiters.Get().(*waiter)
	defer waiters.Put(w)
	w.err = nil
	j.sem <- struct{}{} // the writer releases it when the sync is done
	j.mu.Lock()
	err := j.err
	if err == nil {
		if err = j.reserveLocked(len(entry)); err != nil {
			// Nothing is written: the entry is refused, the journal not
			// broken.
			j.mu.Unlock()
			<-j.sem
			return err
		}
		w.wg.Add(1)
		if _, err = j.w.SyncRecord(entry, &w.wg, &w.err); err != nil {
			w.wg.Done() // not queued
			j.err = fmt.Errorf("append to journal: %w", err)
			err = j.err
		}
	}
	if err != nil {
		j.mu.Unlock()
		<-j.sem
		return err
	}
	j.size += int64(len(entry))
	j.mu.Unlock()
	if written != nil {
		written()
	}
	w.wg.Wait()
	if w.err != nil {
		j.mu.Lock()
		defer j.mu.Unlock()
		if j.err == nil {
			j.err = fmt.Errorf("sync journal: %w", w.err)
		}
		return j.err
	}
	return nil
}

// failed returns the error that stopped the journal, if one did.
func (j *journal) failed() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err != nil {
		return fmt.Errorf("%w; restart proxylens to replay the journal", j.err)
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
// of the sealed segment. With a spare prepared it syncs only the sealed
// segment's end; the caller calls prepare afterwards, outside its own
// locks.
func (j *journal) seal() (uint64, error) {
	j.prepMu.Lock() // a prepare in progress finishes its spare first
	defer j.prepMu.Unlock()
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err != nil {
		return 0, j.err
	}
	next := j.spare
	if next == nil {
		// The last prepare failed; create the next segment here. If that
		// fails too, appends go on in the current segment.
		f, err := createSegment(j.dir, j.seg+1, "")
		if err != nil {
			return 0, err
		}
		next = f
	}
	// Closing writes the end marker and syncs it with any entry still
	// queued (a snapshot's seal).
	if err := j.w.Close(); err != nil {
		j.err = fmt.Errorf("close journal segment %d: %w", j.seg, err)
		j.spare = nil // the next start removes it: it holds no entries
		return 0, errors.Join(j.err, next.Close())
	}
	sealed := j.seg
	j.spare = nil
	j.use(sealed+1, next)
	return sealed, nil
}

// close closes the segment being written and removes the spare and the
// free files, which hold nothing.
func (j *journal) close() error {
	j.prepMu.Lock()
	defer j.prepMu.Unlock()
	j.mu.Lock()
	defer j.mu.Unlock()
	var errs []error
	if j.w != nil {
		if err := j.w.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close journal segment %d: %w", j.seg, err))
		}
		j.w = nil
	}
	if j.spare != nil {
		errs = append(errs, j.spare.Close(), os.Remove(filepath.Join(j.dir, segmentName(j.seg+1))))
		j.spare = nil
	}
	for _, name := range j.free {
		errs = append(errs, os.Remove(name))
	}
	j.free = nil
	return errors.Join(errs...)
}

// retire removes the segments numbered up to upTo, now in Pebble. Files of
// segments this journal wrote are kept for reuse, up to maxFree.
func (j *journal) retire(upTo uint64) error {
	j.prepMu.Lock()
	defer j.prepMu.Unlock()
	return removeSegments(j.dir, upTo, func(n uint64, path string) bool {
		if n < j.first || len(j.free) >= maxFree {
			return false
		}
		if fi, err := os.Stat(path); err != nil || fi.Size() > maxRecycle {
			return false
		}
		free := filepath.Join(j.dir, fmt.Sprintf("%s%020d", freePrefix, n))
		if os.Rename(path, free) != nil {
			return false
		}
		j.free = append(j.free, free)
		return true
	})
}

// removeSegments deletes the segments of dir numbered up to upTo, except
// those keep takes (nil keeps none).
func removeSegments(dir string, upTo uint64, keep func(n uint64, path string) bool) error {
	segs, err := listSegments(dir)
	if err != nil {
		return fmt.Errorf("list journal: %w", err)
	}
	for _, n := range segs {
		if n > upTo {
			break
		}
		path := filepath.Join(dir, segmentName(n))
		if keep != nil && keep(n, path) {
			continue
		}
		if err := os.Remove(path); err != nil {
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
	r := record.NewReader(f, logNum(record.NewReader, n))
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
