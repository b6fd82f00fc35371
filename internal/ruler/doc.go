// Package ruler evaluates alerting and recording rules inside proxylens
// with Prometheus' own rule engine (the rules package of
// github.com/prometheus/prometheus) and sends the alerts to Alertmanagers
// with Prometheus' notifier. It owns the rule_files, alerting,
// evaluation_interval and shipped_rules config keys, the shipped rules
// (dashboards/alerts/proxylens.rules.yml, embedded in the binary and
// loaded under the name ShippedRulesFile), and the answers of
// /api/v1/rules and /api/v1/alerts in Prometheus' shapes.
//
// Rules query through the function the server hands in (the query API's
// Exec: the same limits, concurrency gate and pushdown as an HTTP query)
// and recording rules append to the series store, where their output is
// queryable like any series. Rule files are read at Start: a restart
// reloads them.
//
// All methods are safe for concurrent use; Shutdown may be called more
// than once, and without Start.
package ruler
