package promql_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/require"

	promqlengine "github.com/prometheus/prometheus/promql"

	"github.com/proxylens/proxylens/pebblestore"
	"github.com/proxylens/proxylens/promql"
)

// pushDownCounter is the series store, counting the queries it is asked
// to rewrite.
type pushDownCounter struct {
	*pebblestore.SeriesStore
	asked atomic.Int32
}

func (p *pushDownCounter) PushDown(expr parser.Expr) bool {
	p.asked.Add(1)
	return p.SeriesStore.PushDown(expr)
}

type ctxKey struct{}

// TestExec: the entry point that exports and reports use answers as the
// HTTP API does, goes through the store's pushdown and the query limits,
// and is audited with the caller's context.
func TestExec(t *testing.T) {
	s := &pushDownCounter{SeriesStore: openStore(t)}
	fillFixture(t, s)
	var mu sync.Mutex
	var got []promql.Access
	var who []any
	a := promql.New(promql.Config{MaxQueryLength: 3 * time.Hour}, s, promql.Options{
		Audit: func(ctx context.Context, acc promql.Access) {
			mu.Lock()
			got = append(got, acc)
			who = append(who, ctx.Value(ctxKey{}))
			mu.Unlock()
		},
	})
	defer a.Close()
	ctx := context.WithValue(t.Context(), ctxKey{}, "exporter")

	start, end := t0.Add(30*time.Minute), t0.Add(90*time.Minute)
	res, err := a.Exec(ctx, promql.Request{Query: `sum by (source) (increase(proxy_requests_total[1h]))`, Start: start, End: end, Step: 30 * time.Minute})
	require.NoError(t, err)
	m, ok := res.Value.(promqlengine.Matrix)
	require.True(t, ok)
	require.Len(t, m, len(fixtureSources))
	for i, sr := range m {
		require.Equal(t, fixtureSources[i], sr.Metric.Get("source"))
		require.Len(t, sr.Floats, 3)
		// web grows by (i+1)/s and batch by 1/s: an hour of both.
		require.InDelta(t, float64(i+2)*3600, sr.Floats[2].F, 1e-6)
	}
	res.Close()
	res.Close() // twice is fine
	require.EqualValues(t, 1, s.asked.Load(), "the store was asked to push the sum down")

	res, err = a.Exec(ctx, promql.Request{Query: `proxy_requests_total{source="beta"}`, End: end})
	require.NoError(t, err)
	v, ok := res.Value.(promqlengine.Vector)
	require.True(t, ok)
	require.Len(t, v, 2)
	res.Close()

	// The limits apply: a query covering more than max_query_length is
	// refused before it runs, and a parse error is an error.
	res, err = a.Exec(ctx, promql.Request{Query: `sum(rate(proxy_requests_total[5m]))`, Start: t0, End: t0.Add(4 * time.Hour), Step: time.Minute})
	require.ErrorContains(t, err, "more than the limit of 3h")
	res.Close()
	res, err = a.Exec(ctx, promql.Request{Query: `sum((`, End: end})
	require.Error(t, err)
	res.Close()
	// A canceled context stops it.
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	res, err = a.Exec(canceled, promql.Request{Query: `proxy_requests_total`, End: end})
	require.Error(t, err)
	res.Close()

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, 5)
	require.Equal(t, "query_range", got[0].Action)
	require.Equal(t, start.Format(time.RFC3339), got[0].Start)
	require.Equal(t, end.Format(time.RFC3339), got[0].End)
	require.Equal(t, len(fixtureSources), got[0].Results)
	require.Equal(t, "query", got[1].Action)
	require.Equal(t, end.Format(time.RFC3339), got[1].Start, "an instant query's time is its range")
	require.Equal(t, 2, got[1].Results)
	for i, acc := range got {
		require.Equal(t, "exporter", who[i], "audited with the caller's context")
		require.Equal(t, i >= 2, acc.Err != "", i)
		require.Positive(t, acc.Took)
	}
}
