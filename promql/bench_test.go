package promql_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
	"github.com/proxylens/proxylens/promql"
)

// benchEnd is where the benchmark history ends, on a whole day.
var benchEnd = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

// The benchmark history, as proxylens stores its aggregates at the default
// 15 s flush interval: 1,000 proxy_requests_total increment series (20
// sources × 10 applications × 5 domains) and 200 duration histograms (20
// sources × 10 applications, 16 bucket series each plus _sum and _count),
// every series with an increment every 15 s. PROXYLENS_BENCH_DAYS sets the
// days of history (default 30).
const (
	benchSources  = 20
	benchApps     = 10
	benchDomains  = 5
	benchInterval = 15 * time.Second
)

var (
	benchOnce  sync.Once
	benchDir   string
	benchDB    *pebblestore.DB
	benchBuild time.Duration
	benchErr   error
)

func benchDays() int {
	if v := os.Getenv("PROXYLENS_BENCH_DAYS"); v != "" {
		var n int
		if _, err := fmt.Sscan(v, &n); err == nil && n > 0 {
			return n
		}
	}
	return 30
}

// benchStore builds the history once per test binary.
func benchStore(b *testing.B) *pebblestore.SeriesStore {
	benchOnce.Do(func() {
		benchDir, benchErr = os.MkdirTemp("", "proxylens-bench-")
		if benchErr != nil {
			return
		}
		start := time.Now()
		benchDB, benchErr = buildHistory(benchDir, benchDays())
		benchBuild = time.Since(start)
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchDB.Series()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if benchDB != nil {
		_ = benchDB.Close()
	}
	if benchDir != "" {
		_ = os.RemoveAll(benchDir)
	}
	if rollupDB != nil {
		_ = rollupDB.Close()
	}
	if rollupDir != "" {
		_ = os.RemoveAll(rollupDir)
	}
	os.Exit(code)
}

func buildHistory(dir string, days int) (*pebblestore.DB, error) {
	db, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		return nil, err
	}
	if _, err := otelanalytics.Restore(db, otelanalytics.NewDict(0), otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, benchInterval, nil)); err != nil {
		return nil, err
	}
	var reqs, durs []labels.Labels
	for s := range benchSources {
		for a := range benchApps {
			src, app := fmt.Sprintf("source-%02d", s), fmt.Sprintf("app-%d", a)
			for d := range benchDomains {
				reqs = append(reqs, labels.FromStrings("__name__", "proxy_requests_total", "application", app,
					"domain", fmt.Sprintf("shop%d.example.com", d), "method", "GET", "outcome", "success", "source", src, "status_code", "200"))
			}
			for _, ub := range otelanalytics.DurationBuckets {
				durs = append(durs, labels.FromStrings("__name__", "proxy_request_duration_seconds_bucket", "application", app,
					"le", labels.FormatOpenMetricsFloat(ub), "outcome", "success", "source", src))
			}
			durs = append(durs,
				labels.FromStrings("__name__", "proxy_request_duration_seconds_bucket", "application", app, "le", "+Inf", "outcome", "success", "source", src),
				labels.FromStrings("__name__", "proxy_request_duration_seconds_sum", "application", app, "outcome", "success", "source", src),
				labels.FromStrings("__name__", "proxy_request_duration_seconds_count", "application", app, "outcome", "success", "source", src))
		}
	}
	rnd := rand.New(rand.NewPCG(1, 1))
	iv := benchInterval.Milliseconds()
	from := benchEnd.Add(-time.Duration(days) * 24 * time.Hour).UnixMilli()
	const chunk = 2 * 3600 * 1000 // commit two hours at a time
	for t0 := from; t0 < benchEnd.UnixMilli(); t0 += chunk {
		err := db.Series().AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
			for _, ls := range reqs {
				for t := t0 + iv; t <= t0+chunk; t += iv {
					if err := add(ls, t, float64(rnd.IntN(8))); err != nil {
						return err
					}
				}
			}
			// A histogram's buckets per interval: n requests, spread over
			// the buckets, cumulative.
			for h := 0; h < len(durs); h += len(otelanalytics.DurationBuckets) + 3 {
				for t := t0 + iv; t <= t0+chunk; t += iv {
					n := 8 + rnd.IntN(8)
					var cum float64
					var sum float64
					for i := range len(otelanalytics.DurationBuckets) + 1 {
						k := min(n, rnd.IntN(4))
						if i == len(otelanalytics.DurationBuckets) {
							k = n
						}
						n -= k
						cum += float64(k)
						if i < len(otelanalytics.DurationBuckets) {
							sum += float64(k) * otelanalytics.DurationBuckets[i]
						}
						if err := add(durs[h+i], t, cum); err != nil {
							return err
						}
					}
					if err := add(durs[h+len(otelanalytics.DurationBuckets)+1], t, sum); err != nil {
						return err
					}
					if err := add(durs[h+len(otelanalytics.DurationBuckets)+2], t, cum); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	// Compacted, as a store is in its steady state: the queries then do
	// not run beside the compactions of a bulk load.
	_, _, err = db.SeriesBytes()
	return db, err
}

// benchQueryRange posts form to /api/v1/query_range on mux in the
// benchmark loop and reports the time per query; every answer must hold
// the last benchmark source.
func benchQueryRange(b *testing.B, mux http.Handler, form string) {
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/api/v1/query_range", strings.NewReader(form))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"source":"source-19"`) {
			b.Fatalf("%d %.300s", rec.Code, rec.Body.String())
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/query")
}

// BenchmarkDashboardQueries runs the dashboard queries of the issue and of
// the Prometheus anchor through the HTTP handler (parameters, engine, JSON)
// over the benchmark history.
func BenchmarkDashboardQueries(b *testing.B) {
	s := benchStore(b)
	a := promql.New(promql.Config{}, s, promql.Options{})
	defer a.Close()
	mux := http.NewServeMux()
	a.Register(mux)
	end := benchEnd
	for _, tc := range []struct {
		name, query string
		span, step  time.Duration
	}{
		{"rate/24h/step=60s", `sum by (source) (rate(proxy_requests_total[5m]))`, 24 * time.Hour, time.Minute},
		{"rate/7d/step=60s", `sum by (source) (rate(proxy_requests_total[5m]))`, 7 * 24 * time.Hour, time.Minute},
		{"rate/30d/step=5m", `sum by (source) (rate(proxy_requests_total[5m]))`, 30 * 24 * time.Hour, 5 * time.Minute},
		{"quantile/24h/step=60s", `histogram_quantile(0.95, sum by (source, le) (rate(proxy_request_duration_seconds_bucket[5m])))`, 24 * time.Hour, time.Minute},
		{"increase1d/30d/step=1d", `sum by (source) (increase(proxy_requests_total[1d]))`, 30 * 24 * time.Hour, 24 * time.Hour},
	} {
		if tc.span > time.Duration(benchDays())*24*time.Hour {
			continue
		}
		b.Run(tc.name, func(b *testing.B) {
			form := url.Values{
				"query": {tc.query},
				"start": {fmt.Sprint(end.Add(-tc.span).Unix())},
				"end":   {fmt.Sprint(end.Unix())},
				"step":  {fmt.Sprint(tc.step.Seconds())},
			}.Encode()
			benchQueryRange(b, mux, form)
		})
	}
}

// BenchmarkStorage reports the history's size on disk per stored sample
// (after a full compaction) and how long building it took.
func BenchmarkStorage(b *testing.B) {
	s := benchStore(b)
	for b.Loop() {
		bytes, sumBytes, err := benchDB.SeriesBytes()
		if err != nil {
			b.Fatal(err)
		}
		series := int64(s.NumSeries())
		samples := series * int64(benchDays()) * int64(24*time.Hour/benchInterval)
		b.ReportMetric(float64(bytes)/float64(samples), "bytes/sample")
		b.ReportMetric(float64(sumBytes)/float64(samples), "rollup-bytes/sample")
		b.ReportMetric(float64(samples)/benchBuild.Seconds(), "samples/s-built")
		b.ReportMetric(float64(series), "series")
	}
}

// The daily rollup benchmark's history: 10,000 proxy_requests_total series
// (20 sources × 500 domains) over 30 days, an increment every 5 minutes
// (the daily rollup's reads do not depend on how many increments a day
// holds; the raw read, with max_source_resolution=raw, does).
var (
	rollupOnce sync.Once
	rollupDir  string
	rollupDB   *pebblestore.DB
	rollupErr  error
)

func rollupStore(b *testing.B) *pebblestore.SeriesStore {
	rollupOnce.Do(func() {
		rollupDir, rollupErr = os.MkdirTemp("", "proxylens-bench-rollup-")
		if rollupErr != nil {
			return
		}
		var series []labels.Labels
		for s := range benchSources {
			for d := range 500 {
				series = append(series, labels.FromStrings("__name__", "proxy_requests_total", "application", fmt.Sprintf("app-%d", d%10),
					"domain", fmt.Sprintf("shop%d.example.com", d), "method", "GET", "source", fmt.Sprintf("source-%02d", s), "status_code", "200", "success", "true"))
			}
		}
		rollupDB, rollupErr = buildIncrements(rollupDir, series, 2)
	})
	if rollupErr != nil {
		b.Fatal(rollupErr)
	}
	return rollupDB.Series()
}

// buildIncrements opens a store in dir and writes to every series 30 days
// of increments ending at benchEnd, one every 5 minutes (random 1 to 8,
// from seed), six hours to a commit, then compacts it as in the steady
// state.
func buildIncrements(dir string, series []labels.Labels, seed uint64) (*pebblestore.DB, error) {
	db, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*pebblestore.DB, error) { return nil, errors.Join(err, db.Close()) }
	if _, err := otelanalytics.Restore(db, otelanalytics.NewDict(0), otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, benchInterval, nil)); err != nil {
		return fail(err)
	}
	rnd := rand.New(rand.NewPCG(seed, seed))
	const step, chunk = 5 * 60 * 1000, 6 * 3600 * 1000
	from := benchEnd.Add(-30 * 24 * time.Hour).UnixMilli()
	for t0 := from; t0 < benchEnd.UnixMilli(); t0 += chunk {
		if err := db.Series().AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
			for _, ls := range series {
				for t := t0 + step; t <= t0+chunk; t += step {
					if err := add(ls, t, float64(1+rnd.IntN(8))); err != nil {
						return err
					}
				}
			}
			return nil
		}); err != nil {
			return fail(err)
		}
	}
	if _, _, err := db.SeriesBytes(); err != nil { // compacted, as in the steady state
		return fail(err)
	}
	return db, nil
}

// BenchmarkDailyRollup is the rollup benchmark: sum by (source)
// (increase(proxy_requests_total[1d])) over 30 days of 10,000 series at a
// one-day step, from the daily rollup and, for comparison, from raw data.
func BenchmarkDailyRollup(b *testing.B) {
	s := rollupStore(b)
	a := promql.New(promql.Config{}, s, promql.Options{})
	defer a.Close()
	mux := http.NewServeMux()
	a.Register(mux)
	for _, res := range []string{"auto", "raw"} {
		b.Run("resolution="+res, func(b *testing.B) {
			form := url.Values{
				"query":                 {`sum by (source) (increase(proxy_requests_total[1d]))`},
				"start":                 {fmt.Sprint(benchEnd.Add(-30 * 24 * time.Hour).Unix())},
				"end":                   {fmt.Sprint(benchEnd.Unix())},
				"step":                  {"86400"},
				"max_source_resolution": {res},
			}.Encode()
			benchQueryRange(b, mux, form)
		})
	}
}
