package report

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// A report's content as sections of charts and tables, laid out the same
// way in HTML and PDF.

// Section is a part of a report.
type Section struct {
	ID, Title string
	Note      string // a sentence under the title: how to read it
	Charts    []Chart
	Tables    []Table
}

// Table is a table of printed figures.
type Table struct {
	ID   string // the HTML table's id
	Head []string
	Rows [][]string
	// Widths are the columns' shares of the page width in PDF.
	Widths []float64
}

// Title returns the report's title line and its subtitle: the period,
// the previous period and the filters.
func (r *Report) Title() (string, string) {
	days := r.End.Sub(r.Start)
	sub := fmt.Sprintf("%s – %s UTC (%s), compared with %s – %s",
		r.Start.UTC().Format("02 Jan 2006 15:04"), r.End.UTC().Format("02 Jan 2006 15:04"), length(days),
		r.PrevStart.UTC().Format("02 Jan 2006 15:04"), r.Start.UTC().Format("02 Jan 2006 15:04"))
	return "Proxy usage report", sub
}

// Filters describes the report's filters.
func (r *Report) Filters() string {
	src, app := "all", "all"
	if len(r.Spec.Sources) > 0 {
		src = strings.Join(r.Spec.Sources, ", ")
	}
	if len(r.Spec.Applications) > 0 {
		app = strings.Join(r.Spec.Applications, ", ")
	}
	return "Sources: " + src + ". Applications: " + app + "."
}

func length(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		if d == 24*time.Hour {
			return "1 day"
		}
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	}
	return d.Round(time.Minute).String()
}

// Sections returns the report's sections in order.
func (r *Report) Sections() []Section {
	all := r.Charts()
	pick := func(prefixes ...string) []Chart {
		var out []Chart
		for _, p := range prefixes {
			for _, c := range all {
				if strings.HasPrefix(c.Title, p) {
					out = append(out, c)
				}
			}
		}
		return out
	}
	return []Section{
		{ID: "summary", Title: "Summary", Note: "The period against the previous one of the same length.", Tables: []Table{r.totalsTable()}},
		{ID: "trend", Title: "Trend per " + r.stepName(), Charts: pick("Requests per", "Success rate per", "Spend per "+r.stepName()), Tables: []Table{r.daysTable()}},
		{ID: "sources", Title: "Sources", Note: "Success, latency and spend per source, most requests first; cost per success is the spend over the successful requests.",
			Charts: pick("Latency", "Spend per source"), Tables: []Table{r.sourcesTable(), r.sourceSpendTable()}},
		{ID: "degraded", Title: "Degraded sources", Note: "Sources whose success rate fell by at least 5 percentage points from the previous period, with at least 50 requests in each.", Tables: []Table{r.degradedTable()}},
		{ID: "applications", Title: "Spend per application", Note: "Usage and the share of subscriptions allocated to each application; \"unallocated\" is fixed cost in stretches without requests.",
			Charts: pick("Spend per application"), Tables: []Table{r.applicationsTable()}},
		{ID: "tiers", Title: "Premium vs free", Note: "A source's spend goes to the tiers in proportion to its requests.", Tables: []Table{r.tiersTable()}},
		{ID: "domains", Title: "Top domains", Note: "The ten most requested domains.", Tables: []Table{r.domainsTable()}},
	}
}

func (r *Report) totalsTable() Table {
	c, p := r.Current, r.Previous
	t := Table{ID: "totals", Head: []string{"Figure", "This period", "Previous period", "Change"}, Widths: []float64{0.34, 0.22, 0.22, 0.22}}
	add := func(name, cur, prev, change string) { t.Rows = append(t.Rows, []string{name, cur, prev, change}) }
	add("Requests", Count(c.Requests), Count(p.Requests), Change(c.Requests, p.Requests))
	add("Successful requests", Count(c.Successes), Count(p.Successes), Change(c.Successes, p.Successes))
	add("Success rate", Percent(c.SuccessRate()), Percent(p.SuccessRate()), Points(c.SuccessRate(), p.SuccessRate()))
	add("Mean latency", Seconds(c.MeanLatency), Seconds(p.MeanLatency), Change(c.MeanLatency, p.MeanLatency))
	add("Latency, 95th percentile", Seconds(c.P95Latency), Seconds(p.P95Latency), Change(c.P95Latency, p.P95Latency))
	add("Data sent", Bytes(c.BytesSent), Bytes(p.BytesSent), Change(c.BytesSent, p.BytesSent))
	add("Data received", Bytes(c.BytesReceived), Bytes(p.BytesReceived), Change(c.BytesReceived, p.BytesReceived))
	for _, cur := range r.Currencies {
		add("Spend ("+cur+")", Amount(c.Spend[cur], cur), Amount(p.Spend[cur], cur), Change(c.Spend[cur], p.Spend[cur]))
		if (c.UsageSpend[cur] != 0 || p.UsageSpend[cur] != 0) && (c.Subscriptions[cur] != 0 || p.Subscriptions[cur] != 0) {
			add("  of which usage", Amount(c.UsageSpend[cur], cur), Amount(p.UsageSpend[cur], cur), Change(c.UsageSpend[cur], p.UsageSpend[cur]))
			add("  of which subscriptions", Amount(c.Subscriptions[cur], cur), Amount(p.Subscriptions[cur], cur), Change(c.Subscriptions[cur], p.Subscriptions[cur]))
		}
		add("Cost per success ("+cur+")", amountOr(c.CostPerSuccess, cur), amountOr(p.CostPerSuccess, cur), changeOr(c.CostPerSuccess, p.CostPerSuccess, cur))
	}
	if len(r.Currencies) == 0 {
		add("Spend", "–", "–", "–")
	}
	return t
}

func amountOr(m Money, cur string) string {
	if v, ok := m[cur]; ok {
		return Amount(v, cur)
	}
	return "–"
}

func changeOr(c, p Money, cur string) string {
	cv, ok1 := c[cur]
	pv, ok2 := p[cur]
	if !ok1 || !ok2 {
		return "–"
	}
	return Change(cv, pv)
}

func (r *Report) daysTable() Table {
	t := Table{ID: "days", Head: []string{strings.ToUpper(r.stepName()[:1]) + r.stepName()[1:] + " ending", "Requests", "Success rate", "Spend"}, Widths: []float64{0.22, 0.18, 0.18, 0.42}}
	for _, d := range r.Days {
		t.Rows = append(t.Rows, []string{Date(d.End, r.Step), Count(d.Requests), Percent(ratio(d.Successes, d.Requests)), Amounts(d.Spend)})
	}
	return t
}

func (r *Report) sourcesTable() Table {
	t := Table{ID: "sources", Head: []string{"Source", "Tier", "Requests", "Change", "Success rate", "Previous", "Mean latency", "p95 latency"},
		Widths: []float64{0.2, 0.1, 0.12, 0.1, 0.12, 0.12, 0.12, 0.12}}
	for _, s := range r.Sources {
		t.Rows = append(t.Rows, []string{s.Name, s.Tier, Count(s.Requests), Change(s.Requests, s.PrevRequests),
			Percent(ratio(s.Successes, s.Requests)), Percent(ratio(s.PrevSuccesses, s.PrevRequests)),
			Seconds(s.MeanLatency), Seconds(s.P95Latency)})
	}
	return t
}

func (r *Report) sourceSpendTable() Table {
	t := Table{ID: "source_spend", Head: []string{"Source", "Successful requests", "Spend", "Cost per success"}, Widths: []float64{0.2, 0.2, 0.32, 0.28}}
	for _, s := range r.Sources {
		t.Rows = append(t.Rows, []string{s.Name, Count(s.Successes), Amounts(s.Spend), Amounts(s.CostPerSuccess)})
	}
	return t
}

func (r *Report) degradedTable() Table {
	t := Table{ID: "degraded", Head: []string{"Source", "Success rate", "Previous period", "Drop"}, Widths: []float64{0.34, 0.22, 0.22, 0.22}}
	for _, d := range r.Degraded {
		t.Rows = append(t.Rows, []string{d.Source, Percent(d.Rate), Percent(d.PrevRate), fmt.Sprintf("%.1f pt", d.Drop*100)})
	}
	if len(t.Rows) == 0 {
		t.Rows = append(t.Rows, []string{"No source degraded", "", "", ""})
	}
	return t
}

func (r *Report) applicationsTable() Table {
	t := Table{ID: "applications", Head: []string{"Application", "Requests", "Usage", "Subscriptions", "Spend", "Previous period"},
		Widths: []float64{0.16, 0.1, 0.14, 0.14, 0.23, 0.23}}
	for _, a := range r.Applications {
		t.Rows = append(t.Rows, []string{AppName(a.Name), Count(a.Requests),
			Amounts(a.Usage), Amounts(a.Subscription), Amounts(a.Spend), Amounts(a.PrevSpend)})
	}
	return t
}

func (r *Report) tiersTable() Table {
	t := Table{ID: "tiers", Head: []string{"Tier", "Requests", "Success rate", "p95 latency", "Spend", "Cost per success"}, Widths: []float64{0.12, 0.13, 0.13, 0.12, 0.25, 0.25}}
	for _, tr := range r.Tiers {
		t.Rows = append(t.Rows, []string{tr.Name, Count(tr.Requests), Percent(ratio(tr.Successes, tr.Requests)), Seconds(tr.P95Latency), Amounts(tr.Spend), Amounts(tr.CostPerSuccess)})
	}
	return t
}

func (r *Report) domainsTable() Table {
	t := Table{ID: "domains", Head: []string{"Domain", "Requests", "Share", "Success rate"}, Widths: []float64{0.46, 0.18, 0.18, 0.18}}
	for _, d := range r.Domains {
		share := math.NaN()
		if r.Current.Requests > 0 {
			share = d.Requests / r.Current.Requests
		}
		t.Rows = append(t.Rows, []string{d.Name, Count(d.Requests), Percent(share), Percent(ratio(d.Successes, d.Requests))})
	}
	return t
}
