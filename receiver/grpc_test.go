package receiver

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
)

// rawClientCodec sends and receives bytes as they are, so a test can put any
// bytes on the wire as an Export request.
type rawClientCodec struct{}

func (rawClientCodec) Name() string { return "proto" }

func (rawClientCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawClientCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func TestGRPCExport(t *testing.T) {
	const limit = 64 << 10
	s := startStack(t, Config{MaxRequestBytes: limit})

	t.Run("valid", func(t *testing.T) {
		td := proxySpans(50, 1)
		recs, rejected := referenceMap(testMapper(), td)
		require.Zero(t, rejected)
		want := s.requests()
		for _, r := range recs {
			want += r.Weight
		}
		resp, err := s.export(t.Context(), td)
		require.NoError(t, err)
		require.Zero(t, resp.PartialSuccess().RejectedSpans())
		require.InDelta(t, want, s.requests(), 1e-9)
	})

	t.Run("zstd", func(t *testing.T) {
		// The receiver registers gRPC's zstd compressor, which this client
		// in the same process then uses too.
		td := proxySpans(50, 4)
		recs, _ := referenceMap(testMapper(), td)
		want := s.requests()
		for _, r := range recs {
			want += r.Weight
		}
		_, err := ptraceotlp.NewGRPCClient(s.conn).Export(t.Context(), ptraceotlp.NewExportRequestFromTraces(td),
			grpc.UseCompressor("zstd"))
		require.NoError(t, err)
		require.InDelta(t, want, s.requests(), 1e-9)
	})

	t.Run("no timestamps", func(t *testing.T) {
		td := proxySpans(7, 2)
		for _, sp := range td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().All() {
			sp.SetStartTimestamp(0)
			sp.SetEndTimestamp(0)
		}
		before := s.requests()
		resp, err := s.export(t.Context(), td)
		require.NoError(t, err)
		require.EqualValues(t, 7, resp.PartialSuccess().RejectedSpans())
		require.Equal(t, "rejected 7 of 7 spans: 7 missing start or end time", resp.PartialSuccess().ErrorMessage())
		requireNoAttributeValue(t, td, resp.PartialSuccess().ErrorMessage())
		require.Equal(t, before, s.requests())
	})

	t.Run("not selected", func(t *testing.T) {
		td := ptrace.NewTraces()
		sp := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans().AppendEmpty()
		sp.SetName("SELECT")
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(testNow.Add(-2 * time.Minute)))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(testNow.Add(-time.Minute)))
		sp.Attributes().PutStr("db.system", "postgresql")
		before := s.requests()
		resp, err := s.export(t.Context(), td)
		require.NoError(t, err)
		require.Zero(t, resp.PartialSuccess().RejectedSpans(), "spans that are not proxied requests are ignored, not rejected")
		require.Equal(t, before, s.requests())
	})

	invoke := func(ctx context.Context, body []byte) ([]byte, error) {
		var resp []byte
		err := s.conn.Invoke(ctx, exportMethod, &body, &resp, grpc.ForceCodecV2(rawClientCodec{}))
		return resp, err
	}

	t.Run("malformed", func(t *testing.T) {
		for _, body := range [][]byte{
			{0x0a, 0x05, 0x0a, 0x01},       // resource_spans longer than the message
			{0x0d, 0x00, 0x00, 0x00, 0x00}, // resource_spans as a fixed32
			{0x00},                         // field 0
		} {
			_, err := invoke(t.Context(), body)
			require.Equal(t, codes.InvalidArgument, status.Code(err), "%x: %v", body, err)
			require.Contains(t, status.Convert(err).Message(), "malformed request")
			require.Nil(t, retryInfo(err), "a malformed request must not be retried")
		}
	})

	t.Run("empty", func(t *testing.T) {
		resp, err := invoke(t.Context(), nil)
		require.NoError(t, err)
		require.Empty(t, resp)
	})

	t.Run("too large", func(t *testing.T) {
		td := proxySpans(400, 3)
		require.Greater(t, len(marshal(t, td)), limit)
		before := s.requests()
		_, err := s.export(t.Context(), td)
		require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
		require.Nil(t, retryInfo(err), "RESOURCE_EXHAUSTED without RetryInfo tells the client not to retry")
		require.Equal(t, before, s.requests())
	})

	t.Run("unknown method", func(t *testing.T) {
		body := []byte{}
		var resp []byte
		err := s.conn.Invoke(t.Context(), "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
			&body, &resp, grpc.ForceCodecV2(rawClientCodec{}))
		require.Equal(t, codes.Unimplemented, status.Code(err), "%v", err)
	})

	require.EqualValues(t, 1, s.counter(`proxylens_otlp_requests_total{transport="grpc",outcome="partial"}`))
	require.EqualValues(t, 3, s.counter(`proxylens_otlp_requests_total{transport="grpc",outcome="malformed"}`))
	require.Zero(t, s.rcv.budget.inflight.Load())
}
