package dashboards

import (
	"fmt"
	"strings"
)

// The Cost & ROI dashboard reads all spend from one counter,
// proxy_cost_allocated_total (docs/analytics.md): usage and
// subscriptions, allocated to applications, kept by the rollups. Spend of
// a selection is a plain sum under the variables, so a figure for a set
// of applications is the sum of theirs, and a ratio divides the
// selection's spend by the selection's own requests.

const tiers = `tier=~"free|premium"`

// spent is increase() of the allocated cost under the variables over
// window, plus extra matchers.
func spent(window string, extra ...string) string {
	return "increase(" + sel("proxy_cost_allocated_total", append([]string{mSource, mApplication}, extra...)...) + "[" + window + "])"
}

// pricedRequests counts the selected requests (plus extra matchers) of the
// sources that have a cost model, by currency (and tier when byTier).
func pricedRequests(byTier bool, extra ...string) string {
	by, inner := "currency", "source"
	if byTier {
		by, inner = "tier, currency", "source, tier"
	}
	return "sum by (" + by + ") (\n  sum by (" + inner + ") (increase(" + requests(extra...) + "[$__range]))\n* on (source) group_left (currency)\n" +
		`  group by (source, currency) (increase(proxy_cost_allocated_total{source=~"$source"}[$__range]))` + "\n)"
}

// share is each source's share of its requests that match extra, by the
// labels in by (besides source), over all applications: a source's tier
// does not depend on who uses it, so that the spend of each application
// (unallocated included) is shared out alike and the tiers' figures add
// up across applications.
func share(by string, extra ...string) string {
	all := func(extra ...string) string {
		return sel("proxy_requests_total", append([]string{mSource, mNoOverflow}, extra...)...)
	}
	return "(\n    sum by (source" + by + ") (increase(" + all(extra...) + "[$__range]))\n  / on (source) group_left\n" +
		"    sum by (source) (increase(" + all() + "[$__range]))\n  )"
}

// tierSpend is the selected spend (plus extra matchers) by tier and
// currency: each source's spend shared out to its tiers by requests (a
// source is normally of one tier).
func tierSpend(extra ...string) string {
	return "sum by (tier, currency) (\n  sum by (source, currency) (" + spent("$__range", extra...) + ")\n* on (source) group_right (currency)\n  " +
		share(", tier", tiers) + "\n)"
}

// tierSpendOf is tierSpend of one tier, by currency.
func tierSpendOf(tier string, extra ...string) string {
	return "sum by (currency) (\n  sum by (source, currency) (" + spent("$__range", extra...) + ")\n* on (source) group_left ()\n  " +
		share("", `tier="`+tier+`"`) + "\n)"
}

// tierRequests is the selected requests (plus extra matchers) of one tier.
func tierRequests(tier string, extra ...string) string {
	return "sum(increase(" + requests(append([]string{`tier="` + tier + `"`}, extra...)...) + "[$__range]))"
}

// tierRate is one tier's success rate over the selected requests.
func tierRate(tier string) string {
	return "(" + tierRequests(tier, mSuccess) + " / " + tierRequests(tier) + ")"
}

// mixSpend is what the observed successes would have cost had a share p
// (0 to 1) of the attempts gone to premium sources and the rest to free
// ones, at each tier's observed success rate and usage cost per attempt:
// attempts = successes ÷ (p × premium's rate + (1 − p) × free's), usage =
// attempts × (p × premium's usage per attempt + (1 − p) × free's), plus
// the subscriptions of the tiers used. By currency, labelled mix.
func mixSpend(p float64) string {
	attempts := fmt.Sprintf("scalar(\n  sum(increase(%s[$__range]))\n/ (%g * %s + %g * %s)\n)", requests(tiers, mSuccess), p, tierRate("premium"), 1-p, tierRate("free"))
	var parts []string
	for _, t := range []struct {
		tier   string
		weight float64
	}{{"premium", p}, {"free", 1 - p}} {
		if t.weight == 0 {
			continue
		}
		usage := fmt.Sprintf("%s * %g * (\n%s\n/ scalar(%s)\n)", attempts, t.weight, tierSpendOf(t.tier, `component="usage"`), tierRequests(t.tier))
		parts = append(parts,
			`label_replace(`+usage+`, "part", "`+t.tier+` usage", "", "")`,
			`label_replace(`+tierSpendOf(t.tier, `component="subscription"`)+`, "part", "`+t.tier+` subscriptions", "", "")`)
	}
	return fmt.Sprintf("label_replace(sum by (currency) (\n%s\n), \"mix\", \"%g%% premium\", \"\", \"\")", strings.Join(parts, "\nor\n"), 100*p)
}

// mixRate is the success rate of a mix (see mixSpend).
func mixRate(p float64) string {
	return fmt.Sprintf("label_replace(%g * %s + %g * %s, \"mix\", \"%g%% premium\", \"\", \"\")", p, tierRate("premium"), 1-p, tierRate("free"), 100*p)
}

func cost() dashboard {
	spend := "sum by (currency) (" + spent("$__range") + ")"
	perSource := func(extra ...string) string {
		return "sum by (source, currency) (" + spent("$__range") + ")\n/ on (source) group_left\nsum by (source) (increase(" + requests(extra...) + "[$__range]))"
	}
	mixes := []float64{0, 0.25, 0.5, 0.75, 1}
	var mixSpends, mixRates []target
	for _, p := range mixes {
		mixSpends = append(mixSpends, target{expr: mixSpend(p), legend: "{{mix}} ({{currency}})", instant: true})
		mixRates = append(mixRates, target{expr: mixRate(p), legend: "{{mix}}", instant: true})
	}
	return dashboard{
		file: "cost-roi.json", uid: "proxylens-cost", title: "Cost and ROI",
		desc: "All spend (usage and subscriptions, allocated to applications by their requests hour by hour), cost per request and per success, " +
			"by source and application, premium against free, and what another mix of tiers would have cost. " +
			"Needs cost models (docs/analytics.md). Amounts are per currency and never added across currencies.",
		variables:  []string{"source", "application"},
		valuesFrom: "proxy_cost_allocated_total",
		timeFrom:   "now-30d",
		panels: []panel{
			{kind: "row", title: "Spend"},
			{kind: "stat", title: "Spend", unit: "none", w: 6, h: 5,
				desc:    "Usage cost plus the subscriptions allocated to the selected applications, per currency. Application unallocated holds the subscription hours no application used, and the current hour until it is over.",
				targets: []target{{expr: spend, legend: "{{currency}}", instant: true}}},
			{kind: "stat", title: "Spend vs previous period", unit: "percent", w: 6, h: 5,
				desc: "Change in spend against the previous period of the same length, in %.",
				targets: []target{{expr: "100 * (\n  " + spend + "\n/\n  sum by (currency) (" + strings.Replace(spent("$__range"), "])", "] offset $__range)", 1) + ")\n- 1)",
					legend: "{{currency}}", instant: true}}},
			{kind: "stat", title: "Cost per request", unit: "none", w: 6, h: 5,
				desc:    "Spend divided by the selected requests to the sources priced in that currency (free sources included).",
				targets: []target{{expr: spend + "\n/\n" + pricedRequests(false), legend: "{{currency}}", instant: true}}},
			{kind: "stat", title: "Cost per successful request", unit: "none", w: 6, h: 5,
				targets: []target{{expr: spend + "\n/\n" + pricedRequests(false, mSuccess), legend: "{{currency}}", instant: true}}},
			{kind: "timeseries", title: "Spend per day", unit: "none", w: 16, h: 8, interval: "1d",
				desc:    "Each point is the spend of the day (the panel's interval) that ends there, per currency: not stacked, currencies do not add up.",
				targets: []target{{expr: "sum by (currency) (" + spent("$__interval") + ")", legend: "{{currency}}"}}},
			{kind: "bargauge", title: "Usage and subscriptions", unit: "none", w: 8, h: 8,
				desc:    "Spend by component: usage (per request, per GB) and subscriptions.",
				targets: []target{{expr: "sum by (component, currency) (" + spent("$__range") + ")", legend: "{{component}} ({{currency}})", instant: true}}},
			{kind: "row", title: "By source and application"},
			{kind: "bargauge", title: "Spend by source", unit: "none", w: 12, h: 10,
				targets: []target{{expr: "sort_desc(sum by (source, currency) (" + spent("$__range") + "))", legend: "{{source}} ({{currency}})", instant: true}}},
			{kind: "bargauge", title: "Spend by application", unit: "none", w: 12, h: 10,
				desc:    "Usage cost per application, plus each subscription hour shared out in proportion to the applications' requests to that source in the hour.",
				targets: []target{{expr: "sort_desc(sum by (application, currency) (" + spent("$__range") + "))", legend: "{{application}} ({{currency}})", instant: true}}},
			{kind: "table", title: "Return per source over the time range", w: 24, h: 10,
				desc: "Spend, cost per request and per success, success rate, p95 latency and extra attempts per success (failures per success: " +
					"what a caller retries) of each source, for the selected applications.",
				targets: []target{
					{expr: "sum by (source, currency) (" + spent("$__range") + ")", legend: "Spend", instant: true},
					{expr: perSource(), legend: "Cost per request", instant: true},
					{expr: perSource(mSuccess), legend: "Cost per success", instant: true},
					{expr: successRateOver("source", "$__range"), legend: "Success rate", instant: true, unit: "percentunit"},
					{expr: strings.Replace(latency("0.95", "source", "$__range"), "rate(", "increase(", 1), legend: "p95 latency", instant: true, unit: "s"},
					{expr: extraAttempts("source"), legend: "Extra attempts per success", instant: true, unit: "short"},
				}},
			{kind: "row", title: "Premium vs free"},
			{kind: "bargauge", title: "Success rate by tier", unit: "percentunit", w: 6, h: 8, min: f(0), max: f(1),
				targets: []target{{expr: successRateOver("tier", "$__range", tiers), legend: "{{tier}}", instant: true}}},
			{kind: "bargauge", title: "p95 latency by tier", unit: "s", w: 6, h: 8,
				targets: []target{{expr: "histogram_quantile(0.95, sum by (tier, le) (increase(" +
					sel("proxy_request_duration_seconds_bucket", mSource, mApplication, mNoOverflow, tiers) + "[$__range])))", legend: "{{tier}}", instant: true}}},
			{kind: "bargauge", title: "Cost per successful request by tier", unit: "none", w: 6, h: 8,
				desc:    "Each tier's spend over its successful requests, per currency. A free tier's is 0: its price is in its failures (next panels).",
				targets: []target{{expr: tierSpend() + "\n/\n" + pricedRequests(true, tiers, mSuccess), legend: "{{tier}} ({{currency}})", instant: true}}},
			{kind: "bargauge", title: "Cost of failures by tier", unit: "short", w: 6, h: 8,
				desc: "What failures cost per successful request: the extra attempts a caller makes (failures per success) and the seconds they take. " +
					"This is the effective price of a free source.",
				targets: []target{
					{expr: extraAttempts("tier", tiers), legend: "{{tier}} extra attempts", instant: true},
					{expr: "sum by (tier) (increase(" + sel("proxy_request_duration_seconds_sum", mSource, mApplication, mNoOverflow, tiers, mFailure) + "[$__range]))\n/\n" +
						"sum by (tier) (increase(" + requests(tiers, mSuccess) + "[$__range]))", legend: "{{tier}} seconds lost", instant: true},
				}},
			{kind: "bargauge", title: "What a mix of tiers would have cost", unit: "none", w: 12, h: 9,
				desc: "The spend the observed successful requests would have taken with 0–100% of the attempts on premium sources, " +
					"at each tier's observed success rate and usage cost per attempt, plus the subscriptions of the tiers used.",
				targets: mixSpends},
			{kind: "bargauge", title: "Success rate of a mix of tiers", unit: "percentunit", w: 12, h: 9, min: f(0), max: f(1),
				desc:    "The success rate of each mix: the attempts it needs per success is its inverse.",
				targets: mixRates},
		},
	}
}

// successRateOver is the success ratio over window (increase, for a
// figure over the time range), grouped by by.
func successRateOver(by, window string, extra ...string) string {
	return agg("sum", by, "increase("+requests(append([]string{mSuccess}, extra...)...)+"["+window+"])") +
		"\n/\n" + agg("sum", by, "increase("+requests(extra...)+"["+window+"])")
}

// extraAttempts is the failures per successful request, grouped by by.
func extraAttempts(by string, extra ...string) string {
	return agg("sum", by, "increase("+requests(append([]string{mFailure}, extra...)...)+"[$__range])") +
		"\n/\n" + agg("sum", by, "increase("+requests(append([]string{mSuccess}, extra...)...)+"[$__range])")
}
