package pebblestore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"
)

// selectLabels returns the label sets Select returns for ms, in its order.
func selectLabels(t *testing.T, s *SeriesStore, ms ...*labels.Matcher) []labels.Labels {
	t.Helper()
	q, err := s.Querier(0, 10*h)
	require.NoError(t, err)
	defer func() { require.NoError(t, q.Close()) }()
	ss := q.Select(context.Background(), true, nil, ms...)
	var got []labels.Labels
	for ss.Next() {
		got = append(got, ss.At().Labels())
	}
	require.NoError(t, ss.Err())
	return got
}

func orderSeries(i int) labels.Labels {
	// Values of different lengths: v1 < v10 < v2 only if compared whole.
	return labels.FromStrings("__name__", "m", "k", fmt.Sprintf("v%d", i), "z", fmt.Sprint(i%7))
}

// TestSelectLabelOrder checks that Select returns series in label order
// when they were created out of it, in bursts between queries: a small
// selection sorts itself while new series wait to be ranked, a large one
// merges them into the ranking (the first burst into an empty one, the
// later ones into the series ranked before), and a reopen ranks them all
// anew.
func TestSelectLabelOrder(t *testing.T) {
	dir := t.TempDir()
	db, s := openStore(t, dir)
	perm := rand.New(rand.NewPCG(1, 2)).Perm(3 * rankMin)
	var want []labels.Labels
	check := func(s *SeriesStore) {
		t.Helper()
		small := slices.DeleteFunc(slices.Clone(want), func(ls labels.Labels) bool { return ls.Get("z") != "3" })
		require.Less(t, len(small), rankMin)
		slices.SortFunc(small, labels.Compare)
		require.Equal(t, small, selectLabels(t, s, eq("__name__", "m"), eq("z", "3")))
		slices.SortFunc(want, labels.Compare)
		require.Equal(t, want, selectLabels(t, s, eq("__name__", "m")))
	}
	for burst := range 3 {
		app := s.AppenderV2(context.Background())
		for _, i := range perm[burst*rankMin : (burst+1)*rankMin] {
			ls := orderSeries(i)
			want = append(want, ls)
			_, err := app.Append(0, ls, 0, h, 1, nil, nil, storage.AppendV2Options{})
			require.NoError(t, err)
		}
		require.NoError(t, app.Commit())
		check(s)
	}
	require.NoError(t, db.Close())
	db, s = openStore(t, dir)
	defer db.Close()
	check(s)
}

// TestSelectLabelOrderWhileCreating runs selects while appenders create
// series (for the race detector): every answer is in label order.
func TestSelectLabelOrderWhileCreating(t *testing.T) {
	db, s := openStore(t, t.TempDir())
	defer db.Close()
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := w; i < 2000; i += 2 {
				app := s.AppenderV2(context.Background())
				_, err := app.Append(0, orderSeries(i), 0, h, 1, nil, nil, storage.AppendV2Options{})
				if err == nil {
					err = app.Commit()
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for range 40 {
		got := selectLabels(t, s, eq("__name__", "m"))
		require.True(t, slices.IsSortedFunc(got, labels.Compare), "%d series out of label order", len(got))
	}
	wg.Wait()
	require.Len(t, selectLabels(t, s, eq("__name__", "m")), 2000)
}
