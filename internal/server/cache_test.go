package server

import (
	"bufio"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// scrape returns the value of an unlabelled metric on s's /metrics.
func scrape(t *testing.T, s *Server, name string) float64 {
	t.Helper()
	code, body, _ := get(t, "http://"+s.HTTPAddr().String()+"/metrics")
	require.Equal(t, 200, code)
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err)
			return f
		}
	}
	t.Fatalf("no %s on /metrics", name)
	return 0
}

// TestResultCacheSeesLateSpans: a three-day range query is answered from
// the cache the second time; a span for yesterday that arrives late
// changes the next answer, as it would without the cache.
func TestResultCacheSeesLateSpans(t *testing.T) {
	now := time.Now().UTC() // the server's clock stands still: no hour ends during the test
	s := start(t, testConfig(t), Options{Now: func() time.Time { return now }})
	today := now.Truncate(24 * time.Hour)
	var stubs []tracetest.SpanStub
	for d := 1; d <= 3; d++ {
		for i := range 10 {
			stubs = append(stubs, proxySpan(100*d+i, today.Add(-time.Duration(d)*24*time.Hour+12*time.Hour+10*time.Minute+time.Duration(i)*time.Second)))
		}
	}
	exportGRPC(t, s, stubs...)
	require.NoError(t, s.Pipeline().Flush())

	p := queryClient(t, s)
	r := v1.Range{Start: today.Add(-3 * 24 * time.Hour), End: now.Truncate(time.Hour), Step: time.Hour}
	const q = `sum(increase(proxy_requests_total[1h]))`
	at := today.Add(-24*time.Hour + 13*time.Hour) // the hour (12:00, 13:00] yesterday
	valueAt := func() float64 {
		t.Helper()
		v, warns, _, err := p.QueryRange(context.Background(), q, r)
		require.NoError(t, err)
		require.Empty(t, warns)
		m := v.(model.Matrix)
		require.Len(t, m, 1)
		for _, pt := range m[0].Values {
			if pt.Timestamp.Time().Equal(at) {
				return float64(pt.Value)
			}
		}
		t.Fatalf("no point at %s", at)
		return 0
	}
	// Exact but for the engine's extrapolation over 1 ms of the hour.
	require.InDelta(t, 10, valueAt(), 10*1.01/3600000)
	hits, misses := scrape(t, s, "proxylens_query_result_cache_hits_total"), scrape(t, s, "proxylens_query_result_cache_misses_total")
	require.InDelta(t, 10, valueAt(), 10*1.01/3600000)
	require.GreaterOrEqual(t, scrape(t, s, "proxylens_query_result_cache_hits_total"), hits+3, "the three past days come from the cache")
	require.Equal(t, misses, scrape(t, s, "proxylens_query_result_cache_misses_total"), "and so do today's past hours")

	exportHTTP(t, s, proxySpan(999, at.Add(-30*time.Minute)))
	require.NoError(t, s.Pipeline().Flush())
	require.InDelta(t, 11, valueAt(), 11*1.01/3600000, "the late span is counted")
	require.Equal(t, 1.0, scrape(t, s, "proxylens_query_result_cache_invalidations_total"), "yesterday was evaluated again")
}
