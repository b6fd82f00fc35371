package promql_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/proxylens/proxylens/pebblestore"
	"github.com/proxylens/proxylens/promql"
)

// The own-aggregates benchmark's history (issue 16: "30-day queries over
// proxylens' own aggregates, about 20,000 series"): 16,000
// proxy_requests_total series (20 sources × 800 domains, 10 applications)
// and 4,000 proxy_transfer_bytes_total series (20 sources × 100
// applications × 2 directions) over 30 days, an increment every 5 minutes
// (the hourly and daily rollups' reads do not depend on how many
// increments an hour holds), compacted as in the steady state. It takes
// 3 to 6 minutes to build here: with PROXYLENS_BENCH_OWN_DIR set, it is
// built there once and reused by later runs (delete the directory when
// the store's format changes).
var (
	ownOnce sync.Once
	ownDir  string
	ownDB   *pebblestore.DB
	ownErr  error
)

func ownStore(b *testing.B) *pebblestore.SeriesStore {
	ownOnce.Do(func() {
		keep := os.Getenv("PROXYLENS_BENCH_OWN_DIR")
		if keep != "" {
			built := filepath.Join(keep, "built")
			if _, err := os.Stat(built); err == nil {
				ownDB, ownErr = pebblestore.Open(keep, pebblestore.Options{})
				return
			}
			defer func() {
				if ownErr == nil {
					ownErr = os.WriteFile(built, nil, 0o644)
				}
			}()
			ownDir = keep
		} else if ownDir, ownErr = os.MkdirTemp("", "proxylens-bench-own-"); ownErr != nil {
			return
		}
		var series []labels.Labels
		for s := range benchSources {
			src := fmt.Sprintf("source-%02d", s)
			for d := range 800 {
				series = append(series, labels.FromStrings("__name__", "proxy_requests_total", "application", fmt.Sprintf("app-%d", d%10),
					"domain", fmt.Sprintf("shop%d.example.com", d), "method", "GET", "outcome", "success", "source", src, "status_code", "200"))
			}
			for a := range 100 {
				for _, dir := range []string{"received", "sent"} {
					series = append(series, labels.FromStrings("__name__", "proxy_transfer_bytes_total", "application", fmt.Sprintf("app-%02d", a),
						"direction", dir, "source", src))
				}
			}
		}
		ownDB, ownErr = buildIncrements(ownDir, series, 3)
	})
	if ownErr != nil {
		b.Fatal(ownErr)
	}
	return ownDB.Series()
}

// BenchmarkOwnAggregates30d: issue 16's three 30-day queries over about
// 20,000 series of proxylens' own aggregates, through the HTTP handler
// (goal: 100 ms each).
func BenchmarkOwnAggregates30d(b *testing.B) {
	s := ownStore(b)
	defer func() {
		_ = ownDB.Close()
		if os.Getenv("PROXYLENS_BENCH_OWN_DIR") == "" {
			_ = os.RemoveAll(ownDir)
		}
		ownOnce, ownDB = sync.Once{}, nil
	}()
	a := promql.New(promql.Config{}, s, promql.Options{})
	defer a.Close()
	mux := http.NewServeMux()
	a.Register(mux)
	start, end := fmt.Sprint(benchEnd.Add(-30*24*time.Hour).Unix()), fmt.Sprint(benchEnd.Unix())
	for _, tc := range []struct {
		name, path string
		form       url.Values
		marker     string // in every right answer
	}{
		{"daily-increase-by-source", "/api/v1/query_range", url.Values{"query": {`sum by (source) (increase(proxy_requests_total[1d]))`},
			"start": {start}, "end": {end}, "step": {"86400"}}, `"source":"source-19"`},
		{"hourly-bytes-by-application", "/api/v1/query_range", url.Values{"query": {`sum by (application) (increase(proxy_transfer_bytes_total[1h]))`},
			"start": {start}, "end": {end}, "step": {"3600"}}, `"application":"app-99"`},
		{"instant-30d-increase", "/api/v1/query", url.Values{"query": {`sum(increase(proxy_requests_total[30d]))`}, "time": {end}}, `"value":[`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			body := tc.form.Encode()
			cpu0 := cpuTime()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, tc.path, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				rec := httptest.NewRecorder()
				mux.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), tc.marker) {
					b.Fatalf("%d %.300s", rec.Code, rec.Body.String())
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/query")
			// On this shared machine a query waits for a CPU as long as it
			// runs on one: its CPU time says what it costs.
			b.ReportMetric(float64((cpuTime()-cpu0).Milliseconds())/float64(b.N), "cpu-ms/query")
		})
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
