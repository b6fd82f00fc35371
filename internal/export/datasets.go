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
// per-period summaries, read from the rollups, per source.
var summaryColumns = []Column{
	{Name: "period_start", Kind: Time},
	{Name: "period_end", Kind: Time},
	{Name: "source", Kind: String},
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
}

// summaryFields compute each summary field per source and period. Each
// query's selectors get the filters' matchers (source only where the
// family has no application label) and the period as their range.
var summaryFields = map[string]struct {
	query         string
	byApplication bool
}{
	"requests":            {`sum by (source) (increase(proxy_requests_total[1h]))`, true},
	"successes":           {`sum by (source) (increase(proxy_requests_total{outcome="success"}[1h]))`, true},
	"failures":            {`sum by (source) (increase(proxy_requests_total{outcome="failure"}[1h]))`, true},
	"avg_latency_seconds": {`sum by (source) (increase(proxy_request_duration_seconds_sum[1h])) / sum by (source) (increase(proxy_request_duration_seconds_count[1h]))`, true},
	"p50_latency_seconds": {`histogram_quantile(0.5, sum by (source, le) (increase(proxy_request_duration_seconds_bucket[1h])))`, true},
	"p95_latency_seconds": {`histogram_quantile(0.95, sum by (source, le) (increase(proxy_request_duration_seconds_bucket[1h])))`, true},
	"bytes_sent":          {`sum by (source) (increase(proxy_transfer_bytes_total{direction="sent"}[1h]))`, true},
	"bytes_received":      {`sum by (source) (increase(proxy_transfer_bytes_total{direction="received"}[1h]))`, true},
	"distinct_domains":    {`count by (source) (sum by (source, domain) (increase(proxy_requests_total[1h])) > 0)`, true},
	"sample_adjusted":     {`sum by (source) (increase(proxy_sample_adjusted_requests_total[1h])) > 0`, false},
}

// summaryQuery returns the query of a summary field for filters f over
// periods of length step: the field's query with every selector narrowed
// by the filters' matchers and every range set to step.
func summaryQuery(field string, f Filters, step time.Duration) (string, error) {
	sf := summaryFields[field]
	expr, err := parser.NewParser(parser.Options{}).ParseExpr(sf.query)
	if err != nil {
		return "", fmt.Errorf("summary %s: %w", field, err)
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
	type key struct {
		t      int64
		source string
	}
	rows := map[key]map[string]float64{}
	names := slices.Sorted(maps.Keys(summaryFields))
	for i, name := range names {
		q, err := summaryQuery(name, j.filter, step)
		if err != nil {
			return err
		}
		res, err := e.opts.Query(ctx, j.User, promql.Request{Query: q, Start: first, End: last, Step: step})
		if err != nil {
			res.Close()
			return fmt.Errorf("%s: %w", name, err)
		}
		m, ok := res.Value.(promqlengine.Matrix)
		if !ok {
			res.Close()
			return fmt.Errorf("%s: a range query answered %s", name, res.Value.Type())
		}
		for _, s := range m {
			src := s.Metric.Get("source")
			for _, p := range s.Floats {
				k := key{p.T, src}
				if rows[k] == nil {
					rows[k] = map[string]float64{}
				}
				rows[k][name] = p.F
			}
		}
		res.Close()
		progress(float64(i+1) / float64(len(names)+1))
	}
	keys := slices.SortedFunc(maps.Keys(rows), func(a, b key) int {
		if a.t != b.t {
			return cmp.Compare(a.t, b.t)
		}
		return strings.Compare(a.source, b.source)
	})
	row := make([]any, len(j.fields))
	for _, k := range keys {
		vals := rows[k]
		if vals["requests"] <= 0 {
			continue // a period without requests has no summary
		}
		end := time.UnixMilli(k.t).UTC()
		for i, f := range j.fields {
			switch f {
			case "period_start":
				row[i] = end.Add(-step)
			case "period_end":
				row[i] = end
			case "source":
				row[i] = k.source
			case "distinct_domains":
				row[i] = int64(vals[f])
			case "sample_adjusted":
				_, adjusted := vals[f]
				row[i] = adjusted
			default:
				if v, ok := vals[f]; ok {
					row[i] = v
				} else {
					row[i] = nil
				}
			}
		}
		if err := w.Write(row); err != nil {
			return err
		}
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
