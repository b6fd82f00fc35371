package report

import (
	"bytes"
	"html"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	promqlengine "github.com/prometheus/prometheus/promql"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/internal/report/reporttest"
	"github.com/proxylens/proxylens/promql"
)

var testEnd = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

// outDir is where a test keeps the files it renders: PROXYLENS_REPORT_OUT
// to look at them, else a temporary directory.
func outDir(t *testing.T) string {
	if d := os.Getenv("PROXYLENS_REPORT_OUT"); d != "" {
		require.NoError(t, os.MkdirAll(d, 0o750))
		return d
	}
	return t.TempDir()
}

// instant runs q at t on api, keyed by the values of the labels by.
func instant(t *testing.T, api *promql.API, q string, at time.Time, by ...string) map[string]float64 {
	t.Helper()
	res, err := api.Exec(t.Context(), promql.Request{Query: q, End: at})
	t.Cleanup(res.Close)
	require.NoError(t, err, q)
	out := map[string]float64{}
	for _, s := range res.Value.(promqlengine.Vector) {
		out[key(s.Metric, by)] = s.F
	}
	return out
}

var (
	tableRE = regexp.MustCompile(`(?s)<table id="([a-z_]+)">(.*?)</table>`)
	rowRE   = regexp.MustCompile(`(?s)<tr>(.*?)</tr>`)
	cellRE  = regexp.MustCompile(`(?s)<t[dh]>(.*?)</t[dh]>`)
)

// HTMLTables reads the tables of a report's HTML by id, head first, the
// text of each cell as printed.
func HTMLTables(doc string) map[string][][]string {
	out := map[string][][]string{}
	for _, m := range tableRE.FindAllStringSubmatch(doc, -1) {
		var rows [][]string
		for _, r := range rowRE.FindAllStringSubmatch(m[2], -1) {
			var cells []string
			for _, c := range cellRE.FindAllStringSubmatch(r[1], -1) {
				cells = append(cells, html.UnescapeString(c[1]))
			}
			rows = append(rows, cells)
		}
		out[m[1]] = rows
	}
	return out
}

// row finds the row of a table whose first cell is name.
func row(t *testing.T, rows [][]string, name string) []string {
	t.Helper()
	i := slices.IndexFunc(rows, func(r []string) bool { return len(r) > 0 && r[0] == name })
	require.GreaterOrEqual(t, i, 0, "no row %q in %v", name, rows)
	return rows[i]
}

// TestReportFiguresEqualPromQL: the figures a report prints, in HTML and
// in PDF, are the PromQL answers of hand-written queries over the same
// period; the degraded source is found; the charts are pictures.
func TestReportFiguresEqualPromQL(t *testing.T) {
	sh := shape{sources: 4, apps: 3, domains: 4, interval: time.Hour, days: 60, end: testEnd}
	db := buildStore(t, t.TempDir(), sh)
	api := promql.New(promql.Config{}, db.Series(), promql.Options{})
	t.Cleanup(func() { require.NoError(t, api.Close()) })

	spec := Spec{Start: testEnd.Add(-30 * 24 * time.Hour), End: testEnd}
	rep, err := Build(t.Context(), queryFunc(api), "ann", spec, nil)
	require.NoError(t, err)
	rep.Generated = testEnd.Add(time.Hour)
	var hb, pb bytes.Buffer
	require.NoError(t, WriteHTML(&hb, rep))
	require.NoError(t, WritePDF(&pb, rep))
	dir := outDir(t)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "report.html"), hb.Bytes(), 0o640))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "report.pdf"), pb.Bytes(), 0o640))

	doc := hb.String()
	for _, ref := range []string{"src=", "href=", "url(", "<link", "<script", "@import"} {
		require.False(t, strings.Contains(doc, ref), "self-contained: nothing fetched, yet %q", ref)
	}
	require.Equal(t, 6, strings.Count(doc, "<svg"), "six charts, as SVG")

	tables := HTMLTables(doc)
	want := expected(t, api, spec)
	for id, rows := range want {
		for name, cells := range rows {
			got := row(t, tables[id], name)
			for col, v := range cells {
				require.Equal(t, v, got[col], "table %s, row %s, column %s", id, name, tables[id][0][col])
			}
		}
	}
	require.Equal(t, "spys-one", row(t, tables["degraded"], "spys-one")[0])
	require.Len(t, tables["degraded"], 2, "only spys-one degraded")

	// The PDF holds the same figures, on the same lines.
	text := reporttest.PDFText(t, pb.Bytes())
	for id, rows := range want {
		for name, cells := range rows {
			line := pdfLine(t, text, name, id)
			for _, v := range cells {
				require.Contains(t, line, v, "PDF table %s, row %s", id, name)
			}
		}
	}
	require.Contains(t, text, "Page 1 of ")
	require.Contains(t, text, "02 Oct 2026 00:00 – 01 Nov 2026 00:00 UTC (30 days)")
}

// expected are figures the report must print, per table and row (its
// first cell), by column: the PromQL answers of hand-written queries.
func expected(t *testing.T, api *promql.API, spec Spec) map[string]map[string]map[int]string {
	end, start := spec.End, spec.Start
	reqs := instant(t, api, `sum by (source) (increase(proxy_requests_total[30d]))`, end, "source")
	succ := instant(t, api, `sum by (source) (increase(proxy_requests_total{outcome="success"}[30d]))`, end, "source")
	prevReqs := instant(t, api, `sum by (source) (increase(proxy_requests_total[30d]))`, start, "source")
	prevSucc := instant(t, api, `sum by (source) (increase(proxy_requests_total{outcome="success"}[30d]))`, start, "source")
	p95 := instant(t, api, `histogram_quantile(0.95, sum by (source, le) (increase(proxy_request_duration_seconds_bucket[30d])))`, end, "source")
	spend := instant(t, api, `sum by (source, currency) (increase(proxy_cost_allocated_total[30d]))`, end, "source", "currency")
	cps := instant(t, api, `sum by (source, currency) (increase(proxy_cost_allocated_total[30d])) / on (source) group_left sum by (source) (increase(proxy_requests_total{outcome="success"}[30d]))`, end, "source", "currency")
	sources, sourceSpend := map[string]map[int]string{}, map[string]map[int]string{}
	for name, n := range reqs {
		sources[name] = map[int]string{
			2: Count(n), 3: Change(n, prevReqs[name]), 4: Percent(succ[name] / n), 5: Percent(prevSucc[name] / prevReqs[name]),
			7: Seconds(p95[name]),
		}
		sourceSpend[name] = map[int]string{1: Count(succ[name]), 2: Amounts(perCurrency(spend, name)), 3: Amounts(perCurrency(cps, name))}
	}
	require.Len(t, sources, 4)

	total := instant(t, api, `sum(increase(proxy_requests_total[30d]))`, end)[""]
	prevTotal := instant(t, api, `sum(increase(proxy_requests_total[30d]))`, start)[""]
	okTotal := instant(t, api, `sum(increase(proxy_requests_total{outcome="success"}[30d]))`, end)[""]
	spendCur := instant(t, api, `sum by (currency) (increase(proxy_cost_allocated_total[30d]))`, end, "currency")
	cpsCur := instant(t, api, `sum by (currency) (increase(proxy_cost_allocated_total[30d])) / on () group_left sum(increase(proxy_requests_total{outcome="success"}[30d]))`, end, "currency")
	require.Len(t, spendCur, 2, "USD and EUR")
	totals := map[string]map[int]string{
		"Requests":     {1: Count(total), 2: Count(prevTotal), 3: Change(total, prevTotal)},
		"Success rate": {1: Percent(okTotal / total)},
	}
	for cur, v := range spendCur {
		totals["Spend ("+cur+")"] = map[int]string{1: Amount(v, cur)}
		totals["Cost per success ("+cur+")"] = map[int]string{1: Amount(cpsCur[cur], cur)}
	}

	appSpend := instant(t, api, `sum by (application, component, currency) (increase(proxy_cost_allocated_total[30d]))`, end, "application", "component", "currency")
	apps := map[string]map[int]string{}
	for _, app := range []string{"app-00", "app-01", "unallocated"} {
		apps[app] = map[int]string{2: Amounts(perCurrency(appSpend, app+"/usage")), 3: Amounts(perCurrency(appSpend, app+"/subscription"))}
	}
	require.Equal(t, "–", apps["unallocated"][2], "fixed cost without requests has no usage")

	tierReqs := instant(t, api, `sum by (tier) (increase(proxy_requests_total[30d]))`, end, "tier")
	tierSpend := instant(t, api, `sum by (tier, currency) (sum by (source, currency) (increase(proxy_cost_allocated_total[30d])) * on (source) group_left (tier) group by (source, tier) (proxy_requests_total))`, end, "tier", "currency")
	tiers := map[string]map[int]string{}
	for tier, n := range tierReqs {
		tiers[tier] = map[int]string{1: Count(n), 4: Amounts(perCurrency(tierSpend, tier))}
	}
	require.Len(t, tiers, 2)

	doms := instant(t, api, `topk(10, sum by (domain) (increase(proxy_requests_total[30d])))`, end, "domain")
	domains := map[string]map[int]string{}
	for d, n := range doms {
		domains[d] = map[int]string{1: Count(n), 2: Percent(n / total)}
	}
	drop := instant(t, api, `sum by (source) (increase(proxy_requests_total{outcome="success"}[30d] offset 30d)) / sum by (source) (increase(proxy_requests_total[30d] offset 30d)) - sum by (source) (increase(proxy_requests_total{outcome="success"}[30d])) / sum by (source) (increase(proxy_requests_total[30d]))`, end, "source")
	require.InDelta(t, 0.3, drop["spys-one"], 0.05)
	degraded := map[string]map[int]string{"spys-one": {3: strings.TrimPrefix(Points(drop["spys-one"], 0), "+")}}
	return map[string]map[string]map[int]string{"sources": sources, "source_spend": sourceSpend, "totals": totals, "applications": apps, "tiers": tiers, "domains": domains, "degraded": degraded}
}

// pdfLine is the line of the PDF's text that starts with name in table
// id: after the table's head.
func pdfLine(t *testing.T, text, name, id string) string {
	t.Helper()
	heads := map[string]string{"sources": `Source\s+Tier\s`, "source_spend": `Source\s+Successful requests\s`, "totals": `Figure\s+This period`,
		"applications": `Application\s+Requests\s`, "tiers": `Tier\s+Requests\s`, "domains": `Domain\s+Requests\s`, "degraded": `Source\s+Success rate\s+Previous period`}
	loc := regexp.MustCompile(`(?m)^\f?` + heads[id]).FindStringIndex(text)
	require.NotNil(t, loc, "no table %s in the PDF", id)
	for _, l := range strings.Split(text[loc[0]:], "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), name+" ") {
			return l
		}
	}
	t.Fatalf("no line %q in the PDF's table %s", name, id)
	return ""
}
