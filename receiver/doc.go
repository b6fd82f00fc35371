// Package receiver is proxylens' OTLP trace receiver: TraceService/Export
// over gRPC and POST /v1/traces over HTTP, with protobuf and JSON bodies,
// gzip and zstd compression, as the OTLP specification says a server must
// behave (status codes, partial success, throttling with Retry-After).
//
// Protobuf requests go through a decoder that validates the message as the
// Collector's pdata does but materialises only what the span → record
// mapping reads; JSON requests are parsed by pdata first.
//
// All methods of Receiver are safe for concurrent use.
package receiver
