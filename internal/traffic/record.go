package traffic

import "github.com/proxylens/proxylens/otelanalytics"

// Record returns the usage record proxylens should map r to (weight 1), for
// tests of the layers below the mapping.
func (r *Request) Record() otelanalytics.Record {
	return otelanalytics.Record{
		EndTime:       r.End.UnixNano(),
		Duration:      r.End.Sub(r.Start).Nanoseconds(),
		Source:        r.Source.Name,
		Tier:          r.Source.Tier,
		Proxy:         r.Proxy,
		Application:   r.Application,
		Domain:        r.Domain,
		ErrorType:     r.ErrorType,
		Method:        otelanalytics.ParseMethod(r.Method),
		StatusCode:    uint16(r.StatusCode),
		Success:       r.Success(),
		BytesSent:     uint64(r.BytesSent),
		BytesReceived: uint64(r.BytesRecv),
		TraceID:       r.TraceID,
		SpanID:        r.SpanID,
		Weight:        1,
	}
}
