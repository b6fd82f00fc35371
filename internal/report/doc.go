// Package report builds proxylens' formatted reports: what a manager
// reads about a period of proxy traffic, against the previous period of
// the same length — totals, the trend per day, success, latency and spend
// per source, spend per application with the allocated subscriptions,
// cost per success, premium against free sources, the top domains and the
// degraded sources — with charts drawn by gonum/plot.
//
// Every figure is the answer of a PromQL query (query.go) run through the
// query API's entry point on behalf of the report's owner, with its
// limits, gate and audit; the source and application filters become label
// matchers of every selector. Build gathers the answers into a Report;
// WriteHTML writes it as one self-contained HTML file (inline CSS and
// SVG), WritePDF as a PDF with the charts as PNG images. Task makes a
// report a job of internal/export's queue, so that reports share the
// exports' limits, files, audit and expiry.
//
// A Report is not safe for concurrent use; Build and the writers are safe
// to call concurrently on different reports.
package report
