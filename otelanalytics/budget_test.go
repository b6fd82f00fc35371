package otelanalytics

import (
	"math"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
)

// TestBudget: a model's budget is validated like a price, decoded and
// kept by the admin API's JSON, and written as proxy_cost_budget with its
// period (the billing period, or month without one) next to the
// subscription gauges.
func TestBudget(t *testing.T) {
	for _, c := range []struct {
		budget float64
		want   string
	}{
		{-1, "costs[0].budget: must be a finite number ≥ 0, got -1"},
		{math.NaN(), "costs[0].budget: must be a finite number ≥ 0, got NaN"},
		{math.Inf(1), "costs[0].budget: must be a finite number ≥ 0, got +Inf"},
	} {
		err := ValidateCostModels([]CostModel{{Source: "s", Model: "per_request", PerRequest: price(1),
			From: at("2026-01-01T00:00:00Z"), Budget: price(c.budget)}})
		require.EqualError(t, err, c.want)
	}

	models, err := DecodeCostModelsJSON(strings.NewReader(`[
		{"source": "sub", "model": "hybrid", "per_request": 0.001, "subscription": 10, "period": "week",
		 "budget": 25, "from": "2026-01-01T00:00:00Z"},
		{"source": "pr", "model": "per_request", "per_request": 0.002, "currency": "eur", "budget": 500,
		 "from": "2026-01-01T00:00:00Z"},
		{"source": "none", "model": "per_request", "per_request": 0.002, "from": "2026-01-01T00:00:00Z"}]`))
	require.NoError(t, err)
	require.Equal(t, 25.0, *models[0].Budget)
	require.Nil(t, models[2].Budget)
	b, err := NewCostBook(models)
	require.NoError(t, err)
	require.Equal(t, 500.0, *b.Models()[1].Budget)
	got := b.Models()
	*got[1].Budget = 1
	require.Equal(t, 500.0, *b.Models()[1].Budget, "Models returns a copy of the budget too")

	samples := map[string]float64{}
	require.NoError(t, b.SubscriptionSamples(at("2026-02-01T00:00:00Z").UnixMilli(), func(ls labels.Labels, v float64) error {
		samples[ls.String()] = v
		return nil
	}))
	require.Equal(t, map[string]float64{
		`{__name__="proxy_cost_budget", currency="EUR", period="month", source="pr"}`:                 500,
		`{__name__="proxy_cost_budget_period_seconds", currency="EUR", period="month", source="pr"}`:  2592000,
		`{__name__="proxy_subscription_cost", currency="USD", period="week", source="sub"}`:           10,
		`{__name__="proxy_subscription_period_seconds", currency="USD", period="week", source="sub"}`: 604800,
		`{__name__="proxy_cost_budget", currency="USD", period="week", source="sub"}`:                 25,
		`{__name__="proxy_cost_budget_period_seconds", currency="USD", period="week", source="sub"}`:  604800,
	}, samples)
}
