package dashboards

import _ "embed"

// RulesFile is dashboards/alerts/proxylens.rules.yml, the shipped
// alerting rules, which proxylens evaluates by default (internal/ruler).
//
//go:embed alerts/proxylens.rules.yml
var RulesFile []byte
