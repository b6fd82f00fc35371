package pebblestore

import (
	"context"
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
