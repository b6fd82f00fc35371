package changes

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTrackerDays(t *testing.T) {
	tr := New()
	e0 := tr.Epoch()
	day := func(d int64) int64 { return d * DayMs }
	require.False(t, tr.ChangedSince(e0, day(10), day(12)))

	tr.Note(day(11)+5, day(11)+7) // day 11 only
	require.True(t, tr.ChangedSince(e0, day(10), day(12)))
	require.True(t, tr.ChangedSince(e0, day(11), day(11)))
	require.False(t, tr.ChangedSince(e0, day(10), day(11)-1), "day 10 did not change")
	require.False(t, tr.ChangedSince(e0, day(12), day(13)), "day 12 did not change")

	e1 := tr.Epoch()
	require.Greater(t, e1, e0)
	require.False(t, tr.ChangedSince(e1, day(0), day(100)), "nothing changed after e1")

	tr.Note(day(-2)+1, day(-1)+1) // negative times round down to their day
	require.True(t, tr.ChangedSince(e1, day(-1), day(-1)))
	require.True(t, tr.ChangedSince(e1, day(-2), day(-2)))
	require.False(t, tr.ChangedSince(e1, day(-3), day(-2)-1))

	e2 := tr.Epoch()
	tr.NoteAll()
	require.True(t, tr.ChangedSince(e2, day(500), day(500)))
	require.False(t, tr.ChangedSince(tr.Epoch(), day(500), day(500)))
}

func TestTrackerReversedAndWideRanges(t *testing.T) {
	tr := New()
	e := tr.Epoch()
	tr.Note(3*DayMs, 1*DayMs) // reversed: days 1 to 3
	require.True(t, tr.ChangedSince(e, 2*DayMs, 2*DayMs))

	e = tr.Epoch()
	tr.Note(0, (MaxDays+5)*DayMs) // too wide to mark day by day: everything
	require.True(t, tr.ChangedSince(e, -100*DayMs, -100*DayMs))

	e = tr.Epoch()
	tr.Note(7*DayMs, 7*DayMs)
	require.True(t, tr.ChangedSince(e, 0, (MaxDays+10)*DayMs), "a wide question sees a day inside it")
	require.False(t, tr.ChangedSince(e, 8*DayMs, (MaxDays+10)*DayMs), "nor one outside it")
}

func TestTrackerFoldsOldDays(t *testing.T) {
	tr := New()
	e := tr.Epoch()
	tr.Note(0, 0) // day 0
	for d := int64(1); d <= MaxDays+1; d++ {
		tr.Note(d*DayMs, d*DayMs)
	}
	require.LessOrEqual(t, len(tr.days), MaxDays, "bounded")
	// Day 0 was folded: it still reads as changed after e.
	require.True(t, tr.ChangedSince(e, 0, 0))
	// A new change of a folded day is seen too.
	e = tr.Epoch()
	require.False(t, tr.ChangedSince(e, 0, 0))
	tr.Note(5, 5)
	require.True(t, tr.ChangedSince(e, 0, 0))
	require.False(t, tr.ChangedSince(e, (MaxDays+1)*DayMs, (MaxDays+1)*DayMs), "the newest days are remembered one by one")
}

func TestTrackerConcurrent(t *testing.T) {
	tr := New()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 1000 {
				e := tr.Epoch()
				ts := int64(g*1000+i) * 3600_000
				tr.Note(ts, ts)
				if !tr.ChangedSince(e, ts, ts) {
					t.Errorf("change at %d not seen", ts)
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkNote is the cost an ingest batch or a series commit pays.
func BenchmarkNote(b *testing.B) {
	tr := New()
	const now = 20_000 * DayMs
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		t := now + int64(i%1000)*1000
		tr.Note(t-15_000, t)
	}
}
