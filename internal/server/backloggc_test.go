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

// TestBacklogGC: the GC target is lowered once the increments held reach
// the bound, kept down until they are under half of it, and restored to
// what it was.
func TestBacklogGC(t *testing.T) {
	orig := debug.SetGCPercent(120)
	t.Cleanup(func() { debug.SetGCPercent(orig) })
	pending := 0
	b := &backlogGC{pending: func() int { return pending }, bound: 1000, log: slog.New(slog.DiscardHandler)}
	for _, step := range []struct{ pending, want int }{
		{0, 120}, {999, 120}, {1000, backlogGCPercent}, {1500, backlogGCPercent},
		{500, backlogGCPercent}, {499, 120}, {900, 120}, {2000, backlogGCPercent},
	} {
		pending = step.pending
		b.check()
		require.Equal(t, step.want, gcPercent(), "%d increments held", step.pending)
	}
	b.restore()
	require.Equal(t, 120, gcPercent())
}

// TestBacklogGCRun: the loop lowers the target while the bound is reached
// and restores it when it stops; with GOGC set by the operator it changes
// nothing.
func TestBacklogGCRun(t *testing.T) {
	orig := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(orig) })
	for _, env := range []bool{false, true} {
		if env {
			t.Setenv("GOGC", "100")
		}
		var lowest atomic.Int64
		lowest.Store(100)
		b := &backlogGC{bound: 10, log: slog.New(slog.DiscardHandler), pending: func() int {
			lowest.Store(min(lowest.Load(), int64(gcPercent())))
			return 10
		}}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		b.run(ctx, time.Millisecond)
		cancel()
		require.Equal(t, 100, gcPercent(), "restored (GOGC set: %v)", env)
		if env {
			require.EqualValues(t, 100, lowest.Load(), "GOGC set: not changed")
		} else {
			require.EqualValues(t, backlogGCPercent, lowest.Load(), "lowered while the bound was reached")
		}
	}
}
