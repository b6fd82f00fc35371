package changes

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTrackerHours(t *testing.T) {
	tr := New()
	e0 := tr.Epoch()
	day := func(d int64) int64 { return d * BucketMs }
	require.False(t, tr.ChangedSince(e0, day(10), day(12)))

	tr.Note(day(11)+5, day(11)+7) // hour 11 only
	require.True(t, tr.ChangedSince(e0, day(10), day(12)))
	require.True(t, tr.ChangedSince(e0, day(11), day(11)))
	require.False(t, tr.ChangedSince(e0, day(10), day(11)-1), "hour 10 did not change")
	require.False(t, tr.ChangedSince(e0, day(12), day(13)), "hour 12 did not change")

	e1 := tr.Epoch()
	require.Greater(t, e1, e0)
	require.False(t, tr.ChangedSince(e1, day(0), day(100)), "nothing changed after e1")

	tr.Note(day(-2)+1, day(-1)+1) // negative times round down to their hour
	require.True(t, tr.ChangedSince(e1, day(-1), day(-1)))
	require.True(t, tr.ChangedSince(e1, day(-2), day(-2)))
	require.False(t, tr.ChangedSince(e1, day(-3), day(-2)-1))

	e2 := tr.Epoch()
	tr.NoteAll()
	require.True(t, tr.ChangedSince(e2, day(500), day(500)))
	require.False(t, tr.ChangedSince(tr.Epoch(), day(500), day(500)))
}

func TestTrackerNoteBefore(t *testing.T) {
	tr := New()
	h := int64(BucketMs)
	tr.Note(50*h, 50*h)
	e := tr.Epoch()
	tr.NoteBefore(20*h + 5)
	require.True(t, tr.ChangedSince(e, 20*h, 20*h))
	require.True(t, tr.ChangedSince(e, -1000*h, 3*h))
	require.False(t, tr.ChangedSince(e, 21*h, 60*h), "after the cut-off nothing changed")
	require.False(t, tr.ChangedSince(e, 50*h, 50*h))
	e = tr.Epoch()
	tr.Note(10*h, 10*h) // a change before the cut-off again
	require.True(t, tr.ChangedSince(e, 0, 20*h))
	require.False(t, tr.ChangedSince(e, 21*h, 60*h))
}

func TestTrackerReversedAndWideRanges(t *testing.T) {
	tr := New()
	e := tr.Epoch()
	tr.Note(3*BucketMs, 1*BucketMs) // reversed: days 1 to 3
	require.True(t, tr.ChangedSince(e, 2*BucketMs, 2*BucketMs))

	e = tr.Epoch()
	tr.Note(0, (MaxBuckets+5)*BucketMs) // too wide to mark day by day: everything
	require.True(t, tr.ChangedSince(e, -100*BucketMs, -100*BucketMs))

	e = tr.Epoch()
	tr.Note(7*BucketMs, 7*BucketMs)
	require.True(t, tr.ChangedSince(e, 0, (MaxBuckets+10)*BucketMs), "a wide question sees an hour inside it")
	require.False(t, tr.ChangedSince(e, 8*BucketMs, (MaxBuckets+10)*BucketMs), "nor one outside it")
}

func TestTrackerFoldsOldDays(t *testing.T) {
	tr := New()
	e := tr.Epoch()
	tr.Note(0, 0) // day 0
	for d := int64(1); d <= MaxBuckets+1; d++ {
		tr.Note(d*BucketMs, d*BucketMs)
	}
	require.LessOrEqual(t, len(tr.hours), MaxBuckets, "bounded")
	// Hour 0 was folded: it still reads as changed after e.
	require.True(t, tr.ChangedSince(e, 0, 0))
	// A new change of a folded day is seen too.
	e = tr.Epoch()
	require.False(t, tr.ChangedSince(e, 0, 0))
	tr.Note(5, 5)
	require.True(t, tr.ChangedSince(e, 0, 0))
	require.False(t, tr.ChangedSince(e, (MaxBuckets+1)*BucketMs, (MaxBuckets+1)*BucketMs), "the newest hours are remembered one by one")
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
	const now = 20_000 * BucketMs
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		t := now + int64(i%1000)*1000
		tr.Note(t-15_000, t)
	}
}

type ranges [][2]int64

func (r *ranges) Note(minMs, maxMs int64) { *r = append(*r, [2]int64{minMs, maxMs}) }

func TestSetNotesRunsOfHours(t *testing.T) {
	var s Set
	require.True(t, s.Empty())
	h := int64(BucketMs)
	for _, ts := range []int64{100*h + 5, 101*h + 7, 100*h + 9, 30*h + 1, 101*h + 1, 102 * h, -h + 3} {
		s.Add(ts)
	}
	var got ranges
	s.NoteTo(&got)
	require.Equal(t, ranges{{-h, -1}, {30 * h, 31*h - 1}, {100 * h, 103*h - 1}}, got)

	// Too many distinct hours: one range from the oldest to the newest.
	var wide Set
	for i := range int64(3 * maxSetHours) {
		wide.Add(2 * i * h)
	}
	got = nil
	wide.NoteTo(&got)
	require.Equal(t, ranges{{0, 2 * (3*maxSetHours - 1) * h}}, got)
}
