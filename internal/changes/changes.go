// Package changes tracks which days of sample time have changed, so that a
// cache of query results over those days knows when an answer it holds is
// stale. Event time makes this necessary: a span that ends yesterday but
// arrives today changes yesterday's answers.
//
// A Tracker counts changes with an epoch that only grows. Note(min, max)
// takes a new epoch and records it as the last change of every UTC day
// overlapping [min, max]; NoteAll raises a floor that every day has
// changed after (deletions, retention). A reader takes Epoch() before it
// reads, keeps its answer with that epoch, and later asks
// ChangedSince(epoch, min, max) for the time range the answer read: true
// when any day of that range was noted after the reader's epoch, or could
// have been.
//
// Writers note a change after it is visible to readers: a reader that
// took its epoch before the Note then sees the change as newer than its
// answer, whether or not the answer includes it.
//
// The tracker is bounded: it remembers at most MaxDays days one by one;
// older days fold into a single boundary day and epoch, which make them
// read as changed when anything at or before the boundary changed.
//
// All methods are safe for concurrent use; each takes one mutex for a map
// write or read per day the range covers.
package changes

import (
	"math"
	"slices"
	"sync"
)

// DayMs is a UTC day in milliseconds.
const DayMs = 24 * 60 * 60 * 1000

// MaxDays is how many days a Tracker remembers one by one.
const MaxDays = 4096

// Tracker records the epochs at which days of sample time changed.
type Tracker struct {
	mu    sync.Mutex
	epoch uint64
	floor uint64           // every day changed at this epoch (NoteAll)
	days  map[int64]uint64 // day number → epoch of its last change
	// Days at or before oldDay were folded: oldEpoch is the last change
	// of any of them.
	oldDay   int64
	oldEpoch uint64
}

// New returns a tracker at epoch 1, with nothing changed since.
func New() *Tracker {
	return &Tracker{epoch: 1, days: map[int64]uint64{}, oldDay: math.MinInt64}
}

// dayOf is the UTC day number of t (ms since the epoch), rounded down.
func dayOf(t int64) int64 {
	d := t / DayMs
	if t%DayMs < 0 {
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
// range of more than MaxDays days counts as a change of everything.
func (t *Tracker) Note(minMs, maxMs int64) {
	if t == nil {
		return
	}
	if maxMs < minMs {
		minMs, maxMs = maxMs, minMs
	}
	lo, hi := dayOf(minMs), dayOf(maxMs)
	if hi-lo >= MaxDays || hi-lo < 0 { // the difference overflowed when < 0
		t.NoteAll()
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.epoch++
	e := t.epoch
	for d := lo; d <= hi; d++ {
		if d <= t.oldDay {
			t.oldEpoch = e
			continue
		}
		t.days[d] = e
	}
	if len(t.days) > MaxDays {
		t.foldLocked()
	}
}

// foldLocked forgets the oldest days one by one, keeping the newest
// half: they fold into oldDay and oldEpoch. The caller holds t.mu. It runs
// once per MaxDays/2 new days at most.
func (t *Tracker) foldLocked() {
	ds := make([]int64, 0, len(t.days))
	for d := range t.days {
		ds = append(ds, d)
	}
	slices.Sort(ds)
	cut := ds[len(ds)-MaxDays/2-1]
	for _, d := range ds[:len(ds)-MaxDays/2] {
		t.oldEpoch = max(t.oldEpoch, t.days[d])
		delete(t.days, d)
	}
	t.oldDay = max(t.oldDay, cut)
}

// NoteAll records that data of any time may have changed: deletions,
// retention, a restore.
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
// may have changed after epoch: a Note of an overlapping day or a NoteAll
// took a greater epoch.
func (t *Tracker) ChangedSince(epoch uint64, minMs, maxMs int64) bool {
	if maxMs < minMs {
		minMs, maxMs = maxMs, minMs
	}
	lo, hi := dayOf(minMs), dayOf(maxMs)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.floor > epoch {
		return true
	}
	if lo <= t.oldDay && t.oldEpoch > epoch {
		return true
	}
	if hi-lo >= MaxDays || hi-lo < 0 {
		// Wider than the days remembered: walk them instead.
		for d, e := range t.days {
			if d >= lo && d <= hi && e > epoch {
				return true
			}
		}
		return false
	}
	for d := max(lo, t.oldDay+1); d <= hi; d++ {
		if t.days[d] > epoch {
			return true
		}
	}
	return false
}
