//go:build !linux

package otelanalytics

// background runs fn; only Linux lowers its priority.
func background(fn func() error) error { return fn() }
