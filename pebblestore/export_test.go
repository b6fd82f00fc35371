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
		if v := it.Value(); len(v) > 0 && (v[0] == counterSummaryVersion || v[0] == counterSummaryVersionSecond) {
			n++
		}
	}
	return n
}

// DropSecondSamples rewrites every counter summary as version 0x81 wrote
// it, without its second sample, and returns how many it rewrote.
func DropSecondSamples(t testing.TB, s *SeriesStore) int {
	t.Helper()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixSummaries}, UpperBound: []byte{prefixSummaries + 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	b := s.db.NewBatch()
	n := 0
	for valid := it.First(); valid; valid = it.Next() {
		v := it.Value()
		if len(v) == 0 || v[0] != counterSummaryVersionSecond {
			continue
		}
		w := periodFromKey(it.Key())
		cs, err := decodeCounterSummary(v, w, nil)
		if err != nil {
			t.Fatal(err)
		}
		cs.hasSecond = false
		if err := b.Set(it.Key(), appendCounterSummary(nil, w, cs), nil); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	return n
}
