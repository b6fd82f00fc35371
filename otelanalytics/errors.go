package otelanalytics

import (
	"errors"

	"github.com/proxylens/proxylens/internal/varint"
)

// Errors of the ingest pipeline. Callers test them with errors.Is; the
// receiver turns them into OTLP status codes.
var (
	// ErrOverloaded means the pipeline has as much in flight as it may hold;
	// the client should retry later.
	ErrOverloaded = errors.New("ingest pipeline saturated")
	// ErrStopped means the pipeline is shutting down or was never started.
	ErrStopped = errors.New("ingest pipeline stopped")
)

// errCorrupt marks stored bytes that do not decode (see codec.go).
var errCorrupt = varint.ErrCorrupt
