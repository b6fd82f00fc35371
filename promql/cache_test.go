package promql_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/internal/changes"
	"github.com/proxylens/proxylens/internal/race"
	"github.com/proxylens/proxylens/pebblestore"
	"github.com/proxylens/proxylens/promql"
)

// The cache fixture: 35 days up to cacheNow (noon), every 5 minutes:
// proxy_requests_total and duration histogram buckets as increment
// series (as proxylens stores its aggregates) and a gauge as samples.
var (
	cacheDay = time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	cacheNow = cacheDay.Add(12 * time.Hour)
)

const cacheDays = 35

type cacheFixture struct {
	store    *pebblestore.SeriesStore
	tracker  *changes.Tracker
	reg      *prometheus.Registry
	cached   http.Handler
	uncached http.Handler
}

func newCacheFixture(t testing.TB, maxBytes int64) *cacheFixture {
	t.Helper()
	f := &cacheFixture{tracker: changes.New(), reg: prometheus.NewRegistry()}
	db, err := pebblestore.Open(t.TempDir(), pebblestore.Options{Series: pebblestore.SeriesOptions{Changes: f.tracker}})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	f.store = db.Series()
	fillCacheFixture(t, f.store)

	now := func() time.Time { return cacheNow }
	cfg := promql.DefaultConfig()
	cfg.ResultCache.MaxBytes = maxBytes
	a := promql.New(cfg, f.store, promql.Options{Now: now, Changes: f.tracker, Registerer: f.reg})
	cfg.ResultCache.MaxBytes = 0
	u := promql.New(cfg, f.store, promql.Options{Now: now})
	t.Cleanup(func() { require.NoError(t, a.Close()); require.NoError(t, u.Close()) })
	mc, mu := http.NewServeMux(), http.NewServeMux()
	a.Register(mc)
	u.Register(mu)
	f.cached, f.uncached = mc, mu
	return f
}

func fillCacheFixture(t testing.TB, s *pebblestore.SeriesStore) {
	rnd := rand.New(rand.NewPCG(3, 3))
	const iv = 5 * 60 * 1000
	from := cacheDay.Add(-cacheDays * 24 * time.Hour).UnixMilli()
	for d0 := from; d0 < cacheNow.UnixMilli(); d0 += 24 * 3600 * 1000 {
		end := min(d0+24*3600*1000, cacheNow.UnixMilli())
		require.NoError(t, s.AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
			for i, src := range fixtureSources {
				for _, app := range []string{"web", "batch"} {
					ls := labels.FromStrings("__name__", "proxy_requests_total", "application", app, "source", src)
					for ts := d0 + iv; ts <= end; ts += iv {
						if err := add(ls, ts, float64(rnd.IntN(10*(i+1)))); err != nil {
							return err
						}
					}
				}
				for ts := d0 + iv; ts <= end; ts += iv {
					var cum float64
					for _, le := range []string{"0.1", "0.5", "1", "+Inf"} {
						cum += float64(rnd.IntN(5))
						if err := add(labels.FromStrings("__name__", "proxy_request_duration_seconds_bucket", "le", le, "source", src), ts, cum); err != nil {
							return err
						}
					}
				}
			}
			return nil
		}))
		app := s.Appender(context.Background())
		for _, src := range fixtureSources {
			for ts := d0 + iv; ts <= end; ts += iv {
				_, err := app.Append(0, labels.FromStrings("__name__", "proxy_inflight", "source", src), ts, float64(rnd.IntN(100)))
				require.NoError(t, err)
			}
		}
		require.NoError(t, app.Commit())
	}
}

// get posts a range query to h and returns the status and body.
func get(t testing.TB, h http.Handler, q string, start, end time.Time, step time.Duration) (int, string) {
	t.Helper()
	form := url.Values{"query": {q}, "start": {fmt.Sprint(float64(start.UnixMilli()) / 1000)},
		"end": {fmt.Sprint(float64(end.UnixMilli()) / 1000)}, "step": {fmt.Sprint(step.Seconds())}}
	req := httptest.NewRequest(http.MethodPost, "/api/v1/query_range", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	b, err := io.ReadAll(rec.Body)
	require.NoError(t, err)
	return rec.Code, string(b)
}

// same asks both APIs and requires byte-identical answers; it returns the
// answer.
func (f *cacheFixture) same(t testing.TB, q string, start, end time.Time, step time.Duration) string {
	t.Helper()
	codeU, want := get(t, f.uncached, q, start, end, step)
	codeC, got := get(t, f.cached, q, start, end, step)
	require.Equal(t, codeU, codeC, "%s from %s to %s step %s", q, start, end, step)
	if want != got {
		i := 0
		for i < len(want) && i < len(got) && want[i] == got[i] {
			i++
		}
		from := max(0, i-300)
		t.Fatalf("%s from %s to %s step %s: answers differ at byte %d of %d/%d:\nwant …%s\ngot  …%s", q, start, end, step, i, len(want), len(got),
			want[from:min(len(want), i+200)], got[from:min(len(got), i+200)])
	}
	return got
}

// metric returns the value of a cache self-metric.
func (f *cacheFixture) metric(t testing.TB, name string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

var cacheQueries = []string{
	`sum by (source) (rate(proxy_requests_total[5m]))`,
	`sum by (source) (increase(proxy_requests_total[1h]))`,
	`increase(proxy_requests_total[1d])`,
	`histogram_quantile(0.9, sum by (le) (rate(proxy_request_duration_seconds_bucket[10m])))`,
	`histogram_quantile(0.5, sum by (source, le) (increase(proxy_request_duration_seconds_bucket[1h])))`,
	`topk(2, rate(proxy_requests_total[15m]))`,
	`bottomk(1, sum by (source) (rate(proxy_requests_total[5m])))`,
	`sort_desc(sum by (application) (rate(proxy_requests_total[30m])))`,
	`max_over_time(sum(rate(proxy_requests_total[5m]))[1h:7m])`,
	`rate(proxy_requests_total{source="beta"}[5m] offset 1d)`,
	`proxy_inflight`,
	`avg_over_time(proxy_inflight[2h]) > 40`,
	`sum(proxy_requests_total) - sum(proxy_requests_total offset -2h)`,
	`absent(proxy_nothing)`,
	`time() - timestamp(proxy_inflight{source="alpha"})`,
}

// TestCacheAnswersAsOneEvaluation: at random ranges and steps (some not
// dividing a day, some ending in the live part), the cached API answers
// byte for byte as the uncached one, cold and warm.
func TestCacheAnswersAsOneEvaluation(t *testing.T) {
	f := newCacheFixture(t, 64<<20)
	rnd := rand.New(rand.NewPCG(5, 5))
	steps := []time.Duration{time.Minute, 90 * time.Second, 5 * time.Minute, 7 * time.Minute, 13 * time.Minute, time.Hour, 24 * time.Hour, 25 * time.Hour}
	first := cacheDay.Add(-(cacheDays - 2) * 24 * time.Hour)
	// Six random ranges a query; two under -race, where the engine runs
	// ten times slower (the plain run checks all six).
	reps := race.Pick(6, 2)
	for _, q := range cacheQueries {
		for range reps {
			step := steps[rnd.IntN(len(steps))]
			start := first.Add(time.Duration(rnd.Int64N(int64(cacheDays-3)*24*3600)) * time.Second)
			span := time.Duration(rnd.Int64N(int64(min(7*24*time.Hour, 10000*step)/time.Second))) * time.Second
			end := start.Add(span)
			if rnd.IntN(3) == 0 {
				end = cacheNow // a dashboard's range: up to now
				if end.Sub(start) > 10000*step {
					start = end.Add(-10000 * step)
				}
			}
			if end.After(cacheNow) {
				end = cacheNow
			}
			cold := f.same(t, q, start, end, step)
			warm := f.same(t, q, start, end, step)
			require.Equal(t, cold, warm)
			// A later start on the same grid is answered from the same days.
			later := start.Add(step * time.Duration(1+rnd.IntN(5)))
			if !later.After(end) {
				f.same(t, q, later, end, step)
			}
		}
	}
	require.Positive(t, f.metric(t, "proxylens_query_result_cache_hits_total"))
	require.Positive(t, f.metric(t, "proxylens_query_result_cache_misses_total"))
}

// TestCacheSeesLateData: a cached day that late data changes is
// evaluated again, and only the days whose data range holds the late
// data.
func TestCacheSeesLateData(t *testing.T) {
	f := newCacheFixture(t, 64<<20)
	hits := func() float64 { return f.metric(t, "proxylens_query_result_cache_hits_total") }
	misses := func() float64 { return f.metric(t, "proxylens_query_result_cache_misses_total") }
	stale := func() float64 { return f.metric(t, "proxylens_query_result_cache_invalidations_total") }
	late := func(at time.Time, v float64) {
		t.Helper()
		require.NoError(t, f.store.AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
			return add(labels.FromStrings("__name__", "proxy_requests_total", "application", "web", "source", "alpha"), at.UnixMilli(), v)
		}))
	}

	// Three days up to now, at noon: the days before today are cached
	// (the first from noon), and the twelve hours of today before noon;
	// the hour from noon is live.
	q := `sum by (source) (increase(proxy_requests_total[1h]))`
	start := cacheNow.Add(-3 * 24 * time.Hour)
	before := f.same(t, q, start, cacheNow, 5*time.Minute)
	require.Equal(t, []float64{0, 15, 0}, []float64{hits(), misses(), stale()})
	require.Equal(t, before, f.same(t, q, start, cacheNow, 5*time.Minute))
	require.Equal(t, []float64{15, 15, 0}, []float64{hits(), misses(), stale()})

	// A late span for yesterday noon: yesterday is evaluated again; the
	// days before it and today's hours (the first reads from 23:00
	// yesterday) are not.
	late(cacheDay.Add(-12*time.Hour+7*time.Second), 1000)
	after := f.same(t, q, start, cacheNow, 5*time.Minute)
	require.NotEqual(t, before, after)
	require.Equal(t, []float64{29, 16, 1}, []float64{hits(), misses(), stale()})

	// A [1d] range reads the day before each day: a late span ten days
	// ago changes that day's answer and the next one's.
	q = `sum by (source) (increase(proxy_requests_total[1d]))`
	start = cacheDay.Add(-20 * 24 * time.Hour)
	f.same(t, q, start, cacheNow, time.Hour)
	require.Equal(t, 16.0+20+12, misses(), "twenty whole days and twelve hours")
	h0, m0, s0 := hits(), misses(), stale()
	late(cacheDay.Add(-10*24*time.Hour+6*time.Hour), 500)
	f.same(t, q, start, cacheNow, time.Hour)
	require.Equal(t, []float64{h0 + 30, m0 + 2, s0 + 2}, []float64{hits(), misses(), stale()})

	// Data of a past hour of today changes the hours whose [1d] range
	// reaches it, 10:00 and 11:00 (09:00 reads up to the end of the
	// store's window 08:00–10:00, not into the next).
	late(cacheDay.Add(10*time.Hour+30*time.Minute), 1)
	f.same(t, q, start, cacheNow, time.Hour)
	require.Equal(t, s0+2+2, stale())

	// A restore changes everything.
	f.tracker.NoteAll()
	f.same(t, q, start, cacheNow, time.Hour)
	require.Equal(t, s0+4+32, stale())
}

// TestCacheNeverCaches: @ and start()/end(), steps over a day and stats
// requests are evaluated whole, every time.
func TestCacheNeverCaches(t *testing.T) {
	f := newCacheFixture(t, 64<<20)
	start := cacheNow.Add(-5 * 24 * time.Hour)
	for _, q := range []string{
		`rate(proxy_requests_total[5m] @ end())`,
		`sum(proxy_inflight @ 1763000000)`,
		`max_over_time(proxy_inflight[1h:5m] @ start())`,
		`max_over_time(sum(rate(proxy_requests_total[5m]))[1h:7m])`,
	} {
		f.same(t, q, start, cacheNow, 10*time.Minute)
		f.same(t, q, start, cacheNow, 10*time.Minute)
	}
	f.same(t, `sum(proxy_inflight)`, start, cacheNow, 25*time.Hour)
	require.Zero(t, f.metric(t, "proxylens_query_result_cache_hits_total")+f.metric(t, "proxylens_query_result_cache_misses_total"))
	require.Zero(t, f.metric(t, "proxylens_query_result_cache_entries"))
}

// TestCacheBounded: a small cache evicts the least recently used days and
// stays within its bound; answers stay exact.
func TestCacheBounded(t *testing.T) {
	const maxBytes = 256 << 10
	f := newCacheFixture(t, maxBytes)
	start := cacheNow.Add(-30 * 24 * time.Hour)
	for _, q := range cacheQueries[:8] {
		f.same(t, q, start, cacheNow, 10*time.Minute)
		require.LessOrEqual(t, f.metric(t, "proxylens_query_result_cache_bytes"), float64(maxBytes))
	}
	require.Positive(t, f.metric(t, "proxylens_query_result_cache_evictions_total"))
	require.Positive(t, f.metric(t, "proxylens_query_result_cache_entries"))
	for _, q := range cacheQueries[:8] {
		f.same(t, q, start, cacheNow, 10*time.Minute)
	}
}

// TestCacheConcurrent: queries run while late data arrives; once it
// stops, the answers are exact again.
func TestCacheConcurrent(t *testing.T) {
	f := newCacheFixture(t, 64<<20)
	start := cacheNow.Add(-6 * 24 * time.Hour)
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Go(func() {
			for i := range 6 {
				q := cacheQueries[(g+i)%4]
				if code, body := get(t, f.cached, q, start, cacheNow, 5*time.Minute); code != http.StatusOK {
					t.Errorf("%s: %d %s", q, code, body)
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 10 {
			at := cacheDay.Add(-time.Duration(1+i%5)*24*time.Hour + time.Duration(i)*time.Minute)
			if err := f.store.AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
				return add(labels.FromStrings("__name__", "proxy_requests_total", "application", "batch", "source", "gamma"), at.UnixMilli(), 77)
			}); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	for _, q := range cacheQueries[:4] {
		f.same(t, q, start, cacheNow, 5*time.Minute)
	}
}

// TestCacheSourceGoesQuiet: a source that sent for two days and stopped
// reads 0 in the store's answer over a range that holds its data, and
// nothing over a range that does not. The cache's pieces then disagree
// on the series; the query is answered as one evaluation answers it.
func TestCacheSourceGoesQuiet(t *testing.T) {
	f := newCacheFixture(t, 64<<20)
	from := cacheDay.Add(-20 * 24 * time.Hour)
	require.NoError(t, f.store.AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
		for ts := from; ts.Before(from.Add(48 * time.Hour)); ts = ts.Add(5 * time.Minute) {
			if err := add(labels.FromStrings("__name__", "proxy_requests_total", "application", "web", "source", "retired"), ts.UnixMilli(), 3); err != nil {
				return err
			}
		}
		return nil
	}))
	long, short := cacheDay.Add(-25*24*time.Hour), cacheDay.Add(-5*24*time.Hour)
	for _, q := range []string{
		`sum by (source) (increase(proxy_requests_total[1h]))`,
		`count(proxy_requests_total)`,
		`proxy_requests_total{source="retired"}`,
		`count by (source) (increase(proxy_requests_total[1h]) == 0)`,
	} {
		// Pieces cached by a short range, then reused by a long one, and
		// the other way round.
		f.same(t, q, short, cacheNow, time.Hour)
		f.same(t, q, long, cacheNow, time.Hour)
		f.same(t, q, long, cacheNow, time.Hour)
		f.same(t, q, short, cacheNow, time.Hour)
	}
	require.Positive(t, f.metric(t, "proxylens_query_result_cache_uncached_total"))
	// A query whose every piece sees the same series is still cached.
	uncached := f.metric(t, "proxylens_query_result_cache_uncached_total")
	hits := f.metric(t, "proxylens_query_result_cache_hits_total")
	f.same(t, `sum by (source) (increase(proxy_requests_total[1h]))`, short, cacheNow, time.Hour)
	require.Equal(t, uncached, f.metric(t, "proxylens_query_result_cache_uncached_total"))
	require.Greater(t, f.metric(t, "proxylens_query_result_cache_hits_total"), hits)
}

// TestCacheLevelsSeeOlderData: a raw proxy_* selector reads the running
// sum of every increment before each step, so a late increment ten days
// ago changes every later day of such a query; a rate() does not change.
func TestCacheLevelsSeeOlderData(t *testing.T) {
	f := newCacheFixture(t, 64<<20)
	start := cacheNow.Add(-3 * 24 * time.Hour)
	queries := []string{
		`sum(proxy_requests_total)`,
		`max_over_time(proxy_requests_total{source="alpha"}[1h])`,
		`sum by (source) (rate(proxy_requests_total[5m]))`,
	}
	before := map[string]string{}
	for _, q := range queries {
		before[q] = f.same(t, q, start, cacheNow, 10*time.Minute)
		f.same(t, q, start, cacheNow, 10*time.Minute)
	}
	require.NoError(t, f.store.AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
		return add(labels.FromStrings("__name__", "proxy_requests_total", "application", "web", "source", "alpha"), cacheDay.Add(-10*24*time.Hour).UnixMilli(), 1e6)
	}))
	for i, q := range queries {
		after := f.same(t, q, start, cacheNow, 10*time.Minute)
		require.Equal(t, i == 2, before[q] == after, q)
	}
}
