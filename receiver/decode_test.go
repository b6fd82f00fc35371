package receiver

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/proxylens/proxylens/otelanalytics"
)

var testNow = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func testMapper() *otelanalytics.Mapper {
	return otelanalytics.NewMapper(otelanalytics.DefaultMappingConfig(), func() time.Time { return testNow })
}

// proxySpans builds n proxy-shaped spans, as an instrumented client sends them.
func proxySpans(n int, seed uint64) ptrace.Traces {
	rnd := rand.New(rand.NewPCG(seed, 1))
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "crawler")
	rs.Resource().Attributes().PutStr("host.name", "worker-1")
	ss := rs.ScopeSpans().AppendEmpty()
	ss.Scope().SetName("proxyclient")
	end := testNow.Add(-time.Minute)
	for i := range n {
		s := ss.Spans().AppendEmpty()
		var tid [16]byte
		var sid [8]byte
		binary.LittleEndian.PutUint64(tid[:], rnd.Uint64())
		binary.LittleEndian.PutUint64(tid[8:], rnd.Uint64())
		binary.LittleEndian.PutUint64(sid[:], rnd.Uint64()|1)
		s.SetTraceID(tid)
		s.SetSpanID(sid)
		s.SetName("GET")
		s.SetKind(ptrace.SpanKindClient)
		e := end.Add(time.Duration(i) * time.Millisecond)
		s.SetStartTimestamp(pcommon.NewTimestampFromTime(e.Add(-time.Duration(rnd.IntN(2000)) * time.Millisecond)))
		s.SetEndTimestamp(pcommon.NewTimestampFromTime(e))
		a := s.Attributes()
		src := []string{"brightdata", "oxylabs", "freeproxy-list", "spys-one"}[rnd.IntN(4)]
		a.PutStr("proxy.source", src)
		a.PutStr("proxy.tier", map[bool]string{true: "premium", false: "free"}[src[0] < 'f'])
		a.PutStr("proxy.url", "http://user:s3cret@10.1.2."+string(rune('0'+rnd.IntN(10)))+":8080")
		a.PutStr("http.request.method", []string{"GET", "POST", "get", "PURGE"}[rnd.IntN(4)])
		a.PutStr("url.full", "https://shop"+string(rune('a'+rnd.IntN(26)))+".example.com/p?token=s3cret")
		a.PutStr("server.address", "shop.example.com")
		a.PutInt("server.port", 443)
		code := []int64{200, 200, 200, 404, 407, 429, 503}[rnd.IntN(7)]
		a.PutInt("http.response.status_code", code)
		a.PutInt("http.response.body.size", int64(rnd.IntN(100000)))
		a.PutInt("http.request.body.size", int64(rnd.IntN(1000)))
		a.PutStr("network.protocol.version", "1.1")
		if rnd.IntN(10) == 0 {
			a.PutStr("error.type", "timeout")
			s.Status().SetCode(ptrace.StatusCodeError)
		}
		if rnd.IntN(3) == 0 {
			s.TraceState().FromRaw("ot=th:8")
		}
		ev := s.Events().AppendEmpty()
		ev.SetName("retry")
		ev.Attributes().PutInt("attempt", 2)
	}
	return td
}

func marshal(t testing.TB, td ptrace.Traces) []byte {
	b, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
	require.NoError(t, err)
	return b
}

// referenceMap maps the spans of td through pdata, the way the decoder should.
func referenceMap(m *otelanalytics.Mapper, td ptrace.Traces) ([]otelanalytics.Record, int) {
	var recs []otelanalytics.Record
	rejected := 0
	now := m.Now()
	for _, rs := range td.ResourceSpans().All() {
		var res otelanalytics.SpanAttrs
		for k, v := range rs.Resource().Attributes().All() {
			m.SetAttr(&res, k, toValue(v))
		}
		for _, ss := range rs.ScopeSpans().All() {
			for _, s := range ss.Spans().All() {
				var sa otelanalytics.SpanAttrs
				for k, v := range s.Attributes().All() {
					m.SetAttr(&sa, k, toValue(v))
				}
				info := otelanalytics.SpanInfo{
					StartTime: uint64(s.StartTimestamp()), EndTime: uint64(s.EndTimestamp()),
					StatusCode: int32(s.Status().Code()), TraceID: s.TraceID(), SpanID: s.SpanID(),
					TraceState: s.TraceState().AsRaw(),
				}
				r, rej := m.Map(&res, &sa, &info, now)
				switch rej {
				case otelanalytics.Accepted:
					recs = append(recs, r)
				case otelanalytics.NotSelected:
				default:
					rejected++
				}
			}
		}
	}
	return recs, rejected
}

func toValue(v pcommon.Value) otelanalytics.Value {
	switch v.Type() {
	case pcommon.ValueTypeStr:
		return otelanalytics.StringValue(v.Str())
	case pcommon.ValueTypeInt:
		return otelanalytics.IntValue(v.Int())
	case pcommon.ValueTypeDouble:
		return otelanalytics.DoubleValue(v.Double())
	case pcommon.ValueTypeBool:
		if v.Bool() {
			return otelanalytics.Value{Kind: otelanalytics.KindBool, Int: 1}
		}
		return otelanalytics.Value{Kind: otelanalytics.KindBool}
	case pcommon.ValueTypeEmpty:
		return otelanalytics.Value{}
	}
	return otelanalytics.Value{Kind: otelanalytics.KindOther}
}

func decodeAll(m *otelanalytics.Mapper, buf []byte) ([]otelanalytics.Record, decodeStats, error) {
	d := decoder{m: m}
	d.reset(m.Now())
	err := d.decode(buf)
	return d.recs, d.stats, err
}

func TestDecodeMatchesPdata(t *testing.T) {
	m := testMapper()
	for seed := range uint64(5) {
		td := proxySpans(300, seed)
		want, wantRejected := referenceMap(m, td)
		got, stats, err := decodeAll(m, marshal(t, td))
		require.NoError(t, err)
		require.Equal(t, want, got)
		require.Equal(t, wantRejected, stats.rejectedTotal())
		require.Equal(t, 300, stats.spans)
	}
}

// FuzzDecode checks that the decoder accepts exactly what pdata accepts and
// maps it as pdata's view of the same bytes is mapped.
func FuzzDecode(f *testing.F) {
	m := testMapper()
	f.Add(marshal(f, proxySpans(3, 1)))
	f.Add(marshal(f, proxySpans(1, 2)))
	f.Add([]byte{0x0a, 0x02, 0x12, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		req := ptraceotlp.NewExportRequest()
		perr := req.UnmarshalProto(data)
		got, _, err := decodeAll(m, data)
		if perr != nil {
			require.Error(t, err, "pdata refused: %v", perr)
			return
		}
		require.NoError(t, err)
		want, _ := referenceMap(m, req.Traces())
		require.Equal(t, len(want), len(got))
		for i := range want {
			if math.IsNaN(want[i].Weight) {
				continue
			}
			require.Equal(t, want[i], got[i])
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	m := testMapper()
	buf := marshal(b, proxySpans(512, 7))
	d := decoder{m: m}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		d.reset(m.Now())
		if err := d.decode(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*512), "ns/span")
}

func BenchmarkDecodePdata(b *testing.B) {
	buf := marshal(b, proxySpans(512, 7))
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		req := ptraceotlp.NewExportRequest()
		if err := req.UnmarshalProto(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*512), "ns/span")
}

// TestPlainKeyValueLayouts: the one-pass attribute path takes both field
// orders senders write, so that neither SDK traffic (key first) nor
// traffic forwarded by a Collector (pdata writes the value first) falls
// to the general path, and it leaves anything else to that path.
func TestPlainKeyValueLayouts(t *testing.T) {
	kv := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	key := []byte{0x0a, 3, 'a', '.', 'b'}
	strVal := []byte{0x12, 4, 0x0a, 2, 'h', 'i'}
	intVal := []byte{0x12, 3, 0x18, 0xbb, 0x03}
	for _, c := range []struct {
		name string
		buf  []byte
		want otelanalytics.Value
	}{
		{"key first, string", kv(key, strVal), otelanalytics.StringValue("hi")},
		{"value first, string", kv(strVal, key), otelanalytics.StringValue("hi")},
		{"key first, int", kv(key, intVal), otelanalytics.IntValue(443)},
		{"value first, int", kv(intVal, key), otelanalytics.IntValue(443)},
	} {
		k, v, ok := plainKeyValue(c.buf)
		require.True(t, ok, c.name)
		require.Equal(t, "a.b", k, c.name)
		require.Equal(t, c.want, v, c.name)
	}
	for name, buf := range map[string][]byte{
		"double value":        kv(key, []byte{0x12, 9, 0x21, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f}),
		"key twice":           kv(key, key),
		"trailing field":      kv(key, strVal, []byte{0x18, 1}),
		"value, key, value":   kv(strVal, key, strVal),
		"truncated value":     kv(key, strVal[:4]),
		"string and int both": kv(key, []byte{0x12, 6, 0x0a, 2, 'h', 'i', 0x18, 1}),
	} {
		_, _, ok := plainKeyValue(buf)
		require.False(t, ok, name)
	}

	// pdata's own output takes the one-pass path.
	td := ptrace.NewTraces()
	td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans().AppendEmpty().Attributes().PutStr("proxy.source", "oxylabs")
	buf := marshal(t, td)
	i := len(buf) - 1
	for buf[i] != 0x4a { // the span's attributes field, its last
		i--
	}
	s, e, err := consumeLen(buf, i+1)
	require.NoError(t, err)
	require.Equal(t, byte(0x12), buf[s], "pdata writes the value first")
	k, v, ok := plainKeyValue(buf[s:e])
	require.True(t, ok)
	require.Equal(t, "proxy.source", k)
	require.Equal(t, otelanalytics.StringValue("oxylabs"), v)
}
