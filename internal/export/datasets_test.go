package export

import (
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/require"
)

// TestSummaryQuery: a summary field's query gets the filters as matchers
// on every selector (the source only where the family has no application
// label) and the period as every range; values are matched exactly, not
// as patterns.
func TestSummaryQuery(t *testing.T) {
	f := Filters{Source: []string{"bright.data", "oxy"}, Application: []string{"crawler"}}
	for _, tc := range []struct {
		field, step, want string
	}{
		{"requests", "1h", `sum by (source) (increase(proxy_requests_total{application=~"crawler",source=~"bright\\.data|oxy"}[1h]))`},
		{"successes", "1d", `sum by (source) (increase(proxy_requests_total{application=~"crawler",outcome="success",source=~"bright\\.data|oxy"}[1d]))`},
		{"avg_latency_seconds", "1h", `sum by (source) (increase(proxy_request_duration_seconds_sum{application=~"crawler",source=~"bright\\.data|oxy"}[1h])) / sum by (source) (increase(proxy_request_duration_seconds_count{application=~"crawler",source=~"bright\\.data|oxy"}[1h]))`},
		{"sample_adjusted", "1d", `sum by (source) (increase(proxy_sample_adjusted_requests_total{source=~"bright\\.data|oxy"}[1d])) > 0`},
	} {
		step := map[string]time.Duration{"1h": time.Hour, "1d": 24 * time.Hour}[tc.step]
		q, err := summaryQuery(tc.field, f, step)
		require.NoError(t, err)
		require.Equal(t, tc.want, q, tc.field)
		_, err = parser.NewParser(parser.Options{}).ParseExpr(q)
		require.NoError(t, err)
	}
	// Without filters the queries are the fields' own, at the period.
	q, err := summaryQuery("distinct_domains", Filters{}, time.Hour)
	require.NoError(t, err)
	require.Equal(t, `count by (source) (sum by (source, domain) (increase(proxy_requests_total[1h])) > 0)`, q)
	for name := range summaryFields {
		_, err := summaryQuery(name, f, time.Hour)
		require.NoError(t, err, name)
	}
}
