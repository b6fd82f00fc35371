package promql

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/util/annotations"
)

type result struct {
	data     any
	err      *apiError
	warnings annotations.Annotations
	query    string
	finalize func()
	raw      *upstreamAnswer // the query upstream's answer, written as it came
}

type response struct {
	Status    string   `json:"status"`
	Data      any      `json:"data,omitempty"`
	ErrorType string   `json:"errorType,omitempty"`
	Error     string   `json:"error,omitempty"`
	Warnings  []string `json:"warnings,omitempty"`
	Infos     []string `json:"infos,omitempty"`
}

// wrap turns a handler into an http.HandlerFunc writing Prometheus'
// envelope.
func (a *API) wrap(f func(*http.Request) result) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			a.write(w, r, result{err: a.formError(err)})
			return
		}
		res := f(r)
		if res.finalize != nil {
			defer res.finalize()
		}
		if acc, ok := r.Context().Value(accessKey{}).(*Access); ok {
			acc.Results = resultCount(res.data)
			if res.err != nil {
				acc.Err = res.err.Error()
			}
			if res.raw != nil {
				acc.Results = res.raw.count()
				if aerr := res.raw.apiError(); aerr != nil {
					acc.Err = aerr.Error()
				}
			}
		}
		a.write(w, r, res)
	}
}

type accessKey struct{}

// audited reports each answered request to Options.Audit.
func (a *API) audited(action string, h http.HandlerFunc) http.HandlerFunc {
	if a.audit == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		acc := &Access{Action: action}
		// Here, so that r.Form is read below. ParseForm reports an error
		// once only: a second call finds the form set and returns nil.
		if err := r.ParseForm(); err != nil {
			aerr := a.formError(err)
			acc.Err = aerr.Error()
			a.write(w, r, result{err: aerr})
		} else {
			h(w, r.WithContext(context.WithValue(r.Context(), accessKey{}, acc)))
		}
		acc.Took = time.Since(start)
		acc.Start, acc.End = r.Form.Get("start"), r.Form.Get("end")
		switch {
		case r.Form.Has("query"):
			acc.Query = r.Form.Get("query")
		case len(r.Form["match[]"]) > 0:
			acc.Query = strings.Join(r.Form["match[]"], " ")
		case r.PathValue("name") != "":
			acc.Query = r.PathValue("name")
		}
		if t := r.Form.Get("time"); t != "" && acc.Start == "" {
			acc.Start, acc.End = t, t
		}
		a.audit(r.Context(), *acc)
	}
}

// resultCount is how many series, samples or names data holds.
func resultCount(data any) int {
	switch d := data.(type) {
	case queryData:
		return valueCount(d.Result)
	case nil:
		return 0
	}
	if v := reflect.ValueOf(data); v.Kind() == reflect.Slice || v.Kind() == reflect.Map {
		return v.Len()
	}
	return 1
}

// valueCount is how many series or samples a query's value holds.
func valueCount(v parser.Value) int {
	switch v := v.(type) {
	case promql.Matrix:
		return len(v)
	case promql.Vector:
		return len(v)
	case nil:
		return 0
	}
	return 1
}

func (a *API) write(w http.ResponseWriter, _ *http.Request, res result) {
	if res.raw != nil && res.err == nil {
		ct := res.raw.contentType
		if ct == "" {
			ct = "application/json"
		}
		w.Header().Set("Content-Type", ct)
		w.WriteHeader(res.raw.code)
		_, _ = w.Write(res.raw.body)
		return
	}
	resp := response{Status: "success", Data: res.data}
	resp.Warnings, resp.Infos = res.warnings.AsStrings(res.query, 10, 10)
	code := http.StatusOK
	if res.err != nil {
		resp = response{Status: "error", ErrorType: res.err.typ, Error: res.err.Error(),
			Warnings: resp.Warnings, Infos: resp.Infos}
		code = errorStatus[res.err.typ]
	}
	var b []byte
	var err error
	if qd, ok := res.data.(queryData); ok && res.err == nil {
		// Query results: written directly, as Prometheus writes them, into
		// a pooled buffer.
		bp := respBufs.Get().(*[]byte)
		defer func() {
			if cap(b) <= maxPooledResp {
				*bp = b[:0]
				respBufs.Put(bp)
			}
		}()
		b = append((*bp)[:0], `{"status":"success","data":`...)
		if b, err = appendQueryData(b, qd); err == nil {
			for _, f := range []struct {
				name string
				list []string
			}{{"warnings", resp.Warnings}, {"infos", resp.Infos}} {
				if len(f.list) == 0 {
					continue
				}
				raw, merr := json.Marshal(f.list)
				if merr != nil {
					err = merr
					break
				}
				b = append(b, `,"`+f.name+`":`...)
				b = append(b, raw...)
			}
			b = append(b, '}')
		}
	} else {
		b, err = json.Marshal(resp)
	}
	if err != nil {
		a.log.Error("encode API response", "err", err)
		http.Error(w, `{"status":"error","errorType":"internal","error":"encode response"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// respBufs holds response buffers for reuse; maxPooledResp bounds the
// ones kept.
var respBufs = sync.Pool{New: func() any { return new([]byte) }}

const maxPooledResp = 16 << 20
