package otelanalytics_test

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	promqlengine "github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/internal/traffic"
	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
	"github.com/proxylens/proxylens/promql"
)

// freshStack is a pipeline over a real store whose queries see the
// overlay, as the server wires it, with a query API over the store.
type freshStack struct {
	*stack
	api *promql.API
}

func newFreshStack(t testing.TB, dir string) *freshStack {
	t.Helper()
	db, err := pebblestore.Open(dir, pebblestore.Options{Series: pebblestore.SeriesOptions{IncrementInterval: time.Second}})
	require.NoError(t, err)
	st := &stack{dir: dir, db: db, dict: otelanalytics.NewDict(0),
		agg: otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, time.Second, nil),
		s:   otelanalytics.NewSampler(otelanalytics.DefaultSamplingConfig())}
	next, err := otelanalytics.Restore(db, st.dict, st.agg)
	require.NoError(t, err)
	db.Series().SetOverlay(otelanalytics.NewOverlay(st.agg, st.dict))
	st.p = otelanalytics.NewPipeline(otelanalytics.PipelineConfig{}, st.dict, st.s, st.agg, db, next, nil, nil, ticker(time.Millisecond))
	api := promql.New(promql.Config{MaxQueryLength: 30 * 24 * time.Hour}, db.Series(), promql.Options{Now: func() time.Time { return now }})
	t.Cleanup(func() { _ = api.Close() })
	return &freshStack{stack: st, api: api}
}

// freshQueries cover every read path: the series iterators (plain
// selectors, resets, histogram buckets), the pushed-down sums, the
// per-series boundary points, and sums over summaries and days.
var freshQueries = []struct {
	q          string
	rangeQuery bool
}{
	{`sum(proxy_requests_total)`, false},
	{`proxy_transfer_bytes_total`, false},
	{`sum by (source) (increase(proxy_requests_total[1h]))`, false},
	{`sum by (source, outcome) (increase(proxy_requests_total[1d]))`, false},
	{`increase(proxy_endpoint_requests_total[30m])`, false},
	{`sum by (source) (rate(proxy_requests_total[5m]))`, true},
	{`increase(proxy_transfer_bytes_total[10m])`, true},
	{`histogram_quantile(0.9, sum by (le) (rate(proxy_request_duration_seconds_bucket[10m])))`, true},
	{`sum(proxy_request_duration_seconds_count) - sum(proxy_requests_total)`, true},
	{`max(resets(proxy_requests_total[2h]))`, false},
}

// answers runs freshQueries at now and renders each answer.
func (fs *freshStack) answers(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, fq := range freshQueries {
		req := promql.Request{Query: fq.q, End: now.Add(time.Second), LookbackDelta: 3 * time.Hour}
		if fq.rangeQuery {
			req.Start, req.Step = now.Add(-90*time.Minute), time.Minute
		}
		res, err := fs.api.Exec(t.Context(), req)
		require.NoError(t, err, fq.q)
		out = append(out, fq.q+"\n"+render(res.Value))
		res.Close()
	}
	return out
}

// render prints a result with values rounded to 9 significant digits:
// sums added in another order may differ in the last bits.
func render(v any) string {
	var lines []string
	f := func(x float64) string { return fmt.Sprintf("%.9g", x) }
	switch v := v.(type) {
	case promqlengine.Vector:
		for _, s := range v {
			lines = append(lines, s.Metric.String()+" "+f(s.F))
		}
	case promqlengine.Matrix:
		for _, s := range v {
			var pts []string
			for _, p := range s.Floats {
				pts = append(pts, fmt.Sprint(p.T)+":"+f(p.F))
			}
			lines = append(lines, s.Metric.String()+" "+strings.Join(pts, " "))
		}
	default:
		lines = append(lines, fmt.Sprint(v))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// seriesAndLabels lists what /api/v1/series and the label APIs read.
func (fs *freshStack) seriesAndLabels(t *testing.T) []string {
	t.Helper()
	q, err := fs.db.Series().Querier(now.Add(-2*time.Hour).UnixMilli(), now.UnixMilli())
	require.NoError(t, err)
	defer func() { require.NoError(t, q.Close()) }()
	var out []string
	hints := &storage.SelectHints{Start: now.Add(-2 * time.Hour).UnixMilli(), End: now.UnixMilli(), Func: "series"}
	set := q.Select(t.Context(), true, hints, labels.MustNewMatcher(labels.MatchRegexp, "__name__", "proxy_.*"))
	for set.Next() {
		out = append(out, set.At().Labels().String())
	}
	require.NoError(t, set.Err())
	vals, _, err := q.LabelValues(t.Context(), "source", nil)
	require.NoError(t, err)
	out = append(out, "source="+strings.Join(vals, ","))
	vals, _, err = q.LabelValues(t.Context(), "le", nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "proxy_request_duration_seconds_bucket"))
	require.NoError(t, err)
	out = append(out, "le="+strings.Join(vals, ","))
	names, _, err := q.LabelNames(t.Context(), nil)
	require.NoError(t, err)
	return append(out, "names="+strings.Join(names, ","))
}

func instant(t *testing.T, fs *freshStack, q string, at time.Time) float64 {
	t.Helper()
	// The spans end over the hour before now: every series' newest
	// increment is within the lookback.
	res, err := fs.api.Exec(t.Context(), promql.Request{Query: q, End: at, LookbackDelta: 3 * time.Hour})
	require.NoError(t, err, q)
	defer res.Close()
	v := res.Value.(promqlengine.Vector)
	if len(v) == 0 {
		return math.NaN()
	}
	require.Len(t, v, 1, q)
	return v[0].F
}

// TestOverlayAnswersAsTheCut: every query answers the same from memory
// (before any cut), from the store (after it), and from both (the
// store holds part, memory the rest); the series and label APIs list the
// same series.
func TestOverlayAnswersAsTheCut(t *testing.T) {
	fs := newFreshStack(t, t.TempDir())
	defer fs.close(t)
	ctx := context.Background()
	for i := range 4 {
		require.NoError(t, fs.p.Consume(ctx, batch(300, uint64(i))))
	}
	total := requestsTotal(fs.agg)
	require.Equal(t, 1200.0, total)
	require.Equal(t, total, instant(t, fs, `sum(proxy_requests_total)`, now.Add(time.Second)), "visible before any cut")
	fromMemory, listedFromMemory := fs.answers(t), fs.seriesAndLabels(t)
	require.True(t, strings.Contains(strings.Join(listedFromMemory, "\n"), `{__name__="proxy_requests_total"`), "series listed before any cut")

	require.NoError(t, fs.p.Flush())
	require.Equal(t, fromMemory, fs.answers(t), "the same answers after the cut")
	require.Equal(t, listedFromMemory, fs.seriesAndLabels(t))

	// Half in the store, half in memory, against all in the store.
	for i := range 4 {
		require.NoError(t, fs.p.Consume(ctx, batch(300, uint64(10+i))))
	}
	require.Equal(t, 2400.0, instant(t, fs, `sum(proxy_requests_total)`, now.Add(time.Second)))
	mixed, listedMixed := fs.answers(t), fs.seriesAndLabels(t)
	require.NoError(t, fs.p.Flush())
	require.Equal(t, mixed, fs.answers(t))
	require.Equal(t, listedMixed, fs.seriesAndLabels(t))
}

// TestOverlayServesReplayedJournal: after a stop without a final cut
// (kill -9), the replayed batches are queryable before the cut that
// writes them, and count once after it.
func TestOverlayServesReplayedJournal(t *testing.T) {
	dir := t.TempDir()
	fs := newFreshStack(t, dir)
	for i := range 3 {
		require.NoError(t, fs.p.Consume(context.Background(), batch(200, uint64(i))))
	}
	require.NoError(t, fs.p.Flush())
	require.NoError(t, fs.p.Consume(context.Background(), batch(200, 7)))
	require.NoError(t, fs.db.Close()) // crash: no final cut

	fs = newFreshStack(t, dir)
	defer fs.close(t)
	require.True(t, fs.db.Replayed())
	require.Equal(t, 800.0, instant(t, fs, `sum(proxy_requests_total)`, now.Add(time.Second)))
	require.NoError(t, fs.p.Flush())
	require.Equal(t, 800.0, instant(t, fs, `sum(proxy_requests_total)`, now.Add(time.Second)))
}

// TestOverlayExactlyOnceWhileCutting ingests and cuts continuously while
// it queries: every total lies between what was acknowledged before the
// query and what was sent by its end (an increment counted twice, from
// memory and from the store, would overshoot; one missed, taken by a cut
// but not committed, would fall short), totals never decrease, counters
// never reset, and the final total is exact.
func TestOverlayExactlyOnceWhileCutting(t *testing.T) {
	fs := newFreshStack(t, t.TempDir())
	defer fs.close(t)
	ctx := context.Background()
	var sent, acked atomic.Int64
	stop := make(chan struct{})
	var ingest, cutter sync.WaitGroup
	for g := range 2 {
		ingest.Go(func() {
			for i := range 40 {
				recs := batch(50, uint64(1000*g+i))
				sent.Add(int64(len(recs)))
				require.NoError(t, fs.p.Consume(ctx, recs))
				acked.Add(int64(len(recs)))
			}
		})
	}
	var cuts atomic.Int64
	cutter.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			require.NoError(t, fs.p.Flush())
			cuts.Add(1)
		}
	})
	done := make(chan struct{})
	go func() { ingest.Wait(); close(done) }()
	last, queries := 0.0, 0
	// Until the ingest is done, at least five queries ran and the cutter
	// went round twice (on a loaded machine, and under -race, the ingest
	// can finish first, or within one long cut).
	for finished := false; !finished || queries < 5 || cuts.Load() < 2; {
		select {
		case <-done:
			finished = true
		default:
		}
		lo := float64(acked.Load())
		total := instant(t, fs, `sum(proxy_requests_total)`, now.Add(time.Second))
		increase := instant(t, fs, `sum(increase(proxy_requests_total[2h]))`, now.Add(time.Second))
		resets := instant(t, fs, `sum(resets(proxy_requests_total[2h]))`, now.Add(time.Second))
		hi := float64(sent.Load())
		if lo == 0 && math.IsNaN(total) {
			continue
		}
		require.GreaterOrEqual(t, total, lo, "query %d: acknowledged spans missing", queries)
		require.LessOrEqual(t, total, hi, "query %d: spans counted twice", queries)
		require.GreaterOrEqual(t, total, last, "query %d: the total went down", queries)
		// increase() is exact but for the engine's extrapolation over the
		// window's first millisecond.
		require.GreaterOrEqual(t, increase, lo*(1-1e-6), "query %d: acknowledged spans missing", queries)
		require.LessOrEqual(t, increase, hi*(1+1e-6), "query %d: spans counted twice", queries)
		require.Zero(t, resets, "query %d", queries)
		last = total
		queries++
	}
	close(stop)
	cutter.Wait()
	require.NoError(t, fs.p.Flush())
	require.GreaterOrEqual(t, cuts.Load(), int64(2))
	require.GreaterOrEqual(t, queries, 5)
	require.Equal(t, float64(sent.Load()), instant(t, fs, `sum(proxy_requests_total)`, now.Add(time.Second)))
	require.Equal(t, 4000.0, requestsTotal(fs.agg))
}

// TestOverlayNewSeriesOnly: a series the store has never seen is served
// with its labels, and one the query does not select is not.
func TestOverlayNewSeriesOnly(t *testing.T) {
	fs := newFreshStack(t, t.TempDir())
	defer fs.close(t)
	recs := batch(100, 3)
	require.NoError(t, fs.p.Consume(context.Background(), recs))
	want := map[string]bool{}
	for i := range recs {
		want[recs[i].Source] = true
	}
	q, err := fs.db.Series().Querier(math.MinInt64, math.MaxInt64)
	require.NoError(t, err)
	defer func() { require.NoError(t, q.Close()) }()
	vals, _, err := q.LabelValues(t.Context(), "source", nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "proxy_requests_total"))
	require.NoError(t, err)
	var wantList []string
	for s := range want {
		wantList = append(wantList, s)
	}
	slices.Sort(wantList)
	require.Equal(t, wantList, vals)
	set := q.Select(t.Context(), true, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "proxy_cost_total"))
	require.False(t, set.Next(), "cost series come with the cut")
}

// BenchmarkOverlayQuery: what the overlay costs a query when much is
// pending: a dashboard query over 100,000-odd increments held in memory
// (from=memory: the view cached since the last Apply; after-apply: an
// Apply in between, so the view is taken again and its series built
// again),
// against the same increments once a cut has written them (from=store).
func BenchmarkOverlayQuery(b *testing.B) {
	queries := map[string]string{
		"sum-rate":  `sum by (source) (rate(proxy_requests_total[5m]))`,
		"increase":  `sum(increase(proxy_requests_total[1d]))`,
		"histogram": `histogram_quantile(0.95, sum by (le) (rate(proxy_request_duration_seconds_bucket[5m])))`,
	}
	for _, name := range []string{"sum-rate", "increase", "histogram"} {
		q := queries[name]
		for _, from := range []string{"memory", "memory-after-apply", "store"} {
			b.Run("query="+name+"/from="+from, func(b *testing.B) {
				fs := newFreshStack(b, b.TempDir())
				defer fs.close(b)
				g := traffic.NewGenerator(traffic.NewModel(500), 1)
				for range 5 {
					recs := make([]otelanalytics.Record, 5000)
					for i := range recs {
						r := g.Next(now.Add(-time.Duration(g.Rand().Int64N(int64(24 * time.Hour)))))
						recs[i] = r.Record()
					}
					require.NoError(b, fs.p.Consume(context.Background(), recs))
				}
				pending := fs.agg.Pending()
				if from == "store" {
					require.NoError(b, fs.p.Flush())
				}
				one := batch(1, 99)
				req := promql.Request{Query: q, Start: now.Add(-24 * time.Hour), End: now, Step: time.Minute}
				if name == "increase" {
					req.Start, req.Step = time.Time{}, 0
				}
				b.ReportAllocs()
				for b.Loop() {
					if from == "memory-after-apply" {
						b.StopTimer()
						require.NoError(b, fs.p.Consume(context.Background(), one))
						b.StartTimer()
					}
					res, err := fs.api.Exec(context.Background(), req)
					require.NoError(b, err)
					res.Close()
				}
				b.ReportMetric(float64(pending), "pending")
			})
		}
	}
}
