package receiver

import (
	"bytes"
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/proxylens/proxylens/otelanalytics"
)

// pb builds protobuf messages field by field, so tests can send what pdata
// would never write: unknown fields of every wire type, groups, deprecated
// fields, entity refs.
type pb []byte

func (b pb) bytes(f protowire.Number, v []byte) pb {
	return protowire.AppendBytes(protowire.AppendTag(b, f, protowire.BytesType), v)
}

func (b pb) msg(f protowire.Number, m pb) pb     { return b.bytes(f, m) }
func (b pb) str(f protowire.Number, v string) pb { return b.bytes(f, []byte(v)) }

func (b pb) varint(f protowire.Number, v uint64) pb {
	return protowire.AppendVarint(protowire.AppendTag(b, f, protowire.VarintType), v)
}

func (b pb) fixed64(f protowire.Number, v uint64) pb {
	return protowire.AppendFixed64(protowire.AppendTag(b, f, protowire.Fixed64Type), v)
}

func (b pb) fixed32(f protowire.Number, v uint32) pb {
	return protowire.AppendFixed32(protowire.AppendTag(b, f, protowire.Fixed32Type), v)
}

func (b pb) group(f protowire.Number, inner pb) pb {
	b = append(protowire.AppendTag(b, f, protowire.StartGroupType), inner...)
	return protowire.AppendTag(b, f, protowire.EndGroupType)
}

// unknown appends fields of every wire type that no OTLP message defines.
func (b pb) unknown() pb {
	// pdata skips a group only up to its first scalar field, and not at the
	// end of a message (the decoder does as pdata does), so the group holds
	// only a group and comes first.
	return b.group(905, pb{}.group(906, nil)).varint(901, 7).fixed64(902, 8).str(903, "x").fixed32(904, 9)
}

func kv(key string, value pb) pb { return pb{}.str(1, key).msg(2, value) }

func strVal(s string) pb { return pb{}.str(1, s) }

func intVal(i int64) pb { return pb{}.varint(3, uint64(i)) }

// richRequest is an export request that uses every field of the trace
// protocol, and some that are unknown to it.
func richRequest() []byte {
	end := uint64(testNow.Add(-time.Minute).UnixNano())
	nested := pb{}.msg(1, strVal("a")).msg(1, intVal(1)).
		msg(1, pb{}.msg(6, pb{}.msg(1, kv("k", pb{}.bytes(7, []byte{0, 1}))))) // array of string, int, kvlist
	resource := pb{}.
		msg(1, kv("service.name", strVal("crawler"))).
		msg(1, kv("proxy.tier", strVal("premium"))).
		msg(1, kv("host.cores", intVal(8))).
		msg(1, kv("ratio", pb{}.fixed64(4, 0x3fe0000000000000))).
		msg(1, kv("enabled", pb{}.varint(2, 1))).
		msg(1, kv("tags", pb{}.msg(5, nested))).
		msg(1, kv("meta", pb{}.msg(6, pb{}.msg(1, kv("inner", pb{}.msg(6, pb{}.msg(1, kv("deep", strVal("d"))))))))).
		msg(1, kv("blob", pb{}.bytes(7, []byte{0, 1, 2}))).
		msg(1, kv("string_index", pb{}.varint(8, 3))).
		msg(1, kv("empty", pb{})).
		msg(1, pb{}.varint(3, 4).msg(2, strVal("by string index"))).
		varint(2, 3).
		msg(3, pb{}.str(1, "https://opentelemetry.io/schemas/1.30.0").str(2, "host").str(3, "host.name").str(4, "host.arch").unknown()).
		unknown()
	scope := pb{}.str(1, "proxyclient").str(2, "1.2.0").msg(3, kv("scope.attr", strVal("v"))).varint(4, 1).unknown()
	span := func(id byte, attrs ...pb) pb {
		sp := pb{}.
			bytes(1, bytes.Repeat([]byte{id}, 16)).
			bytes(2, bytes.Repeat([]byte{id}, 8)).
			str(3, "ot=th:c;rv:abcdef01234567,vendor=x").
			bytes(4, bytes.Repeat([]byte{id + 1}, 8)).
			str(5, "GET").
			varint(6, 3).
			fixed64(7, end-uint64(id)*uint64(time.Millisecond)).
			fixed64(8, end)
		for _, a := range attrs {
			sp = sp.msg(9, a)
		}
		return sp.
			varint(10, 1).
			msg(11, pb{}.fixed64(1, end).str(2, "retry").msg(3, kv("attempt", intVal(2))).varint(4, 1).unknown()).
			varint(12, 1).
			msg(13, pb{}.bytes(1, bytes.Repeat([]byte{9}, 16)).bytes(2, bytes.Repeat([]byte{9}, 8)).str(3, "k=v").
				msg(4, kv("link.attr", strVal("l"))).varint(5, 1).fixed32(6, 1).unknown()).
			varint(14, 1).
			msg(15, pb{}.str(2, "upstream closed").varint(3, 2).unknown()).
			fixed32(16, 0x301).
			unknown()
	}
	proxyAttrs := []pb{
		kv("proxy.source", strVal("brightdata")),
		kv("proxy.url", strVal("http://user:s3cret@10.0.0.1:8080")),
		kv("url.full", strVal("https://shop.example.com/p?token=s3cret")),
		kv("http.request.method", strVal("POST")),
		kv("http.response.status_code", intVal(502)),
		kv("http.response.body.size", intVal(512)),
		kv("error.type", strVal("bad_gateway")),
	}
	noTimes := pb{}.bytes(1, bytes.Repeat([]byte{7}, 16)).bytes(2, bytes.Repeat([]byte{7}, 8)).msg(9, proxyAttrs[0])
	notSelected := span(3, kv("db.system", strVal("postgresql")))

	current := pb{}.msg(1, scope).msg(2, span(1, proxyAttrs...)).msg(2, noTimes).msg(2, notSelected).
		str(3, "https://opentelemetry.io/schemas/1.30.0").unknown()
	deprecated := pb{}.msg(1, scope).msg(2, span(4, proxyAttrs[:2]...))
	return pb{}.
		// A resource after its scope spans: its attributes still apply.
		msg(1, pb{}.msg(2, current).msg(1, resource).str(3, "https://opentelemetry.io/schemas/1.30.0").unknown()).
		// Deprecated scope spans alone are mapped...
		msg(1, pb{}.msg(1000, deprecated)).
		// ...and only validated when current ones are present.
		msg(1, pb{}.msg(1000, deprecated).msg(2, pb{}.msg(2, span(5, proxyAttrs[:1]...)))).
		unknown()
}

// recordingConsumer keeps a copy of every record it is given.
type recordingConsumer struct {
	mu   sync.Mutex
	recs []otelanalytics.Record
}

func (c *recordingConsumer) Consume(_ context.Context, recs []otelanalytics.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range recs {
		s := r.Strings()
		for i := range s {
			s[i] = strings.Clone(s[i])
		}
		r.SetStrings(&s)
		c.recs = append(c.recs, r)
	}
	return nil
}

func (c *recordingConsumer) take() []otelanalytics.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	recs := c.recs
	c.recs = nil
	return recs
}

// TestRichRequest sends a request that uses every field of the protocol
// over both transports: the receiver maps it as pdata's view of the same
// bytes is mapped.
func TestRichRequest(t *testing.T) {
	c := &recordingConsumer{}
	s := startReceiver(t, Config{}, c)
	body := richRequest()
	req := ptraceotlp.NewExportRequest()
	require.NoError(t, req.UnmarshalProto(body), "pdata accepts the request")
	want, wantRejected := referenceMap(testMapper(), req.Traces())
	require.Len(t, want, 3)
	require.Equal(t, 1, wantRejected)

	r := s.post(t, contentProtobuf, "", body)
	require.Equal(t, http.StatusOK, r.code, "body: %q", r.body)
	require.EqualValues(t, 1, decodeResponse(t, r).PartialSuccess().RejectedSpans())
	require.Equal(t, want, c.take())

	var resp []byte
	require.NoError(t, s.conn.Invoke(t.Context(), exportMethod, &body, &resp, grpc.ForceCodecV2(rawClientCodec{})))
	pr := ptraceotlp.NewExportResponse()
	require.NoError(t, pr.UnmarshalProto(resp))
	require.EqualValues(t, 1, pr.PartialSuccess().RejectedSpans())
	require.Equal(t, want, c.take())

	// The same request as OTLP/JSON goes through pdata first.
	js, err := req.MarshalJSON()
	require.NoError(t, err)
	r = s.post(t, contentJSON, "", js)
	require.Equal(t, http.StatusOK, r.code, "body: %q", r.body)
	require.EqualValues(t, 1, decodeResponse(t, r).PartialSuccess().RejectedSpans())
	require.Len(t, c.take(), 3)
}

// TestMutatedRequests sends every truncation and many single-byte
// corruptions of a rich request, every eighth over gRPC: the receiver must
// refuse exactly what pdata refuses (400 / InvalidArgument) and map the rest
// as pdata's view of it is mapped.
func TestMutatedRequests(t *testing.T) {
	c := &recordingConsumer{}
	s := startReceiver(t, Config{}, c)
	base := richRequest()
	var bodies [][]byte
	for n := range len(base) {
		bodies = append(bodies, base[:n])
	}
	for i := range base {
		b := slices.Clone(base)
		b[i] ^= 0xff
		bodies = append(bodies, b)
		if i%3 == 0 {
			b = slices.Clone(base)
			b[i]++
			bodies = append(bodies, b)
		}
	}
	// Nesting at pdata's recursion limit and past it.
	for _, depth := range []int{98, 99, 100, 101} {
		v := strVal("leaf")
		for range depth {
			v = pb{}.msg(5, pb{}.msg(1, v))
		}
		attr := kv("nested", v)
		bodies = append(bodies, pb{}.msg(1, pb{}.msg(2, pb{}.msg(2, pb{}.msg(9, attr)))))
	}

	m := testMapper()
	refused := 0
	for i, body := range bodies {
		req := ptraceotlp.NewExportRequest()
		perr := req.UnmarshalProto(body)
		var rejected int64
		if i%8 != 1 {
			// Every eighth body crosses the loopback HTTP connection, most
			// go straight to the handler, to keep the test fast.
			var r reply
			if i%8 == 0 {
				r = s.post(t, contentProtobuf, "", body)
			} else {
				req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/v1/traces", bytes.NewReader(body))
				req.Header.Set("Content-Type", contentProtobuf)
				rec := httptest.NewRecorder()
				s.rcv.ServeTraces(rec, req)
				r = reply{code: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
			}
			if perr != nil {
				require.Equal(t, http.StatusBadRequest, r.code, "body %d %x: pdata refuses it: %v", i, body, perr)
				refused++
				continue
			}
			require.Equal(t, http.StatusOK, r.code, "body %d %x: %q", i, body, r.body)
			rejected = decodeResponse(t, r).PartialSuccess().RejectedSpans()
		} else {
			var resp []byte
			err := s.conn.Invoke(t.Context(), exportMethod, &body, &resp, grpc.ForceCodecV2(rawClientCodec{}))
			if perr != nil {
				require.Equal(t, codes.InvalidArgument, status.Code(err), "body %d %x: pdata refuses it: %v", i, body, perr)
				refused++
				continue
			}
			require.NoError(t, err, "body %d %x", i, body)
			pr := ptraceotlp.NewExportResponse()
			require.NoError(t, pr.UnmarshalProto(resp))
			rejected = pr.PartialSuccess().RejectedSpans()
		}
		want, wantRejected := referenceMap(m, req.Traces())
		require.EqualValues(t, wantRejected, rejected, "body %d %x", i, body)
		got := c.take()
		require.Len(t, got, len(want), "body %d %x", i, body)
		for j := range want {
			if math.IsNaN(want[j].Weight) {
				require.True(t, math.IsNaN(got[j].Weight))
				got[j].Weight = want[j].Weight
			}
			require.Equal(t, want[j], got[j], "body %d %x", i, body)
		}
	}
	require.Positive(t, refused)
	require.Less(t, refused, len(bodies))
}
