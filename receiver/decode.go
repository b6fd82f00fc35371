package receiver

import (
	"fmt"
	"math"

	"github.com/proxylens/proxylens/otelanalytics"
)

// decoder walks an OTLP ExportTraceServiceRequest in protobuf wire format.
// It validates the whole message as pdata does, but materialises only what
// the mapping reads: the attributes it knows, times, ids, status and trace
// state, as strings that alias the request buffer. A decoder is reused
// across requests by one goroutine at a time.
type decoder struct {
	m   *otelanalytics.Mapper
	now int64

	res  otelanalytics.SpanAttrs
	span otelanalytics.SpanAttrs
	info otelanalytics.SpanInfo

	// Field bounds within the current ResourceSpans.
	resources, scopes, deprecated [][2]int

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

// decode maps every span of buf, appending records to d.recs.
func (d *decoder) decode(buf []byte) error {
	for pos := 0; pos < len(buf); {
		field, wt, p, err := consumeTag(buf, pos)
		if err != nil {
			return err
		}
		pos = p
		if field != 1 {
			if pos, err = consumeUnknown(buf, pos, wt); err != nil {
				return err
			}
			continue
		}
		if wt != wireLen {
			return wrongType("ExportTraceServiceRequest", "resource_spans", wt)
		}
		start, end, err := consumeLen(buf, pos)
		if err != nil {
			return err
		}
		if err := d.resourceSpans(buf[start:end]); err != nil {
			return err
		}
		pos = end
	}
	return nil
}

func (d *decoder) resourceSpans(buf []byte) error {
	d.res.Reset()
	d.resources, d.scopes, d.deprecated = d.resources[:0], d.scopes[:0], d.deprecated[:0]
	for pos := 0; pos < len(buf); {
		field, wt, p, err := consumeTag(buf, pos)
		if err != nil {
			return err
		}
		pos = p
		switch field {
		case 1, 2, 3, 1000:
			if wt != wireLen {
				return wrongType("ResourceSpans", resourceSpansField(field), wt)
			}
			start, end, err := consumeLen(buf, pos)
			if err != nil {
				return err
			}
			switch field {
			case 1:
				d.resources = append(d.resources, [2]int{start, end})
			case 2:
				d.scopes = append(d.scopes, [2]int{start, end})
			case 1000:
				d.deprecated = append(d.deprecated, [2]int{start, end})
			}
			pos = end
		default:
			if pos, err = consumeUnknown(buf, pos, wt); err != nil {
				return err
			}
		}
	}
	// The resource is read first wherever it stands in the message, since
	// its attributes complete those of every span.
	for _, r := range d.resources {
		if err := d.resource(buf[r[0]:r[1]]); err != nil {
			return err
		}
	}
	// As pdata does, the deprecated field-1000 scope spans count only when
	// there are no current ones; they are validated all the same.
	current := len(d.scopes) > 0
	for _, r := range d.deprecated {
		if err := d.scopeSpans(buf[r[0]:r[1]], !current); err != nil {
			return err
		}
	}
	for _, r := range d.scopes {
		if err := d.scopeSpans(buf[r[0]:r[1]], true); err != nil {
			return err
		}
	}
	return nil
}

func resourceSpansField(field int32) string {
	switch field {
	case 1:
		return "resource"
	case 2:
		return "scope_spans"
	case 3:
		return "schema_url"
	}
	return "deprecated_scope_spans"
}

func (d *decoder) resource(buf []byte) error {
	for pos := 0; pos < len(buf); {
		field, wt, p, err := consumeTag(buf, pos)
		if err != nil {
			return err
		}
		pos = p
		switch field {
		case 1, 3:
			if wt != wireLen {
				return wrongType("Resource", "attributes", wt)
			}
			start, end, err := consumeLen(buf, pos)
			if err != nil {
				return err
			}
			if field == 1 {
				err = d.keyValue(buf[start:end], &d.res, 0)
			} else {
				err = entityRef(buf[start:end])
			}
			if err != nil {
				return err
			}
			pos = end
		case 2:
			if wt != wireVarint {
				return wrongType("Resource", "dropped_attributes_count", wt)
			}
			if _, pos, err = consumeVarint(buf, pos); err != nil {
				return err
			}
		default:
			if pos, err = consumeUnknown(buf, pos, wt); err != nil {
				return err
			}
		}
	}
	return nil
}

func entityRef(buf []byte) error {
	for pos := 0; pos < len(buf); {
		field, wt, p, err := consumeTag(buf, pos)
		if err != nil {
			return err
		}
		pos = p
		switch field {
		case 1, 2, 3, 4:
			if wt != wireLen {
				return wrongType("EntityRef", "field", wt)
			}
			if _, pos, err = consumeLen(buf, pos); err != nil {
				return err
			}
		default:
			if pos, err = consumeUnknown(buf, pos, wt); err != nil {
				return err
			}
		}
	}
	return nil
}

// scopeSpans maps the spans of one scope, or only validates them when map_
// is false.
func (d *decoder) scopeSpans(buf []byte, map_ bool) error {
	for pos := 0; pos < len(buf); {
		field, wt, p, err := consumeTag(buf, pos)
		if err != nil {
			return err
		}
		pos = p
		switch field {
		case 1, 2, 3:
			if wt != wireLen {
				return wrongType("ScopeSpans", [...]string{"", "scope", "spans", "schema_url"}[field], wt)
			}
			start, end, err := consumeLen(buf, pos)
			if err != nil {
				return err
			}
			switch field {
			case 1:
				err = d.scope(buf[start:end])
			case 2:
				err = d.spanMsg(buf[start:end], map_)
			}
			if err != nil {
				return err
			}
			pos = end
		default:
			if pos, err = consumeUnknown(buf, pos, wt); err != nil {
				return err
			}
		}
	}
	return nil
}

func (d *decoder) scope(buf []byte) error {
	for pos := 0; pos < len(buf); {
		field, wt, p, err := consumeTag(buf, pos)
		if err != nil {
			return err
		}
		pos = p
		switch field {
		case 1, 2, 3:
			if wt != wireLen {
				return wrongType("InstrumentationScope", "field", wt)
			}
			start, end, err := consumeLen(buf, pos)
			if err != nil {
				return err
			}
			if field == 3 {
				if err := d.keyValue(buf[start:end], nil, 0); err != nil {
					return err
				}
			}
			pos = end
		case 4:
			if wt != wireVarint {
				return wrongType("InstrumentationScope", "dropped_attributes_count", wt)
			}
			if _, pos, err = consumeVarint(buf, pos); err != nil {
				return err
			}
		default:
			if pos, err = consumeUnknown(buf, pos, wt); err != nil {
				return err
			}
		}
	}
	return nil
}

// spanMsg decodes one span and, when map_ is true, maps it.
func (d *decoder) spanMsg(buf []byte, map_ bool) error {
	d.span.Reset()
	d.info = otelanalytics.SpanInfo{}
	for pos := 0; pos < len(buf); {
		field, wt, p, err := consumeTag(buf, pos)
		if err != nil {
			return err
		}
		pos = p
		switch field {
		case 1, 2, 3, 4, 5, 9, 11, 13, 15: // length-delimited
			if wt != wireLen {
				return wrongType("Span", spanFieldName(field), wt)
			}
			start, end, err := consumeLen(buf, pos)
			if err != nil {
				return err
			}
			switch field {
			case 1:
				err = copyID(d.info.TraceID[:], buf[start:end], "trace_id")
			case 2:
				err = copyID(d.info.SpanID[:], buf[start:end], "span_id")
			case 3:
				d.info.TraceState = str(buf, start, end)
			case 4:
				var parent [8]byte
				err = copyID(parent[:], buf[start:end], "parent_span_id")
			case 9:
				err = d.keyValue(buf[start:end], &d.span, 0)
			case 11:
				err = d.event(buf[start:end])
			case 13:
				err = d.link(buf[start:end])
			case 15:
				err = d.status(buf[start:end])
			}
			if err != nil {
				return err
			}
			pos = end
		case 6, 10, 12, 14: // varints
			if wt != wireVarint {
				return wrongType("Span", spanFieldName(field), wt)
			}
			if _, pos, err = consumeVarint(buf, pos); err != nil {
				return err
			}
		case 7, 8:
			if wt != wireI64 {
				return wrongType("Span", spanFieldName(field), wt)
			}
			var v uint64
			if v, pos, err = consumeI64(buf, pos); err != nil {
				return err
			}
			if field == 7 {
				d.info.StartTime = v
			} else {
				d.info.EndTime = v
			}
		case 16:
			if wt != wireI32 {
				return wrongType("Span", "flags", wt)
			}
			if _, pos, err = consumeI32(buf, pos); err != nil {
				return err
			}
		default:
			if pos, err = consumeUnknown(buf, pos, wt); err != nil {
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

func spanFieldName(field int32) string {
	switch field {
	case 1:
		return "trace_id"
	case 2:
		return "span_id"
	case 3:
		return "trace_state"
	case 4:
		return "parent_span_id"
	case 5:
		return "name"
	case 6:
		return "kind"
	case 7:
		return "start_time_unix_nano"
	case 8:
		return "end_time_unix_nano"
	case 9:
		return "attributes"
	case 10:
		return "dropped_attributes_count"
	case 11:
		return "events"
	case 12:
		return "dropped_events_count"
	case 13:
		return "links"
	case 14:
		return "dropped_links_count"
	}
	return "status"
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

func (d *decoder) event(buf []byte) error {
	for pos := 0; pos < len(buf); {
		field, wt, p, err := consumeTag(buf, pos)
		if err != nil {
			return err
		}
		pos = p
		switch field {
		case 1:
			if wt != wireI64 {
				return wrongType("Span.Event", "time_unix_nano", wt)
			}
			_, pos, err = consumeI64(buf, pos)
		case 2, 3:
			if wt != wireLen {
				return wrongType("Span.Event", "field", wt)
			}
			var start, end int
			if start, end, err = consumeLen(buf, pos); err == nil && field == 3 {
				err = d.keyValue(buf[start:end], nil, 0)
			}
			pos = end
		case 4:
			if wt != wireVarint {
				return wrongType("Span.Event", "dropped_attributes_count", wt)
			}
			_, pos, err = consumeVarint(buf, pos)
		default:
			pos, err = consumeUnknown(buf, pos, wt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (d *decoder) link(buf []byte) error {
	var id [16]byte
	for pos := 0; pos < len(buf); {
		field, wt, p, err := consumeTag(buf, pos)
		if err != nil {
			return err
		}
		pos = p
		switch field {
		case 1, 2, 3, 4:
			if wt != wireLen {
				return wrongType("Span.Link", "field", wt)
			}
			var start, end int
			if start, end, err = consumeLen(buf, pos); err != nil {
				return err
			}
			switch field {
			case 1:
				err = copyID(id[:], buf[start:end], "link trace_id")
			case 2:
				err = copyID(id[:8], buf[start:end], "link span_id")
			case 4:
				err = d.keyValue(buf[start:end], nil, 0)
			}
			pos = end
		case 5:
			if wt != wireVarint {
				return wrongType("Span.Link", "dropped_attributes_count", wt)
			}
			_, pos, err = consumeVarint(buf, pos)
		case 6:
			if wt != wireI32 {
				return wrongType("Span.Link", "flags", wt)
			}
			_, pos, err = consumeI32(buf, pos)
		default:
			pos, err = consumeUnknown(buf, pos, wt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (d *decoder) status(buf []byte) error {
	for pos := 0; pos < len(buf); {
		field, wt, p, err := consumeTag(buf, pos)
		if err != nil {
			return err
		}
		pos = p
		switch field {
		case 2:
			if wt != wireLen {
				return wrongType("Status", "message", wt)
			}
			_, pos, err = consumeLen(buf, pos)
		case 3:
			if wt != wireVarint {
				return wrongType("Status", "code", wt)
			}
			var v uint64
			if v, pos, err = consumeVarint(buf, pos); err == nil {
				d.info.StatusCode = int32(v)
			}
		default:
			pos, err = consumeUnknown(buf, pos, wt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// keyValue decodes one attribute and, when attrs is not nil, hands it to the
// mapper. With attrs nil it only validates, and d may be nil.
func (d *decoder) keyValue(buf []byte, attrs *otelanalytics.SpanAttrs, depth int) error {
	if attrs != nil {
		if key, val, ok := plainKeyValue(buf); ok {
			d.m.SetAttr(attrs, key, val)
			return nil
		}
	}
	if depth >= recursionLimit {
		return errRecursionDepth
	}
	depth++
	var key string
	var val otelanalytics.Value
	for pos := 0; pos < len(buf); {
		field, wt, p, err := consumeTag(buf, pos)
		if err != nil {
			return err
		}
		pos = p
		switch field {
		case 1, 2:
			if wt != wireLen {
				return wrongType("KeyValue", [...]string{"", "key", "value"}[field], wt)
			}
			var start, end int
			if start, end, err = consumeLen(buf, pos); err != nil {
				return err
			}
			if field == 1 {
				key = str(buf, start, end)
			} else if err = anyValue(buf[start:end], &val, depth); err != nil {
				return err
			}
			pos = end
		case 3:
			if wt != wireVarint {
				return wrongType("KeyValue", "key_strindex", wt)
			}
			if _, pos, err = consumeVarint(buf, pos); err != nil {
				return err
			}
		default:
			if pos, err = consumeUnknown(buf, pos, wt); err != nil {
				return err
			}
		}
	}
	if attrs != nil {
		d.m.SetAttr(attrs, key, val)
	}
	return nil
}

// plainKeyValue reads the layouts senders write, a key and a value that
// holds exactly one string or int, in one pass: the key first (the SDKs,
// which marshal with google.golang.org/protobuf) or the value first (the
// Collector and anything else built on pdata, whose marshaler writes
// fields backwards). Anything else, including any malformation, reports
// !ok and goes through the general path, which gives the same result for
// these layouts.
func plainKeyValue(buf []byte) (string, otelanalytics.Value, bool) {
	if len(buf) < 4 {
		return "", otelanalytics.Value{}, false
	}
	var kstart, kend, vstart, vend int
	var err error
	switch buf[0] {
	case 0x0a: // key (field 1, length-delimited), then value (field 2)
		if kstart, kend, err = consumeLen(buf, 1); err != nil || kend >= len(buf) || buf[kend] != 0x12 {
			return "", otelanalytics.Value{}, false
		}
		if vstart, vend, err = consumeLen(buf, kend+1); err != nil || vend != len(buf) {
			return "", otelanalytics.Value{}, false
		}
	case 0x12: // value, then key
		if vstart, vend, err = consumeLen(buf, 1); err != nil || vend >= len(buf) || buf[vend] != 0x0a {
			return "", otelanalytics.Value{}, false
		}
		if kstart, kend, err = consumeLen(buf, vend+1); err != nil || kend != len(buf) {
			return "", otelanalytics.Value{}, false
		}
	default:
		return "", otelanalytics.Value{}, false
	}
	if vstart == vend {
		return "", otelanalytics.Value{}, false
	}
	v := buf[vstart:vend]
	switch v[0] {
	case 0x0a: // string_value
		if s, e, err := consumeLen(v, 1); err == nil && e == len(v) {
			return str(buf, kstart, kend), otelanalytics.Value{Kind: otelanalytics.KindString, Str: str(v, s, e)}, true
		}
	case 0x18: // int_value
		if n, e, err := consumeVarint(v, 1); err == nil && e == len(v) {
			return str(buf, kstart, kend), otelanalytics.Value{Kind: otelanalytics.KindInt, Int: int64(n)}, true
		}
	}
	return "", otelanalytics.Value{}, false
}

// anyValue decodes an attribute value into v; repeated value fields merge
// as pdata merges them: the last one set wins. Arrays and maps are validated
// and reported as KindOther.
func anyValue(buf []byte, v *otelanalytics.Value, depth int) error {
	if depth >= recursionLimit {
		return errRecursionDepth
	}
	depth++
	for pos := 0; pos < len(buf); {
		field, wt, p, err := consumeTag(buf, pos)
		if err != nil {
			return err
		}
		pos = p
		switch field {
		case 1, 5, 6, 7:
			if wt != wireLen {
				return wrongType("AnyValue", "field", wt)
			}
			var start, end int
			if start, end, err = consumeLen(buf, pos); err != nil {
				return err
			}
			switch field {
			case 1:
				*v = otelanalytics.Value{Kind: otelanalytics.KindString, Str: str(buf, start, end)}
			case 5:
				err = arrayValue(buf[start:end], depth)
				*v = otelanalytics.Value{Kind: otelanalytics.KindOther}
			case 6:
				err = kvList(buf[start:end], depth)
				*v = otelanalytics.Value{Kind: otelanalytics.KindOther}
			default:
				*v = otelanalytics.Value{Kind: otelanalytics.KindOther}
			}
			if err != nil {
				return err
			}
			pos = end
		case 2, 3, 8:
			if wt != wireVarint {
				return wrongType("AnyValue", "field", wt)
			}
			var n uint64
			if n, pos, err = consumeVarint(buf, pos); err != nil {
				return err
			}
			switch field {
			case 2:
				*v = otelanalytics.Value{Kind: otelanalytics.KindBool}
				if n != 0 {
					v.Int = 1
				}
			case 3:
				*v = otelanalytics.Value{Kind: otelanalytics.KindInt, Int: int64(n)}
			default:
				*v = otelanalytics.Value{Kind: otelanalytics.KindOther}
			}
		case 4:
			if wt != wireI64 {
				return wrongType("AnyValue", "double_value", wt)
			}
			var n uint64
			if n, pos, err = consumeI64(buf, pos); err != nil {
				return err
			}
			*v = otelanalytics.Value{Kind: otelanalytics.KindDouble, Float: math.Float64frombits(n)}
		default:
			if pos, err = consumeUnknown(buf, pos, wt); err != nil {
				return err
			}
		}
	}
	return nil
}

func arrayValue(buf []byte, depth int) error {
	if depth >= recursionLimit {
		return errRecursionDepth
	}
	depth++
	var scratch otelanalytics.Value
	for pos := 0; pos < len(buf); {
		field, wt, p, err := consumeTag(buf, pos)
		if err != nil {
			return err
		}
		pos = p
		if field != 1 {
			if pos, err = consumeUnknown(buf, pos, wt); err != nil {
				return err
			}
			continue
		}
		if wt != wireLen {
			return wrongType("ArrayValue", "values", wt)
		}
		start, end, err := consumeLen(buf, pos)
		if err != nil {
			return err
		}
		if err := anyValue(buf[start:end], &scratch, depth); err != nil {
			return err
		}
		pos = end
	}
	return nil
}

func kvList(buf []byte, depth int) error {
	if depth >= recursionLimit {
		return errRecursionDepth
	}
	depth++
	for pos := 0; pos < len(buf); {
		field, wt, p, err := consumeTag(buf, pos)
		if err != nil {
			return err
		}
		pos = p
		if field != 1 {
			if pos, err = consumeUnknown(buf, pos, wt); err != nil {
				return err
			}
			continue
		}
		if wt != wireLen {
			return wrongType("KeyValueList", "values", wt)
		}
		start, end, err := consumeLen(buf, pos)
		if err != nil {
			return err
		}
		if err := (*decoder)(nil).keyValue(buf[start:end], nil, depth); err != nil {
			return err
		}
		pos = end
	}
	return nil
}
