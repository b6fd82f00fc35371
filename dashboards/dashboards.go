package dashboards

import (
	"strings"
)

// all returns the dashboards, in the order of the README.
func all() []dashboard {
	return []dashboard{usage(), sources(), cost(), health()}
}

// sel writes a selector: the metric and its matchers.
func sel(metric string, matchers ...string) string {
	return metric + "{" + strings.Join(matchers, ", ") + "}"
}

// The matchers of the template variables. The labelled series have no
// otel_metric_overflow label, so the last matcher keeps them and leaves
// out the overflow series (docs/metrics.md#overflow-series), which "All"
// (.*, matching an empty source) would otherwise take in.
const (
	mSource      = `source=~"$source"`
	mApplication = `application=~"$application"`
	mNoOverflow  = `otel_metric_overflow!="true"`
	mSuccess     = `outcome="success"`
	mFailure     = `outcome="failure"`
)

// requests selects proxy_requests_total under the variables, plus extra
// matchers.
func requests(extra ...string) string {
	return sel("proxy_requests_total", append([]string{mSource, mApplication, mNoOverflow}, extra...)...)
}

// successRate is the success ratio (0 to 1) of the selected requests over
// window, grouped by by (empty: one figure).
func successRate(by, window string, extra ...string) string {
	return agg("sum", by, "rate("+requests(append([]string{mSuccess}, extra...)...)+"["+window+"])") +
		"\n/\n" + agg("sum", by, "rate("+requests(extra...)+"["+window+"])")
}

// agg writes op by (by) (expr), or op (expr) when by is empty.
func agg(op, by, expr string) string {
	if by == "" {
		return op + " (" + expr + ")"
	}
	return op + " by (" + by + ") (" + expr + ")"
}

func usage() dashboard {
	total := "sum(increase(" + requests() + "[$__range]))"
	prevTotal := "sum(increase(" + requests() + "[$__range] offset $__range))"
	succ := "sum(increase(" + requests(mSuccess) + "[$__range]))"
	prevSucc := "sum(increase(" + requests(mSuccess) + "[$__range] offset $__range))"
	bytes := sel("proxy_transfer_bytes_total", mSource, mApplication, mNoOverflow)
	byRange := func(by string) []target {
		return []target{
			{expr: agg("sum", by, "increase("+requests()+"[$__range])"), legend: "Requests", instant: true, unit: "short"},
			{expr: agg("sum", by, "increase("+requests(mSuccess)+"[$__range])") + "\n/\n" + agg("sum", by, "increase("+requests()+"[$__range])"), legend: "Success rate", instant: true, unit: "percentunit"},
			{expr: agg("sum", by, "increase("+requests()+"[$__range] offset $__range)"), legend: "Requests, previous period", instant: true, unit: "short"},
			{expr: "100 * (\n  " + agg("sum", by, "increase("+requests()+"[$__range])") + "\n/\n  " + agg("sum", by, "increase("+requests()+"[$__range] offset $__range)") + "\n- 1)", legend: "Change", instant: true, unit: "percent"},
		}
	}
	return dashboard{
		file: "proxy-usage.json", uid: "proxylens-usage", title: "Proxy usage",
		desc:      "Requests and success rate by source, application and domain, compared with the previous period of the same length.",
		variables: []string{"source", "application"},
		timeFrom:  "now-7d",
		panels: []panel{
			{kind: "row", title: "This period against the previous one"},
			{kind: "stat", title: "Requests", unit: "short", w: 4, h: 4,
				desc:    "Requests that ended in the time range, weighted by upstream sampling.",
				targets: []target{{expr: total, legend: "Requests", instant: true}}},
			{kind: "stat", title: "Requests vs previous period", unit: "percent", w: 4, h: 4,
				desc:    "Change in requests against the previous period of the same length, in %.",
				targets: []target{{expr: "100 * (\n  " + total + "\n/\n  " + prevTotal + "\n- 1)", legend: "Change", instant: true}}},
			{kind: "stat", title: "Success rate", unit: "percentunit", w: 4, h: 4, min: f(0), max: f(1),
				desc:    "Share of the requests of the time range whose outcome is success.",
				targets: []target{{expr: succ + "\n/\n" + total, legend: "Success rate", instant: true}}},
			{kind: "stat", title: "Success rate vs previous period", unit: "percentunit", w: 4, h: 4,
				desc:    "Success rate minus the success rate of the previous period (percentage points).",
				targets: []target{{expr: "(" + succ + " / " + total + ")\n-\n(" + prevSucc + " / " + prevTotal + ")", legend: "Change", instant: true}}},
			{kind: "stat", title: "Bytes transferred", unit: "decbytes", w: 4, h: 4,
				desc:    "Bytes sent plus received through the proxies in the time range.",
				targets: []target{{expr: "sum(increase(" + bytes + "[$__range]))", legend: "Bytes", instant: true}}},
			{kind: "stat", title: "Active sources", unit: "short", w: 4, h: 4,
				desc:    "Sources that carried at least one request in the time range.",
				targets: []target{{expr: "count(sum by (source) (increase(" + requests() + "[$__range])) > 0)", legend: "Sources", instant: true}}},
			{kind: "timeseries", title: "Requests per second, this period and the previous one", unit: "reqps", w: 24, h: 8,
				desc: "The dashed comparison is the same curve shifted by the length of the time range.",
				targets: []target{
					{expr: "sum(rate(" + requests() + "[$__rate_interval]))", legend: "this period"},
					{expr: "sum(rate(" + requests() + "[$__rate_interval] offset $__range))", legend: "previous period"},
				}},
			{kind: "row", title: "By source"},
			{kind: "timeseries", title: "Requests per second by source", unit: "reqps", w: 12, h: 9, stack: true,
				targets: []target{{expr: "sum by (source) (rate(" + requests() + "[$__rate_interval]))", legend: "{{source}}"}}},
			{kind: "timeseries", title: "Success rate by source", unit: "percentunit", w: 12, h: 9, min: f(0), max: f(1),
				targets: []target{{expr: successRate("source", "$__rate_interval"), legend: "{{source}}"}}},
			{kind: "table", title: "Sources over the time range", w: 24, h: 9,
				desc:    "Requests and success rate per source, and the change in requests against the previous period.",
				targets: byRange("source")},
			{kind: "row", title: "By application"},
			{kind: "timeseries", title: "Requests per second by application", unit: "reqps", w: 12, h: 9, stack: true,
				targets: []target{{expr: "sum by (application) (rate(" + requests() + "[$__rate_interval]))", legend: "{{application}}"}}},
			{kind: "timeseries", title: "Transfer by application", unit: "Bps", w: 12, h: 9, stack: true,
				desc:    "Bytes per second sent plus received, by application.",
				targets: []target{{expr: "sum by (application) (rate(" + bytes + "[$__rate_interval]))", legend: "{{application}}"}}},
			{kind: "table", title: "Applications over the time range", w: 24, h: 9,
				targets: byRange("application")},
			{kind: "row", title: "By domain"},
			{kind: "bargauge", title: "Top 15 domains", unit: "short", w: 12, h: 10,
				desc:    "Target domains with the most requests in the time range.",
				targets: []target{{expr: "topk(15, sum by (domain) (increase(" + requests(`domain!=""`) + "[$__range])))", legend: "{{domain}}", instant: true}}},
			{kind: "bargauge", title: "Top 15 domains by failures", unit: "short", w: 12, h: 10,
				targets: []target{{expr: "topk(15, sum by (domain) (increase(" + requests(`domain!=""`, mFailure) + "[$__range])))", legend: "{{domain}}", instant: true}}},
		},
	}
}

// degraded selects metric (with extra matchers) for the sources degraded
// now and not retired, one series per source and signal.
func degraded(metric, extra string) string {
	m := []string{mSource}
	if extra != "" {
		m = append(m, extra)
	}
	return "max by (source, signal) (\n  " + sel(metric, m...) +
		"\n  and on (source, signal) (proxy_source_degraded == 1)\n  unless on (source) proxy_source_retired\n)"
}

// peak sums an hour-of-week counter's increase over the time range by
// weekday and hour, in the time zone of the tz variable.
func peak(metric, entity, extra string) string {
	m := []string{entity, `tz="$tz"`}
	if extra != "" {
		m = append(m, extra)
	}
	return "sum by (weekday, hour) (increase(" + sel(metric, m...) + "[$__range]))"
}

func latency(q, by, window string) string {
	b := "le"
	if by != "" {
		b = by + ", le"
	}
	return "histogram_quantile(" + q + ", sum by (" + b + ") (rate(" +
		sel("proxy_request_duration_seconds_bucket", mSource, mApplication, mNoOverflow) + "[" + window + "])))"
}

func sources() dashboard {
	return dashboard{
		file: "source-performance.json", uid: "proxylens-sources", title: "Source performance",
		desc:      "Success rate, latency and errors per proxy source, the sources degraded against their own baseline or silent, and the busiest hours of the week.",
		variables: []string{"source", "application", "tz"},
		timeFrom:  "now-24h",
		panels: []panel{
			{kind: "row", title: "Success rate"},
			{kind: "timeseries", title: "Success rate by source", unit: "percentunit", w: 16, h: 9, min: f(0), max: f(1),
				targets: []target{{expr: successRate("source", "$__rate_interval"), legend: "{{source}}"}}},
			{kind: "bargauge", title: "Success rate over the time range", unit: "percentunit", w: 8, h: 9, min: f(0), max: f(1),
				targets: []target{{expr: "sort(\n" + strings.ReplaceAll(successRate("source", "$__range"), "rate(", "increase(") + "\n)", legend: "{{source}}", instant: true}}},
			{kind: "row", title: "Latency"},
			{kind: "timeseries", title: "Latency p50, p95, p99", unit: "s", w: 12, h: 9,
				desc: "Across the selected sources and applications, from the duration histogram. Requests slower than 60 s count as 60 s.",
				targets: []target{
					{expr: latency("0.5", "", "$__rate_interval"), legend: "p50"},
					{expr: latency("0.95", "", "$__rate_interval"), legend: "p95"},
					{expr: latency("0.99", "", "$__rate_interval"), legend: "p99"},
				}},
			{kind: "timeseries", title: "p95 latency by source", unit: "s", w: 12, h: 9,
				targets: []target{{expr: latency("0.95", "source", "$__rate_interval"), legend: "{{source}}"}}},
			{kind: "table", title: "Latency by source over the time range", unit: "s", w: 24, h: 9,
				targets: []target{
					{expr: strings.Replace(latency("0.5", "source", "$__range"), "rate(", "increase(", 1), legend: "p50", instant: true},
					{expr: strings.Replace(latency("0.95", "source", "$__range"), "rate(", "increase(", 1), legend: "p95", instant: true},
					{expr: strings.Replace(latency("0.99", "source", "$__range"), "rate(", "increase(", 1), legend: "p99", instant: true},
				}},
			{kind: "row", title: "Errors"},
			{kind: "timeseries", title: "Failures per second by error type", unit: "reqps", w: 12, h: 9, stack: true,
				desc:    "error_type is the span's error.type, else the HTTP status code when it is 400 or more, else _OTHER.",
				targets: []target{{expr: "sum by (error_type) (rate(" + requests(mFailure) + "[$__rate_interval]))", legend: "{{error_type}}"}}},
			{kind: "timeseries", title: "HTTP error responses per second by status", unit: "reqps", w: 12, h: 9, stack: true,
				desc:    "Requests answered with a 4xx or 5xx status, whatever their outcome.",
				targets: []target{{expr: "sum by (status_code) (rate(" + requests(`status_code=~"[45].."`) + "[$__rate_interval]))", legend: "{{status_code}}"}}},
			{kind: "table", title: "Failures by source and error type over the time range", unit: "short", w: 24, h: 9,
				targets: []target{{expr: "sort_desc(sum by (source, error_type) (increase(" + requests(mFailure) + "[$__range])))", legend: "Failures", instant: true}}},
			{kind: "row", title: "Degraded and silent sources"},
			{kind: "table", title: "Degraded sources", w: 24, h: 8,
				desc: "Sources the detector judges degraded now, on their success rate or their p95 latency, against their own baseline " +
					"(docs/insights.md#degraded-sources). Now and Baseline are the signal's value: a success ratio, or a p95 in seconds. " +
					"Retired sources are left out. The alert ProxySourceDegraded reads the same series.",
				targets: []target{
					{expr: "1000 * " + degraded("proxy_source_degraded_onset_timestamp_seconds", ""), legend: "Degraded since", instant: true, unit: "dateTimeAsIso"},
					{expr: "time() - " + degraded("proxy_source_degraded_onset_timestamp_seconds", ""), legend: "For", instant: true, unit: "s"},
					{expr: degraded("proxy_source_signal", `window="current"`), legend: "Now", instant: true},
					{expr: degraded("proxy_source_signal", `window="baseline"`), legend: "Baseline", instant: true},
				}},
			{kind: "timeseries", title: "Degradations over the time range", unit: "short", w: 12, h: 8, min: f(0), max: f(1), interval: "1m",
				desc:    "1 wherever the detector judged a source degraded on a signal.",
				targets: []target{{expr: "max by (source, signal) (max_over_time(" + sel("proxy_source_degraded", mSource) + "[$__interval])) == 1", legend: "{{source}} {{signal}}"}}},
			{kind: "timeseries", title: "proxylens running", unit: "short", w: 12, h: 8, min: f(0), max: f(1), interval: "1m",
				desc: "1 while proxylens ran, 0 where it did not (proxylens_up is written every flush interval while it runs): " +
					"a gap in traffic where this is 1 was no traffic, not missing data.",
				targets: []target{{expr: "max(max_over_time(proxylens_up[$__interval])) or vector(0)", legend: "proxylens up"}}},
			{kind: "table", title: "Silent sources", unit: "short", w: 24, h: 8,
				desc: "Sources with traffic in the past 7 days and none in the last hour, retired ones left out: " +
					"check proxylens running above before blaming the source.",
				targets: []target{{expr: "sort_desc(\n  sum by (source) (increase(" + requests() + "[7d]))\n  unless on (source) (sum by (source) (increase(" + requests() + "[1h])) > 0)\n  unless on (source) proxy_source_retired\n)", legend: "Requests in the past 7 days", instant: true}}},
			{kind: "row", title: "Peak hours"},
			{kind: "table", title: "Requests by hour of the week ($tz), selected sources", w: 24, h: 9, unit: "short", matrix: &[2]string{"weekday", "hour"},
				desc:    "Requests per hour of the day (columns) and day of the week (rows) over the time range, from the hour-of-week counters.",
				targets: []target{{expr: peak("proxy_peak_source_requests_total", mSource, ""), instant: true}}},
			{kind: "table", title: "Success rate by hour of the week ($tz)", w: 24, h: 9, unit: "percentunit", matrix: &[2]string{"weekday", "hour"},
				targets: []target{{expr: peak("proxy_peak_source_requests_total", mSource, mSuccess) + "\n/\n" + peak("proxy_peak_source_requests_total", mSource, ""), instant: true}}},
			{kind: "table", title: "Mean latency by hour of the week ($tz)", w: 24, h: 9, unit: "s", matrix: &[2]string{"weekday", "hour"},
				desc:    "Mean duration of the selected sources' requests; the p95 of the same hours is on the latency panels above.",
				targets: []target{{expr: peak("proxy_peak_source_duration_seconds_total", mSource, "") + "\n/\n" + peak("proxy_peak_source_requests_total", mSource, ""), instant: true}}},
			{kind: "table", title: "Requests by hour of the week ($tz), selected applications", w: 24, h: 9, unit: "short", matrix: &[2]string{"weekday", "hour"},
				targets: []target{{expr: peak("proxy_peak_application_requests_total", mApplication, ""), instant: true}}},
		},
	}
}

func health() dashboard {
	q := func(expr, legend string) target { return target{expr: expr, legend: legend} }
	return dashboard{
		file: "proxylens-health.json", uid: "proxylens-health", title: "proxylens health",
		desc:     "proxylens' own metrics, stored in its series store every flush interval: ingest, refusals, sampling, storage and queries.",
		timeFrom: "now-24h",
		panels: []panel{
			{kind: "row", title: "Ingest"},
			{kind: "timeseries", title: "Ingest rate", unit: "short", w: 12, h: 8,
				desc: "Spans per second received over OTLP, by transport, and records admitted into the pipeline.",
				targets: []target{
					q("sum by (transport) (rate(proxylens_spans_received_total[$__rate_interval]))", "spans {{transport}}"),
					q("sum(rate(proxylens_records_received_total[$__rate_interval]))", "records admitted"),
				}},
			{kind: "timeseries", title: "OTLP export requests by outcome", unit: "reqps", w: 12, h: 8, stack: true,
				targets: []target{q("sum by (transport, outcome) (rate(proxylens_otlp_requests_total[$__rate_interval]))", "{{transport}} {{outcome}}")}},
			{kind: "timeseries", title: "Refusals", unit: "short", w: 12, h: 8, thresholds: []float64{0},
				desc: "Spans refused per second by reason (the client retries overloaded and unavailable ones), and records refused by the pipeline.",
				targets: []target{
					q("sum by (reason) (rate(proxylens_spans_refused_total[$__rate_interval]))", "spans {{reason}}"),
					q("sum(rate(proxylens_records_refused_total[$__rate_interval]))", "records refused"),
				}},
			{kind: "timeseries", title: "Export latency", unit: "s", w: 12, h: 8,
				desc: "Time to handle one OTLP export request, durable commit included.",
				targets: []target{
					q("histogram_quantile(0.5, sum by (le) (rate(proxylens_otlp_request_duration_seconds_bucket[$__rate_interval])))", "p50"),
					q("histogram_quantile(0.99, sum by (le) (rate(proxylens_otlp_request_duration_seconds_bucket[$__rate_interval])))", "p99"),
				}},
			{kind: "timeseries", title: "Sampling probability", unit: "percentunit", w: 12, h: 8, min: f(0), max: f(1),
				desc:    "Keep probability of the stored records (the proxy_* counters count every span whatever it is).",
				targets: []target{q("proxylens_sampling_probability", "keep probability")}},
			{kind: "timeseries", title: "Measured span rate (drives the sampler)", unit: "short", w: 12, h: 8,
				targets: []target{q("proxylens_ingest_rate_per_minute", "spans per minute")}},
			{kind: "timeseries", title: "proxylens running", unit: "short", w: 12, h: 8, min: f(0), max: f(1), interval: "1m",
				desc:    "1 while proxylens ran, 0 where it did not: proxylens_up is written every flush interval while it runs.",
				targets: []target{q("max(max_over_time(proxylens_up[$__interval])) or vector(0)", "proxylens up")}},
			{kind: "timeseries", title: "Degraded sources", unit: "short", w: 12, h: 8,
				desc:    "Source and signal pairs the degradation detector judges degraded (see the Source performance dashboard).",
				targets: []target{q("sum(proxy_source_degraded == 1) or vector(0)", "degraded")}},
			{kind: "row", title: "Storage"},
			{kind: "timeseries", title: "Storage size", unit: "bytes", w: 12, h: 8,
				targets: []target{
					q("proxylens_storage_bytes", "database"),
					q("proxylens_journal_bytes", "journal segment"),
				}},
			{kind: "timeseries", title: "Flushes and failures", unit: "short", w: 12, h: 8,
				desc: "Aggregate cuts written per second, cuts that failed and ingest batches whose durable commit failed.",
				targets: []target{
					q("sum(rate(proxylens_flushes_total[$__rate_interval]))", "flushes"),
					q("sum(rate(proxylens_flush_failures_total[$__rate_interval]))", "flush failures"),
					q("sum(rate(proxylens_batch_commit_failures_total[$__rate_interval]))", "commit failures"),
				}},
			{kind: "timeseries", title: "Commit and flush latency p99", unit: "s", w: 12, h: 8,
				targets: []target{
					q("histogram_quantile(0.99, sum by (le) (rate(proxylens_batch_commit_duration_seconds_bucket[$__rate_interval])))", "batch commit"),
					q("histogram_quantile(0.99, sum by (le) (rate(proxylens_flush_duration_seconds_bucket[$__rate_interval])))", "flush"),
				}},
			{kind: "timeseries", title: "Series per family", unit: "short", w: 12, h: 8,
				desc: "Compare with aggregation.max_series_per_family; overflow means a cardinality limit was reached.",
				targets: []target{
					q("sum by (family) (proxylens_series)", "{{family}}"),
					q("sum by (family) (rate(proxylens_series_overflow_total[$__rate_interval]))", "overflow/s {{family}}"),
				}},
			{kind: "row", title: "Queries and writes"},
			{kind: "timeseries", title: "Query latency", unit: "s", w: 12, h: 8,
				desc: "99th and 50th percentile time to answer the query API's queries and lookups, by action.",
				targets: []target{
					q("histogram_quantile(0.99, sum by (action, le) (rate(proxylens_query_duration_seconds_bucket[$__rate_interval])))", "p99 {{action}}"),
					q("histogram_quantile(0.5, sum by (action, le) (rate(proxylens_query_duration_seconds_bucket[$__rate_interval])))", "p50 {{action}}"),
				}},
			{kind: "timeseries", title: "Pending increments and in-flight work", unit: "short", w: 12, h: 8,
				targets: []target{
					q("proxylens_pending_increments", "pending increments"),
					q("proxylens_inflight_records", "in-flight records"),
				}},
		},
	}
}
