package report

import (
	"cmp"
	"context"
	"math"
	"slices"
	"strings"
	"time"
)

// Build runs the report's queries as user and gathers their answers. It
// calls progress with 0 to 1 as the queries complete.
func Build(ctx context.Context, query QueryFunc, user string, spec Spec, progress func(float64)) (*Report, error) {
	r := &runner{ctx: ctx, query: query, user: user, spec: spec, progress: progress}
	period := spec.End.Sub(spec.Start)
	rep := &Report{Spec: spec, PrevStart: spec.Start.Add(-period), Step: 24 * time.Hour}
	if period < 3*24*time.Hour {
		rep.Step = time.Hour
	}
	var err error
	if rep.Current, err = r.totals(spec.End, period); err != nil {
		return nil, err
	}
	if rep.Previous, err = r.totals(spec.Start, period); err != nil {
		return nil, err
	}
	if rep.Days, err = r.days(spec, rep.Step); err != nil {
		return nil, err
	}
	if rep.Sources, err = r.sources(spec, period); err != nil {
		return nil, err
	}
	if rep.Applications, err = r.applications(spec, period); err != nil {
		return nil, err
	}
	if rep.Tiers, err = r.tiers(spec.End, period); err != nil {
		return nil, err
	}
	if rep.Domains, err = r.domains(spec.End, period); err != nil {
		return nil, err
	}
	if rep.Degraded, err = r.degraded(spec.End, period, rep.Sources); err != nil {
		return nil, err
	}
	rep.Currencies = sortedKeys(rep.Current.Spend, rep.Previous.Spend)
	return rep, nil
}

// totals are the period's figures, the period ending at t.
func (r *runner) totals(t time.Time, period time.Duration) (Totals, error) {
	var tot Totals
	for _, q := range []struct {
		tmpl string
		dst  *float64
	}{
		{qRequests, &tot.Requests}, {qSuccesses, &tot.Successes},
		{qMeanLatency, &tot.MeanLatency}, {qP95Latency, &tot.P95Latency},
	} {
		v, err := r.vector(q.tmpl, t, period)
		if err != nil {
			return tot, err
		}
		*q.dst = math.NaN()
		if x, ok := v[""]; ok {
			*q.dst = x
		}
	}
	tot.Requests, tot.Successes = zeroNaN(tot.Requests), zeroNaN(tot.Successes)
	bytes, err := r.vector(qBytes, t, period, "direction")
	if err != nil {
		return tot, err
	}
	tot.BytesSent, tot.BytesReceived = bytes["sent"], bytes["received"]
	spend, err := r.vector(qSpend, t, period, "currency", "component")
	if err != nil {
		return tot, err
	}
	tot.Spend, tot.UsageSpend, tot.Subscriptions = money(spend), Money{}, Money{}
	for k, v := range spend {
		cur, component, _ := strings.Cut(k, "/")
		switch component {
		case "usage":
			tot.UsageSpend[cur] += v
		case "subscription":
			tot.Subscriptions[cur] += v
		}
	}
	cps, err := r.vector(qCostPerSuccess, t, period, "currency")
	if err != nil {
		return tot, err
	}
	tot.CostPerSuccess = money(cps)
	return tot, nil
}

func zeroNaN(v float64) float64 {
	if math.IsNaN(v) {
		return 0
	}
	return v
}

// days is the trend: the period cut into steps ending at its end.
func (r *runner) days(spec Spec, step time.Duration) ([]Day, error) {
	n := int(spec.End.Sub(spec.Start) / step)
	if n == 0 {
		return nil, nil
	}
	first := spec.End.Add(-time.Duration(n-1) * step)
	reqs, err := r.matrix(qRequests, first, spec.End, step)
	if err != nil {
		return nil, err
	}
	succ, err := r.matrix(qSuccesses, first, spec.End, step)
	if err != nil {
		return nil, err
	}
	spend, err := r.matrix(qSpend, first, spec.End, step, "currency", "component")
	if err != nil {
		return nil, err
	}
	days := make([]Day, n)
	for i := range days {
		t := first.Add(time.Duration(i) * step)
		ms := t.UnixMilli()
		days[i] = Day{End: t, Requests: reqs[""][ms], Successes: succ[""][ms], Spend: Money{}}
		for k, pts := range spend {
			if v, ok := pts[ms]; ok {
				cur, _, _ := strings.Cut(k, "/")
				days[i].Spend[cur] += v
			}
		}
	}
	return days, nil
}

// sources are the figures per source, most requests first.
func (r *runner) sources(spec Spec, period time.Duration) ([]Source, error) {
	vals := map[string]map[string]float64{}
	for _, q := range []struct {
		name, tmpl string
		at         time.Time
	}{
		{"requests", qSourceRequests, spec.End}, {"successes", qSourceSuccesses, spec.End},
		{"prev_requests", qSourceRequests, spec.Start}, {"prev_successes", qSourceSuccesses, spec.Start},
		{"mean", qSourceMeanLatency, spec.End}, {"p95", qSourceP95Latency, spec.End},
	} {
		v, err := r.vector(q.tmpl, q.at, period, "source")
		if err != nil {
			return nil, err
		}
		vals[q.name] = v
	}
	tiers, err := r.vector(qSourceTierRequests, spec.End, period, "source", "tier")
	if err != nil {
		return nil, err
	}
	spend, err := r.vector(qSourceSpend, spec.End, period, "source", "currency")
	if err != nil {
		return nil, err
	}
	cps, err := r.vector(qSourceCostPerSuccess, spec.End, period, "source", "currency")
	if err != nil {
		return nil, err
	}
	var out []Source
	for _, name := range sortedKeys(vals["requests"], bySource(spend)) {
		s := Source{
			Name: name, Requests: vals["requests"][name], Successes: vals["successes"][name],
			PrevRequests: vals["prev_requests"][name], PrevSuccesses: vals["prev_successes"][name],
			MeanLatency: orNaN(vals["mean"], name), P95Latency: orNaN(vals["p95"], name),
			Spend: perCurrency(spend, name), CostPerSuccess: perCurrency(cps, name),
		}
		var ts []string
		for k := range tiers {
			if src, tier, _ := strings.Cut(k, "/"); src == name && tiers[k] > 0 {
				ts = append(ts, tier)
			}
		}
		slices.Sort(ts)
		s.Tier = strings.Join(ts, ", ")
		out = append(out, s)
	}
	slices.SortStableFunc(out, func(a, b Source) int { return cmp.Compare(b.Requests, a.Requests) })
	return out, nil
}

// bySource keys an answer keyed "source/…" by source.
func bySource(m map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		name, _, _ := strings.Cut(k, "/")
		out[name] += v
	}
	return out
}

// perCurrency picks the amounts of name out of an answer keyed
// "name/currency".
func perCurrency(m map[string]float64, name string) Money {
	out := Money{}
	for k, v := range m {
		if i := strings.LastIndexByte(k, '/'); i >= 0 && k[:i] == name {
			out[k[i+1:]] += v
		}
	}
	return out
}

func orNaN(m map[string]float64, k string) float64 {
	if v, ok := m[k]; ok {
		return v
	}
	return math.NaN()
}

// applications are the requests and allocated spend per application,
// most spend first.
func (r *runner) applications(spec Spec, period time.Duration) ([]Application, error) {
	reqs, err := r.vector(qAppRequests, spec.End, period, "application")
	if err != nil {
		return nil, err
	}
	succ, err := r.vector(qAppSuccesses, spec.End, period, "application")
	if err != nil {
		return nil, err
	}
	spend, err := r.vector(qAppSpend, spec.End, period, "application", "component", "currency")
	if err != nil {
		return nil, err
	}
	prev, err := r.vector(qAppSpend, spec.Start, period, "application", "component", "currency")
	if err != nil {
		return nil, err
	}
	var out []Application
	for _, name := range sortedKeys(reqs, bySource(spend), bySource(prev)) {
		a := Application{Name: name, Requests: reqs[name], Successes: succ[name],
			Usage: perCurrency(spend, name+"/usage"), Subscription: perCurrency(spend, name+"/subscription"),
			Spend: Money{}, PrevSpend: Money{}}
		for k, v := range spend {
			if app, rest, _ := strings.Cut(k, "/"); app == name {
				a.Spend[rest[strings.IndexByte(rest, '/')+1:]] += v
			}
		}
		for k, v := range prev {
			if app, rest, _ := strings.Cut(k, "/"); app == name {
				a.PrevSpend[rest[strings.IndexByte(rest, '/')+1:]] += v
			}
		}
		out = append(out, a)
	}
	slices.SortStableFunc(out, func(a, b Application) int {
		return cmp.Or(cmp.Compare(b.Spend.total(), a.Spend.total()), cmp.Compare(b.Requests, a.Requests))
	})
	return out, nil
}

// total adds the amounts for ordering only: never shown.
func (m Money) total() float64 {
	var t float64
	for _, v := range m {
		t += v
	}
	return t
}

// tiers are the premium and free sources' figures.
func (r *runner) tiers(t time.Time, period time.Duration) ([]Tier, error) {
	reqs, err := r.vector(qTierRequests, t, period, "tier")
	if err != nil {
		return nil, err
	}
	succ, err := r.vector(qTierSuccesses, t, period, "tier")
	if err != nil {
		return nil, err
	}
	p95, err := r.vector(qTierP95Latency, t, period, "tier")
	if err != nil {
		return nil, err
	}
	// A source's spend goes to its tiers in proportion to its requests.
	srcTier, err := r.vector(qSourceTierRequests, t, period, "source", "tier")
	if err != nil {
		return nil, err
	}
	srcSpend, err := r.vector(qSourceSpend, t, period, "source", "currency")
	if err != nil {
		return nil, err
	}
	srcReqs := bySource(srcTier)
	spend := map[string]float64{}
	for k, n := range srcTier {
		src, tier, _ := strings.Cut(k, "/")
		if srcReqs[src] <= 0 {
			continue
		}
		for cur, v := range perCurrency(srcSpend, src) {
			spend[tier+"/"+cur] += v * n / srcReqs[src]
		}
	}
	var out []Tier
	for _, name := range sortedKeys(reqs) {
		tr := Tier{Name: name, Requests: reqs[name], Successes: succ[name], P95Latency: orNaN(p95, name),
			Spend: perCurrency(spend, name), CostPerSuccess: Money{}}
		for cur, v := range tr.Spend {
			if tr.Successes > 0 {
				tr.CostPerSuccess[cur] = v / tr.Successes
			}
		}
		out = append(out, tr)
	}
	return out, nil
}

// domains are the ten most requested domains.
func (r *runner) domains(t time.Time, period time.Duration) ([]Domain, error) {
	top, err := r.vector(qTopDomains, t, period, "domain")
	if err != nil {
		return nil, err
	}
	succ, err := r.vector(qDomainSuccesses, t, period, "domain")
	if err != nil {
		return nil, err
	}
	var out []Domain
	for name, v := range top {
		out = append(out, Domain{Name: name, Requests: v, Successes: succ[name]})
	}
	slices.SortFunc(out, func(a, b Domain) int {
		return cmp.Or(cmp.Compare(b.Requests, a.Requests), strings.Compare(a.Name, b.Name))
	})
	return out, nil
}

// degraded are the sources whose success rate fell clearly.
func (r *runner) degraded(t time.Time, period time.Duration, sources []Source) ([]Degraded, error) {
	drops, err := r.vector(qDegraded, t, period, "source")
	if err != nil {
		return nil, err
	}
	var out []Degraded
	for _, s := range sources {
		if d, ok := drops[s.Name]; ok {
			out = append(out, Degraded{Source: s.Name, Rate: ratio(s.Successes, s.Requests), PrevRate: ratio(s.PrevSuccesses, s.PrevRequests), Drop: d})
		}
	}
	slices.SortStableFunc(out, func(a, b Degraded) int { return cmp.Compare(b.Drop, a.Drop) })
	return out, nil
}
