package server

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
)

// sendSpans exports spans over OTLP/gRPC in requests of 2,000.
func sendSpans(t *testing.T, s *Server, spans []sentSpan) {
	t.Helper()
	for i := 0; i < len(spans); i += 2000 {
		stubs := make([]tracetest.SpanStub, 0, 2000)
		for j := i; j < min(i+2000, len(spans)); j++ {
			stubs = append(stubs, spans[j].stub(j))
		}
		exportGRPC(t, s, stubs...)
	}
}

// instant runs an instant query and returns its vector.
func instant(t *testing.T, s *Server, q string, at time.Time) model.Vector {
	t.Helper()
	v, warns, _, err := queryClient(t, s).Query(context.Background(), q, at)
	require.NoError(t, err, q)
	require.Empty(t, warns, q)
	return v.(model.Vector)
}

// TestDegradedSourceEndToEnd is the test: a week of healthy
// traffic from four sources, then one degrades in a 40-minute step, its
// success rate in one run and its latency in the other. The spans go over
// OTLP to a server at the default 15 s flush interval; the verdicts are
// read back with PromQL: only that source is degraded, on that signal,
// with the onset within a minute of the truth, and neither the trickling
// nor the swinging free source is ever flagged.
func TestDegradedSourceEndToEnd(t *testing.T) {
	for _, signal := range []string{otelanalytics.SignalSuccessRate, otelanalytics.SignalLatencyP95} {
		t.Run(signal, func(t *testing.T) {
			cfg := adminConfig(t)
			cfg.FlushInterval = 15 * time.Second
			history := 7 * 24 * time.Hour
			busyFor := 3 * time.Hour
			if raceDetector {
				// Ten times slower: a day of history makes the same point.
				history, busyFor = 24*time.Hour, 90*time.Minute
			}
			cfg.Mapping.MaxClockSkew = history + 24*time.Hour
			cfg.Rules.EvaluationInterval = time.Second
			now := time.Now()
			last := now.Add(-30 * time.Second).Truncate(15 * time.Second) // judged at the cut below
			onset := last.Add(-40 * time.Minute).Add(-7 * time.Second)    // mid-interval
			busy := last.Add(-busyFor)                                    // the last hours carry more traffic
			weekAgo := last.Add(-history)
			// The server's clock stands at the start of the history while the
			// spans go in, however long that takes (the background cuts judge
			// nothing yet), then moves to now for the cut that judges it all:
			// as if the spans had come in live.
			var clock atomic.Int64
			clock.Store(weekAgo.UnixNano())
			s := start(t, cfg, Options{Now: func() time.Time { return time.Unix(0, clock.Load()) }})

			rnd := rand.New(rand.NewPCG(3, 5))
			var spans []sentSpan
			add := func(source string, end time.Time, pOK float64, slow bool) {
				sp := sentSpan{source: source, end: end, dur: 120 * time.Millisecond, success: rnd.Float64() < pOK}
				if rnd.IntN(40) == 0 {
					sp.dur = 700 * time.Millisecond // a healthy tail: p95 stays under 0.25 s
				}
				if slow {
					sp.dur = 3 * time.Second
				}
				spans = append(spans, sp)
			}
			for ts := weekAgo; !ts.After(last); ts = ts.Add(15 * time.Second) {
				perInterval := 1
				if ts.After(busy) {
					perInterval = 12
				}
				if ts.Unix()%60 == 0 || ts.After(busy) {
					for i := range perInterval {
						end := ts.Add(-time.Duration(i+1) * 15 * time.Second / time.Duration(perInterval+1))
						bad := end.After(onset)
						pOK := 0.97
						if bad && signal == otelanalytics.SignalSuccessRate {
							pOK = 0.70
						}
						add("premium-bad", end, pOK, bad && signal == otelanalytics.SignalLatencyP95 && rnd.IntN(2) == 0)
						add("premium-good", end, 0.97, false)
						// Its success rate swings from 20% to 80% every 10 minutes.
						block := uint64(end.Unix() / 600)
						add("free-swinging", end, 0.2+0.6*float64((block*2654435761)%1000)/1000, false)
					}
				}
				add("free-trickle", ts.Add(-time.Second), 0.5, false)
				if ts.Before(busy) && ts.Unix()%60 == 0 {
					// Two sources that went silent three hours ago, one of
					// them retired since.
					add("gone", ts.Add(-time.Second), 0.9, false)
					add("gone-retired", ts.Add(-time.Second), 0.9, false)
				}
			}
			sendSpans(t, s, spans)
			clock.Store(now.UnixNano())
			require.NoError(t, s.Pipeline().Flush())

			flagged := instant(t, s, `proxy_source_degraded == 1`, last)
			require.Len(t, flagged, 1, "degraded now: %v", flagged)
			require.Equal(t, "premium-bad", string(flagged[0].Metric["source"]))
			require.Equal(t, signal, string(flagged[0].Metric["signal"]))
			ons := instant(t, s, `proxy_source_degraded_onset_timestamp_seconds`, last)
			require.Len(t, ons, 1)
			got := time.Unix(0, int64(float64(ons[0].Value)*1e9))
			require.InDelta(t, 0, got.Sub(onset).Seconds(), 60, "onset %s, truth %s", got, onset)
			t.Logf("onset found %s from the truth", got.Sub(onset))

			// The shipped alert names that source alone (pending for its
			// for: 1m, then firing).
			var alerts []v1.Alert
			require.Eventually(t, func() bool {
				ar, err := queryClient(t, s).Alerts(context.Background())
				require.NoError(t, err)
				alerts = alerts[:0]
				for _, a := range ar.Alerts {
					if a.Labels["alertname"] == "ProxySourceDegraded" {
						alerts = append(alerts, a)
					}
				}
				return len(alerts) > 0
			}, 30*time.Second, 100*time.Millisecond, "no ProxySourceDegraded alert")
			require.Len(t, alerts, 1, "%v", alerts)
			require.Equal(t, model.LabelValue("premium-bad"), alerts[0].Labels["source"])
			require.Equal(t, model.LabelValue(signal), alerts[0].Labels["signal"])

			// Over the whole week nothing else was ever flagged.
			ever := instant(t, s, `max by (source, signal) (max_over_time(proxy_source_degraded[8d])) == 1`, last)
			require.Len(t, ever, 1, "ever degraded: %v", ever)
			judged := instant(t, s, `count by (source) (proxy_source_degraded)`, last)
			require.Len(t, judged, 4, "every source with traffic now is judged: %v", judged)

			// The dashboard's panels give the same answer.
			code, msg := call(t, s, http.MethodPut, "/api/v1/admin/sources/retired/gone-retired", testAdminToken, "", nil)
			require.Equal(t, http.StatusOK, code, msg)
			require.NoError(t, s.appendSelfMetrics(t.Context(), time.Now()))
			panel := func(title string, at time.Time) []model.Vector {
				var out []model.Vector
				for _, expr := range panelQueries(t, "source-performance.json", title) {
					out = append(out, instant(t, s, expr, at))
				}
				return out
			}
			table := panel("Degraded sources", last)
			require.Len(t, table, 4)
			for i, col := range table {
				require.Len(t, col, 1, "column %d: %v", i, col)
				require.Equal(t, "premium-bad", string(col[0].Metric["source"]))
				require.Equal(t, signal, string(col[0].Metric["signal"]))
			}
			require.InDelta(t, float64(ons[0].Value)*1000, float64(table[0][0].Value), 1e-3, "Degraded since, in ms")
			over := panel("Degradations over the time range", last)
			require.Len(t, over[0], 1)
			require.Equal(t, "premium-bad", string(over[0][0].Metric["source"]))
			silent := panel("Silent sources", time.Now())
			require.Len(t, silent[0], 1, "silent: %v", silent[0])
			require.Equal(t, "gone", string(silent[0][0].Metric["source"]))

			// A restart seeds the baselines from the store: the same
			// figures but for the last hour or two, which it leaves out.
			reqs, rate, p95, ok := s.detector.Baseline("premium-good")
			require.True(t, ok)
			require.NoError(t, s.Shutdown(context.Background()))
			s = start(t, cfg, Options{Now: func() time.Time { return time.Unix(0, clock.Load()) }})
			reqs2, rate2, p952, ok := s.detector.Baseline("premium-good")
			require.True(t, ok, "seeded at start")
			require.InDelta(t, reqs, reqs2, reqs*0.7, "requests in the baseline")
			require.InDelta(t, rate, rate2, 0.01, "success rate")
			require.InDelta(t, p95, p952, p95*0.1, "p95")
			t.Logf("baseline live: %.0f requests, %.3f, p95 %.3fs; seeded: %.0f, %.3f, %.3fs", reqs, rate, p95, reqs2, rate2, p952)

			// How bad: the signal now against the baseline.
			bad := instant(t, s, `proxy_source_signal{source="premium-bad",signal="`+signal+`"}`, last)
			require.Len(t, bad, 2)
			vals := map[string]float64{}
			for _, smp := range bad {
				vals[string(smp.Metric["window"])] = float64(smp.Value)
			}
			if signal == otelanalytics.SignalSuccessRate {
				require.InDelta(t, 0.97, vals["baseline"], 0.01)
				require.InDelta(t, 0.70, vals["current"], 0.1)
			} else {
				require.Less(t, vals["baseline"], 0.25)
				require.Greater(t, vals["current"], 2.5)
			}
		})
	}
}

// panelQueries returns the queries of a panel of a committed dashboard,
// with Grafana's variables as "All" over a week at a one-minute interval.
func panelQueries(t testing.TB, file, title string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("../../dashboards", file))
	require.NoError(t, err)
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(b, &d))
	vars := strings.NewReplacer("$source", ".*", "$application", ".*", "$tz", "UTC", "$__range", "604800s", "$__interval", "60s")
	for _, p := range d.Panels {
		if p.Title == title {
			var out []string
			for _, tg := range p.Targets {
				out = append(out, vars.Replace(tg.Expr))
			}
			return out
		}
	}
	t.Fatalf("%s has no panel %q", file, title)
	return nil
}

func TestRetiredSources(t *testing.T) {
	cfg := adminConfig(t)
	s := start(t, cfg, Options{})
	var list []RetiredSource
	code, msg := call(t, s, http.MethodPut, "/api/v1/admin/sources/retired/spys-one", testAdminToken, `{"from":"2026-11-01T00:00:00Z"}`, &list)
	require.Equal(t, http.StatusOK, code, msg)
	want := []RetiredSource{{Source: "spys-one", From: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}}
	require.Equal(t, want, list)
	code, msg = call(t, s, http.MethodPut, "/api/v1/admin/sources/retired/x", testAdminToken, `{"from":"yesterday"}`, nil)
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, msg, `"yesterday"`)
	code, _ = call(t, s, http.MethodDelete, "/api/v1/admin/sources/retired/never", testAdminToken, "", nil)
	require.Equal(t, http.StatusNotFound, code)
	code, _ = call(t, s, http.MethodPut, "/api/v1/admin/sources/retired/y", "", `{}`, nil)
	require.Equal(t, http.StatusUnauthorized, code)

	// The retirement is a series too, beside proxylens_up.
	now := time.Now()
	require.NoError(t, s.appendSelfMetrics(t.Context(), now))
	v := instant(t, s, `proxy_source_retired`, now)
	require.Len(t, v, 1)
	require.Equal(t, "spys-one", string(v[0].Metric["source"]))
	require.Equal(t, float64(want[0].From.Unix()), float64(v[0].Value))
	require.Len(t, instant(t, s, `proxylens_up == 1`, now), 1)
	require.Empty(t, instant(t, s, `proxylens_up`, now.Add(10*time.Minute)), "absent where proxylens did not run")

	entries, err := s.Store().AuditEntries(pebblestore.AuditFilter{Actions: []string{"sources.retire"}})
	require.NoError(t, err)
	require.Len(t, entries, 2, "the change, and the refused DELETE of a source not retired")
	require.False(t, entries[1].Success)

	// Kept across a restart, and undone by DELETE.
	require.NoError(t, s.Shutdown(context.Background()))
	s = start(t, cfg, Options{})
	code, _ = call(t, s, http.MethodGet, "/api/v1/admin/sources/retired", testAdminToken, "", &list)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, want, list)
	code, _ = call(t, s, http.MethodDelete, "/api/v1/admin/sources/retired/spys-one", testAdminToken, "", &list)
	require.Equal(t, http.StatusOK, code)
	require.Empty(t, list)
	_, ok := s.retired.lookup("spys-one")
	require.False(t, ok)
}

// TestPeakHours: spans at known hours of the week show up in the
// hour-of-week counters, in UTC and in the configured zone.
func TestPeakHours(t *testing.T) {
	cfg := testConfig(t)
	cfg.PeakHours.TZ = "Asia/Kolkata" // UTC+5:30: a half-hour shift moves some spans to the next hour
	s := start(t, cfg, Options{})
	now := time.Now()
	weekStart := now.Add(-6 * 24 * time.Hour).Truncate(time.Hour)
	var spans []sentSpan
	utc := map[[2]string]float64{}
	local := map[[2]string]float64{}
	kolkata, err := time.LoadLocation("Asia/Kolkata")
	require.NoError(t, err)
	rnd := rand.New(rand.NewPCG(9, 9))
	for range 500 {
		end := weekStart.Add(time.Duration(rnd.Int64N(int64(5 * 24 * time.Hour))))
		spans = append(spans, sentSpan{source: "brightdata", end: end, dur: 100 * time.Millisecond, success: true})
		// A span counts in its flush interval (here an hour), and the
		// interval in the hour of its last instant, in each zone.
		at := end.Truncate(time.Hour).Add(time.Hour - time.Nanosecond)
		key := func(tm time.Time) [2]string {
			return [2]string{[7]string{"7-Sun", "1-Mon", "2-Tue", "3-Wed", "4-Thu", "5-Fri", "6-Sat"}[tm.Weekday()], tm.Format("15")}
		}
		utc[key(at)]++
		local[key(at.In(kolkata))]++
	}
	sendSpans(t, s, spans)
	require.NoError(t, s.Pipeline().Flush())
	for zone, want := range map[string]map[[2]string]float64{"UTC": utc, "Asia/Kolkata": local} {
		v := instant(t, s, `sum by (weekday, hour) (increase(proxy_peak_source_requests_total{tz="`+zone+`",source="brightdata"}[8d]))`, now)
		got := map[[2]string]float64{}
		for _, smp := range v {
			got[[2]string{string(smp.Metric["weekday"]), string(smp.Metric["hour"])}] = float64(smp.Value)
		}
		require.Equal(t, len(want), len(got), zone)
		for k, n := range want {
			require.InDelta(t, n, got[k], n*0.01, "%s %v", zone, k)
		}
	}
}
