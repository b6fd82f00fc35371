// Package otelanalytics holds all of proxylens' usage arithmetic: it maps
// the span of a proxied request to a credential-free usage Record,
// samples records adaptively, keeps exact aggregates (counters and latency
// histograms) of every span, sampled or not, turns each cut of them into
// Prometheus series and prices it with the cost models.
//
// The pieces, in the order a span meets them:
//
//   - Mapper and SpanAttrs (mapping.go, hosts.go): the span → Record
//     mapping documented in docs/attributes.md. Decoders (see package
//     receiver) feed attributes in; the mapper scrubs every URL down to a
//     domain or a host:port.
//   - Dict: interns the label strings of records so that records, the
//     ingest journal and the aggregates refer to them by a small integer.
//   - Sampler: the adaptive sampling probability, from the measured rate.
//   - Aggregator (aggregator.go, cut.go): exact, weighted aggregates by
//     series, cumulative totals for /metrics and per-interval increments by
//     event time for history, handed over as a Cut every flush interval.
//   - Pipeline: admission, the durable commit of each batch to a Store's
//     journal, aggregation, and the periodic cut.
//   - The store's side (store.go, codec.go): Store is what the pipeline
//     needs of a store, in bytes and series only; codec.go encodes the
//     journal entries, stored records and totals the store keeps without
//     reading them; NewStoreCut turns a cut into records, totals and series
//     samples (series.go: the names and labels of /metrics), priced by
//     pricing.go; Restore rebuilds the dictionary and aggregates from what
//     the store hands back; ScanRecords reads the stored records.
//   - What a cut derives: the hour-of-week counters (peakhours.go), written
//     with the cut; and the Detector (degradation.go,
//     degradation_stats.go), which the pipeline hands every written cut
//     (PipelineConfig.AfterCut) to judge each source's success rate and
//     p95 latency against its own baseline.
//   - Overlay (overlay.go): the increments no cut has written yet, pending
//     or being written, as the Prometheus series a cut writes, for the
//     store to serve to queries before the cut (pebblestore.Overlay).
//     Lock order: Overlay.mu, then Aggregator.mu.
//
// Package pebblestore implements Store; neither package imports the other.
//
// Unless a type's comment says otherwise, its methods are safe for concurrent
// use. Records produced by a decoder may hold strings that alias the request
// buffer; they are only valid until the pipeline's Consume returns.
package otelanalytics
