package receiver

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/protobuf/encoding/protowire"
)

var updateFuzzCorpus = flag.Bool("update-fuzz-corpus", false, "rewrite the generated seeds of testdata/fuzz/FuzzDecode")

// otlpMessage is one message of the trace protocol and how a test reaches
// it: wrap puts a body of the message's fields into a whole export request.
type otlpMessage struct {
	name   string // as the decoder's errors name it
	path   string // where wrap puts it, for seed names
	wrap   func(pb) pb
	fields []otlpField // the fields pdata knows
}

type otlpField struct {
	name string
	num  protowire.Number
	wt   protowire.Type
}

func inResourceSpans(b pb) pb { return pb{}.msg(1, b) }
func inResource(b pb) pb      { return inResourceSpans(pb{}.msg(1, b)) }
func inScopeSpans(b pb) pb    { return inResourceSpans(pb{}.msg(2, b)) }
func inSpan(b pb) pb          { return inScopeSpans(pb{}.msg(2, b)) }
func inSpanAttr(b pb) pb      { return inSpan(pb{}.msg(9, b)) }
func inValue(b pb) pb         { return inSpanAttr(pb{}.str(1, "k").msg(2, b)) }

// otlpMessages lists every message the decoder walks, each of them at
// every place where it is decoded differently.
func otlpMessages() []otlpMessage {
	const (
		v   = protowire.VarintType
		i64 = protowire.Fixed64Type
		l   = protowire.BytesType
		i32 = protowire.Fixed32Type
	)
	scopeSpans := []otlpField{{"scope", 1, l}, {"spans", 2, l}, {"schema_url", 3, l}}
	keyValue := []otlpField{{"key", 1, l}, {"value", 2, l}, {"key_strindex", 3, v}}
	return []otlpMessage{
		{"ExportTraceServiceRequest", "request", func(b pb) pb { return b }, []otlpField{{"resource_spans", 1, l}}},
		{"ResourceSpans", "resource-spans", inResourceSpans, []otlpField{
			{"resource", 1, l}, {"scope_spans", 2, l}, {"schema_url", 3, l}, {"deprecated_scope_spans", 1000, l}}},
		{"Resource", "resource", inResource, []otlpField{
			{"attributes", 1, l}, {"dropped_attributes_count", 2, v}, {"entity_refs", 3, l}}},
		{"EntityRef", "entity-ref", func(b pb) pb { return inResource(pb{}.msg(3, b)) }, []otlpField{
			{"schema_url", 1, l}, {"type", 2, l}, {"id_keys", 3, l}, {"description_keys", 4, l}}},
		{"KeyValue", "resource-attribute", func(b pb) pb { return inResource(pb{}.msg(1, b)) }, keyValue},
		{"ScopeSpans", "scope-spans", inScopeSpans, scopeSpans},
		{"ScopeSpans", "deprecated-scope-spans", func(b pb) pb { return inResourceSpans(pb{}.msg(1000, b)) }, scopeSpans},
		{"InstrumentationScope", "scope", func(b pb) pb { return inScopeSpans(pb{}.msg(1, b)) }, []otlpField{
			{"name", 1, l}, {"version", 2, l}, {"attributes", 3, l}, {"dropped_attributes_count", 4, v}}},
		{"KeyValue", "scope-attribute", func(b pb) pb { return inScopeSpans(pb{}.msg(1, pb{}.msg(3, b))) }, keyValue},
		{"Span", "span", inSpan, []otlpField{
			{"trace_id", 1, l}, {"span_id", 2, l}, {"trace_state", 3, l}, {"parent_span_id", 4, l},
			{"name", 5, l}, {"kind", 6, v}, {"start_time_unix_nano", 7, i64}, {"end_time_unix_nano", 8, i64},
			{"attributes", 9, l}, {"dropped_attributes_count", 10, v}, {"events", 11, l},
			{"dropped_events_count", 12, v}, {"links", 13, l}, {"dropped_links_count", 14, v},
			{"status", 15, l}, {"flags", 16, i32}}},
		{"KeyValue", "span-attribute", inSpanAttr, keyValue},
		{"AnyValue", "value", inValue, []otlpField{
			{"string_value", 1, l}, {"bool_value", 2, v}, {"int_value", 3, v}, {"double_value", 4, i64},
			{"array_value", 5, l}, {"kvlist_value", 6, l}, {"bytes_value", 7, l}, {"string_value_strindex", 8, v}}},
		{"ArrayValue", "array", func(b pb) pb { return inValue(pb{}.msg(5, b)) }, []otlpField{{"values", 1, l}}},
		{"KeyValueList", "kvlist", func(b pb) pb { return inValue(pb{}.msg(6, b)) }, []otlpField{{"values", 1, l}}},
		{"KeyValue", "kvlist-attribute", func(b pb) pb { return inValue(pb{}.msg(6, pb{}.msg(1, b))) }, keyValue},
		{"Span.Event", "event", func(b pb) pb { return inSpan(pb{}.msg(11, b)) }, []otlpField{
			{"time_unix_nano", 1, i64}, {"name", 2, l}, {"attributes", 3, l}, {"dropped_attributes_count", 4, v}}},
		{"KeyValue", "event-attribute", func(b pb) pb { return inSpan(pb{}.msg(11, pb{}.msg(3, b))) }, keyValue},
		{"Span.Link", "link", func(b pb) pb { return inSpan(pb{}.msg(13, b)) }, []otlpField{
			{"trace_id", 1, l}, {"span_id", 2, l}, {"trace_state", 3, l}, {"attributes", 4, l},
			{"dropped_attributes_count", 5, v}, {"flags", 6, i32}}},
		{"KeyValue", "link-attribute", func(b pb) pb { return inSpan(pb{}.msg(13, pb{}.msg(4, b))) }, keyValue},
		{"Status", "status", func(b pb) pb { return inSpan(pb{}.msg(15, b)) }, []otlpField{{"message", 2, l}, {"code", 3, v}}},
	}
}

// typed is field num with wire type wt and a value of that type, which
// pdata reads if num is unknown; raw appends any tag, such as those of the
// wire types 6 and 7 that protobuf does not define.
func typed(num protowire.Number, wt protowire.Type) pb {
	switch wt {
	case protowire.VarintType:
		return pb{}.varint(num, 1)
	case protowire.Fixed64Type:
		return pb{}.fixed64(num, 1)
	case protowire.BytesType:
		return pb{}.bytes(num, nil)
	case protowire.StartGroupType:
		return pb{}.group(num, nil)
	case protowire.Fixed32Type:
		return pb{}.fixed32(num, 1)
	}
	return raw(num, wt)
}

func raw(num protowire.Number, wt protowire.Type, tail ...byte) pb {
	return append(protowire.AppendTag(nil, num, wt), tail...)
}

// trailer is an unknown field: after a group it lets pdata's skipping end
// the group before the message ends.
func trailer() pb { return pb{}.varint(999, 0) }

// TestDecodeWrongWireTypes sends every known field of every message with
// each wire type but its own: pdata refuses each such request, and so must
// the decoder, naming the field.
func TestDecodeWrongWireTypes(t *testing.T) {
	m := testMapper()
	for _, msg := range otlpMessages() {
		for _, f := range msg.fields {
			for wt := protowire.Type(0); wt < 8; wt++ {
				if wt == f.wt {
					continue
				}
				body := msg.wrap(append(typed(f.num, wt), trailer()...))
				name := fmt.Sprintf("%s %s.%s wire type %d", msg.path, msg.name, f.name, wt)
				require.Error(t, ptraceotlp.NewExportRequest().UnmarshalProto(body), name)
				_, _, err := decodeAll(m, body)
				require.Error(t, err, name)
				if wt != protowire.EndGroupType && wt < 6 { // the others fail to be skipped first
					require.EqualError(t, err, fmt.Sprintf("proto: wrong wire type %d for %s.%s", wt, msg.name, f.name))
				}
			}
		}
	}
}

// fuzzSeeds builds the named seeds of FuzzDecode: every message with
// unknown fields of every wire type, groups as pdata skips them and as it
// refuses them, every known field with a wrong wire type, truncations,
// malformed varints, tags and lengths, and attribute values nested up to
// pdata's recursion limit and past it. A name starts with "ok-" if pdata
// accepts the seed, "bad-" if it refuses it.
func fuzzSeeds(t testing.TB) map[string][]byte {
	rawTag := func(num uint64, wt protowire.Type, tail ...byte) pb {
		return append(protowire.AppendVarint(nil, num<<3|uint64(wt)), tail...)
	}
	seeds := map[string][]byte{
		"ok-rich-request":      richRequest(),
		"ok-pdata-proxy-spans": marshal(t, proxySpans(2, 3)),
		"ok-empty-request":     {},
		"bad-field-0":          raw(0, protowire.BytesType, 0),
		// pdata keeps the low 32 bits of a field number, as an int32.
		"bad-field-2147483648": rawTag(1<<31, protowire.VarintType, 0),
		"bad-field-4294967296": rawTag(1<<32, protowire.VarintType, 0),
		"ok-field-4294967297":  rawTag(1<<32+1, protowire.BytesType, 0), // resource_spans
		"ok-field-max":         pb{}.varint(protowire.MaxValidNumber, 1),
		"bad-truncated-tag":    {0x80},
		"bad-wire-type-6":      raw(901, 6, 0),
		"bad-wire-type-7":      raw(901, 7, 0),
		"bad-end-group-alone":  append(raw(905, protowire.EndGroupType), trailer()...),
		// pdata ends a group at its first scalar field, end tag or not.
		"ok-group-ended-by-varint": append(raw(905, protowire.StartGroupType), trailer()...),
		"bad-group-unclosed":       append(raw(905, protowire.StartGroupType), pb{}.group(906, nil)...),
		// pdata drops the bits of a 10-byte varint that overflow, and
		// refuses an 11-byte one.
		"ok-varint-10-bytes":             inResource(raw(2, protowire.VarintType, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f)),
		"bad-varint-11-bytes":            inResource(raw(2, protowire.VarintType, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)),
		"bad-negative-length":            raw(1, protowire.BytesType, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
		"bad-huge-length":                raw(1, protowire.BytesType, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40),
		"bad-truncated-fixed64":          inSpan(raw(7, protowire.Fixed64Type, 1, 2, 3, 4)),
		"bad-truncated-fixed32":          inSpan(raw(16, protowire.Fixed32Type, 1, 2)),
		"bad-truncated-varint":           inSpan(raw(6, protowire.VarintType, 0x80)),
		"bad-trace-id-15-bytes":          inSpan(pb{}.bytes(1, make([]byte, 15))),
		"ok-trace-id-empty":              inSpan(pb{}.bytes(1, nil).bytes(2, make([]byte, 8))),
		"bad-link-span-id-9":             inSpan(pb{}.msg(13, pb{}.bytes(2, make([]byte, 9)))),
		"ok-deprecated-scope-spans-only": inResourceSpans(pb{}.msg(1000, pb{}.msg(2, pb{}.bytes(1, make([]byte, 16))))),
		"ok-key-twice":                   inSpanAttr(pb{}.str(1, "a").str(1, "proxy.source").msg(2, strVal("x"))),
		"ok-value-int-then-string":       inValue(pb{}.varint(3, 7).str(1, "x")),
	}
	for _, msg := range otlpMessages() {
		p := msg.path
		if msg.name == "KeyValue" && p != "span-attribute" {
			continue // one KeyValue is enough
		}
		seeds["ok-unknown-fields-"+p] = msg.wrap(pb{}.unknown())
		seeds["ok-nested-groups-"+p] = msg.wrap(append(pb{}.group(905, pb{}.group(906, pb{}.group(907, nil))), trailer()...))
		// pdata ends a group at its first scalar field and reads the end
		// tag as a field of the message: an unexpected end of group.
		seeds["bad-group-with-varint-"+p] = msg.wrap(append(pb{}.group(905, pb{}.varint(1, 1)), trailer()...))
		seeds["bad-group-at-end-"+p] = msg.wrap(pb{}.group(905, nil))
		for _, f := range msg.fields {
			if f.wt == protowire.BytesType {
				seeds["bad-truncated-length-"+p] = msg.wrap(raw(f.num, protowire.BytesType, 5, 'a'))
				break
			}
		}
		for _, f := range msg.fields {
			wt := protowire.BytesType
			if f.wt == protowire.BytesType {
				wt = protowire.VarintType
			}
			seeds[fmt.Sprintf("bad-wire-type-%d-%s-%s", wt, p, f.name)] = msg.wrap(typed(f.num, wt))
		}
	}
	for wt := range protowire.Type(8) {
		if wt != protowire.Fixed64Type {
			seeds[fmt.Sprintf("bad-wire-type-%d-span-start_time_unix_nano", wt)] = inSpan(append(typed(7, wt), trailer()...))
		}
	}

	// Values nested to pdata's recursion limit and past it: it counts the
	// depth of every KeyValue, AnyValue, ArrayValue and KeyValueList from
	// an attribute's KeyValue (0) and refuses depth 100.
	nest := func(depth int, wrap func(pb) pb) pb {
		v := strVal("leaf")
		for range depth {
			v = wrap(v)
		}
		return v
	}
	array := func(v pb) pb { return pb{}.msg(5, pb{}.msg(1, v)) }           // 2 levels
	kvlist := func(v pb) pb { return pb{}.msg(6, pb{}.msg(1, kv("k", v))) } // 3 levels
	for _, c := range []struct {
		form string
		wrap func(pb) pb
		max  int // the deepest nesting pdata accepts
	}{
		{"array", array, 49},
		{"kvlist", kvlist, 32},
		{"array-kvlist", func(v pb) pb { return array(kvlist(v)) }, 19},
	} {
		for _, depth := range []int{c.max, c.max + 1} {
			verdict := "ok"
			if depth > c.max {
				verdict = "bad"
			}
			attr := kv("k", nest(depth, c.wrap))
			name := fmt.Sprintf("%s-nested-%s-%d-", verdict, c.form, depth)
			seeds[name+"span"] = inSpanAttr(attr)
			seeds[name+"resource"] = inResource(pb{}.msg(1, attr))
			seeds[name+"event"] = inSpan(pb{}.msg(11, pb{}.msg(3, attr)))
		}
	}
	return seeds
}

// TestFuzzDecodeCorpus checks that the committed seeds of FuzzDecode are
// those fuzzSeeds builds, and that pdata accepts or refuses each as its
// name says; go test runs FuzzDecode on every seed. To rewrite them:
//
//	go test ./receiver/ -run TestFuzzDecodeCorpus -update-fuzz-corpus
func TestFuzzDecodeCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	for name, seed := range fuzzSeeds(t) {
		perr := ptraceotlp.NewExportRequest().UnmarshalProto(seed)
		if strings.HasPrefix(name, "ok-") {
			require.NoError(t, perr, name)
		} else {
			require.Error(t, perr, name)
		}
		file := filepath.Join(dir, name)
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", seed)
		if *updateFuzzCorpus {
			require.NoError(t, os.MkdirAll(dir, 0o755))
			require.NoError(t, os.WriteFile(file, []byte(want), 0o644))
			continue
		}
		got, err := os.ReadFile(file)
		require.NoError(t, err, "%s: run go test ./receiver/ -run TestFuzzDecodeCorpus -update-fuzz-corpus", name)
		require.Equal(t, want, string(got), name)
	}
}
