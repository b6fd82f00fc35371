package server

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/proxylens/proxylens/otelanalytics"
)

// TestFixedCostsSkip: an instance with fixed_costs: skip writes the usage
// costs as any other, and no subscription accrual and no subscription or
// budget gauge, so that a fleet of instances writing into one TSDB counts
// the fleet's subscriptions once (from the one instance that accrues
// them), not once per instance.
func TestFixedCostsSkip(t *testing.T) {
	now := time.Now().UTC()
	from := now.Add(-48 * time.Hour)
	perRequest, subscription, budget := 0.002, 30.0, 100.0
	var stubs []tracetest.SpanStub
	for i := range 300 {
		stubs = append(stubs, proxySpan(i, now.Add(-time.Duration(i+1)*20*time.Second)))
	}
	answers := map[string]map[string]map[string]float64{}
	for _, mode := range []string{FixedCostsAccrue, FixedCostsSkip} {
		cfg := testConfig(t)
		cfg.FixedCosts = mode
		cfg.Costs = []otelanalytics.CostModel{
			{Source: "brightdata", Model: otelanalytics.CostModelPerRequest, PerRequest: &perRequest, From: from},
			{Source: "spys-one", Model: otelanalytics.CostModelSubscription, Currency: "EUR", Subscription: &subscription, Period: "day", From: from, Budget: &budget},
		}
		require.NoError(t, cfg.Validate())
		s := start(t, cfg, Options{})
		exportGRPC(t, s, stubs...)
		require.NoError(t, s.Pipeline().Flush())
		require.NoError(t, s.Pipeline().Flush()) // the finished hours' subscriptions allocated
		answers[mode] = map[string]map[string]float64{}
		for name, q := range map[string]string{
			"usage":        `sum by (source) (increase(proxy_cost_allocated_total{component="usage"}[1d]))`,
			"cost":         `sum by (source) (increase(proxy_cost_total[1d]))`,
			"subscription": `sum by (source) (increase(proxy_cost_allocated_total{component="subscription"}[1d]))`,
		} {
			answers[mode][name] = promVector(t, s, "", q, now, "source")
		}
		for _, g := range []string{"proxy_subscription_cost", "proxy_subscription_period_seconds", "proxy_cost_budget", "proxy_cost_budget_period_seconds"} {
			// Gauges stand at the interval ends, up to 15 s ahead of now.
			answers[mode][g] = promVector(t, s, "", `count_over_time(`+g+`[1d])`, now.Add(time.Minute), "source")
		}
	}
	accrue, skip := answers[FixedCostsAccrue], answers[FixedCostsSkip]
	require.NotEmpty(t, accrue["usage"]["brightdata"])
	require.Equal(t, accrue["usage"], skip["usage"], "usage costs are each instance's own")
	require.Equal(t, accrue["cost"], skip["cost"])
	require.Positive(t, accrue["subscription"]["spys-one"])
	require.Empty(t, skip["subscription"])
	for _, g := range []string{"proxy_subscription_cost", "proxy_subscription_period_seconds", "proxy_cost_budget", "proxy_cost_budget_period_seconds"} {
		require.Positive(t, accrue[g]["spys-one"], g)
		require.Empty(t, skip[g], g)
	}
}
