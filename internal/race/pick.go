// Package race tells tests whether the race detector is on, as the
// standard library's internal/race does, so that a test whose size serves
// its own assertions (a month of history, hundreds of random queries) can
// run a smaller instance of itself under -race. The race run looks for
// unsynchronised access, which a smaller instance exercises just as well;
// the full size runs in the plain `go test ./...`.
//
// Under -race, Pebble also turns on its invariant checks (its
// `invariants` build tag), which take a stack trace for every iterator
// it opens: Pebble-heavy tests run about twenty times slower than
// without, against the two to ten times of the race detector alone.
package race

// Pick is plain in an ordinary build and raced in a binary built with
// -race: the size of a test's instance, chosen once where it is declared.
func Pick[T any](plain, raced T) T {
	if Enabled {
		return raced
	}
	return plain
}
