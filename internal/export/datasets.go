package export

import (
	"cmp"
	"context"
	"encoding/hex"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	promqlengine "github.com/prometheus/prometheus/promql"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/promql"
)

// recordColumns are the records dataset's fields.
var recordColumns = []Column{
	{Name: "time", Kind: Time},
	{Name: "duration_seconds", Kind: Float},
	{Name: "source", Kind: String},
	{Name: "tier", Kind: String},
	{Name: "proxy", Kind: String},
	{Name: "application", Kind: String},
	{Name: "domain", Kind: String},
	{Name: "method", Kind: String},
	{Name: "status_code", Kind: Int},
	{Name: "success", Kind: Bool},
	{Name: "error_type", Kind: String},
	{Name: "bytes_sent", Kind: Int},
	{Name: "bytes_received", Kind: Int},
	{Name: "weight", Kind: Float},
	{Name: "trace_id", Kind: String},
	{Name: "span_id", Kind: String},
}

var datasets = map[string][]Column{
	"records": recordColumns,
	"hourly":  summaryColumns,
	"daily":   summaryColumns,
	"costs":   costColumns,
}

func columnNames(cols []Column) string {
	var names []string
	for _, c := range cols {
		names = append(names, c.Name)
	}
	return strings.Join(names, ", ")
}

func selectColumns(cols []Column, fields []string) []Column {
	out := make([]Column, 0, len(fields))
	for _, f := range fields {
		for _, c := range cols {
			if c.Name == f {
				out = append(out, c)
			}
		}
	}
	return out
}

func recordValue(r *otelanalytics.Record, field string) any {
	switch field {
	case "time":
		return time.Unix(0, r.EndTime).UTC()
	case "duration_seconds":
		return float64(r.Duration) / 1e9
	case "source":
		return r.Source
	case "tier":
		return r.Tier
	case "proxy":
		return r.Proxy
	case "application":
		return r.Application
	case "domain":
		return r.Domain
	case "method":
		return r.Method.String()
	case "status_code":
		if r.StatusCode == 0 {
			return nil
		}
		return int64(r.StatusCode)
	case "success":
		return r.Success
	case "error_type":
		return r.ErrorType
	case "bytes_sent":
		return int64(r.BytesSent)
	case "bytes_received":
		return int64(r.BytesReceived)
	case "weight":
		return r.Weight
	case "trace_id":
		if r.TraceID == ([16]byte{}) {
			return nil
		}
		return hex.EncodeToString(r.TraceID[:])
	case "span_id":
		if r.SpanID == ([8]byte{}) {
			return nil
		}
		return hex.EncodeToString(r.SpanID[:])
	}
	return nil
}

func (e *Jobs) writeRecords(ctx context.Context, j *Job, w *Writer, progress func(float64)) error {
	f := otelanalytics.RecordFilter{
		Start: j.Start, End: j.End, Sources: j.filter.Source, Applications: j.filter.Application,
		Domains: j.filter.Domain, StatusCodes: j.filter.StatusCode, Success: j.filter.Success,
		MinDuration: time.Duration(j.filter.MinLatency * 1e9), MaxDuration: time.Duration(j.filter.MaxLatency * 1e9),
	}
	row := make([]any, len(j.fields))
	span := float64(j.End.Sub(j.Start))
	n := 0
	return e.opts.Records(ctx, f, func(r *otelanalytics.Record) error {
		for i, field := range j.fields {
			row[i] = recordValue(r, field)
		}
		if n++; n%8192 == 0 {
			progress(min(0.99, float64(time.Unix(0, r.EndTime).Sub(j.Start))/span))
		}
		return w.Write(row)
	})
}

// summaryColumns are the hourly and daily datasets' fields: the product's
// per-period summaries, read from the rollups, per source and application.
var summaryColumns = []Column{
	{Name: "period_start", Kind: Time},
	{Name: "period_end", Kind: Time},
	{Name: "source", Kind: String},
	{Name: "application", Kind: String},
	{Name: "requests", Kind: Float},
	{Name: "successes", Kind: Float},
	{Name: "failures", Kind: Float},
	{Name: "avg_latency_seconds", Kind: Float},
	{Name: "p50_latency_seconds", Kind: Float},
	{Name: "p95_latency_seconds", Kind: Float},
	{Name: "bytes_sent", Kind: Float},
	{Name: "bytes_received", Kind: Float},
	{Name: "distinct_domains", Kind: Int},
	{Name: "sample_adjusted", Kind: Bool},
	{Name: "cost_usage", Kind: Float},
	{Name: "cost_subscription", Kind: Float},
	{Name: "cost_total", Kind: Float},
	{Name: "currency", Kind: String},
}

// costFigure is the summary figure of the cost columns: cost_usage,
// cost_subscription, cost_total and currency.
const costFigure = "cost"

// summaryFigures compute the summary fields per source, application and
// period: each a field, but costFigure, whose one query gives the four
// cost columns (its series by currency and component). Each query's
// selectors get the filters' matchers (source only where the family has
// no application label, and then the figure is the source's, in each of
// its rows) and the period as their range.
var summaryFigures = map[string]struct {
	query         string
	byApplication bool
}{
	"requests":            {`sum by (source, application) (increase(proxy_requests_total[1h]))`, true},
	"successes":           {`sum by (source, application) (increase(proxy_requests_total{outcome="success"}[1h]))`, true},
	"failures":            {`sum by (source, application) (increase(proxy_requests_total{outcome="failure"}[1h]))`, true},
	"avg_latency_seconds": {`sum by (source, application) (increase(proxy_request_duration_seconds_sum[1h])) / sum by (source, application) (increase(proxy_request_duration_seconds_count[1h]))`, true},
	"p50_latency_seconds": {`histogram_quantile(0.5, sum by (source, application, le) (increase(proxy_request_duration_seconds_bucket[1h])))`, true},
	"p95_latency_seconds": {`histogram_quantile(0.95, sum by (source, application, le) (increase(proxy_request_duration_seconds_bucket[1h])))`, true},
	"bytes_sent":          {`sum by (source, application) (increase(proxy_transfer_bytes_total{direction="sent"}[1h]))`, true},
	"bytes_received":      {`sum by (source, application) (increase(proxy_transfer_bytes_total{direction="received"}[1h]))`, true},
	"distinct_domains":    {`count by (source, application) (sum by (source, application, domain) (increase(proxy_requests_total[1h])) > 0)`, true},
	"sample_adjusted":     {`sum by (source) (increase(proxy_sample_adjusted_requests_total[1h])) > 0`, false},
	costFigure:            {`sum by (source, application, currency, component) (increase(proxy_cost_allocated_total[1h]))`, true},
}

// countFields are the summary fields that count: a period without a
// series of theirs counted nothing, 0.
var countFields = map[string]bool{
	"requests": true, "successes": true, "failures": true, "bytes_sent": true, "bytes_received": true, "distinct_domains": true,
}

// summaryQuery returns the query of a summary figure for filters f over
// periods of length step: the figure's query with every selector narrowed
// by the filters' matchers and every range set to step.
func summaryQuery(figure string, f Filters, step time.Duration) (string, error) {
	sf := summaryFigures[figure]
	expr, err := parser.NewParser(parser.Options{}).ParseExpr(sf.query)
	if err != nil {
		return "", fmt.Errorf("summary %s: %w", figure, err)
	}
	var ms []*labels.Matcher
	for _, m := range []struct {
		name string
		vals []string
		on   bool
	}{{"source", f.Source, true}, {"application", f.Application, sf.byApplication}} {
		if len(m.vals) == 0 || !m.on {
			continue
		}
		lm, err := labels.NewMatcher(labels.MatchRegexp, m.name, anyOf(m.vals))
		if err != nil {
			return "", fmt.Errorf("filters.%s: %w", m.name, err)
		}
		ms = append(ms, lm)
	}
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			n.LabelMatchers = append(n.LabelMatchers, ms...)
		case *parser.MatrixSelector:
			n.Range = step
		}
		return nil
	})
	return expr.String(), nil
}

// summaryKey is a row of a summary: a period, by its end (ms), a source
// and an application.
type summaryKey struct {
	t                   int64
	source, application string
}

// summaryRow is what the figures gave a summaryKey.
type summaryRow struct {
	vals  map[string]float64
	costs map[string]*[2]float64 // currency → usage, subscription
}

// summaries are the figures of a summary's periods.
type summaries struct {
	rows   map[summaryKey]*summaryRow
	source map[summaryKey]map[string]float64 // figures without application; application ""
}

func (s *summaries) row(k summaryKey) *summaryRow {
	r := s.rows[k]
	if r == nil {
		r = &summaryRow{vals: map[string]float64{}, costs: map[string]*[2]float64{}}
		s.rows[k] = r
	}
	return r
}

// add takes the series of a figure's range query.
func (s *summaries) add(figure string, m promqlengine.Matrix) {
	byApp := summaryFigures[figure].byApplication
	for _, sr := range m {
		src, app := sr.Metric.Get("source"), sr.Metric.Get("application")
		cur, comp := sr.Metric.Get("currency"), sr.Metric.Get("component")
		for _, p := range sr.Floats {
			switch {
			case !byApp:
				k := summaryKey{t: p.T, source: src}
				if s.source[k] == nil {
					s.source[k] = map[string]float64{}
				}
				s.source[k][figure] = p.F
			case figure == costFigure:
				i := 0
				switch comp {
				case otelanalytics.CostComponentUsage:
				case otelanalytics.CostComponentSubscription:
					i = 1
				default:
					continue
				}
				r := s.row(summaryKey{p.T, src, app})
				c := r.costs[cur]
				if c == nil {
					c = &[2]float64{}
					r.costs[cur] = c
				}
				c[i] += p.F
			default:
				s.row(summaryKey{p.T, src, app}).vals[figure] = p.F
			}
		}
	}
}

func (e *Jobs) writeSummaries(ctx context.Context, j *Job, w *Writer, progress func(float64)) error {
	step := time.Hour
	if j.Dataset == "daily" {
		step = 24 * time.Hour
	}
	// Periods (t − step, t] with t on the step's grid (UTC), inside the range.
	first, last := j.Start.Truncate(step).Add(step), j.End.Truncate(step)
	if last.Before(first) {
		return nil
	}
	s := summaries{rows: map[summaryKey]*summaryRow{}, source: map[summaryKey]map[string]float64{}}
	figures := slices.Sorted(maps.Keys(summaryFigures))
	for i, figure := range figures {
		q, err := summaryQuery(figure, j.filter, step)
		if err != nil {
			return err
		}
		res, err := e.opts.Query(ctx, j.User, promql.Request{Query: q, Start: first, End: last, Step: step})
		if err != nil {
			res.Close()
			return fmt.Errorf("%s: %w", figure, err)
		}
		m, ok := res.Value.(promqlengine.Matrix)
		if !ok {
			res.Close()
			return fmt.Errorf("%s: a range query answered %s", figure, res.Value.Type())
		}
		s.add(figure, m)
		res.Close()
		progress(float64(i+1) / float64(len(figures)+1))
	}
	keys := slices.SortedFunc(maps.Keys(s.rows), func(a, b summaryKey) int {
		return cmp.Or(cmp.Compare(a.t, b.t), strings.Compare(a.source, b.source), strings.Compare(a.application, b.application))
	})
	row := make([]any, len(j.fields))
	for _, k := range keys {
		r := s.rows[k]
		if r.vals["requests"] <= 0 && !r.spent() {
			continue // a period without requests or spend has no summary
		}
		srcVals := s.source[summaryKey{t: k.t, source: k.source}]
		end := time.UnixMilli(k.t).UTC()
		currencies := r.currencies()
		for n, cur := range currencies {
			for i, f := range j.fields {
				switch f {
				case "period_start":
					row[i] = end.Add(-step)
				case "period_end":
					row[i] = end
				case "source":
					row[i] = k.source
				case "application":
					row[i] = k.application
				default:
					row[i] = r.value(f, cur, n == 0, srcVals)
				}
			}
			if err := w.Write(row); err != nil {
				return err
			}
		}
	}
	return nil
}

// currencies returns the currencies of the row's rows: those spent in,
// sorted; else the first of its cost series (a model that priced its
// requests at 0); else "", no model. A period spent in two currencies
// (its source's model changed currency) has a row in each.
func (r *summaryRow) currencies() []string {
	all := slices.Sorted(maps.Keys(r.costs))
	spent := slices.DeleteFunc(slices.Clone(all), func(cur string) bool { return *r.costs[cur] == [2]float64{} })
	switch {
	case len(spent) > 0:
		return spent
	case len(all) > 0:
		return all[:1]
	}
	return []string{""}
}

// spent reports whether the row has spend in any currency.
func (r *summaryRow) spent() bool {
	for _, c := range r.costs {
		if c[0] != 0 || c[1] != 0 {
			return true
		}
	}
	return false
}

// value returns a summary field of the row in currency cur ("": the
// source has no model). The figures without currency are in the first
// row of a key only (first), so that no sum counts them twice; those
// without application come from the source's figures, srcVals.
func (r *summaryRow) value(field, cur string, first bool, srcVals map[string]float64) any {
	switch field {
	case "cost_usage", "cost_subscription", "cost_total", "currency":
		c := r.costs[cur]
		switch {
		case c == nil:
			return nil
		case field == "cost_usage":
			return c[0]
		case field == "cost_subscription":
			return c[1]
		case field == "cost_total":
			return c[0] + c[1]
		}
		return cur
	}
	if !first {
		return nil
	}
	switch field {
	case "sample_adjusted":
		_, adjusted := srcVals[field]
		return adjusted
	case "distinct_domains":
		return int64(r.vals[field])
	}
	if v, ok := r.vals[field]; ok {
		return v
	}
	if countFields[field] {
		return 0.0
	}
	return nil
}

// anyOf is a regex matcher value for a list of exact values.
func anyOf(vals []string) string {
	q := make([]string, len(vals))
	for i, v := range vals {
		q[i] = regexp.QuoteMeta(v)
	}
	return strings.Join(q, "|")
}

// costColumns are the costs dataset's fields: a cost model's.
var costColumns = []Column{
	{Name: "source", Kind: String},
	{Name: "model", Kind: String},
	{Name: "currency", Kind: String},
	{Name: "from", Kind: Time},
	{Name: "until", Kind: Time},
	{Name: "per_request", Kind: Float},
	{Name: "per_gb", Kind: Float},
	{Name: "subscription", Kind: Float},
	{Name: "period", Kind: String},
}

// writeCosts writes the cost models in force over the job's range, those
// whose validity [from, until) overlaps [start, end), of the sources of
// the source filter (all without one), sorted by source then from. The
// other filters select requests, which a model is not: they are ignored,
// as the summaries ignore those they cannot apply.
func (e *Jobs) writeCosts(j *Job, w *Writer) error {
	if e.opts.Costs == nil {
		return nil
	}
	models := e.opts.Costs()
	slices.SortStableFunc(models, func(a, b otelanalytics.CostModel) int {
		return cmp.Or(strings.Compare(a.Source, b.Source), a.From.Compare(b.From))
	})
	row := make([]any, len(j.fields))
	for _, m := range models {
		if len(j.filter.Source) > 0 && !slices.Contains(j.filter.Source, m.Source) {
			continue
		}
		if !m.From.Before(j.End) || (m.Until != nil && !m.Until.After(j.Start)) {
			continue
		}
		for i, f := range j.fields {
			row[i] = costValue(&m, f)
		}
		if err := w.Write(row); err != nil {
			return err
		}
	}
	return nil
}

// costValue returns a field of the costs dataset: nil for a price or
// period the model has not, and for the until of a model still valid.
func costValue(m *otelanalytics.CostModel, field string) any {
	price := func(p *float64) any {
		if p == nil {
			return nil
		}
		return *p
	}
	str := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	switch field {
	case "source":
		return m.Source
	case "model":
		return m.Model
	case "currency":
		return str(m.Currency)
	case "from":
		return m.From.UTC()
	case "until":
		if m.Until == nil {
			return nil
		}
		return m.Until.UTC()
	case "per_request":
		return price(m.PerRequest)
	case "per_gb":
		return price(m.PerGB)
	case "subscription":
		return price(m.Subscription)
	case "period":
		return str(m.Period)
	}
	return nil
}
