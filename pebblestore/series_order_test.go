package pebblestore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"
)

// TestSelectLabelOrder checks that Select returns series in label order
// when they were created out of it, in several bursts between queries
// (each burst merged into the ranking by the next query), and across a
// reopen, which ranks them all anew.
func TestSelectLabelOrder(t *testing.T) {
	dir := t.TempDir()
	db, s := openStore(t, dir)
	rng := rand.New(rand.NewPCG(1, 2))
	perm := rng.Perm(300)
	var want []string
	check := func(s *SeriesStore) {
		t.Helper()
		q, err := s.Querier(0, 10*h)
		require.NoError(t, err)
		defer func() { require.NoError(t, q.Close()) }()
		ss := q.Select(context.Background(), true, nil, eq("__name__", "m"))
		var got []string
		for ss.Next() {
			got = append(got, ss.At().Labels().String())
		}
		require.NoError(t, ss.Err())
		slices.Sort(want) // the label sets differ first in one value: their strings sort as they do
		require.Equal(t, want, got)
	}
	for burst := range 3 {
		app := s.AppenderV2(context.Background())
		for _, i := range perm[burst*100 : (burst+1)*100] {
			// Values of different lengths, so that byte order and label order agree only if compared whole.
			ls := labels.FromStrings("__name__", "m", "k", fmt.Sprintf("v%d", i), "z", fmt.Sprint(i%7))
			want = append(want, ls.String())
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
