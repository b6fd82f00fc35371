package report

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
	"github.com/proxylens/proxylens/promql"
)

// shape is a history of proxy traffic: every source serves every
// application on every domain, one increment per series and interval.
type shape struct {
	sources, apps, domains int
	interval               time.Duration
	days                   int       // of history before end
	end                    time.Time // on a whole day
}

func (s shape) source(i int) string {
	names := []string{"brightdata", "oxylabs", "spys-one", "free-proxy-list"}
	if s.sources <= len(names) {
		return names[i]
	}
	return fmt.Sprintf("source-%03d", i)
}

// tier: the last source of four is free, the others premium.
func (s shape) tier(i int) string {
	if i%4 >= 2 {
		return "free"
	}
	return "premium"
}

// app: the last application is none (requests without one).
func (s shape) app(i int) string {
	if i == s.apps-1 {
		return ""
	}
	return fmt.Sprintf("app-%02d", i)
}

// successP is a source's chance of success: source 2 ("spys-one")
// degrades from 90% to 60% in the last 30 days.
func (s shape) successP(src int, t time.Time) float64 {
	if src == 2 {
		if t.After(s.end.Add(-30 * 24 * time.Hour)) {
			return 0.6
		}
		return 0.9
	}
	return 0.97 - 0.02*float64(src%3)
}

func withApp(b *labels.Builder, app string) *labels.Builder {
	if app != "" {
		b.Set("application", app)
	}
	return b
}

// buildStore writes the shape's history into a Pebble store in dir: the
// request counters, duration histograms, byte counters and the
// allocated cost counters (usage per request in USD, a monthly
// subscription of source 1 in EUR, unallocated when it has no requests).
func buildStore(tb testing.TB, dir string, sh shape) *pebblestore.DB {
	tb.Helper()
	db, err := pebblestore.Open(dir, pebblestore.Options{})
	require.NoError(tb, err)
	tb.Cleanup(func() { require.NoError(tb, db.Close()) })
	_, err = otelanalytics.Restore(db, otelanalytics.NewDict(0), otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, sh.interval, nil))
	require.NoError(tb, err)
	rnd := rand.New(rand.NewPCG(7, 7))
	iv := sh.interval.Milliseconds()
	from := sh.end.Add(-time.Duration(sh.days) * 24 * time.Hour).UnixMilli()
	chunk := max(iv, 24*3600*1000)
	b := labels.NewBuilder(labels.EmptyLabels())
	for t0 := from; t0 < sh.end.UnixMilli(); t0 += chunk {
		err := db.Series().AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
			for t := t0 + iv; t <= t0+chunk; t += iv {
				at := time.UnixMilli(t)
				for s := range sh.sources {
					src, tier := sh.source(s), sh.tier(s)
					for a := range sh.apps {
						app := sh.app(a)
						var okN, failN float64
						for d := range sh.domains {
							n := float64(1 + rnd.IntN(10))
							if d == 0 {
								n *= 3 // the first domain is the busiest
							}
							ok := float64(int(n*sh.successP(s, at) + rnd.Float64()))
							okN, failN = okN+ok, failN+n-ok
							dom := fmt.Sprintf("shop%d.example.com", d)
							b.Reset(labels.EmptyLabels())
							b.Set("__name__", "proxy_requests_total")
							withApp(b, app).Set("source", src)
							b.Set("tier", tier)
							b.Set("domain", dom)
							b.Set("method", "GET")
							b.Set("status_code", "200")
							b.Set("outcome", "success")
							if err := add(b.Labels(), t, ok); err != nil {
								return err
							}
							b.Set("status_code", "502")
							b.Set("outcome", "failure")
							b.Set("error_type", "bad_gateway")
							if err := add(b.Labels(), t, n-ok); err != nil {
								return err
							}
						}
						if err := addHistogram(add, b, src, tier, app, t, okN, 0.1+0.1*float64(s%5)); err != nil {
							return err
						}
						for dir, v := range map[string]float64{"sent": 500 * (okN + failN), "received": 20000 * okN} {
							b.Reset(labels.FromStrings("__name__", "proxy_transfer_bytes_total", "source", src, "direction", dir))
							if err := add(withApp(b, app).Labels(), t, v); err != nil {
								return err
							}
						}
						b.Reset(labels.FromStrings("__name__", "proxy_cost_allocated_total", "source", src, "currency", "USD", "component", "usage"))
						if err := add(withApp(b, app).Labels(), t, 0.001*(okN+failN)*float64(1+s%3)); err != nil {
							return err
						}
						if s%4 == 1 && app != "" {
							b.Reset(labels.FromStrings("__name__", "proxy_cost_allocated_total", "source", src, "currency", "EUR", "component", "subscription", "application", app))
							if err := add(b.Labels(), t, 300.0/30/24*sh.interval.Hours()/float64(sh.apps)); err != nil {
								return err
							}
						}
					}
					if s%4 == 1 {
						b.Reset(labels.FromStrings("__name__", "proxy_cost_allocated_total", "source", src, "currency", "EUR", "component", "subscription", "application", "unallocated"))
						if err := add(b.Labels(), t, 300.0/30/24*sh.interval.Hours()/float64(sh.apps)); err != nil {
							return err
						}
					}
				}
			}
			return nil
		})
		require.NoError(tb, err)
	}
	return db
}

// addHistogram adds n requests of about mean seconds to a duration
// histogram, cumulative over its buckets.
func addHistogram(add func(labels.Labels, int64, float64) error, b *labels.Builder, src, tier, app string, t int64, n, mean float64) error {
	series := func(name string) *labels.Builder {
		b.Reset(labels.FromStrings("__name__", name, "source", src, "tier", tier, "outcome", "success"))
		return withApp(b, app)
	}
	var cum float64
	for _, ub := range otelanalytics.DurationBuckets {
		cum = n * min(1, ub/(2*mean))
		if err := add(series("proxy_request_duration_seconds_bucket").Set("le", labels.FormatOpenMetricsFloat(ub)).Labels(), t, cum); err != nil {
			return err
		}
	}
	if err := add(series("proxy_request_duration_seconds_bucket").Set("le", "+Inf").Labels(), t, n); err != nil {
		return err
	}
	if err := add(series("proxy_request_duration_seconds_sum").Labels(), t, n*mean); err != nil {
		return err
	}
	return add(series("proxy_request_duration_seconds_count").Labels(), t, n)
}

// queryFunc runs queries on api as the report does.
func queryFunc(api *promql.API) QueryFunc {
	return func(ctx context.Context, _ string, req promql.Request) (*promql.Result, error) {
		return api.Exec(ctx, req)
	}
}
