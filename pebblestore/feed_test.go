package pebblestore

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
)

func openFeedStore(t *testing.T, dir string, feed bool) *DB {
	t.Helper()
	now := time.UnixMilli(1_000_000)
	db, err := Open(dir, Options{Series: SeriesOptions{Feed: feed, Now: func() time.Time { return now }}})
	require.NoError(t, err)
	return db
}

type feedPoint struct {
	Series string
	T      int64
	V      float64
}

// readAll reads the feed from pos in reads of at most max samples.
func readFeedAll(t *testing.T, s *SeriesStore, pos FeedPosition, max int) ([]feedPoint, FeedPosition) {
	t.Helper()
	var out []feedPoint
	for {
		r, err := s.ReadFeed(pos, max)
		require.NoError(t, err)
		require.LessOrEqual(t, r.Samples, max)
		n := 0
		for _, fs := range r.Series {
			for _, smp := range fs.Samples {
				out = append(out, feedPoint{fs.Labels.Get("__name__"), smp.T, smp.F})
				n++
			}
		}
		require.Equal(t, r.Samples, n)
		require.Equal(t, pos.Cum+uint64(n), r.Next.Cum)
		if n == 0 {
			require.True(t, r.Oldest.IsZero())
			return out, r.Next
		}
		pos = r.Next
	}
}

func TestFeedFollowsCommits(t *testing.T) {
	dir := t.TempDir()
	db := openFeedStore(t, dir, true)
	s := db.Series()
	head, notify := s.FeedHead()
	require.Equal(t, FeedPosition{Seq: 1}, head)

	req := labels.FromStrings("__name__", "proxy_requests_total", "source", "a")
	gauge := labels.FromStrings("__name__", "up")
	require.NoError(t, s.AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
		for _, p := range []struct {
			t int64
			v float64
		}{{30_000, 2}, {15_000, 1}, {30_000, 3}} {
			if err := add(req, p.t, p.v); err != nil {
				return err
			}
		}
		return nil
	}))
	select {
	case <-notify:
	default:
		t.Fatal("a commit did not notify the feed's readers")
	}
	app := s.Appender(context.Background())
	for i := range 5 {
		_, err := app.Append(0, gauge, int64(i)*1000, float64(i))
		require.NoError(t, err)
	}
	require.NoError(t, app.Commit())
	// An exact duplicate changes nothing and adds nothing to the feed.
	app = s.Appender(context.Background())
	_, err := app.Append(0, gauge, 4000, 4)
	require.NoError(t, err)
	require.NoError(t, app.Commit())

	want := []feedPoint{
		{"proxy_requests_total", 15_000, 1}, {"proxy_requests_total", 30_000, 5},
		{"up", 0, 0}, {"up", 1000, 1}, {"up", 2000, 2}, {"up", 3000, 3}, {"up", 4000, 4},
	}
	for _, max := range []int{1, 2, 3, 100} {
		got, end := readFeedAll(t, s, head, max)
		require.Equal(t, want, got, "max %d", max)
		require.Equal(t, FeedPosition{Seq: 3, Cum: 7}, end)
	}
	r, err := s.ReadFeed(head, 3)
	require.NoError(t, err)
	require.Equal(t, FeedPosition{Seq: 2, Sample: 1, Cum: 3}, r.Next)
	require.Equal(t, time.UnixMilli(1_000_000), r.Oldest)
	require.Equal(t, KindIncrements, r.Series[0].Kind)

	// Bytes: entry 1 and entry 2 (the exact duplicate wrote none), each
	// counted whole from where it starts.
	total := s.FeedBytes()
	b1, err := s.FeedBytesBefore(1)
	require.NoError(t, err)
	b2, err := s.FeedBytesBefore(2)
	require.NoError(t, err)
	past, err := s.FeedBytesBefore(3)
	require.NoError(t, err)
	require.Zero(t, b1)
	require.Positive(t, b2)
	require.Less(t, b2, total)
	require.Equal(t, total, past, "past the newest entry")

	// A consumer's position and state survive a restart, as does the head.
	require.NoError(t, s.SaveFeedConsumer("a", r.Next, map[uint64][]byte{7: []byte("x")}))
	require.NoError(t, s.SaveFeedConsumer("ab", FeedPosition{Seq: 3, Cum: 7}, nil))
	require.NoError(t, db.Close())
	db = openFeedStore(t, dir, true)
	s = db.Series()
	head, _ = s.FeedHead()
	require.Equal(t, FeedPosition{Seq: 3, Cum: 7}, head)
	require.Equal(t, total, s.FeedBytes())
	b, err := s.FeedBytesBefore(2)
	require.NoError(t, err)
	require.Equal(t, b2, b)
	pos, st, ok, err := s.FeedConsumer("a")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, FeedPosition{Seq: 2, Sample: 1, Cum: 3}, pos)
	require.Equal(t, map[uint64][]byte{7: []byte("x")}, st)
	got, _ := readFeedAll(t, s, pos, 10)
	require.Equal(t, want[3:], got)

	// Pruned entries leave the head where it was, also after a restart.
	require.NoError(t, s.PruneFeed(3))
	require.NoError(t, db.Close())
	db = openFeedStore(t, dir, true)
	s = db.Series()
	head, _ = s.FeedHead()
	require.Equal(t, FeedPosition{Seq: 3, Cum: 7}, head)
	b, err = s.FeedBytesBefore(head.Seq)
	require.NoError(t, err)
	require.Equal(t, s.FeedBytes(), b, "an empty feed holds nothing")

	// A consumer no longer configured is dropped; the others stay.
	require.NoError(t, s.DropFeedConsumers([]string{"ab"}))
	_, _, ok, err = s.FeedConsumer("a")
	require.NoError(t, err)
	require.False(t, ok)
	_, _, ok, err = s.FeedConsumer("ab")
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, db.Close())

	// Without the feed, commits write none and what was left is deleted.
	db = openFeedStore(t, dir, false)
	s = db.Series()
	_, _, ok, err = s.FeedConsumer("ab")
	require.NoError(t, err)
	require.False(t, ok)
	require.NoError(t, s.AppendIncrements(func(add func(labels.Labels, int64, float64) error) error { return add(req, 45_000, 1) }))
	_, err = s.ReadFeed(FeedPosition{}, 10)
	require.Error(t, err)
	require.NoError(t, db.Close())
	db = openFeedStore(t, dir, true)
	head, _ = db.Series().FeedHead()
	require.Equal(t, FeedPosition{Seq: 1}, head)
	require.NoError(t, db.Close())
}
