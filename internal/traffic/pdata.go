package traffic

import (
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// AppendSpan adds r as a client span to ss, with the attributes of the
// current HTTP semantic conventions and proxylens' proxy.* attributes.
func AppendSpan(ss ptrace.SpanSlice, r *Request) {
	s := ss.AppendEmpty()
	s.SetTraceID(r.TraceID)
	s.SetSpanID(r.SpanID)
	s.SetName(r.Method)
	s.SetKind(ptrace.SpanKindClient)
	s.SetStartTimestamp(pcommon.NewTimestampFromTime(r.Start))
	s.SetEndTimestamp(pcommon.NewTimestampFromTime(r.End))
	a := s.Attributes()
	a.EnsureCapacity(12)
	a.PutStr("proxy.source", r.Source.Name)
	a.PutStr("proxy.tier", r.Source.Tier)
	a.PutStr("proxy.url", r.ProxyURL())
	a.PutStr("app.id", r.Application)
	a.PutStr("http.request.method", r.Method)
	a.PutStr("url.full", r.URL())
	a.PutStr("server.address", r.Domain)
	a.PutInt("server.port", 443)
	if r.StatusCode != 0 {
		a.PutInt("http.response.status_code", int64(r.StatusCode))
	}
	if r.BytesSent > 0 {
		a.PutInt("http.request.body.size", r.BytesSent)
	}
	a.PutInt("http.response.body.size", r.BytesRecv)
	if r.ErrorType != "" {
		a.PutStr("error.type", r.ErrorType)
		s.Status().SetCode(ptrace.StatusCodeError)
	}
}

// Traces builds one OTLP payload of requests from a single client process.
func Traces(service string, reqs []Request) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", service)
	rs.Resource().Attributes().PutStr("telemetry.sdk.language", "go")
	ss := rs.ScopeSpans().AppendEmpty()
	ss.Scope().SetName("proxyclient")
	ss.Spans().EnsureCapacity(len(reqs))
	for i := range reqs {
		AppendSpan(ss.Spans(), &reqs[i])
	}
	return td
}
