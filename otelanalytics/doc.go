// Package otelanalytics turns the spans of proxied requests into usage
// analytics: it maps a span to a credential-free usage Record, samples records
// adaptively, and keeps exact aggregates (counters and latency histograms) of
// every span, sampled or not.
//
// The pieces, in the order a span meets them:
//
//   - Mapper and SpanAttrs: the span → Record mapping documented in
//     docs/attributes.md. Decoders (see package receiver) feed attributes in;
//     the mapper scrubs every URL down to a domain or a host:port.
//   - Dict: interns the label strings of records so that records, the ingest
//     journal and the aggregates refer to them by a small integer.
//   - Sampler: the adaptive sampling probability, from the measured rate.
//   - Aggregator: exact, weighted aggregates by series, cumulative totals for
//     /metrics and per-interval increments by event time for history.
//   - Pipeline: admission, durable commit through a Store, aggregation and the
//     periodic cut that hands aggregates to the Store.
//
// Unless a type's comment says otherwise, its methods are safe for concurrent
// use. Records produced by a decoder may hold strings that alias the request
// buffer; they are only valid until the pipeline's Consume returns.
package otelanalytics
