// Package changes tracks which hours of sample time have changed, so that
// a cache of query results knows when an answer it holds is stale. Event
// time makes this necessary: a span that ends yesterday but arrives today
// changes yesterday's answers.
//
// A Tracker counts changes with an epoch that only grows. Note(min, max)
// takes a new epoch and records it as the last change of every UTC hour
// overlapping [min, max]; NoteAll raises a floor that every hour has
// changed after (deletions, retention). A reader takes Epoch() before it
// reads, keeps its answer with that epoch, and later asks
// ChangedSince(epoch, min, max) for the time range the answer read: true
// when any hour of that range was noted after the reader's epoch, or could
// have been. Hours, not days: live ingest changes the current hour, and
// the hours of today before it stay cacheable.
//
// Writers note a change after it is visible to readers: a reader that
// took its epoch before the Note then sees the change as newer than its
// answer, whether or not the answer includes it.
//
// The tracker is bounded: it remembers at most MaxBuckets hours one by
// one; older hours fold into a single boundary hour and epoch, which make
// them read as changed when anything at or before the boundary changed.
//
// All methods are safe for concurrent use; each takes one mutex for a map
// write or read per hour the range covers.
package changes

import (
	"math"
	"slices"
	"sync"
)

// BucketMs is the granularity of a Tracker: an hour, in milliseconds.
const BucketMs = 60 * 60 * 1000

// MaxBuckets is how many hours (almost two years) a Tracker remembers one
// by one.
const MaxBuckets = 1 << 14

// Tracker records the epochs at which hours of sample time changed.
type Tracker struct {
	mu    sync.Mutex
	epoch uint64
	floor uint64           // every hour changed at this epoch (NoteAll)
	hours map[int64]uint64 // hour number → epoch of its last change
	// Hours at or before oldHour were folded: oldEpoch is the last change
	// of any of them.
	oldHour  int64
	oldEpoch uint64
}

// New returns a tracker at epoch 1, with nothing changed since.
func New() *Tracker {
	return &Tracker{epoch: 1, hours: map[int64]uint64{}, oldHour: math.MinInt64}
}

// hourOf is the hour number of t (ms since the epoch), rounded down.
func hourOf(t int64) int64 {
	d := t / BucketMs
	if t%BucketMs < 0 {
		d--
	}
	return d
}

// Epoch returns the current epoch: changes noted later have a greater
// one.
func (t *Tracker) Epoch() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.epoch
}

// Note records that data with sample times in [minMs, maxMs] changed. A
// range of more than MaxBuckets hours counts as a change of everything.
func (t *Tracker) Note(minMs, maxMs int64) {
	if t == nil {
		return
	}
	if maxMs < minMs {
		minMs, maxMs = maxMs, minMs
	}
	lo, hi := hourOf(minMs), hourOf(maxMs)
	if hi-lo >= MaxBuckets || hi-lo < 0 { // the difference overflowed when < 0
		t.NoteAll()
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.epoch++
	e := t.epoch
	for d := lo; d <= hi; d++ {
		if d <= t.oldHour {
			t.oldEpoch = e
			continue
		}
		t.hours[d] = e
	}
	if len(t.hours) > MaxBuckets {
		t.foldLocked()
	}
}

// foldLocked forgets the oldest hours one by one, keeping the newest
// half: they fold into oldHour and oldEpoch. The caller holds t.mu. It runs
// once per MaxBuckets/2 new hours at most.
func (t *Tracker) foldLocked() {
	ds := make([]int64, 0, len(t.hours))
	for d := range t.hours {
		ds = append(ds, d)
	}
	slices.Sort(ds)
	cut := ds[len(ds)-MaxBuckets/2-1]
	for _, d := range ds[:len(ds)-MaxBuckets/2] {
		t.oldEpoch = max(t.oldEpoch, t.hours[d])
		delete(t.hours, d)
	}
	t.oldHour = max(t.oldHour, cut)
}

// NoteBefore records that data with sample times up to tMs may have
// changed (retention deleted what is older than its cut-off).
func (t *Tracker) NoteBefore(tMs int64) {
	if t == nil {
		return
	}
	h := hourOf(tMs)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.epoch++
	t.oldEpoch = t.epoch
	if h > t.oldHour {
		t.oldHour = h
		for d := range t.hours {
			if d <= h {
				delete(t.hours, d)
			}
		}
	}
}

// NoteAll records that data of any time may have changed: deletions,
// a restore.
func (t *Tracker) NoteAll() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.epoch++
	t.floor = t.epoch
}

// ChangedSince reports whether data with sample times in [minMs, maxMs]
// may have changed after epoch: a Note of an overlapping hour or a NoteAll
// took a greater epoch.
func (t *Tracker) ChangedSince(epoch uint64, minMs, maxMs int64) bool {
	if maxMs < minMs {
		minMs, maxMs = maxMs, minMs
	}
	lo, hi := hourOf(minMs), hourOf(maxMs)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.floor > epoch {
		return true
	}
	if lo <= t.oldHour && t.oldEpoch > epoch {
		return true
	}
	if hi-lo >= MaxBuckets || hi-lo < 0 {
		// Wider than the hours remembered: walk them instead.
		for d, e := range t.hours {
			if d >= lo && d <= hi && e > epoch {
				return true
			}
		}
		return false
	}
	for d := max(lo, t.oldHour+1); d <= hi; d++ {
		if t.hours[d] > epoch {
			return true
		}
	}
	return false
}
