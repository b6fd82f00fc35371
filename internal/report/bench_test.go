package report

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
	"github.com/proxylens/proxylens/promql"
)

// The benchmark's history: 100,000 proxy_requests_total series (50
// sources × 20 applications × 50 domains × 2 outcomes) with their 17,000
// duration histogram series (1,000 histograms of 15 buckets, _sum and
// _count), 2,000 byte counters and 1,000 usage and 260 subscription cost
// counters: 120,260 increment series. The report's period (the last 30
// days) has an increment every 6 hours, the previous 30 days one a day
// with the same traffic. The report's queries end on whole days, where
// the store reads the daily rollup: they read one key per series and day
// whatever the increments a day holds.
var benchShape = shape{sources: 50, apps: 20, domains: 50, interval: 6 * time.Hour, days: 60, end: testEnd}

const benchOlderInterval = 24 * time.Hour

var (
	benchOnce  sync.Once
	benchDir   string
	benchDB    *pebblestore.DB
	benchBuild time.Duration
	benchErr   error
)

// benchStore builds the history once per test binary, compacted.
func benchStore(b *testing.B) *pebblestore.DB {
	benchOnce.Do(func() {
		if benchDir, benchErr = os.MkdirTemp("", "proxylens-report-bench-"); benchErr != nil {
			return
		}
		start := time.Now()
		benchDB, benchErr = buildHistory(benchDir, benchShape, benchOlderInterval)
		benchBuild = time.Since(start)
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchDB
}

func TestMain(m *testing.M) {
	code := m.Run()
	if benchDB != nil {
		_ = benchDB.Close()
	}
	if benchDir != "" {
		_ = os.RemoveAll(benchDir)
	}
	os.Exit(code)
}

// buildHistory writes the history of sh as buildStore does, but series
// by series rather than day by day (one batch per source and application
// with all its days), with labels built once per series and an increment
// every older interval before the last 30 days, then compacts the store,
// as in its steady state (query benchmarks need a compacted store). At
// 12,000 series that takes 18 s against buildStore's 28 s plus 17 s of
// compaction, half of it Pebble's compactions either way.
func buildHistory(dir string, sh shape, older time.Duration) (*pebblestore.DB, error) {
	db, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		return nil, err
	}
	if err := buildHistoryInto(db, sh, older); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	return db, nil
}

func buildHistoryInto(db *pebblestore.DB, sh shape, older time.Duration) error {
	if _, err := otelanalytics.Restore(db, otelanalytics.NewDict(0), otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, sh.interval, nil)); err != nil {
		return err
	}
	// The increment times, and the requests' scale at each: an increment
	// a day carries four 6-hour increments' traffic.
	period := sh.end.Add(-30 * 24 * time.Hour)
	type tick struct {
		t     int64
		at    time.Time
		scale float64
	}
	var ticks []tick
	for at := sh.end.Add(-time.Duration(sh.days) * 24 * time.Hour); at.Before(sh.end); {
		step := sh.interval
		if at.Before(period) {
			step = older
		}
		at = at.Add(step)
		ticks = append(ticks, tick{at.UnixMilli(), at, float64(step / sh.interval)})
	}
	rnd := rand.New(rand.NewPCG(7, 7))
	b := labels.NewBuilder(labels.EmptyLabels())
	for s := range sh.sources {
		src, tier := sh.source(s), sh.tier(s)
		for a := range sh.apps {
			app := sh.app(a)
			err := db.Series().AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
				// The series of this source and application, labelled once.
				okLs, failLs := make([]labels.Labels, sh.domains), make([]labels.Labels, sh.domains)
				for d := range sh.domains {
					b.Reset(labels.EmptyLabels())
					b.Set("__name__", "proxy_requests_total")
					withApp(b, app).Set("source", src)
					b.Set("tier", tier)
					b.Set("domain", fmt.Sprintf("shop%d.example.com", d))
					b.Set("method", "GET")
					b.Set("status_code", "200")
					b.Set("outcome", "success")
					okLs[d] = b.Labels()
					b.Set("status_code", "502")
					b.Set("outcome", "failure")
					b.Set("error_type", "bad_gateway")
					failLs[d] = b.Labels()
				}
				sent := withApp(labels.NewBuilder(labels.FromStrings("__name__", "proxy_transfer_bytes_total", "source", src, "direction", "sent")), app).Labels()
				received := withApp(labels.NewBuilder(labels.FromStrings("__name__", "proxy_transfer_bytes_total", "source", src, "direction", "received")), app).Labels()
				usage := withApp(labels.NewBuilder(labels.FromStrings("__name__", "proxy_cost_allocated_total", "source", src, "currency", "USD", "component", "usage")), app).Labels()
				sub := labels.FromStrings("__name__", "proxy_cost_allocated_total", "source", src, "currency", "EUR", "component", "subscription", "application", app)
				for _, tk := range ticks {
					var okN, failN float64
					for d := range sh.domains {
						n := float64(1+rnd.IntN(10)) * tk.scale
						if d == 0 {
							n *= 3 // the first domain is the busiest
						}
						ok := float64(int(n*sh.successP(s, tk.at) + rnd.Float64()))
						okN, failN = okN+ok, failN+n-ok
						if err := add(okLs[d], tk.t, ok); err != nil {
							return err
						}
						if err := add(failLs[d], tk.t, n-ok); err != nil {
							return err
						}
					}
					if err := addHistogram(add, b, src, tier, app, tk.t, okN, 0.1+0.1*float64(s%5)); err != nil {
						return err
					}
					if err := add(sent, tk.t, 500*(okN+failN)); err != nil {
						return err
					}
					if err := add(received, tk.t, 20000*okN); err != nil {
						return err
					}
					if err := add(usage, tk.t, 0.001*(okN+failN)*float64(1+s%3)); err != nil {
						return err
					}
					if s%4 == 1 && app != "" {
						if err := add(sub, tk.t, 300.0/30/24*sh.interval.Hours()*tk.scale/float64(sh.apps)); err != nil {
							return err
						}
					}
				}
				if s%4 == 1 && a == sh.apps-1 {
					unallocated := labels.FromStrings("__name__", "proxy_cost_allocated_total", "source", src, "currency", "EUR", "component", "subscription", "application", "unallocated")
					for _, tk := range ticks {
						if err := add(unallocated, tk.t, 300.0/30/24*sh.interval.Hours()*tk.scale/float64(sh.apps)); err != nil {
							return err
						}
					}
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("write source %s, application %q: %w", src, app, err)
			}
		}
	}
	_, _, err := db.SeriesBytes()
	return err
}

// BenchmarkReport30Days builds and writes a 30-day report (and its
// previous 30 days) over the benchmark history: the queries through the
// query API's entry point, the charts, the HTML and the PDF. The history
// is built once per test binary, not timed: build-s is how long building
// and compacting it took. cpu-s/op is the process' CPU time per report
// (both cores, Pebble's included): on shared cores it moves less than the
// wall time.
func BenchmarkReport30Days(b *testing.B) {
	db := benchStore(b)
	api := promql.New(promql.Config{}, db.Series(), promql.Options{})
	b.Cleanup(func() { _ = api.Close() })
	spec := Spec{Start: testEnd.Add(-30 * 24 * time.Hour), End: testEnd}
	for _, format := range []string{HTML, PDF} {
		b.Run("format="+format, func(b *testing.B) {
			b.ReportAllocs()
			var out bytes.Buffer
			cpu0 := cpuTime(b)
			for b.Loop() {
				rep, err := Build(b.Context(), queryFunc(api), "bench", spec, nil)
				if err != nil {
					b.Fatal(err)
				}
				out.Reset()
				w := io.Writer(&out)
				if format == PDF {
					err = WritePDF(w, rep)
				} else {
					err = WriteHTML(w, rep)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric((cpuTime(b)-cpu0).Seconds()/float64(b.N), "cpu-s/op")
			b.ReportMetric(float64(out.Len())/1024, "file-KiB")
			b.ReportMetric(float64(db.Series().NumSeries()), "series")
			b.ReportMetric(benchBuild.Seconds(), "build-s")
		})
	}
}

// cpuTime is the process' user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
