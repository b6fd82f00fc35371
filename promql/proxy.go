package promql

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
)

// The query proxy: with Options.Upstream, the data endpoints check a
// request as the local ones do (parameters, the query's parse, the
// limits that can be known before it runs, the concurrency gate), then
// forward it to the upstream and answer with the upstream's status and
// bytes unchanged. Exec forwards the same way and decodes the answer
// into the engine's values, so that rules, exports and reports query the
// upstream too.

// upQuery forwards /api/v1/query.
func (a *API) upQuery(r *http.Request) result {
	if _, err := parseTimeParam(r, "time", a.now()); err != nil {
		return result{err: badData("%v", err)}
	}
	q := r.Form.Get("query")
	if aerr := a.checkQuery(q, 0, 0); aerr != nil {
		return result{err: aerr}
	}
	return a.forwardQuery(r, "/api/v1/query", q)
}

// upQueryRange forwards /api/v1/query_range.
func (a *API) upQueryRange(r *http.Request) result {
	start, end, step, aerr := a.rangeParams(r)
	if aerr != nil {
		return result{err: aerr}
	}
	q := r.Form.Get("query")
	if aerr := a.checkQuery(q, end.Sub(start), step); aerr != nil {
		return result{err: aerr}
	}
	return a.forwardQuery(r, "/api/v1/query_range", q)
}

// checkQuery refuses what the local engine would refuse before running
// q: a query that does not parse, and what preflight refuses.
func (a *API) checkQuery(q string, span, step time.Duration) *apiError {
	expr, aerr := a.parseQuery(q)
	if aerr != nil {
		return aerr
	}
	return a.preflight(expr, span, step)
}

// forwardQuery forwards a checked query with the timeout parameter set
// to the configured timeout, or the request's if shorter.
func (a *API) forwardQuery(r *http.Request, path, q string) result {
	if _, aerr := parseLimit(r); aerr != nil {
		return result{err: aerr}
	}
	d := a.cfg.Timeout
	if v := r.Form.Get("timeout"); v != "" {
		t, err := parseDuration(v)
		if err != nil {
			return result{err: badData("invalid parameter %q: %v", "timeout", err)}
		}
		d = min(d, t)
	}
	form := cloneForm(r.Form)
	form.Set("timeout", durationParam(d))
	res := a.forward(r.Context(), http.MethodPost, path, form, d)
	res.query = q
	return res
}

// upLookup forwards /api/v1/series (needMatch), /api/v1/labels and
// /api/v1/label/<name>/values after checking their parameters.
func (a *API) upLookup(path string, needMatch bool) func(*http.Request) result {
	return func(r *http.Request) result {
		sets, aerr := a.matcherSets(r)
		if aerr != nil {
			return result{err: aerr}
		}
		if needMatch && len(sets) == 0 {
			return result{err: badData("no match[] parameter provided")}
		}
		if _, _, aerr := a.timeRange(r); aerr != nil {
			return result{err: aerr}
		}
		if _, aerr := parseLimit(r); aerr != nil {
			return result{err: aerr}
		}
		return a.forward(r.Context(), http.MethodPost, path, cloneForm(r.Form), a.cfg.Timeout)
	}
}

// upLabelValues forwards /api/v1/label/<name>/values.
func (a *API) upLabelValues(r *http.Request) result {
	raw := r.PathValue("name")
	name := raw
	if len(name) > 3 && name[:3] == "U__" {
		name = model.UnescapeName(name, model.ValueEncodingEscaping)
	}
	if !model.UTF8Validation.IsValidLabelName(name) {
		return result{err: badData("invalid label name: %q", name)}
	}
	if _, aerr := a.matcherSets(r); aerr != nil {
		return result{err: aerr}
	}
	if _, _, aerr := a.timeRange(r); aerr != nil {
		return result{err: aerr}
	}
	if _, aerr := parseLimit(r); aerr != nil {
		return result{err: aerr}
	}
	return a.forward(r.Context(), http.MethodGet, "/api/v1/label/"+url.PathEscape(raw)+"/values", cloneForm(r.Form), a.cfg.Timeout)
}

// upMetadata forwards /api/v1/metadata.
func (a *API) upMetadata(r *http.Request) result {
	if _, aerr := parseLimit(r); aerr != nil {
		return result{err: aerr}
	}
	if v := r.Form.Get("limit_per_metric"); v != "" {
		if n, err := strconv.Atoi(v); err != nil || n < 0 {
			return result{err: badData("limit_per_metric must be a non-negative number, got %q", v)}
		}
	}
	return a.forward(r.Context(), http.MethodGet, "/api/v1/metadata", cloneForm(r.Form), a.cfg.Timeout)
}

// upExemplars forwards /api/v1/query_exemplars.
func (a *API) upExemplars(r *http.Request) result {
	if _, aerr := a.parseQuery(r.Form.Get("query")); aerr != nil {
		return result{err: aerr}
	}
	if _, _, aerr := a.timeRange(r); aerr != nil {
		return result{err: aerr}
	}
	return a.forward(r.Context(), http.MethodPost, "/api/v1/query_exemplars", cloneForm(r.Form), a.cfg.Timeout)
}

// forward sends form to the upstream through the concurrency gate, waiting
// at most d plus the upstream's grace, and returns its answer as it came.
func (a *API) forward(ctx context.Context, method, path string, form url.Values, d time.Duration) result {
	ans, err := a.callUpstream(ctx, method, path, form, d)
	if err != nil {
		return result{err: upstreamError(err)}
	}
	return result{raw: ans}
}

// callUpstream sends one request to the upstream with a slot of the gate.
func (a *API) callUpstream(ctx context.Context, method, path string, form url.Values, d time.Duration) (*upstreamAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, a.upstream.requestTimeout(d))
	defer cancel()
	if _, err := a.gate.Insert(ctx, ""); err != nil {
		return nil, fmt.Errorf("wait for a query slot: %w", err)
	}
	defer a.gate.Delete(0)
	return a.upstream.do(ctx, method, path, form)
}

func cloneForm(f url.Values) url.Values {
	out := make(url.Values, len(f))
	for k, v := range f {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// execUpstream is exec through the upstream: the query is forwarded and
// the answer decoded into the engine's values. exec has checked and
// parsed the query.
func (a *API) execUpstream(ctx context.Context, req Request) (*Result, error) {
	res := &Result{}
	d := a.cfg.Timeout
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl))
	}
	form := url.Values{"query": {req.Query}, "timeout": {durationParam(d)}}
	path := "/api/v1/query"
	if req.Step > 0 {
		path = "/api/v1/query_range"
		form.Set("start", formatTime(req.Start))
		form.Set("end", formatTime(req.End))
		form.Set("step", strconv.FormatFloat(req.Step.Seconds(), 'f', -1, 64))
	} else {
		form.Set("time", formatTime(req.End))
	}
	if req.LookbackDelta > 0 {
		form.Set("lookback_delta", durationParam(req.LookbackDelta))
	}
	if req.RawData {
		form.Set("max_source_resolution", "raw")
	}
	ans, err := a.callUpstream(ctx, http.MethodPost, path, form, d)
	if err != nil {
		return res, upstreamError(err)
	}
	if err := ans.decode(); err != nil {
		return res, &apiError{typ: errorExec, err: fmt.Errorf("decode the query upstream's answer: %w", err)}
	}
	for _, w := range append(ans.env.Warnings, ans.env.Infos...) {
		res.Warnings.Add(errors.New(w))
	}
	if aerr := ans.apiError(); aerr != nil {
		return res, aerr
	}
	v, err := decodeValue(ans.env.Data)
	if err != nil {
		return res, &apiError{typ: errorExec, err: fmt.Errorf("decode the query upstream's answer: %w", err)}
	}
	res.Value = v
	return res, nil
}

// formatTime formats t as the API's seconds with millisecond precision.
func formatTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', -1, 64)
}

// decodeValue decodes a query answer's data into the engine's values.
// Native histograms are refused: proxylens' own series are floats.
func decodeValue(data json.RawMessage) (parser.Value, error) {
	var qd struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(data, &qd); err != nil {
		return nil, err
	}
	errHist := errors.New("native histogram samples from the upstream are not supported here")
	switch qd.ResultType {
	case "vector":
		var in model.Vector
		if err := json.Unmarshal(qd.Result, &in); err != nil {
			return nil, err
		}
		out := make(promql.Vector, 0, len(in))
		for _, s := range in {
			if s.Histogram != nil {
				return nil, errHist
			}
			out = append(out, promql.Sample{Metric: metricLabels(s.Metric), T: int64(s.Timestamp), F: float64(s.Value)})
		}
		return out, nil
	case "matrix":
		var in model.Matrix
		if err := json.Unmarshal(qd.Result, &in); err != nil {
			return nil, err
		}
		out := make(promql.Matrix, 0, len(in))
		for _, ss := range in {
			if len(ss.Histograms) > 0 {
				return nil, errHist
			}
			s := promql.Series{Metric: metricLabels(ss.Metric), Floats: make([]promql.FPoint, len(ss.Values))}
			for i, p := range ss.Values {
				s.Floats[i] = promql.FPoint{T: int64(p.Timestamp), F: float64(p.Value)}
			}
			out = append(out, s)
		}
		return out, nil
	case "scalar":
		var in model.Scalar
		if err := json.Unmarshal(qd.Result, &in); err != nil {
			return nil, err
		}
		return promql.Scalar{T: int64(in.Timestamp), V: float64(in.Value)}, nil
	case "string":
		var in model.String
		if err := json.Unmarshal(qd.Result, &in); err != nil {
			return nil, err
		}
		return promql.String{T: int64(in.Timestamp), V: in.Value}, nil
	}
	return nil, fmt.Errorf("unknown result type %q", qd.ResultType)
}

func metricLabels(m model.Metric) labels.Labels {
	b := labels.NewScratchBuilder(len(m))
	for k, v := range m {
		b.Add(string(k), string(v))
	}
	b.Sort()
	return b.Labels()
}
