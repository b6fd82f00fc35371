package pebblestore

import (
	"context"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// SumPushdownMatcher is the mark PushDown adds to a selector, for tests
// that write marked queries by hand.
var SumPushdownMatcher = sumMatcher

// IteratorOnly returns a context under which selectors are answered series
// by series by the series iterator from the raw windows: the reference the
// other read paths are checked against.
func IteratorOnly(ctx context.Context) context.Context {
	return context.WithValue(ctx, iteratorOnlyKey{}, true)
}

// CounterSummaries counts the counter summaries of sample series' closed
// windows.
func CounterSummaries(t testing.TB, s *SeriesStore) int {
	t.Helper()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixSummaries}, UpperBound: []byte{prefixSummaries + 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	n := 0
	for valid := it.First(); valid; valid = it.Next() {
		if v := it.Value(); len(v) > 0 && v[0] == counterSummaryVersion {
			n++
		}
	}
	return n
}
