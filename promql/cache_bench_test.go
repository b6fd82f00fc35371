package promql_test

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/proxylens/proxylens/internal/changes"
	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
	"github.com/proxylens/proxylens/promql"
)

// BenchmarkResultCache is the cache benchmark: Grafana refreshing
// a 30-day panel of the shipped dashboards (step 30m, $__rate_interval
// 1h) at noon, over 200 proxy_requests_total series (20 sources × 5
// applications × 2 outcomes) and 20 duration histograms (12 bucket
// series each) stored as the server stores its aggregates, an increment a
// minute for 31 days. cache=off is one evaluation (the anchor);
// cache=warm answers the 30 past days and today's hours before noon from
// the cache and evaluates the live hour; cache=cold finds every piece
// stale (NoteAll, as after a restore) and evaluates and caches them all. Every answer is
// checked byte for byte against the uncached one first.
func BenchmarkResultCache(b *testing.B) {
	tr := changes.New()
	db, err := pebblestore.Open(b.TempDir(), pebblestore.Options{Series: pebblestore.SeriesOptions{Changes: tr, IncrementInterval: time.Minute}})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := db.Close(); err != nil {
			b.Error(err)
		}
	}()
	now := benchEnd.Add(12 * time.Hour)
	if err := buildCacheHistory(db, now); err != nil {
		b.Fatal(err)
	}
	at := func() time.Time { return now }
	cfg := promql.DefaultConfig()
	cached := promql.New(cfg, db.Series(), promql.Options{Now: at, Changes: tr})
	cfg.ResultCache.MaxBytes = 0
	uncached := promql.New(cfg, db.Series(), promql.Options{Now: at})
	defer cached.Close()
	defer uncached.Close()
	mc, mu := http.NewServeMux(), http.NewServeMux()
	cached.Register(mc)
	uncached.Register(mu)

	const sel = `{source=~".*", application=~".*", otel_metric_overflow!="true"}`
	for _, tc := range []struct{ name, query string }{
		{"rate", `sum by (source) (rate(proxy_requests_total` + sel + `[1h]))`},
		{"success-ratio", `sum by (source) (rate(proxy_requests_total{outcome="success"}[1h])) / sum by (source) (rate(proxy_requests_total[1h]))`},
		{"p95", `histogram_quantile(0.95, sum by (source, le) (rate(proxy_request_duration_seconds_bucket` + sel + `[1h])))`},
	} {
		form := url.Values{"query": {tc.query}, "start": {fmt.Sprint(now.Add(-30 * 24 * time.Hour).Unix())},
			"end": {fmt.Sprint(now.Unix())}, "step": {"1800"}}.Encode()
		want := post(b, mu, form)
		if got := post(b, mc, form); got != want {
			b.Fatalf("%s: the cached answer differs", tc.name)
		}
		if got := post(b, mc, form); got != want {
			b.Fatalf("%s: the warm answer differs", tc.name)
		}
		for _, mode := range []struct {
			name   string
			h      http.Handler
			before func()
		}{{"off", mu, nil}, {"warm", mc, nil}, {"cold", mc, tr.NoteAll}} {
			b.Run("query="+tc.name+"/cache="+mode.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if mode.before != nil {
						mode.before()
					}
					post(b, mode.h, form)
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/query")
			})
		}
	}
}

func post(b *testing.B, h http.Handler, form string) string {
	req := httptest.NewRequest(http.MethodPost, "/api/v1/query_range", strings.NewReader(form))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"source":"source-19"`) {
		b.Fatalf("%d %.300s", rec.Code, rec.Body.String())
	}
	return rec.Body.String()
}

// buildCacheHistory appends BenchmarkResultCache's history up to now.
func buildCacheHistory(db *pebblestore.DB, now time.Time) error {
	if _, err := otelanalytics.Restore(db, otelanalytics.NewDict(0), otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, time.Minute, nil)); err != nil {
		return err
	}
	var reqs, buckets []labels.Labels
	les := []string{"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"}
	for s := range benchSources {
		src := fmt.Sprintf("source-%02d", s)
		for a := range 5 {
			for _, outcome := range []string{"success", "failure"} {
				reqs = append(reqs, labels.FromStrings("__name__", "proxy_requests_total", "application", fmt.Sprintf("app-%d", a),
					"outcome", outcome, "source", src))
			}
		}
		for _, le := range les {
			buckets = append(buckets, labels.FromStrings("__name__", "proxy_request_duration_seconds_bucket", "le", le, "source", src))
		}
	}
	rnd := rand.New(rand.NewPCG(4, 4))
	const iv, chunk = 60 * 1000, 24 * 3600 * 1000
	for t0 := now.Add(-31 * 24 * time.Hour).UnixMilli(); t0 < now.UnixMilli(); t0 += chunk {
		err := db.Series().AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
			for t := t0 + iv; t <= min(t0+chunk, now.UnixMilli()); t += iv {
				for _, ls := range reqs {
					if err := add(ls, t, float64(rnd.IntN(20))); err != nil {
						return err
					}
				}
				for h := 0; h < len(buckets); h += len(les) {
					var cum float64
					for i := range les {
						cum += float64(rnd.IntN(6))
						if err := add(buckets[h+i], t, cum); err != nil {
							return err
						}
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	_, _, err := db.SeriesBytes() // compacted, as in the steady state
	return err
}
