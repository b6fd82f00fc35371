package pebblestore

import "context"

// IteratorOnly returns a context under which selectors are answered series
// by series by the series iterator from the raw windows: the reference the
// other read paths are checked against.
func IteratorOnly(ctx context.Context) context.Context {
	return context.WithValue(ctx, iteratorOnlyKey{}, true)
}
