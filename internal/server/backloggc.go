package server

import (
	"context"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"
)

// backlogGCPercent is Go's GC target while history is held past its
// early-cut bound. Go lets the heap grow to (1 + GOGC/100) times what is
// live before it collects; during a backfill at the bound nearly all that
// is live is the increments held and the cut being written, and the cut
// allocates gigabytes, so the heap sat at twice the live figure. At 30
// (VictoriaMetrics' default GOGC, for the same reason) it sits at 1.3
// times, for more frequent collections while the client is mostly being
// refused anyway (docs/benchmarks.md, C26).
const backlogGCPercent = 30

// backlogGC lowers Go's GC target while the increments held in memory
// (pending, and those of the cut being written) reach
// aggregation.max_pending_increments, history arriving faster than cuts
// write it, and restores it once they are back under half of it. An
// operator who sets GOGC keeps it: keep is then true and nothing changes.
type backlogGC struct {
	backlog func() int
	bound   int
	keep    bool
	log     *slog.Logger

	lowered bool
}

// gcTarget is the process's GC target as the backlog policies of every
// server in it change it: lowered while any of them is pressed, restored
// to what it was when the last one lets go.
var gcTarget struct {
	sync.Mutex
	pressed int
	prev    int
}

// check applies the policy to the increments held now.
func (b *backlogGC) check() {
	n := b.backlog()
	switch {
	case !b.lowered && n >= b.bound:
		b.lower()
		b.log.Info("history held at its bound: collecting garbage more often until cuts catch up",
			"increments_held", n, "gc_percent", backlogGCPercent)
	case b.lowered && n < b.bound/2:
		b.restore()
		b.log.Info("history backlog written: garbage collection back to its target", "increments_held", n)
	}
}

func (b *backlogGC) lower() {
	gcTarget.Lock()
	defer gcTarget.Unlock()
	if gcTarget.pressed == 0 {
		gcTarget.prev = debug.SetGCPercent(backlogGCPercent)
	}
	gcTarget.pressed++
	b.lowered = true
}

func (b *backlogGC) restore() {
	if !b.lowered {
		return
	}
	gcTarget.Lock()
	defer gcTarget.Unlock()
	gcTarget.pressed--
	if gcTarget.pressed == 0 {
		debug.SetGCPercent(gcTarget.prev)
	}
	b.lowered = false
}

// run checks every interval until ctx ends, then restores the target.
func (b *backlogGC) run(ctx context.Context, interval time.Duration) {
	if b.keep {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	defer b.restore()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			b.check()
		}
	}
}
