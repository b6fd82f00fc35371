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
)

// journal is the ingest write-ahead log: one entry per ingest batch in
// segment files <data dir>/journal/<n>.log, written in the record format
// of Pebble's own WAL (32 KiB blocks of checksummed chunks) by Pebble's
// LogWriter, whose flush loop syncs concurrent appends together (group
// commit). A cut seals the current segment and starts the next; once the
// sealed segments' records and totals are in Pebble they are deleted.
//
// append is safe for concurrent use; seal must not run concurrently with
// append (the pipeline guarantees it).
type journal struct {
	dir string

	mu   sync.Mutex // serialises writes to the LogWriter
	seg  uint64     // current segment
	f    *os.File
	w    *record.LogWriter
	size int64 // bytes appended to the current segment
	sem  chan struct{}
}

// journalLogNum is the file number written into every chunk header. Pebble
// uses it to tell a recycled file's stale chunks from new ones; segments
// are never recycled here, so one number serves all.
const journalLogNum = 1

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
	j := &journal{dir: dir, sem: make(chan struct{}, record.SyncConcurrency-1)}
	if err := j.start(seg); err != nil {
		return nil, err
	}
	return j, nil
}

func (j *journal) start(seg uint64) error {
	f, err := os.OpenFile(filepath.Join(j.dir, segmentName(seg)), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("create journal segment: %w", err)
	}
	if err := syncDir(j.dir); err != nil {
		return errors.Join(err, f.Close())
	}
	j.seg, j.f, j.size = seg, f, 0
	j.w = record.NewLogWriter(f, journalLogNum, record.LogWriterConfig{
		QueueSemChan:        j.sem,
		WriteWALSyncOffsets: func() bool { return false },
	})
	return nil
}

// append writes one entry and returns once it is synced to disk.
func (j *journal) append(entry []byte) error {
	var wg sync.WaitGroup
	var syncErr error
	wg.Add(1)
	j.mu.Lock()
	j.sem <- struct{}{} // a sync slot; the LogWriter frees it once synced
	_, err := j.w.SyncRecord(entry, &wg, &syncErr)
	j.size += int64(len(entry))
	j.mu.Unlock()
	if err != nil {
		<-j.sem
		return fmt.Errorf("append to journal: %w", err)
	}
	wg.Wait()
	if syncErr != nil {
		return fmt.Errorf("sync journal: %w", syncErr)
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
	sealed := j.seg
	if err := j.w.Close(); err != nil {
		return 0, fmt.Errorf("close journal segment %d: %w", sealed, err)
	}
	if err := j.start(sealed + 1); err != nil {
		return 0, err
	}
	return sealed, nil
}

// close closes the current segment.
func (j *journal) close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.w == nil {
		return nil
	}
	err := j.w.Close()
	j.w = nil
	if err != nil {
		return fmt.Errorf("close journal: %w", err)
	}
	return nil
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
	r := record.NewReader(f, journalLogNum)
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
