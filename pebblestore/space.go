package pebblestore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/proxylens/proxylens/selfmetrics"
)

// Errors of the store. Callers test them with errors.Is.
var (
	// ErrDiskFull means the store refused a write because the data
	// directory's file system has too little free space (below
	// Options.MinFreeBytes, or a write found none). It wraps
	// syscall.ENOSPC, so that callers that do not import this package can
	// recognise it; the write is not made, and the caller may retry once
	// space is back.
	ErrDiskFull = fmt.Errorf("storage read-only, disk space low: %w", syscall.ENOSPC)
)

// DefaultMinFreeBytes is the free space below which the store turns
// read-only by default: room for a cut's batches, a Pebble WAL rotation
// (its files are preallocated to 110% of the 64 MiB memtable), a memtable
// flush and the journal's next segments (8 MiB each).
const DefaultMinFreeBytes = 512 << 20

// DefaultBallastBytes is the ballast's default size: more than one Pebble
// WAL file's preallocation (110% of the 64 MiB memtable).
const DefaultBallastBytes = 128 << 20

// ballastName is the ballast file, in the data directory.
const ballastName = "ballast"

// DefaultDiskCheckInterval is how often the free space is checked by default.
const DefaultDiskCheckInterval = time.Second

// FreeBytes returns the bytes free to an unprivileged user on the file
// system that holds dir (statfs). It is what the store's guard calls unless
// Options.FreeBytes is set.
func FreeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// diskGuard keeps the store writable only while its file system has
// space, as VictoriaMetrics' -storage.minFreeDiskSpaceBytes does: below
// min free bytes, or after a write found no space at all, the store is
// read-only (every bulk write refused with ErrDiskFull, reads served)
// until a check finds resume bytes free. Pebble cannot survive a failed
// write of its WAL or MANIFEST (it calls Logger.Fatalf, or panics in
// rotateWAL), so the guard stops the writes before the disk is full
// rather than after.
//
// Its methods are safe for concurrent use; mu is a leaf lock.
type diskGuard struct {
	dir         string
	min, resume uint64
	freeBytes   func(dir string) (uint64, error)
	log         *slog.Logger
	refused     func() // counts a refused write

	// The ballast (as CockroachDB keeps one): a file of ballastSize
	// bytes that Pebble's file system deletes when one of its writes
	// finds the disk full, and then retries the write once, so that a
	// write the guard did not foresee does not stop the process.
	ballast     string
	ballastSize int64
	noBallast   atomic.Bool // deleted (or never made): re-made before the store is writable again

	readOnly atomic.Bool
	free     atomic.Uint64 // at the last check
	reason   atomic.Pointer[string]

	mu       sync.Mutex // serializes checks and transitions
	statErr  bool       // the last check failed: logged once
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

func newDiskGuard(dir string, opts Options, log *slog.Logger, reg *selfmetrics.Registry) *diskGuard {
	free := opts.FreeBytes
	if free == nil {
		free = FreeBytes
	}
	min := opts.MinFreeBytes
	g := &diskGuard{dir: dir, min: min, resume: min + min/4, freeBytes: free, log: log,
		ballast: filepath.Join(dir, ballastName), ballastSize: opts.BallastBytes,
		stop: make(chan struct{}), done: make(chan struct{})}
	if fi, err := os.Stat(g.ballast); g.ballastSize <= 0 {
		// No ballast wanted: one a previous run made is space to give back.
		if err == nil {
			_ = os.Remove(g.ballast)
		}
	} else if err != nil || fi.Size() != g.ballastSize {
		g.noBallast.Store(true)
	}
	refused := reg.Counter("proxylens_storage_writes_refused_total",
		"Writes refused because the data directory's disk had too little free space: ingest batches, cuts, series commits.")
	g.refused = refused.Inc
	reg.Gauge("proxylens_storage_read_only", "1 while the store refuses writes for lack of disk space (storage.min_free_disk_bytes), else 0.", func() float64 {
		if g.readOnly.Load() {
			return 1
		}
		return 0
	})
	reg.Gauge("proxylens_storage_free_bytes", "Free bytes on the data directory's file system, at the last check.", func() float64 {
		return float64(g.free.Load())
	})
	return g
}

// start checks the free space every interval until close.
func (g *diskGuard) start(interval time.Duration) {
	if interval <= 0 {
		interval = DefaultDiskCheckInterval
	}
	go func() {
		defer close(g.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-g.stop:
				return
			case <-t.C:
				g.check()
			}
		}
	}()
}

// close stops the checks started by start.
func (g *diskGuard) close() {
	g.stopOnce.Do(func() { close(g.stop) })
	<-g.done
}

// check reads the free space and turns the store read-only below min, or
// writable again at resume or more. It returns the error writes get now.
func (g *diskGuard) check() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	free, err := g.freeBytes(g.dir)
	if err != nil {
		// Keep the state: a guard that cannot look changes nothing.
		if !g.statErr {
			g.log.Warn("cannot read the data directory's free space; keeping the store's state", "dir", g.dir, "err", err)
			g.statErr = true
		}
		return g.err()
	}
	g.statErr = false
	g.free.Store(free)
	if g.noBallast.Load() && free >= g.resume+uint64(g.ballastSize) {
		g.makeBallastLocked()
		if free, err = g.freeBytes(g.dir); err != nil {
			return g.err()
		}
		g.free.Store(free)
	}
	switch ro := g.readOnly.Load(); {
	case !ro && g.min > 0 && free < g.min:
		g.setReadOnlyLocked(fmt.Sprintf("%s free on the data disk, below the %s bound", mib(free), mib(g.min)))
		g.log.Warn("free disk space below the bound: the store is read-only, ingest is refused as retryable and cuts wait",
			"dir", g.dir, "free_bytes", free, "min_free_bytes", g.min, "resume_bytes", g.resume)
	case ro && free >= g.resume && !g.noBallast.Load():
		g.readOnly.Store(false)
		g.reason.Store(nil)
		g.log.Info("free disk space back above the bound: the store takes writes again",
			"dir", g.dir, "free_bytes", free, "resume_bytes", g.resume)
	}
	return g.err()
}

// noSpace turns the store read-only after a write found no space (err),
// though the last check saw enough: the next check that finds resume
// bytes free makes it writable again.
func (g *diskGuard) noSpace(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.readOnly.Load() {
		return
	}
	g.setReadOnlyLocked("a write found no space left on the data disk")
	g.log.Warn("a write found no space left: the store is read-only until free space is back",
		"dir", g.dir, "resume_bytes", g.resume, "err", err)
}

// makeBallastLocked creates the ballast file, its blocks allocated. The
// caller holds mu.
func (g *diskGuard) makeBallastLocked() {
	tmp := g.ballast + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err == nil {
		if err = syscall.Fallocate(int(f.Fd()), 0, 0, g.ballastSize); err != nil {
			// No fallocate: write it.
			_, err = f.Write(make([]byte, g.ballastSize))
		}
		err = errors.Join(err, f.Sync(), f.Close())
	}
	if err == nil {
		err = os.Rename(tmp, g.ballast)
	}
	if err != nil {
		_ = os.Remove(tmp)
		g.log.Warn("disk ballast not made; the store goes on without it", "path", g.ballast, "err", err)
		return
	}
	g.noBallast.Store(false)
}

// onDiskFull is called by Pebble's file system when one of its writes
// finds the disk full, with Pebble's writes blocked: it deletes the
// ballast, so that the write, retried once, has room, and turns the store
// read-only.
func (g *diskGuard) onDiskFull() {
	if g.ballastSize > 0 && !g.noBallast.Load() {
		if err := os.Remove(g.ballast); err == nil || errors.Is(err, os.ErrNotExist) {
			g.noBallast.Store(true)
		}
	}
	g.noSpace(errors.New("a Pebble write found no space left; the ballast is deleted"))
}

func (g *diskGuard) setReadOnlyLocked(reason string) {
	g.reason.Store(&reason)
	g.readOnly.Store(true)
}

// err returns nil while the store is writable, else ErrDiskFull with the
// reason.
func (g *diskGuard) err() error {
	if !g.readOnly.Load() {
		return nil
	}
	reason := "disk space low"
	if r := g.reason.Load(); r != nil {
		reason = *r
	}
	return fmt.Errorf("%w (%s)", ErrDiskFull, reason)
}

// refuse returns the error of a write refused now (nil: go ahead), and
// counts the refusal.
func (g *diskGuard) refuse() error {
	err := g.err()
	if err != nil {
		g.refused()
	}
	return err
}

// refuseChecked checks the free space first: for the writes of a cut,
// which may be large.
func (g *diskGuard) refuseChecked() error {
	err := g.check()
	if err != nil {
		g.refused()
	}
	return err
}

// isNoSpace reports whether err says the disk is full.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// Writable returns nil while the store takes writes, or an error that
// says why not: ErrDiskFull while the disk is short of space, or the
// journal's error after a write or sync of it failed for another reason
// (its state on disk is then unknown: the journal refuses every batch
// until a restart replays it). Queries are served either way.
func (d *DB) Writable() error {
	if err := d.guard.err(); err != nil {
		return err
	}
	if d.j != nil {
		return d.j.failed()
	}
	return nil
}

// CheckDisk reads the free space now (as the guard does every
// Options.DiskCheckInterval) and returns what Writable then returns.
func (d *DB) CheckDisk() error { return d.guard.check() }
