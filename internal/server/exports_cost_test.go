package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/proxylens/proxylens/otelanalytics"
)

// withAttr returns st with the value of its attribute kv.Key replaced.
func withAttr(st tracetest.SpanStub, kv attribute.KeyValue) tracetest.SpanStub {
	st.Attributes = slices.Clone(st.Attributes)
	for i := range st.Attributes {
		if st.Attributes[i].Key == kv.Key {
			st.Attributes[i] = kv
		}
	}
	return st
}

// costKey is a (period end, source, application, currency) of the cost
// figures.
type costKey struct {
	t                     time.Time
	source, app, currency string
}

// TestExportCosts: the daily export's cost columns, per source and
// application, are what PromQL answers for the same range, and what an
// independent bill of the spans sent says: usage at the model valid at
// each request's interval, each hour's subscription shared by the
// applications' requests in it, unallocated where nobody used the
// source; each source's rows add up to its total per currency; a source
// without a model has empty cost columns. The costs export lists the
// models in force over the range, as the admin API holds them.
func TestExportCosts(t *testing.T) {
	// A fixed clock: 03:30 UTC of a day D in the past, so that D's first
	// hours are accrued and the day before it, the one exported, is over.
	day := time.Now().UTC().Truncate(24 * time.Hour).Add(-24 * time.Hour)
	now := day.Add(3*time.Hour + 30*time.Minute)
	s := start(t, adminConfig(t), Options{Now: func() time.Time { return now }})

	// brightdata: USD per request and 24 a day until noon of the day
	// before D, then EUR at other prices; spys-one has no model; two more
	// models are outside the range exported, (D − 2d, D].
	ts := func(d time.Duration) string { return day.Add(d).Format(time.RFC3339) }
	models := fmt.Sprintf(`[
	  {"source": "brightdata", "model": "hybrid", "currency": "USD", "from": %q, "until": %q, "per_request": 0.002, "subscription": 24, "period": "day"},
	  {"source": "brightdata", "model": "hybrid", "currency": "eur", "from": %q, "per_request": 0.003, "subscription": 48, "period": "day"},
	  {"source": "oxylabs", "model": "per_request", "from": %q, "until": %q, "per_request": 1},
	  {"source": "later", "model": "data_transfer", "from": %q, "per_gb": 2}
	]`, ts(-72*time.Hour), ts(-12*time.Hour), ts(-12*time.Hour), ts(-240*time.Hour), ts(-48*time.Hour), ts(time.Hour))
	var set []otelanalytics.CostModel
	code, msg := call(t, s, http.MethodPut, "/api/v1/admin/costs", testAdminToken, models, &set)
	require.Equal(t, http.StatusOK, code, msg)
	require.Len(t, set, 4)
	modelAt := func(tm time.Time) otelanalytics.CostModel {
		for _, m := range set {
			if m.Source == "brightdata" && !tm.Before(m.From) && (m.Until == nil || tm.Before(*m.Until)) {
				return m
			}
		}
		t.Fatalf("no brightdata model at %s", tm)
		return otelanalytics.CostModel{}
	}

	// 120 spans from 02:05 to 21:55 of the day before D, every 10 minutes;
	// even ones from brightdata, odd from spys-one; every third from the
	// application pricing, the others from crawler.
	want := map[costKey][2]float64{} // usage, subscription
	requests := map[costKey]float64{}
	hourUse := map[time.Time]map[string]float64{} // brightdata's requests by hour end, application
	var stubs []tracetest.SpanStub
	for i := range 120 {
		end := day.Add(-22*time.Hour + time.Duration(i*10+5)*time.Minute)
		app := "crawler"
		if i%3 == 0 {
			app = "pricing"
		}
		stubs = append(stubs, withAttr(proxySpan(i, end), attribute.String("app.id", app)))
		src := []string{"brightdata", "spys-one"}[i%2]
		requests[costKey{day, src, app, ""}]++
		if src == "brightdata" {
			h := end.Truncate(time.Hour).Add(time.Hour) // the interval it counts in
			m := modelAt(h)
			k := costKey{day, src, app, m.Currency}
			w := want[k]
			w[0] += *m.PerRequest
			want[k] = w
			if hourUse[h] == nil {
				hourUse[h] = map[string]float64{}
			}
			hourUse[h][app]++
		}
	}
	// Each hour's subscription, priced at its end, goes to the
	// applications that used brightdata in it by their requests, or stays
	// unallocated. The day before the range's last is wholly unallocated.
	for h := day.Add(-47 * time.Hour); !h.After(day); h = h.Add(time.Hour) {
		m := modelAt(h)
		accrual := *m.Subscription / 24
		period := day
		if !h.After(day.Add(-24 * time.Hour)) {
			period = day.Add(-24 * time.Hour)
		}
		use, total := hourUse[h], 0.0
		for _, n := range use {
			total += n
		}
		if total == 0 {
			use, total = map[string]float64{otelanalytics.UnallocatedApplication: 1}, 1
		}
		for app, n := range use {
			k := costKey{period, "brightdata", app, m.Currency}
			w := want[k]
			w[1] += accrual * n / total
			want[k] = w
		}
	}

	exportGRPC(t, s, stubs...)
	// The first cut accrues the subscriptions and records the usage; the
	// next, with no new usage, allocates the hours it settled.
	require.NoError(t, s.Pipeline().Flush())
	require.NoError(t, s.Pipeline().Flush())

	rng := fmt.Sprintf(`{"start": %q, "end": %q}`, ts(-48*time.Hour), ts(0))
	b, _ := exportAndDownload(t, s, `{"range": `+rng+`, "format": "csv", "dataset": "daily"}`)
	rows, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	require.NoError(t, err)
	col := map[string]int{}
	for i, name := range rows[0] {
		col[name] = i
	}
	num := func(r []string, name string) float64 {
		t.Helper()
		v, err := strconv.ParseFloat(r[col[name]], 64)
		require.NoError(t, err, name)
		return v
	}
	got := map[costKey][2]float64{}
	sums := map[costKey]float64{} // cost_total by period, source and currency
	seen := map[costKey]bool{}    // rows by period, source and application
	for _, r := range rows[1:] {
		end, err := time.Parse(time.RFC3339, r[col["period_end"]])
		require.NoError(t, err)
		src, app, cur := r[col["source"]], r[col["application"]], r[col["currency"]]
		first := r[col["requests"]] != ""
		if first {
			require.Equal(t, requests[costKey{end, src, app, ""}], num(r, "requests"), "%s %s %s", end, src, app)
			require.NotContains(t, seen, costKey{end, src, app, ""})
			seen[costKey{end, src, app, ""}] = true
		} else {
			// A further currency of the period: its traffic is in the first.
			require.Contains(t, seen, costKey{end, src, app, ""})
			require.Empty(t, r[col["successes"]])
		}
		if src == "spys-one" {
			require.Empty(t, cur, "no model")
			require.Empty(t, r[col["cost_usage"]])
			require.Empty(t, r[col["cost_subscription"]])
			require.Empty(t, r[col["cost_total"]])
			continue
		}
		k := costKey{end, src, app, cur}
		require.NotContains(t, got, k, "one row per period, source, application and currency")
		got[k] = [2]float64{num(r, "cost_usage"), num(r, "cost_subscription")}
		require.Equal(t, num(r, "cost_usage")+num(r, "cost_subscription"), num(r, "cost_total"))
		sums[costKey{end, src, "", cur}] += num(r, "cost_total")
		if app == otelanalytics.UnallocatedApplication {
			if first {
				require.Zero(t, num(r, "requests"))
			}
			require.Zero(t, num(r, "cost_usage"))
		}
	}
	require.Len(t, got, len(want), "rows %v, bill %v", got, want)
	for k, w := range want {
		require.Contains(t, got, k)
		// increase() extrapolates to the window's edge: a part in 10^6 at most.
		require.InDelta(t, w[0], got[k][0], 1e-6*w[0], "usage %v", k)
		require.InDelta(t, w[1], got[k][1], 1e-6*w[1], "subscription %v", k)
	}

	// What PromQL answers for the same range, and its per-source totals.
	api := queryClient(t, s)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	r := v1.Range{Start: day.Add(-24 * time.Hour), End: day, Step: 24 * time.Hour}
	v, _, _, err := api.QueryRange(ctx, `sum by (source, application, currency, component) (increase(proxy_cost_allocated_total[1d]))`, r)
	require.NoError(t, err)
	fromQuery := map[costKey][2]float64{}
	for _, ss := range v.(model.Matrix) {
		for _, p := range ss.Values {
			k := costKey{p.Timestamp.Time().UTC(), string(ss.Metric["source"]), string(ss.Metric["application"]), string(ss.Metric["currency"])}
			w := fromQuery[k]
			w[map[model.LabelValue]int{"usage": 0, "subscription": 1}[ss.Metric["component"]]] += float64(p.Value)
			fromQuery[k] = w
		}
	}
	for k, w := range fromQuery {
		if w != [2]float64{} {
			require.Equal(t, w, got[k], "%v", k)
		}
	}
	for k, g := range got {
		require.Equal(t, g, fromQuery[k], "%v", k)
	}
	v, _, _, err = api.QueryRange(ctx, `sum by (source, currency) (increase(proxy_cost_allocated_total[1d]))`, r)
	require.NoError(t, err)
	totals := 0
	for _, ss := range v.(model.Matrix) {
		for _, p := range ss.Values {
			k := costKey{p.Timestamp.Time().UTC(), string(ss.Metric["source"]), "", string(ss.Metric["currency"])}
			// Each series' increase extrapolates on its own: a part in 10^6.
			require.InDelta(t, float64(p.Value), sums[k], 1e-6*float64(p.Value), "%v", k)
			if p.Value != 0 {
				totals++ // a currency not spent in has no row
			}
		}
	}
	require.Len(t, sums, totals)
	require.InDelta(t, 24.0, sums[costKey{day.Add(-24 * time.Hour), "brightdata", "", "USD"}], 24e-6, "a whole day unallocated")

	// The costs export: the models in force over the range, as set.
	b, _ = exportAndDownload(t, s, `{"range": `+rng+`, "format": "json", "dataset": "costs", "filters": {"application": ["ignored"]}}`)
	var listed []otelanalytics.CostModel
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var m otelanalytics.CostModel
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m))
		listed = append(listed, m)
	}
	require.NoError(t, sc.Err())
	require.Equal(t, set[:2], listed, "brightdata's two; oxylabs' ended as the range began, later's begins after it")
	require.Equal(t, "EUR", listed[1].Currency)

	b, _ = exportAndDownload(t, s, `{"range": `+rng+`, "format": "csv", "dataset": "costs", "fields": ["source", "from", "until"], "filters": {"source": ["spys-one"]}}`)
	require.Equal(t, "source,from,until\n", string(b))
}
