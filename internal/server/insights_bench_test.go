package server

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
)

// oldDegradingPanel are the queries of the "Degrading sources" panels the
// detector's series replaced: the success-rate drop computed in PromQL at
// query time (dashboards before b1b6099), over 7 days.
func oldDegradingPanel() (rng string, instant []string) {
	sr := func(w string) string {
		sel := `proxy_requests_total{source=~".*", application=~".*", otel_metric_overflow!="true"`
		return "sum by (source) (rate(" + sel + `, outcome="success"}[` + w + "]))\n/\nsum by (source) (rate(" + sel + "}[" + w + "]))"
	}
	drop := "(\n" + sr("7d") + "\n)\n-\n(\n" + sr("1h") + "\n)"
	return drop, []string{"sort_desc(" + drop + ")", sr("1h"), sr("7d"), "time() - max_over_time(timestamp((" + drop + ") <= 0.05)[604800s:15m])"}
}

// BenchmarkDegradationPanel answers the Source performance dashboard's
// degraded-sources panels over 7 days as Grafana asks them (the table's
// instant queries at the end, the time series at a 10-minute step), over
// 20 sources × 5 applications of request counters at 15 s and the
// detector's series for them, against the panels they replaced.
func BenchmarkDegradationPanel(b *testing.B) {
	s := New(testConfig(b), Options{})
	require.NoError(b, s.Start(context.Background()))
	defer func() { require.NoError(b, s.Shutdown(context.Background())) }()

	end := time.Now().Truncate(15 * time.Second)
	start := end.Add(-7 * 24 * time.Hour)
	series := s.Store().Series()
	require.NoError(b, series.AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
		for src := range 20 {
			for app := range 5 {
				for _, outcome := range []string{"success", "failure"} {
					ls := labels.FromStrings("__name__", "proxy_requests_total", "application", fmt.Sprintf("app-%d", app),
						"outcome", outcome, "source", fmt.Sprintf("source-%02d", src))
					v := 9.0
					if outcome == "failure" {
						v = 1
					}
					for ts := start; !ts.After(end); ts = ts.Add(15 * time.Second) {
						if err := add(ls, ts.UnixMilli(), v); err != nil {
							return err
						}
					}
				}
			}
		}
		return nil
	}))
	app := series.Appender(context.Background())
	for src := range 20 {
		source := fmt.Sprintf("source-%02d", src)
		for _, signal := range []string{"success_rate", "latency_p95"} {
			degradedFrom := end.Add(-40 * time.Minute)
			for ts := start; !ts.After(end); ts = ts.Add(15 * time.Second) {
				deg := 0.0
				if src < 2 && signal == "success_rate" && ts.After(degradedFrom) {
					deg = 1
					_, err := app.Append(0, labels.FromStrings("__name__", "proxy_source_degraded_onset_timestamp_seconds", "signal", signal, "source", source), ts.UnixMilli(), float64(degradedFrom.Unix()))
					require.NoError(b, err)
				}
				for _, smp := range []struct {
					ls labels.Labels
					v  float64
				}{
					{labels.FromStrings("__name__", "proxy_source_degraded", "signal", signal, "source", source), deg},
					{labels.FromStrings("__name__", "proxy_source_signal", "signal", signal, "source", source, "window", "current"), 0.9},
					{labels.FromStrings("__name__", "proxy_source_signal", "signal", signal, "source", source, "window", "baseline"), 0.9},
				} {
					_, err := app.Append(0, smp.ls, ts.UnixMilli(), smp.v)
					require.NoError(b, err)
				}
			}
		}
	}
	require.NoError(b, app.Commit())

	api := queryClient(b, s)
	week := v1.Range{Start: end.Add(-7 * 24 * time.Hour), End: end, Step: 10 * time.Minute}
	run := func(b *testing.B, rangeQueries, instantQueries []string) {
		for b.Loop() {
			for _, q := range rangeQueries {
				_, _, _, err := api.QueryRange(context.Background(), q, week)
				require.NoError(b, err)
			}
			for _, q := range instantQueries {
				_, _, _, err := api.Query(context.Background(), q, end)
				require.NoError(b, err)
			}
		}
	}
	b.Run("detector-series", func(b *testing.B) {
		over := panelQueries(b, "source-performance.json", "Degradations over the time range")
		for i := range over {
			over[i] = strings.ReplaceAll(over[i], "[60s]", "[600s]")
		}
		run(b, over, panelQueries(b, "source-performance.json", "Degraded sources"))
	})
	b.Run("promql-drop", func(b *testing.B) {
		rng, inst := oldDegradingPanel()
		run(b, []string{rng}, inst)
	})
}
