package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/internal/traffic"
)

// dashboardExempt lists the panels whose queries may return no data
// against a proxylens on its own, each with the reason.
var dashboardExempt = map[string]string{
	"proxylens-sources/Degraded sources":                 "the demo traffic degrades no source; TestDegradedSourceEndToEnd (internal/server) runs this panel's queries on a degraded one",
	"proxylens-sources/Degradations over the time range": "the demo traffic degrades no source; TestDegradedSourceEndToEnd (internal/server) runs this panel's queries on a degraded one",
	"proxylens-sources/Silent sources":                   "every demo source sends live traffic; TestDegradedSourceEndToEnd (internal/server) runs this panel's query on a silent source and a retired one",
}

// TestDashboardQueries loads every committed dashboard, substitutes its
// variables as Grafana would, and runs every panel query against a
// proxylens filled by demo --backfill, with cost models for every demo
// source: every query must parse and return data.
func TestDashboardQueries(t *testing.T) {
	if testing.Short() {
		t.Skip("backfills four days of demo traffic")
	}
	t.Parallel() // beside the fleet tests, which mostly wait
	// A short flush interval, so that the server stores its self-metrics
	// (every flush interval) within the test; the backfilled traffic is
	// stored by event time whatever the interval.
	s := startServerFlushing(t, time.Second)
	base := "http://" + s.HTTPAddr().String()

	began := time.Now()
	putDemoCosts(t, base, time.Now().Add(-30*24*time.Hour))

	var out bytes.Buffer
	require.NoError(t, run(t.Context(), []string{"demo", "--endpoint", s.OTLPGRPCAddr().String(),
		"--backfill", "4d", "--spans", "30000", "--rate", "0", "--domains", "60", "--seed", "7"}, &out, io.Discard))
	require.Contains(t, out.String(), "sent 30000 spans")
	// Then two seconds of live traffic, so that the self-metrics (stored
	// every flush interval, over this run) show ingest at work. The panels
	// ask rate(...[5m]) at the end of the range, the next 5-minute
	// boundary: the live traffic and a self-metrics sample before it must
	// fall in the same 5 minutes, or a quantile over the request-duration
	// rates has nothing to rank. Within 40 s of a boundary (the live run,
	// its flush and the first queries take that long on a loaded machine),
	// start after it; and start at least 10 s after a boundary, so that
	// the 5 minutes hold self-metrics samples from before the live traffic
	// (one a flush interval, fewer when the machine is loaded).
	//
	// The 10 s alone do not make sure of that sample on a loaded machine
	// (a CI run got no data from the latency quantile at the end of the
	// range): the backfill's cut, whose pieces share the store's commits
	// with the self-metrics' appends, is written first, and a sample
	// stored after the wait is awaited.
	client, err := api.NewClient(api.Config{Address: base})
	require.NoError(t, err)
	prom := v1.NewAPI(client)
	require.NoError(t, s.Pipeline().Flush())
	for {
		last := time.Now().Truncate(5 * time.Minute)
		switch next := last.Add(5 * time.Minute); {
		case time.Until(next) < 40*time.Second:
			time.Sleep(time.Until(next) + 10*time.Second)
		case time.Since(last) < 10*time.Second:
			time.Sleep(10*time.Second - time.Since(last))
		}
		after := time.Now()
		waitSelfMetricsSample(t, prom, after)
		if now := time.Now(); now.Truncate(5*time.Minute).Equal(after.Truncate(5*time.Minute)) &&
			time.Until(now.Truncate(5*time.Minute).Add(5*time.Minute)) >= 40*time.Second {
			break // the sample and the live traffic share the 5 minutes
		}
	}
	liveBegan := time.Now()
	require.NoError(t, run(t.Context(), []string{"demo", "--endpoint", s.OTLPGRPCAddr().String(),
		"--duration", "2s", "--rate", "500", "--domains", "60", "--seed", "8"}, io.Discard, io.Discard))
	require.NoError(t, s.Pipeline().Flush())

	// The self-metrics are appended every flush interval, from the
	// server's own ticker (there is no hook to append them on demand):
	// wait until the stored spans-received counter has caught up with the
	// live one, so that rate() over the self-metrics has data at the end
	// of the range.
	received := scrape(t, s, "proxylens_spans_received_total")
	require.Greater(t, received, 30000.0)
	require.Eventually(t, func() bool {
		v, _, _, err := prom.Query(t.Context(), "sum(proxylens_spans_received_total)", time.Now())
		vec, ok := v.(model.Vector)
		return err == nil && ok && len(vec) == 1 && float64(vec[0].Value) == received
	}, 20*time.Second, 50*time.Millisecond, "self-metrics stored")
	t.Logf("traffic sent and self-metrics stored in %s", time.Since(began).Round(time.Millisecond))

	// The end of the range on the 5-minute boundary after the live
	// traffic began, as Grafana aligns a range to its step: the windows'
	// ends fall on the store's summary grid, and the last window holds the
	// live traffic. (From time.Now() here, the wait above could carry the
	// end past a boundary, leaving the last window with no traffic.)
	end := liveBegan.Truncate(5 * time.Minute).Add(5 * time.Minute)
	const rng = 48 * time.Hour // the dashboards' time range: the newer half of the backfill
	start := end.Add(-rng)

	files, err := filepath.Glob("../../dashboards/*.json")
	require.NoError(t, err)
	require.Len(t, files, 4)
	queries, queriesBegan := 0, time.Now()
	for _, file := range files {
		d := loadDashboard(t, file)
		for _, p := range d.panels() {
			key := d.UID + "/" + p.Title
			for _, tg := range p.Targets {
				interval := time.Hour
				if p.Interval != "" {
					iv, err := model.ParseDuration(p.Interval)
					require.NoError(t, err, "%s: panel %q interval", file, p.Title)
					interval = time.Duration(iv)
				}
				expr := substitute(tg.Expr, rng, interval)
				where := fmt.Sprintf("dashboard %q (%s), panel %q, query %s:\n%s", d.Title, filepath.Base(file), p.Title, tg.RefID, expr)
				if reason, ok := dashboardExempt[key]; ok {
					t.Logf("%s: not required to return data: %s", key, reason)
					_, _, _, err := prom.QueryRange(t.Context(), expr, v1.Range{Start: start, End: end, Step: interval})
					require.NoError(t, err, where)
					continue
				}
				queries++
				queryBegan := time.Now()
				v, _, _, err := prom.QueryRange(t.Context(), expr, v1.Range{Start: start, End: end, Step: interval})
				require.NoError(t, err, where)
				require.True(t, hasData(v), "no data from %s", where)
				if tg.Instant {
					// Grafana asks an instant target at the end of the range.
					v, _, _, err := prom.Query(t.Context(), expr, end)
					require.NoError(t, err, where)
					require.True(t, hasData(v), "no data at the end of the range from %s", where)
				}
				if took := time.Since(queryBegan); took > 2*time.Second {
					t.Logf("slow: %s took %s", where, took.Round(time.Millisecond))
				}
			}
		}
	}
	require.Greater(t, queries, 50)
	t.Logf("%d panel queries returned data, in %s", queries, time.Since(queriesBegan).Round(time.Millisecond))

	checkCostAddsUp(t, prom, end, rng)
}

// putDemoCosts gives every demo source a cost model, valid from from on:
// premium sources of each kind (one in EUR), free sources at 0.
func putDemoCosts(t *testing.T, base string, from time.Time) {
	t.Helper()
	fromS := from.UTC().Format(time.RFC3339)
	premium := map[string]map[string]any{
		"brightdata": {"model": "per_request", "per_request": 0.0012},
		"oxylabs":    {"model": "hybrid", "currency": "EUR", "per_gb": 3.5, "subscription": 500, "period": "month"},
		"smartproxy": {"model": "subscription", "subscription": 99, "period": "30d"},
		"netnut":     {"model": "data_transfer", "per_gb": 4},
		"iproyal":    {"model": "per_request", "per_request": 0.001},
		"soax":       {"model": "hybrid", "per_request": 0.0005, "subscription": 200, "period": "month"},
		"rayobyte":   {"model": "data_transfer", "per_gb": 2.5},
		"webshare":   {"model": "subscription", "subscription": 30, "period": "week"},
	}
	var models []map[string]any
	for _, src := range traffic.NewModel(1).Sources {
		m, ok := premium[src.Name]
		if !ok {
			require.Equal(t, "free", src.Tier, "demo source %s has no model in this test", src.Name)
			m = map[string]any{"model": "per_request", "per_request": 0}
		}
		m["source"], m["from"] = src.Name, fromS
		models = append(models, m)
	}
	body, err := json.Marshal(models)
	require.NoError(t, err)
	token, err := os.ReadFile("testdata/admin.token")
	require.NoError(t, err)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, base+"/api/v1/admin/costs", bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusOK, resp.StatusCode, "PUT costs: %s", answer)
}

// substitute replaces Grafana's variables as Grafana does with "All"
// selected, a range of rng and an interval of interval.
func substitute(expr string, rng, interval time.Duration) string {
	secs := func(d time.Duration) string { return strconv.FormatInt(int64(d/time.Second), 10) }
	return strings.NewReplacer(
		"${datasource}", "proxylens",
		"$datasource", "proxylens",
		"$source", ".*",
		"$application", ".*",
		"$tz", "UTC",
		"$__rate_interval", "5m",
		"$__range_s", secs(rng),
		"$__range_ms", strconv.FormatInt(rng.Milliseconds(), 10),
		"$__range", secs(rng)+"s",
		"$__interval_ms", strconv.FormatInt(interval.Milliseconds(), 10),
		"$__interval", secs(interval)+"s",
	).Replace(expr)
}

// hasData reports whether a query result holds at least one value that
// is a number.
// waitSelfMetricsSample waits until the server has stored a sample of its
// self-metrics after t.
func waitSelfMetricsSample(t *testing.T, prom v1.API, after time.Time) {
	t.Helper()
	require.Eventually(t, func() bool {
		v, _, _, err := prom.Query(t.Context(), "max(timestamp(proxylens_spans_received_total))", time.Now())
		vec, ok := v.(model.Vector)
		return err == nil && ok && len(vec) == 1 && float64(vec[0].Value) > float64(after.UnixMilli())/1000
	}, 60*time.Second, 50*time.Millisecond, "a self-metrics sample stored after %s", after)
}

func hasData(v model.Value) bool {
	switch v := v.(type) {
	case model.Matrix:
		for _, s := range v {
			for _, p := range s.Values {
				if !math.IsNaN(float64(p.Value)) {
					return true
				}
			}
		}
	case model.Vector:
		for _, s := range v {
			if !math.IsNaN(float64(s.Value)) {
				return true
			}
		}
	case *model.Scalar:
		return !math.IsNaN(float64(v.Value))
	}
	return false
}

type grafanaDashboard struct {
	UID    string         `json:"uid"`
	Title  string         `json:"title"`
	Panels []grafanaPanel `json:"panels"`
}

type grafanaPanel struct {
	Title    string `json:"title"`
	Type     string `json:"type"`
	Interval string `json:"interval"`
	Targets  []struct {
		RefID   string `json:"refId"`
		Expr    string `json:"expr"`
		Instant bool   `json:"instant"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"` // a collapsed row's panels
}

// panels returns every panel that is not a row, rows' panels included.
func (d *grafanaDashboard) panels() []grafanaPanel {
	var out []grafanaPanel
	var walk func([]grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			if p.Type != "row" {
				out = append(out, p)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

func loadDashboard(t *testing.T, file string) *grafanaDashboard {
	t.Helper()
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	var d grafanaDashboard
	require.NoError(t, json.Unmarshal(b, &d), file)
	require.NotEmpty(t, d.panels(), file)
	return &d
}
