// Package remotewrite sends the series proxylens stores to Prometheus
// remote write receivers (Prometheus, VictoriaMetrics, Thanos Receive,
// Mimir): the remote_write: section of the configuration, shaped as
// Prometheus' own.
//
// What it sends comes from the store, not from memory: every series commit
// writes its samples to the store's series feed (pebblestore/feed.go), and
// each remote follows the feed with a persisted position, as Prometheus'
// WAL watcher follows its WAL. A receiver outage, a restart or a kill -9
// loses nothing; what is sent again after a crash is the very same
// samples (idempotent at the receiver). proxy_* counters, stored as
// increments by event time, go out cumulative: each remote keeps, per
// series, the value and time it sent last (saved with its position), adds
// each increment to it and stamps it at the increment's time, or 1 ms
// after the last one sent when the increment is late.
//
// Each remote has one goroutine that reads at most
// queue_config.max_samples_per_send samples, sends them with
// client_golang's remote write client (retrying 5xx and, unless
// retry_on_http_429 is false, 429 with backoff and Retry-After; other 4xx
// drop the batch, counted), then saves its position.
//
// All methods of Manager are safe for concurrent use.
package remotewrite
