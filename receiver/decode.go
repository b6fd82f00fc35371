package receiver

import (
	"fmt"

	"github.com/proxylens/proxylens/otelanalytics"
)

// decoder walks an OTLP ExportTraceServiceRequest in protobuf wire format.
// It validates the whole message as pdata does, but materialises only what
// the mapping reads: the attributes it knows, times, ids, status and trace
// state, as strings that alias the request buffer. A decoder is reused
// across requests by one goroutine at a time.
//
// Each message has one function, which loops over its fields (see field)
// and carries the message's definition from opentelemetry-proto; this file
// holds the request, resource, scope and span levels, decode_attrs.go the
// attributes.
type decoder struct {
	m   *otelanalytics.Mapper
	now int64

	res  otelanalytics.SpanAttrs
	span otelanalytics.SpanAttrs
	info otelanalytics.SpanInfo

	// Fields of the current ResourceSpans, read after it has been walked.
	// Like the strings in res, span and info, they alias the request
	// until the decoder's next one.
	resources, scopes, deprecated [][]byte

	recs  []otelanalytics.Record
	stats decodeStats
}

// decodeStats counts what one request held.
type decodeStats struct {
	spans    int
	rejected [otelanalytics.NumRejections]int // by reason; NotSelected included
}

func (s *decodeStats) rejectedTotal() int {
	n := 0
	for r, c := range s.rejected {
		if otelanalytics.Rejection(r) != otelanalytics.NotSelected {
			n += c
		}
	}
	return n
}

func (d *decoder) reset(now int64) {
	d.now = now
	d.recs = d.recs[:0]
	d.stats = decodeStats{}
}

// decode maps every span of src, appending records to d.recs.
//
//	message ExportTraceServiceRequest {
//	  repeated opentelemetry.proto.trace.v1.ResourceSpans resource_spans = 1;
//	}
func (d *decoder) decode(src []byte) (err error) {
	var f field
	for len(src) > 0 {
		if src, err = f.next(src); err != nil {
			return err
		}
		switch f.num {
		case 1:
			b, ok := f.bytes()
			if !ok {
				return f.wrongType("ExportTraceServiceRequest", "resource_spans")
			}
			if err := d.resourceSpans(b); err != nil {
				return err
			}
		}
	}
	return nil
}

// resourceSpans maps the spans of one resource. pdata still reads field
// 1000, reserved since the scope spans were called instrumentation library
// spans, as deprecated_scope_spans.
//
//	message ResourceSpans {
//	  reserved 1000;
//	  opentelemetry.proto.resource.v1.Resource resource = 1;
//	  repeated ScopeSpans scope_spans = 2;
//	  string schema_url = 3;
//	}
func (d *decoder) resourceSpans(src []byte) (err error) {
	d.res.Reset()
	d.resources, d.scopes, d.deprecated = d.resources[:0], d.scopes[:0], d.deprecated[:0]
	var f field
	for len(src) > 0 {
		if src, err = f.next(src); err != nil {
			return err
		}
		switch f.num {
		case 1:
			b, ok := f.bytes()
			if !ok {
				return f.wrongType("ResourceSpans", "resource")
			}
			d.resources = append(d.resources, b)
		case 2:
			b, ok := f.bytes()
			if !ok {
				return f.wrongType("ResourceSpans", "scope_spans")
			}
			d.scopes = append(d.scopes, b)
		case 3:
			if _, ok := f.bytes(); !ok {
				return f.wrongType("ResourceSpans", "schema_url")
			}
		case 1000:
			b, ok := f.bytes()
			if !ok {
				return f.wrongType("ResourceSpans", "deprecated_scope_spans")
			}
			d.deprecated = append(d.deprecated, b)
		}
	}
	// The resource is read first wherever it stands in the message, since
	// its attributes complete those of every span.
	for _, b := range d.resources {
		if err := d.resource(b); err != nil {
			return err
		}
	}
	// As pdata does, the deprecated field-1000 scope spans count only when
	// there are no current ones; they are validated all the same.
	current := len(d.scopes) > 0
	for _, b := range d.deprecated {
		if err := d.scopeSpans(b, !current); err != nil {
			return err
		}
	}
	for _, b := range d.scopes {
		if err := d.scopeSpans(b, true); err != nil {
			return err
		}
	}
	return nil
}

// resource reads the resource attributes into d.res.
//
//	message Resource {
//	  repeated opentelemetry.proto.common.v1.KeyValue attributes = 1;
//	  uint32 dropped_attributes_count = 2;
//	  repeated opentelemetry.proto.common.v1.EntityRef entity_refs = 3;
//	}
func (d *decoder) resource(src []byte) (err error) {
	var f field
	for len(src) > 0 {
		if src, err = f.next(src); err != nil {
			return err
		}
		switch f.num {
		case 1:
			b, ok := f.bytes()
			if !ok {
				return f.wrongType("Resource", "attributes")
			}
			if err := d.attribute(b, &d.res); err != nil {
				return err
			}
		case 2:
			if _, ok := f.varint(); !ok {
				return f.wrongType("Resource", "dropped_attributes_count")
			}
		case 3:
			b, ok := f.bytes()
			if !ok {
				return f.wrongType("Resource", "entity_refs")
			}
			if err := entityRef(b); err != nil {
				return err
			}
		}
	}
	return nil
}

// entityRef validates an entity reference, which the mapping does not read.
//
//	message EntityRef {
//	  string schema_url = 1;
//	  string type = 2;
//	  repeated string id_keys = 3;
//	  repeated string description_keys = 4;
//	}
func entityRef(src []byte) (err error) {
	var f field
	for len(src) > 0 {
		if src, err = f.next(src); err != nil {
			return err
		}
		if f.num >= 1 && f.num <= 4 {
			if _, ok := f.bytes(); !ok {
				return f.wrongType("EntityRef", [...]string{"", "schema_url", "type", "id_keys", "description_keys"}[f.num])
			}
		}
	}
	return nil
}

// scopeSpans maps the spans of one scope, or only validates them when map_
// is false.
//
//	message ScopeSpans {
//	  opentelemetry.proto.common.v1.InstrumentationScope scope = 1;
//	  repeated Span spans = 2;
//	  string schema_url = 3;
//	}
func (d *decoder) scopeSpans(src []byte, map_ bool) (err error) {
	var f field
	for len(src) > 0 {
		if src, err = f.next(src); err != nil {
			return err
		}
		switch f.num {
		case 1:
			b, ok := f.bytes()
			if !ok {
				return f.wrongType("ScopeSpans", "scope")
			}
			if err := scope(b); err != nil {
				return err
			}
		case 2:
			b, ok := f.bytes()
			if !ok {
				return f.wrongType("ScopeSpans", "spans")
			}
			if err := d.spanMsg(b, map_); err != nil {
				return err
			}
		case 3:
			if _, ok := f.bytes(); !ok {
				return f.wrongType("ScopeSpans", "schema_url")
			}
		}
	}
	return nil
}

// scope validates an instrumentation scope, which the mapping does not read.
//
//	message InstrumentationScope {
//	  string name = 1;
//	  string version = 2;
//	  repeated KeyValue attributes = 3;
//	  uint32 dropped_attributes_count = 4;
//	}
func scope(src []byte) (err error) {
	var f field
	for len(src) > 0 {
		if src, err = f.next(src); err != nil {
			return err
		}
		switch f.num {
		case 1, 2:
			if _, ok := f.bytes(); !ok {
				return f.wrongType("InstrumentationScope", [...]string{"", "name", "version"}[f.num])
			}
		case 3:
			b, ok := f.bytes()
			if !ok {
				return f.wrongType("InstrumentationScope", "attributes")
			}
			if _, _, err := keyValue(b, 0); err != nil {
				return err
			}
		case 4:
			if _, ok := f.varint(); !ok {
				return f.wrongType("InstrumentationScope", "dropped_attributes_count")
			}
		}
	}
	return nil
}

// spanMsg decodes one span and, when map_ is true, maps it.
//
//	message Span {
//	  bytes trace_id = 1;
//	  bytes span_id = 2;
//	  string trace_state = 3;
//	  bytes parent_span_id = 4;
//	  fixed32 flags = 16;
//	  string name = 5;
//	  SpanKind kind = 6;
//	  fixed64 start_time_unix_nano = 7;
//	  fixed64 end_time_unix_nano = 8;
//	  repeated opentelemetry.proto.common.v1.KeyValue attributes = 9;
//	  uint32 dropped_attributes_count = 10;
//	  repeated Event events = 11;
//	  uint32 dropped_events_count = 12;
//	  repeated Link links = 13;
//	  uint32 dropped_links_count = 14;
//	  Status status = 15;
//	}
func (d *decoder) spanMsg(src []byte, map_ bool) (err error) {
	d.span.Reset()
	d.info = otelanalytics.SpanInfo{}
	var f field
	for len(src) > 0 {
		if src, err = f.next(src); err != nil {
			return err
		}
		switch f.num {
		case 1:
			b, ok := f.bytes()
			if !ok {
				return f.wrongType("Span", "trace_id")
			}
			if err := copyID(d.info.TraceID[:], b, "trace_id"); err != nil {
				return err
			}
		case 2:
			b, ok := f.bytes()
			if !ok {
				return f.wrongType("Span", "span_id")
			}
			if err := copyID(d.info.SpanID[:], b, "span_id"); err != nil {
				return err
			}
		case 3:
			b, ok := f.bytes()
			if !ok {
				return f.wrongType("Span", "trace_state")
			}
			d.info.TraceState = str(b)
		case 4:
			b, ok := f.bytes()
			if !ok {
				return f.wrongType("Span", "parent_span_id")
			}
			var parent [8]byte
			if err := copyID(parent[:], b, "parent_span_id"); err != nil {
				return err
			}
		case 16:
			if _, ok := f.fixed32(); !ok {
				return f.wrongType("Span", "flags")
			}
		case 5:
			if _, ok := f.bytes(); !ok {
				return f.wrongType("Span", "name")
			}
		case 6:
			if _, ok := f.varint(); !ok {
				return f.wrongType("Span", "kind")
			}
		case 7:
			t, ok := f.fixed64()
			if !ok {
				return f.wrongType("Span", "start_time_unix_nano")
			}
			d.info.StartTime = t
		case 8:
			t, ok := f.fixed64()
			if !ok {
				return f.wrongType("Span", "end_time_unix_nano")
			}
			d.info.EndTime = t
		case 9:
			b, ok := f.bytes()
			if !ok {
				return f.wrongType("Span", "attributes")
			}
			if err := d.attribute(b, &d.span); err != nil {
				return err
			}
		case 10, 12, 14:
			if _, ok := f.varint(); !ok {
				return f.wrongType("Span", [...]string{10: "dropped_attributes_count", 12: "dropped_events_count", 14: "dropped_links_count"}[f.num])
			}
		case 11:
			b, ok := f.bytes()
			if !ok {
				return f.wrongType("Span", "events")
			}
			if err := event(b); err != nil {
				return err
			}
		case 13:
			b, ok := f.bytes()
			if !ok {
				return f.wrongType("Span", "links")
			}
			if err := link(b); err != nil {
				return err
			}
		case 15:
			b, ok := f.bytes()
			if !ok {
				return f.wrongType("Span", "status")
			}
			if err := d.status(b); err != nil {
				return err
			}
		}
	}
	if !map_ {
		return nil
	}
	d.stats.spans++
	rec, rej := d.m.Map(&d.res, &d.span, &d.info, d.now)
	if rej != otelanalytics.Accepted {
		d.stats.rejected[rej]++
		return nil
	}
	d.recs = append(d.recs, rec)
	return nil
}

// copyID copies a trace or span id; like pdata, an empty id is all zeros and
// any other length than the id's is an error.
func copyID(dst, src []byte, name string) error {
	switch len(src) {
	case 0:
		clear(dst)
	case len(dst):
		copy(dst, src)
	default:
		return fmt.Errorf("proto: invalid length %d for %s", len(src), name)
	}
	return nil
}

// event validates a span event, which the mapping does not read.
//
//	message Event {
//	  fixed64 time_unix_nano = 1;
//	  string name = 2;
//	  repeated opentelemetry.proto.common.v1.KeyValue attributes = 3;
//	  uint32 dropped_attributes_count = 4;
//	}
func event(src []byte) (err error) {
	var f field
	for len(src) > 0 {
		if src, err = f.next(src); err != nil {
			return err
		}
		switch f.num {
		case 1:
			if _, ok := f.fixed64(); !ok {
				return f.wrongType("Span.Event", "time_unix_nano")
			}
		case 2:
			if _, ok := f.bytes(); !ok {
				return f.wrongType("Span.Event", "name")
			}
		case 3:
			b, ok := f.bytes()
			if !ok {
				return f.wrongType("Span.Event", "attributes")
			}
			if _, _, err := keyValue(b, 0); err != nil {
				return err
			}
		case 4:
			if _, ok := f.varint(); !ok {
				return f.wrongType("Span.Event", "dropped_attributes_count")
			}
		}
	}
	return nil
}

// link validates a span link, which the mapping does not read.
//
//	message Link {
//	  bytes trace_id = 1;
//	  bytes span_id = 2;
//	  string trace_state = 3;
//	  repeated opentelemetry.proto.common.v1.KeyValue attributes = 4;
//	  uint32 dropped_attributes_count = 5;
//	  fixed32 flags = 6;
//	}
func link(src []byte) (err error) {
	var id [16]byte
	var f field
	for len(src) > 0 {
		if src, err = f.next(src); err != nil {
			return err
		}
		switch f.num {
		case 1:
			b, ok := f.bytes()
			if !ok {
				return f.wrongType("Span.Link", "trace_id")
			}
			if err := copyID(id[:], b, "link trace_id"); err != nil {
				return err
			}
		case 2:
			b, ok := f.bytes()
			if !ok {
				return f.wrongType("Span.Link", "span_id")
			}
			if err := copyID(id[:8], b, "link span_id"); err != nil {
				return err
			}
		case 3:
			if _, ok := f.bytes(); !ok {
				return f.wrongType("Span.Link", "trace_state")
			}
		case 4:
			b, ok := f.bytes()
			if !ok {
				return f.wrongType("Span.Link", "attributes")
			}
			if _, _, err := keyValue(b, 0); err != nil {
				return err
			}
		case 5:
			if _, ok := f.varint(); !ok {
				return f.wrongType("Span.Link", "dropped_attributes_count")
			}
		case 6:
			if _, ok := f.fixed32(); !ok {
				return f.wrongType("Span.Link", "flags")
			}
		}
	}
	return nil
}

// status reads the span's status code into d.info.
//
//	message Status {
//	  reserved 1;
//	  string message = 2;
//	  StatusCode code = 3;
//	}
func (d *decoder) status(src []byte) (err error) {
	var f field
	for len(src) > 0 {
		if src, err = f.next(src); err != nil {
			return err
		}
		switch f.num {
		case 2:
			if _, ok := f.bytes(); !ok {
				return f.wrongType("Status", "message")
			}
		case 3:
			code, ok := f.varint()
			if !ok {
				return f.wrongType("Status", "code")
			}
			d.info.StatusCode = int32(code)
		}
	}
	return nil
}
