package otelanalytics

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ValueKind is the type of an attribute value.
type ValueKind uint8

// Attribute value kinds. KindOther covers bytes, arrays and maps, which no
// mapped attribute uses.
const (
	KindEmpty ValueKind = iota
	KindString
	KindInt
	KindDouble
	KindBool
	KindOther
)

// Value is an attribute value as a decoder hands it to the mapper. Str may
// alias the request buffer.
type Value struct {
	Kind  ValueKind
	Str   string
	Int   int64
	Float float64
}

// StringValue, IntValue and DoubleValue build a Value.
func StringValue(s string) Value    { return Value{Kind: KindString, Str: s} }
func IntValue(i int64) Value        { return Value{Kind: KindInt, Int: i} }
func DoubleValue(f float64) Value   { return Value{Kind: KindDouble, Float: f} }
func (v Value) str() (string, bool) { return v.Str, v.Kind == KindString }

// int returns the value as an integer: ints, integral doubles and decimal
// strings all count, since clients differ.
func (v Value) int() (int64, bool) {
	switch v.Kind {
	case KindInt:
		return v.Int, true
	case KindDouble:
		if v.Float == float64(int64(v.Float)) {
			return int64(v.Float), true
		}
	case KindString:
		if n, err := strconv.ParseInt(v.Str, 10, 64); err == nil {
			return n, true
		}
	}
	return 0, false
}

// The attribute keys the mapper reads: current HTTP semantic conventions
// first, then the older ones they replaced.
const (
	AttrProxySource     = "proxy.source"
	AttrProxyURL        = "proxy.url"
	AttrProxyTier       = "proxy.tier"
	AttrAppID           = "app.id"
	AttrServiceName     = "service.name"
	AttrServerAddress   = "server.address"
	AttrURLFull         = "url.full"
	AttrMethod          = "http.request.method"
	AttrStatusCode      = "http.response.status_code"
	AttrErrorType       = "error.type"
	AttrRequestSize     = "http.request.body.size"
	AttrResponseSize    = "http.response.body.size"
	attrOldURL          = "http.url"
	attrOldHost         = "http.host"
	attrOldPeerName     = "net.peer.name"
	attrOldMethod       = "http.method"
	attrOldStatusCode   = "http.status_code"
	attrOldRequestSize  = "http.request_content_length"
	attrOldResponseSize = "http.response_content_length"
)

// SpanAttrs collects the attributes of one span (or of its resource) that the
// mapping uses. The zero value is empty; Reset makes it empty again.
type SpanAttrs struct {
	selected bool

	source, proxyURL, tier, appID, serviceName     string
	serverAddress, urlFull, oldURL, host, peerName string
	method, oldMethod, errorType                   string
	status, oldStatus                              int64
	reqSize, respSize, oldReqSize, oldRespSize     int64
	hasStatus, hasOldStatus                        bool
	hasReqSize, hasRespSize, hasOldReq, hasOldResp bool
}

// Reset empties a for reuse.
func (a *SpanAttrs) Reset() { *a = SpanAttrs{} }

// SpanInfo is what the mapper needs of a span besides its attributes.
type SpanInfo struct {
	StartTime  uint64 // Unix nanoseconds
	EndTime    uint64 // Unix nanoseconds
	StatusCode int32  // OTLP status code: 0 unset, 1 ok, 2 error
	TraceID    [16]byte
	SpanID     [8]byte
	TraceState string
}

// OTLP span status codes.
const (
	StatusUnset int32 = 0
	StatusOK    int32 = 1
	StatusError int32 = 2
)

// MappingConfig configures the span → record mapping.
type MappingConfig struct {
	// Selector lists attribute keys (span or resource) whose presence makes a
	// span a proxied request. Default: proxy.source and proxy.url.
	Selector []string `yaml:"selector"`
	// MaxClockSkew is how far in the future a span may end and still be
	// accepted. Zero means the default, 10 minutes.
	MaxClockSkew time.Duration `yaml:"max_clock_skew"`
}

// DefaultMappingConfig returns the default mapping configuration.
func DefaultMappingConfig() MappingConfig {
	return MappingConfig{
		Selector:     []string{AttrProxySource, AttrProxyURL},
		MaxClockSkew: 10 * time.Minute,
	}
}

// Validate reports every problem of c at once.
func (c MappingConfig) Validate() error {
	var errs []error
	if len(c.Selector) == 0 {
		errs = append(errs, fmt.Errorf("mapping.selector: must list at least one attribute key"))
	}
	for i, k := range c.Selector {
		if strings.TrimSpace(k) == "" {
			errs = append(errs, fmt.Errorf("mapping.selector[%d]: empty attribute key", i))
		}
	}
	if c.MaxClockSkew < 0 {
		errs = append(errs, fmt.Errorf("mapping.max_clock_skew: must not be negative, got %q", c.MaxClockSkew.String()))
	}
	return errors.Join(errs...)
}

// Mapper maps spans to records. It is immutable and safe for concurrent use.
type Mapper struct {
	selector []string
	// selectByKey is true when the selector is the default one, whose keys
	// the attribute switch recognises without a loop.
	selectByKey bool
	maxSkew     int64
	now         func() time.Time
}

// NewMapper returns a mapper for cfg; now supplies the current time (nil
// means time.Now).
func NewMapper(cfg MappingConfig, now func() time.Time) *Mapper {
	if now == nil {
		now = time.Now
	}
	skew := cfg.MaxClockSkew
	if skew == 0 {
		skew = DefaultMappingConfig().MaxClockSkew
	}
	sel := cfg.Selector
	if len(sel) == 0 {
		sel = DefaultMappingConfig().Selector
	}
	def := DefaultMappingConfig().Selector
	return &Mapper{
		selector:    append([]string(nil), sel...),
		selectByKey: len(sel) == len(def) && sel[0] == def[0] && sel[1] == def[1],
		maxSkew:     int64(skew),
		now:         now,
	}
}

// Now returns the mapper's current time in Unix nanoseconds.
func (m *Mapper) Now() int64 { return m.now().UnixNano() }

// SetAttr records one attribute of a span or resource in a. Keys the mapping
// does not use are ignored. Values are not copied.
func (m *Mapper) SetAttr(a *SpanAttrs, key string, v Value) {
	if !m.selectByKey && !a.selected {
		for _, k := range m.selector {
			if k == key {
				a.selected = true
				break
			}
		}
	}
	// The first occurrence of a key wins, as in pdata's attribute maps.
	switch key {
	case AttrProxySource:
		a.selected = a.selected || m.selectByKey
		setStr(&a.source, v)
	case AttrProxyURL:
		a.selected = a.selected || m.selectByKey
		setStr(&a.proxyURL, v)
	case AttrProxyTier:
		setStr(&a.tier, v)
	case AttrAppID:
		setStr(&a.appID, v)
	case AttrServiceName:
		setStr(&a.serviceName, v)
	case AttrServerAddress:
		setStr(&a.serverAddress, v)
	case AttrURLFull:
		setStr(&a.urlFull, v)
	case attrOldURL:
		setStr(&a.oldURL, v)
	case attrOldHost:
		setStr(&a.host, v)
	case attrOldPeerName:
		setStr(&a.peerName, v)
	case AttrMethod:
		setStr(&a.method, v)
	case attrOldMethod:
		setStr(&a.oldMethod, v)
	case AttrErrorType:
		if a.errorType == "" {
			a.errorType = errorTypeOf(v)
		}
	case AttrStatusCode:
		setInt(&a.status, &a.hasStatus, v)
	case attrOldStatusCode:
		setInt(&a.oldStatus, &a.hasOldStatus, v)
	case AttrRequestSize:
		setInt(&a.reqSize, &a.hasReqSize, v)
	case AttrResponseSize:
		setInt(&a.respSize, &a.hasRespSize, v)
	case attrOldRequestSize:
		setInt(&a.oldReqSize, &a.hasOldReq, v)
	case attrOldResponseSize:
		setInt(&a.oldRespSize, &a.hasOldResp, v)
	}
}

func setStr(dst *string, v Value) {
	if *dst == "" && v.Kind == KindString {
		*dst = v.Str
	}
}

func setInt(dst *int64, has *bool, v Value) {
	if !*has {
		*dst, *has = v.int()
	}
}

// errorTypeOf accepts error.type as a string, or as a number from clients
// that put a status code there.
func errorTypeOf(v Value) string {
	switch v.Kind {
	case KindString:
		return v.Str
	case KindInt:
		return strconv.FormatInt(v.Int, 10)
	}
	return ""
}

// Rejection says why a selected span could not be mapped.
type Rejection uint8

// Reasons a span cannot be mapped.
const (
	Accepted Rejection = iota
	NotSelected
	RejectNoTimestamps
	RejectEndBeforeStart
	RejectFuture
	NumRejections
)

var rejectionText = [NumRejections]string{
	Accepted:             "accepted",
	NotSelected:          "not a proxied request",
	RejectNoTimestamps:   "missing start or end time",
	RejectEndBeforeStart: "end time before start time",
	RejectFuture:         "end time too far in the future",
}

var rejectionLabel = [NumRejections]string{
	Accepted:             "accepted",
	NotSelected:          "not_selected",
	RejectNoTimestamps:   "no_timestamps",
	RejectEndBeforeStart: "end_before_start",
	RejectFuture:         "future",
}

// String describes the rejection for people (partial_success messages).
func (r Rejection) String() string { return rejectionText[r] }

// Label is the rejection as a metric label value.
func (r Rejection) Label() string { return rejectionLabel[r] }

// Map maps a span to a record. res holds the resource's attributes, span the
// span's own; span attributes win. now is the current time in Unix
// nanoseconds (see Now). The record's strings may alias the attribute values.
func (m *Mapper) Map(res, span *SpanAttrs, info *SpanInfo, now int64) (Record, Rejection) {
	var r Record
	if !span.selected && !res.selected {
		return r, NotSelected
	}
	if info.StartTime == 0 || info.EndTime == 0 || info.EndTime > 1<<63-1 {
		return r, RejectNoTimestamps
	}
	if info.EndTime < info.StartTime {
		return r, RejectEndBeforeStart
	}
	end := int64(info.EndTime)
	if end > now+m.maxSkew {
		return r, RejectFuture
	}
	r.EndTime = end
	r.Duration = int64(info.EndTime - info.StartTime)
	r.TraceID = info.TraceID
	r.SpanID = info.SpanID
	r.Weight = AdjustedCount(info.TraceState)

	r.Source = cleanLabel(pick(span.source, res.source))
	if r.Source == "" {
		r.Source = "unknown"
	}
	r.Tier = cleanLabel(strings.ToLower(pick(span.tier, res.tier)))
	if u := pick(span.proxyURL, res.proxyURL); u != "" {
		r.Proxy = ProxyOf(u)
	}
	r.Application = cleanLabel(pick(pick(span.appID, res.appID), res.serviceName))
	r.Domain = domainOf(span)
	if r.Domain == "" {
		r.Domain = domainOf(res)
	}

	method := pick(span.method, span.oldMethod)
	if method == "" {
		method = pick(res.method, res.oldMethod)
	}
	r.Method = ParseMethod(method)

	status, ok := span.status, span.hasStatus
	if !ok {
		status, ok = span.oldStatus, span.hasOldStatus
	}
	if ok && status >= 100 && status <= 599 {
		r.StatusCode = uint16(status)
	}

	r.ErrorType = cleanLabel(span.errorType)
	switch {
	case r.ErrorType != "":
	case r.StatusCode >= 400:
		r.ErrorType = statusText(r.StatusCode)
	case info.StatusCode == StatusError:
		r.ErrorType = "_OTHER"
	}
	r.Success = r.ErrorType == ""

	r.BytesSent = size(span.reqSize, span.hasReqSize, span.oldReqSize, span.hasOldReq)
	r.BytesReceived = size(span.respSize, span.hasRespSize, span.oldRespSize, span.hasOldResp)
	return r, Accepted
}

func pick(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// domainOf picks the target domain: server.address, the host of url.full,
// then the older http.url, http.host and net.peer.name.
func domainOf(a *SpanAttrs) string {
	for _, s := range [...]string{a.serverAddress, a.urlFull, a.oldURL, a.host, a.peerName} {
		if s != "" {
			if d := DomainOf(s); d != "" {
				return d
			}
		}
	}
	return ""
}

func size(v int64, ok bool, old int64, oldOK bool) uint64 {
	if !ok {
		v, ok = old, oldOK
	}
	if !ok || v < 0 {
		return 0
	}
	return uint64(v)
}

// statusTexts holds "100".."599" so that error types of status codes need no
// allocation.
var statusTexts = func() (t [600]string) {
	for i := 100; i < len(t); i++ {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

func statusText(code uint16) string {
	if int(code) < len(statusTexts) {
		return statusTexts[code]
	}
	return strconv.Itoa(int(code))
}
