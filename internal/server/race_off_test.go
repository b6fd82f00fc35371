//go:build !race

package server

// raceDetector reports whether the tests run with -race.
const raceDetector = false
