package peers

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/proxylens/proxylens/internal/jsonstr"
	"github.com/proxylens/proxylens/otelanalytics"
)

// The wire format of GET /api/v1/peer/records: NDJSON, one line a record
// in end-time order,
//
//	{"t":END_NS,"d":DURATION_NS,"source":…,"tier":…,"proxy":…,"application":…,
//	 "domain":…,"method":…,"status_code":…,"success":…,"error_type":…,
//	 "bytes_sent":…,"bytes_received":…,"weight":…,"trace_id":…,"span_id":…}
//
// with times and durations as integer nanoseconds so that they come back
// exactly; then one last line, {"end":{"records":N}} when every record
// was sent, or {"error":"…"} when the scan failed after the answer began.
// A stream that ends without either was cut short.

// ContentType is the Content-Type of a peer records stream.
const ContentType = "application/x-ndjson"

// RecordsPath is the peer records endpoint, relative to the API root.
const RecordsPath = "/api/v1/peer/records"

// maxLine bounds one line of a stream; a record is a few hundred bytes.
const maxLine = 1 << 20

// wireLine is a line of the stream as it is decoded.
type wireLine struct {
	T             *int64   `json:"t"`
	D             int64    `json:"d"`
	Source        string   `json:"source"`
	Tier          string   `json:"tier"`
	Proxy         string   `json:"proxy"`
	Application   string   `json:"application"`
	Domain        string   `json:"domain"`
	Method        string   `json:"method"`
	StatusCode    uint16   `json:"status_code"`
	Success       bool     `json:"success"`
	ErrorType     string   `json:"error_type"`
	BytesSent     uint64   `json:"bytes_sent"`
	BytesReceived uint64   `json:"bytes_received"`
	Weight        *float64 `json:"weight"`
	TraceID       string   `json:"trace_id"`
	SpanID        string   `json:"span_id"`
	End           *struct {
		Records int64 `json:"records"`
	} `json:"end"`
	Error *string `json:"error"`
}

// AppendRecord appends r as one line of the stream, newline included.
func AppendRecord(b []byte, r *otelanalytics.Record) []byte {
	b = append(b, `{"t":`...)
	b = strconv.AppendInt(b, r.EndTime, 10)
	b = append(b, `,"d":`...)
	b = strconv.AppendInt(b, r.Duration, 10)
	for _, f := range [...]struct{ key, val string }{
		{`,"source":`, r.Source}, {`,"tier":`, r.Tier}, {`,"proxy":`, r.Proxy},
		{`,"application":`, r.Application}, {`,"domain":`, r.Domain}, {`,"method":`, r.Method.String()},
	} {
		b = append(b, f.key...)
		b = jsonstr.AppendString(b, f.val)
	}
	b = append(b, `,"status_code":`...)
	b = strconv.AppendUint(b, uint64(r.StatusCode), 10)
	b = append(b, `,"success":`...)
	b = strconv.AppendBool(b, r.Success)
	b = append(b, `,"error_type":`...)
	b = jsonstr.AppendString(b, r.ErrorType)
	b = append(b, `,"bytes_sent":`...)
	b = strconv.AppendUint(b, r.BytesSent, 10)
	b = append(b, `,"bytes_received":`...)
	b = strconv.AppendUint(b, r.BytesReceived, 10)
	b = append(b, `,"weight":`...)
	if math.IsNaN(r.Weight) || math.IsInf(r.Weight, 0) {
		b = append(b, "null"...) // not a JSON number; never a stored weight
	} else {
		b = strconv.AppendFloat(b, r.Weight, 'g', -1, 64)
	}
	if r.TraceID != ([16]byte{}) {
		b = append(b, `,"trace_id":"`...)
		b = hex.AppendEncode(b, r.TraceID[:])
		b = append(b, '"')
	}
	if r.SpanID != ([8]byte{}) {
		b = append(b, `,"span_id":"`...)
		b = hex.AppendEncode(b, r.SpanID[:])
		b = append(b, '"')
	}
	return append(b, '}', '\n')
}

// AppendEnd appends the end line of a stream of n records.
func AppendEnd(b []byte, n int64) []byte {
	b = append(b, `{"end":{"records":`...)
	b = strconv.AppendInt(b, n, 10)
	return append(b, '}', '}', '\n')
}

// AppendError appends the line that ends a stream whose scan failed.
func AppendError(b []byte, err error) []byte {
	b = append(b, `{"error":`...)
	b = jsonstr.AppendString(b, err.Error())
	return append(b, '}', '\n')
}

// errBadLine is wrapped by the errors of decodeLine.
var errBadLine = errors.New("not a line of a peer records stream")

// lineKind is what a decoded line is.
type lineKind int

const (
	lineRecord lineKind = iota
	lineEnd
	lineError
)

// decodeLine decodes one line into r (a record), or returns the end
// line's count or the error line's message.
func decodeLine(line []byte, w *wireLine, r *otelanalytics.Record, in interner) (lineKind, int64, string, error) {
	if in != nil && fastRecord(line, r, in) {
		return lineRecord, 0, "", nil
	}
	*w = wireLine{}
	if err := json.Unmarshal(line, w); err != nil {
		return 0, 0, "", fmt.Errorf("%w: %w", errBadLine, err)
	}
	switch {
	case w.Error != nil:
		return lineError, 0, *w.Error, nil
	case w.End != nil:
		return lineEnd, w.End.Records, "", nil
	case w.T == nil:
		return 0, 0, "", fmt.Errorf("%w: no end time (t)", errBadLine)
	}
	*r = otelanalytics.Record{
		EndTime: *w.T, Duration: w.D, Source: w.Source, Tier: w.Tier, Proxy: w.Proxy,
		Application: w.Application, Domain: w.Domain, ErrorType: w.ErrorType,
		Method: otelanalytics.ParseMethod(w.Method), StatusCode: w.StatusCode, Success: w.Success,
		BytesSent: w.BytesSent, BytesReceived: w.BytesReceived,
	}
	if w.Weight != nil {
		r.Weight = *w.Weight
	}
	if w.TraceID != "" {
		if n, err := hex.Decode(r.TraceID[:], []byte(w.TraceID)); err != nil || n != len(r.TraceID) || len(w.TraceID) != 2*len(r.TraceID) {
			return 0, 0, "", fmt.Errorf("%w: trace_id %q is not 32 hex digits", errBadLine, w.TraceID)
		}
	}
	if w.SpanID != "" {
		if n, err := hex.Decode(r.SpanID[:], []byte(w.SpanID)); err != nil || n != len(r.SpanID) || len(w.SpanID) != 2*len(r.SpanID) {
			return 0, 0, "", fmt.Errorf("%w: span_id %q is not 16 hex digits", errBadLine, w.SpanID)
		}
	}
	return lineRecord, 0, "", nil
}

// The query parameters of the peer records endpoint: the record filter.
const (
	paramStart       = "start" // RFC 3339 with nanoseconds
	paramEnd         = "end"
	paramSource      = "source" // repeated: any of them
	paramApplication = "application"
	paramDomain      = "domain"
	paramStatusCode  = "status_code"
	paramSuccess     = "success"         // true or false
	paramMinDuration = "min_duration_ns" // inclusive
	paramMaxDuration = "max_duration_ns" // inclusive; 0: no bound
)

// FilterQuery encodes f as the endpoint's query parameters.
func FilterQuery(f otelanalytics.RecordFilter) url.Values {
	q := url.Values{}
	if !f.Start.IsZero() {
		q.Set(paramStart, f.Start.UTC().Format(time.RFC3339Nano))
	}
	if !f.End.IsZero() {
		q.Set(paramEnd, f.End.UTC().Format(time.RFC3339Nano))
	}
	q[paramSource] = slices.Clone(f.Sources)
	q[paramApplication] = slices.Clone(f.Applications)
	q[paramDomain] = slices.Clone(f.Domains)
	for _, c := range f.StatusCodes {
		q.Add(paramStatusCode, strconv.Itoa(int(c)))
	}
	if f.Success != nil {
		q.Set(paramSuccess, strconv.FormatBool(*f.Success))
	}
	if f.MinDuration != 0 {
		q.Set(paramMinDuration, strconv.FormatInt(int64(f.MinDuration), 10))
	}
	if f.MaxDuration != 0 {
		q.Set(paramMaxDuration, strconv.FormatInt(int64(f.MaxDuration), 10))
	}
	for k, v := range q {
		if len(v) == 0 {
			delete(q, k)
		}
	}
	return q
}

// ParseFilter decodes the endpoint's query parameters; an unknown
// parameter or a bad value is an error naming it.
func ParseFilter(q url.Values) (otelanalytics.RecordFilter, error) {
	var (
		f    otelanalytics.RecordFilter
		errs []error
	)
	one := func(name string) (string, bool) {
		v := q[name]
		if len(v) > 1 {
			errs = append(errs, fmt.Errorf("%s: given %d times", name, len(v)))
		}
		if len(v) == 0 {
			return "", false
		}
		return v[0], true
	}
	for name := range q {
		switch name {
		case paramStart, paramEnd, paramSource, paramApplication, paramDomain, paramStatusCode,
			paramSuccess, paramMinDuration, paramMaxDuration:
		default:
			errs = append(errs, fmt.Errorf("%s: unknown parameter", name))
		}
	}
	for _, p := range []struct {
		name string
		t    *time.Time
	}{{paramStart, &f.Start}, {paramEnd, &f.End}} {
		if s, ok := one(p.name); ok {
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %q is not an RFC 3339 time", p.name, s))
			}
			*p.t = t
		}
	}
	f.Sources, f.Applications, f.Domains = q[paramSource], q[paramApplication], q[paramDomain]
	for _, s := range q[paramStatusCode] {
		c, err := strconv.ParseUint(s, 10, 16)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not a status code", paramStatusCode, s))
		}
		f.StatusCodes = append(f.StatusCodes, uint16(c))
	}
	if s, ok := one(paramSuccess); ok {
		b, err := strconv.ParseBool(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not true or false", paramSuccess, s))
		}
		f.Success = &b
	}
	for _, p := range []struct {
		name string
		d    *time.Duration
	}{{paramMinDuration, &f.MinDuration}, {paramMaxDuration, &f.MaxDuration}} {
		if s, ok := one(p.name); ok {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n < 0 {
				errs = append(errs, fmt.Errorf("%s: %q is not a whole number of nanoseconds >= 0", p.name, s))
			}
			*p.d = time.Duration(n)
		}
	}
	if !f.Start.IsZero() && !f.End.IsZero() && !f.End.After(f.Start) {
		errs = append(errs, fmt.Errorf("%s: must be after %s", paramEnd, paramStart))
	}
	return f, errors.Join(errs...)
}
