// Package promql serves the Prometheus HTTP query API over a
// storage.Queryable, running the official PromQL engine: /api/v1/query,
// /api/v1/query_range, /api/v1/series, /api/v1/labels,
// /api/v1/label/<name>/values, /api/v1/metadata, /api/v1/query_exemplars,
// /api/v1/format_query and /api/v1/status/buildinfo, with Prometheus'
// paths, parameters, JSON shapes, error types and status codes, so that
// Grafana, promtool and client_golang's API client work unchanged.
//
// Every query runs through one entry point, API.Exec: HTTP requests, and
// the exports and reports that query from inside proxylens, get the same
// limits (limits.go), concurrency gate, audit and store pushdown. The
// store may offer two optional methods, which pebblestore's series store
// has: PushDown(parser.Expr) bool, to rewrite a query into one it answers
// cheaper with the same result, and WithRawData(context.Context), for
// max_source_resolution=raw.
//
// Range queries, HTTP or Exec, are answered day by day (today hour by
// hour) from a bounded result cache when Options.Changes says which
// sample times changed since when: cached.go splits, evaluates and
// merges, cache.go holds the pieces (LRU by estimated bytes),
// fingerprint.go records which series the store returned to each piece.
//
// With Options.Upstream (the query proxy, proxy.go and upstream.go), a
// Prometheus-compatible engine answers instead of the engine over the
// queryable: the data endpoints check what can be checked before a query
// runs (parse, length, points per series, the subquery guard, the gate),
// forward the request and write the upstream's answer byte for byte;
// Exec forwards too and decodes the answer into the engine's values. The
// result cache is then off.
//
// Before anything parses a query or match[] selector, querysize.go bounds
// its length and nesting in one linear scan (the parser's time grows with
// the square of the depth); the query is then parsed once, and the engine
// is handed the tree (handoffParser).
//
// The files: api.go (the API and its options), exec.go (the entry point
// and the query handlers), querysize.go, lookups.go (series, labels, metadata and the
// other endpoints), params.go, limits.go, errors.go, response.go and
// json.go (the envelope and the result encoding), the cache's three, and
// the proxy's three (proxy.go, upstream.go, jsonscan.go).
//
// All methods are safe for concurrent use.
package promql
