//go:build race

package pebblestore_test

// raceDetector reports whether the tests run with -race.
const raceDetector = true
