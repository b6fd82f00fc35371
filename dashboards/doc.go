// Package dashboards builds proxylens' Grafana dashboards as code.
//
// Generate returns the dashboards' JSON; `go run ./dashboards/gen` writes it
// to dashboards/*.json, the files that Grafana imports or provisions
// (dashboards/provisioning). A test regenerates them in memory and fails if
// the committed files differ, so the two never drift. The alerting rules in
// dashboards/alerts use the same PromQL.
//
// Every query uses only the series of docs/metrics.md. The package holds no
// state; Generate is safe for concurrent use.
package dashboards
