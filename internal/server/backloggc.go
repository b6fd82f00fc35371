package server

import (
	"context"
	"log/slog"
	"os"
	"runtime/debug"
	"time"
)

// backlogGCPercent is Go's GC target while history is held past its
// early-cut bound. Go lets the heap grow to (1 + GOGC/100) times what is
// live before it collects; during a backfill at the bound nearly all that
// is live is the increments held and the cut being written, and the cut
// allocates gigabytes, so the heap sat at twice the live figure. At 30
// (VictoriaMetrics' default GOGC, for the same reason) it sits at 1.3
// times, for more frequent collections while the client is mostly being
// refused anyway: the 45 s backfill peaked at 953-1,024 MiB
// against 1,124-1,181 without (docs/benchmarks.md, C26).
const backlogGCPercent = 30

// backlogGC lowers Go's GC target while the increments held reach
// aggregation.max_pending_increments (history arriving faster than cuts
// write it), and restores it once they are back under half of it. An
// operator who sets GOGC keeps it: nothing is changed then.
type backlogGC struct {
	pending func() int
	bound   int
	log     *slog.Logger

	lowered bool
	prev    int // the GC target before it was lowered
}

// check applies the policy to the increments held now.
func (b *backlogGC) check() {
	p := b.pending()
	switch {
	case !b.lowered && p >= b.bound:
		b.prev = debug.SetGCPercent(backlogGCPercent)
		b.lowered = true
		b.log.Info("history held at its bound: collecting garbage more often until cuts catch up",
			"pending_increments", p, "gc_percent", backlogGCPercent)
	case b.lowered && p < b.bound/2:
		b.restore()
		b.log.Info("history backlog written: garbage collection back to its target", "pending_increments", p, "gc_percent", b.prev)
	}
}

func (b *backlogGC) restore() {
	if b.lowered {
		debug.SetGCPercent(b.prev)
		b.lowered = false
	}
}

// run checks every interval until ctx ends, then restores the target.
func (b *backlogGC) run(ctx context.Context, interval time.Duration) {
	if _, set := os.LookupEnv("GOGC"); set {
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
