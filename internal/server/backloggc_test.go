package server

import (
	"context"
	"log/slog"
	"runtime/debug"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// gcPercent reads Go's GC target without changing it.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

func newBacklogGC(bound int, backlog func() int) *backlogGC {
	return &backlogGC{backlog: backlog, bound: bound, log: slog.New(slog.DiscardHandler)}
}

// TestBacklogGC: the GC target is lowered once the increments held reach
// the bound, kept down until they are under half of it, and restored to
// what it was.
func TestBacklogGC(t *testing.T) {
	orig := debug.SetGCPercent(120)
	t.Cleanup(func() { debug.SetGCPercent(orig) })
	held := 0
	b := newBacklogGC(1000, func() int { return held })
	for _, step := range []struct{ held, want int }{
		{0, 120}, {999, 120}, {1000, backlogGCPercent}, {1500, backlogGCPercent},
		{500, backlogGCPercent}, {499, 120}, {900, 120}, {2000, backlogGCPercent},
	} {
		held = step.held
		b.check()
		require.Equal(t, step.want, gcPercent(), "%d increments held", step.held)
	}
	b.restore()
	require.Equal(t, 120, gcPercent())
}

// TestBacklogGCServers: with two servers in one process, the target stays
// lowered while either is pressed and comes back to the process's own
// when the last lets go, whatever the order.
func TestBacklogGCServers(t *testing.T) {
	orig := debug.SetGCPercent(110)
	t.Cleanup(func() { debug.SetGCPercent(orig) })
	var ha, hb int
	a, b := newBacklogGC(10, func() int { return ha }), newBacklogGC(10, func() int { return hb })
	ha, hb = 10, 10
	a.check()
	b.check()
	require.Equal(t, backlogGCPercent, gcPercent())
	ha = 0
	a.check()
	require.Equal(t, backlogGCPercent, gcPercent(), "b is still pressed")
	hb = 0
	b.check()
	require.Equal(t, 110, gcPercent())
}

// TestBacklogGCRun: the loop lowers the target while the bound is reached
// and restores it when it stops; with GOGC set by the operator (keep) it
// changes nothing.
func TestBacklogGCRun(t *testing.T) {
	orig := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(orig) })
	for _, keep := range []bool{false, true} {
		var lowest atomic.Int64
		lowest.Store(100)
		b := newBacklogGC(10, func() int {
			lowest.Store(min(lowest.Load(), int64(gcPercent())))
			return 10
		})
		b.keep = keep
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		b.run(ctx, time.Millisecond)
		cancel()
		require.Equal(t, 100, gcPercent(), "restored (keep: %v)", keep)
		if keep {
			require.EqualValues(t, 100, lowest.Load(), "GOGC set: not changed")
		} else {
			require.EqualValues(t, backlogGCPercent, lowest.Load(), "lowered while the bound was reached")
		}
	}
}
