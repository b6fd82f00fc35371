// Package receiver is where every protocol enters proxylens: decoding,
// limits and status codes, nothing more.
//
//   - OTLP traces: TraceService/Export over gRPC and POST /v1/traces over
//     HTTP (Receiver), protobuf and JSON bodies, gzip and zstd, as the
//     OTLP specification says a server must behave (status codes, partial
//     success, throttling with Retry-After). Protobuf requests go through
//     a decoder that validates the message as the Collector's pdata does
//     but materialises only what the span → record mapping
//     (otelanalytics) reads; JSON requests are parsed by pdata first. The
//     records go to a Consumer, the ingest pipeline.
//   - OTLP metrics: MetricsService/Export and POST /v1/metrics on the same
//     listeners, and Prometheus' path POST /api/v1/otlp/v1/metrics on the
//     query API's, converted as Prometheus' OTLP endpoint converts them.
//   - Prometheus remote write 1.0: POST /api/v1/write.
//
// Series written from outside (OTLP metrics, remote write) go to a
// SeriesWriter, which appends them through Prometheus' storage.AppendableV2:
// this package never imports the store. Names proxylens writes itself
// (proxy_*, proxylens_*: ReservedName) are refused there, to every writer.
//
// The files: receiver.go (the listeners, the trace export), budget.go (the
// in-flight budget, reserved as bytes arrive), slowclient.go (read
// timeouts of every HTTP listener), inflate.go (gzip and zstd, bounded by
// the budget, gRPC's included), jsonscan.go (OTLP/JSON depth and trailing
// data), grpc.go and otlphttp.go (the transports, one handler each for
// every signal), decode.go and wire.go (the trace decoder), remotewrite.go,
// rwfast.go (remote write's fast path: the request read in place, series
// found by their labels' wire bytes), otlpmetrics.go and otlpconvert.go
// (the series writer).
//
// All methods of Receiver and SeriesWriter are safe for concurrent use.
package receiver
