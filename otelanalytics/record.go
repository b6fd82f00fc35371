package otelanalytics

import "time"

// Record is the usage record of one proxied request. It never holds a
// credential: URLs are reduced to a domain (targets) or a host:port (proxies)
// before they reach a Record.
type Record struct {
	// EndTime is the span's end, in Unix nanoseconds: the request's event time.
	EndTime int64
	// Duration is end minus start, in nanoseconds; never negative.
	Duration int64

	Source      string // proxy.source, "unknown" when absent
	Tier        string // proxy.tier: "free", "premium" or empty
	Proxy       string // host:port of proxy.url, or empty
	Application string // app.id, else the resource's service.name
	Domain      string // target host, lower case, without port
	ErrorType   string // empty on success

	Method     Method
	StatusCode uint16 // HTTP status code, 0 when absent
	Success    bool

	BytesSent     uint64
	BytesReceived uint64

	TraceID [16]byte
	SpanID  [8]byte

	// Weight is how many requests this record stands for. A mapped span
	// carries its upstream adjusted count (1 unless the proxy sampled, see
	// AdjustedCount); a stored record carries that divided by the probability
	// with which proxylens kept it.
	Weight float64
}

// Time returns the record's end time.
func (r *Record) Time() time.Time { return time.Unix(0, r.EndTime).UTC() }

// Outcome returns "success" or "failure", the outcome label of the aggregates.
func (r *Record) Outcome() string {
	if r.Success {
		return OutcomeSuccess
	}
	return OutcomeFailure
}

// Outcome label values.
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
)

// Method is an HTTP request method, normalised as the HTTP semantic
// conventions say: known methods in upper case, anything else _OTHER.
type Method uint8

// The methods of the HTTP semantic conventions. MethodNone means the span
// carried no method at all.
const (
	MethodNone Method = iota
	MethodOther
	MethodConnect
	MethodDelete
	MethodGet
	MethodHead
	MethodOptions
	MethodPatch
	MethodPost
	MethodPut
	MethodTrace
	MethodQuery
	numMethods
)

var methodNames = [numMethods]string{
	MethodNone:    "",
	MethodOther:   "_OTHER",
	MethodConnect: "CONNECT",
	MethodDelete:  "DELETE",
	MethodGet:     "GET",
	MethodHead:    "HEAD",
	MethodOptions: "OPTIONS",
	MethodPatch:   "PATCH",
	MethodPost:    "POST",
	MethodPut:     "PUT",
	MethodTrace:   "TRACE",
	MethodQuery:   "QUERY",
}

// String returns the method as it appears in the method label.
func (m Method) String() string {
	if m >= numMethods {
		return methodNames[MethodOther]
	}
	return methodNames[m]
}

// Valid reports whether m is one of the defined methods.
func (m Method) Valid() bool { return m < numMethods }

// ParseMethod normalises an HTTP method: case-insensitively known methods map
// to their constant, an empty string to MethodNone, anything else to
// MethodOther.
func ParseMethod(s string) Method {
	if s == "" {
		return MethodNone
	}
	if len(s) > 7 {
		return MethodOther
	}
	var buf [7]byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		buf[i] = c
	}
	switch string(buf[:len(s)]) {
	case "CONNECT":
		return MethodConnect
	case "DELETE":
		return MethodDelete
	case "GET":
		return MethodGet
	case "HEAD":
		return MethodHead
	case "OPTIONS":
		return MethodOptions
	case "PATCH":
		return MethodPatch
	case "POST":
		return MethodPost
	case "PUT":
		return MethodPut
	case "TRACE":
		return MethodTrace
	case "QUERY":
		return MethodQuery
	}
	return MethodOther
}
