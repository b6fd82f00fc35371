package ruler

import (
	"context"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/rules"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/pebblestore"
	"github.com/proxylens/proxylens/promql"
)

// T is the evaluation time of the shipped-rules test.
var T = time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)

// openRuler opens a store in a temporary directory, fills it with fill,
// and returns a ruler over it with the query API's QueryFunc.
func openRuler(t *testing.T, cfg Config, fill func(add func(ls labels.Labels, at time.Time, v float64))) (*Ruler, *promql.API) {
	t.Helper()
	db, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	s := db.Series()
	if fill != nil {
		app := s.Appender(context.Background())
		fill(func(ls labels.Labels, at time.Time, v float64) {
			_, err := app.Append(0, ls, at.UnixMilli(), v)
			require.NoError(t, err, "%s at %s", ls, at)
		})
		require.NoError(t, app.Commit())
	}
	api := promql.New(promql.Config{}, s, promql.Options{})
	t.Cleanup(func() { require.NoError(t, api.Close()) })
	return New(cfg, Options{QueryFunc: QueryFunc(api), Appendable: s, Queryable: s}), api
}

// every calls add at each step from `from` to `to`, both included.
func every(from, to time.Time, step time.Duration, add func(at time.Time)) {
	for at := from; !at.After(to); at = at.Add(step) {
		add(at)
	}
}

// TestShippedRules evaluates the shipped rule file, as the ruler loads it
// from the binary, over synthetic series, minute by minute up to T: each
// alert fires for the one source that meets it, with the annotations
// saying how bad and since when.
func TestShippedRules(t *testing.T) {
	onset := T.Add(-20 * time.Minute)
	r, _ := openRuler(t, DefaultConfig(), func(add func(labels.Labels, time.Time, float64)) {
		every(T.Add(-30*time.Minute), T, 15*time.Second, func(at time.Time) {
			// brightdata degraded on success rate since onset; oxylabs healthy.
			degraded := 0.0
			if !at.Before(onset) {
				degraded = 1
				add(labels.FromStrings("__name__", "proxy_source_degraded_onset_timestamp_seconds", "source", "brightdata", "signal", "success_rate"), at, float64(onset.Unix()))
			}
			add(labels.FromStrings("__name__", "proxy_source_degraded", "source", "brightdata", "signal", "success_rate"), at, degraded)
			add(labels.FromStrings("__name__", "proxy_source_degraded", "source", "oxylabs", "signal", "success_rate"), at, 0)
			add(labels.FromStrings("__name__", "proxy_source_degraded", "source", "brightdata", "signal", "latency_p95"), at, 0)
			add(labels.FromStrings("__name__", "proxy_source_signal", "source", "brightdata", "signal", "success_rate", "window", "current"), at, 0.62)
			add(labels.FromStrings("__name__", "proxy_source_signal", "source", "brightdata", "signal", "success_rate", "window", "baseline"), at, 0.97)
			// The budget: 100 USD a day for oxylabs, 1000 a month for brightdata.
			add(labels.FromStrings("__name__", "proxy_cost_budget", "source", "oxylabs", "currency", "USD", "period", "day"), at, 100)
			add(labels.FromStrings("__name__", "proxy_cost_budget", "source", "brightdata", "currency", "USD", "period", "month"), at, 1000)
		})
		// Spend: oxylabs 6 USD an hour a week ago, 150 an hour now;
		// brightdata 20 an hour both weeks (no spike, within budget).
		for _, w := range []struct {
			from     time.Time
			oxylabs  float64
			constant float64
		}{{T.Add(-7*24*time.Hour - 2*time.Hour), 6, 20}, {T.Add(-2 * time.Hour), 150, 20}} {
			every(w.from, w.from.Add(2*time.Hour), time.Minute, func(at time.Time) {
				h := at.Sub(w.from).Hours()
				add(labels.FromStrings("__name__", "proxy_cost_allocated_total", "source", "oxylabs", "application", "web", "currency", "USD", "component", "usage"), at, w.oxylabs*h)
				add(labels.FromStrings("__name__", "proxy_cost_allocated_total", "source", "brightdata", "application", "web", "currency", "USD", "component", "usage"), at, w.constant*h)
			})
		}
		// The rule engine failed twice in the last minutes.
		every(T.Add(-30*time.Minute), T, 15*time.Second, func(at time.Time) {
			v := 0.0
			if at.After(T.Add(-5 * time.Minute)) {
				v = 2
			}
			add(labels.FromStrings("__name__", "prometheus_rule_evaluation_failures_total", "rule_group", "f;g"), at, v)
		})
	})
	ext, _ := url.Parse("http://proxylens.example:9464")
	m := r.newManager(ext, func(context.Context, string, ...*rules.Alert) {})
	groups, errs := m.LoadGroups(time.Minute, labels.EmptyLabels(), ext.String(), nil, false, ShippedRulesFile)
	require.Empty(t, errs)
	require.NotEmpty(t, groups)
	ctx := context.Background()
	every(T.Add(-15*time.Minute), T, time.Minute, func(at time.Time) {
		for _, g := range groups {
			g.Eval(ctx, at)
		}
	})

	firing := map[string][]*rules.Alert{}
	for _, g := range groups {
		for _, rl := range g.Rules() {
			require.NoError(t, rl.LastError(), "%s: %s", rl.Name(), rl.Query())
			if ar, ok := rl.(*rules.AlertingRule); ok {
				for _, a := range ar.ActiveAlerts() {
					if a.State == rules.StateFiring {
						firing[ar.Name()] = append(firing[ar.Name()], a)
					}
				}
			}
		}
	}
	names := func(as []*rules.Alert) []string {
		var out []string
		for _, a := range as {
			out = append(out, a.Labels.String())
		}
		slices.Sort(out)
		return out
	}
	require.ElementsMatch(t, []string{"ProxySourceDegraded", "ProxyCostSpike", "ProxySourceOverBudget", "ProxylensRuleEvaluationFailures"},
		keys(firing), "the alerts that fire")

	require.Equal(t, []string{`{alertname="ProxySourceDegraded", severity="warning", signal="success_rate", source="brightdata"}`}, names(firing["ProxySourceDegraded"]))
	desc := firing["ProxySourceDegraded"][0].Annotations.Get("description")
	require.Contains(t, desc, "success rate of proxy source brightdata is 62% against a baseline of 97%")
	require.Contains(t, desc, "degraded since "+onset.Format("2006-01-02 15:04:05 -0700 MST"))
	require.Equal(t, "brightdata is degraded (success_rate)", firing["ProxySourceDegraded"][0].Annotations.Get("summary"))

	require.Equal(t, []string{`{alertname="ProxyCostSpike", currency="USD", severity="warning", source="oxylabs"}`}, names(firing["ProxyCostSpike"]))
	spike := firing["ProxyCostSpike"][0]
	require.InDelta(t, 150, spike.Value, 1)
	require.Contains(t, spike.Annotations.Get("description"), "the same hour a week ago: 6 USD")

	require.Equal(t, []string{`{alertname="ProxySourceOverBudget", currency="USD", period="day", severity="warning", source="oxylabs"}`}, names(firing["ProxySourceOverBudget"]))
	require.Contains(t, firing["ProxySourceOverBudget"][0].Annotations.Get("description"), "more than its budget of 100 USD")

	require.Equal(t, []string{`{alertname="ProxylensRuleEvaluationFailures", rule_group="f;g", severity="critical"}`}, names(firing["ProxylensRuleEvaluationFailures"]))
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
