package receiver

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/gzip" // gzip-compressed OTLP/gRPC requests
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/proxylens/proxylens/otelanalytics"
)

// rawMessage carries a request's bytes past gRPC's codec undecoded, so the
// receiver's own decoder reads them in place.
type rawMessage struct {
	buf  mem.Buffer // request; freed after handling
	resp []byte     // response bytes
}

// rawCodec passes rawMessages through and leaves every other message to the
// standard protobuf codec (health checks, reflection).
type rawCodec struct{ proto encoding.CodecV2 }

func (rawCodec) Name() string { return grpcproto.Name }

func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if m, ok := v.(*rawMessage); ok {
		return mem.BufferSlice{mem.SliceBuffer(m.resp)}, nil
	}
	return c.proto.Marshal(v)
}

func (c rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(*rawMessage); ok {
		m.buf = data.MaterializeToBuffer(requestBuffers)
		return nil
	}
	return c.proto.Unmarshal(data, v)
}

// zstdCompressor lets gRPC clients send zstd-compressed requests, as the
// Collector accepts them.
type zstdCompressor struct{ decoders sync.Pool }

func (*zstdCompressor) Name() string { return "zstd" }

func (*zstdCompressor) Compress(w io.Writer) (io.WriteCloser, error) {
	return zstd.NewWriter(w, zstd.WithEncoderConcurrency(1))
}

func (z *zstdCompressor) Decompress(r io.Reader) (io.Reader, error) {
	d, ok := z.decoders.Get().(*zstd.Decoder)
	if !ok {
		var err error
		d, err = newZstdDecoder()
		if err != nil {
			return nil, err
		}
	}
	if err := d.Reset(r); err != nil {
		z.decoders.Put(d)
		return nil, err
	}
	return &pooledZstd{d: d, pool: &z.decoders}, nil
}

// maxZstdWindow bounds the history a zstd frame may ask for (zstd's own
// default is 8 MiB, its long mode 128 MiB). The size of what it inflates to
// is bounded by the request limit, not here: past that limit the request is
// refused as too large.
const maxZstdWindow = 128 << 20

func newZstdDecoder() (*zstd.Decoder, error) {
	return zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(maxZstdWindow))
}

// pooledZstd returns its decoder to the pool at EOF; gRPC reads every
// decompressed stream to its end or to the size limit.
type pooledZstd struct {
	d    *zstd.Decoder
	pool *sync.Pool
}

func (p *pooledZstd) Read(b []byte) (int, error) {
	if p.d == nil {
		return 0, io.EOF
	}
	n, err := p.d.Read(b)
	if err != nil {
		p.pool.Put(p.d)
		p.d = nil
	}
	return n, err
}

// exportService describes an OTLP collector service: its one method,
// Export, is handled by handler.
func exportService(signal string, handler grpc.MethodHandler) *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: "opentelemetry.proto.collector." + signal + ".v1." + strings.ToUpper(signal[:1]) + signal[1:] + "Service",
		HandlerType: (*any)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "Export", Handler: handler}},
		Metadata:    "opentelemetry/proto/collector/" + signal + "/v1/" + signal + "_service.proto",
	}
}

// The gRPC flow-control windows: per stream and per connection.
const (
	grpcStreamWindow = 1 << 20
	grpcConnWindow   = 4 << 20
)

func (r *Receiver) newGRPCServer() *grpc.Server {
	opts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(rawCodec{proto: encoding.GetCodecV2(grpcproto.Name)}),
		grpc.MaxRecvMsgSize(int(r.cfg.MaxRequestBytes)),
		experimental.BufferPool(requestBuffers),
		// HTTP/2 flow control starts a stream at 64 KiB, so a 512-span
		// request (about 250 KiB) waited for window updates, several
		// round trips between goroutines on both sides; that tail showed
		// in the export latency. A static window larger than a typical
		// request (and the connection's, for a few streams at once) lets
		// it arrive in one go. It bounds what a client may send ahead of
		// the handler, which reads every request at once anyway.
		grpc.InitialWindowSize(grpcStreamWindow),
		grpc.InitialConnWindowSize(grpcConnWindow),
	}
	if r.cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(r.cfg.TLS)))
	}
	srv := grpc.NewServer(opts...)
	srv.RegisterService(exportService("trace", r.grpcHandler(r.traceSignal(transportGRPC))), r)
	if r.series != nil {
		srv.RegisterService(exportService("metrics", r.grpcHandler(metricsSignal(r.series))), r)
	}
	return srv
}

// grpcAuthorize applies Config.Authorize to a call's authorization
// metadata.
func (r *Receiver) grpcAuthorize(ctx context.Context) error {
	if r.cfg.Authorize == nil {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	var auth string
	if v := md.Get("authorization"); len(v) > 0 {
		auth = v[0]
	}
	if !r.cfg.Authorize(auth) {
		return status.Error(codes.Unauthenticated, "an ingest token is required (authorization: Bearer …)")
	}
	return nil
}

// grpcHandler handles the Export calls of one signal: the request's bytes,
// as they came, go to the signal's decoder.
func (r *Receiver) grpcHandler(sig signal) grpc.MethodHandler {
	return func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		if err := r.grpcAuthorize(ctx); err != nil {
			return nil, err
		}
		start := time.Now()
		var msg rawMessage
		if err := dec(&msg); err != nil {
			return nil, err
		}
		defer msg.buf.Free()
		body := msg.buf.ReadOnlyData()
		res, err := r.grpcHandle(ctx, body, sig)
		if sig.done != nil {
			sig.done(outcome(res, err), start)
		}
		if err != nil {
			return nil, r.grpcStatus(err)
		}
		if res.rejected > 0 { // else the empty message
			if msg.resp, err = sig.response(res).MarshalProto(); err != nil {
				return nil, status.Error(codes.Internal, err.Error())
			}
		}
		return &msg, nil
	}
}

func (r *Receiver) grpcHandle(ctx context.Context, body []byte, sig signal) (exportResult, error) {
	n := int64(len(body))
	if !r.budget.acquire(n) {
		return exportResult{}, otelanalytics.ErrOverloaded
	}
	defer r.budget.release(n)
	return sig.export(ctx, body)
}

// grpcStatus turns an export error into the status the OTLP specification
// asks for: InvalidArgument for bad data, Unavailable with RetryInfo when
// the client should retry later.
func (r *Receiver) grpcStatus(err error) error {
	switch {
	case errors.Is(err, errMalformed):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	st := status.New(codes.Unavailable, err.Error())
	if ds, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(r.cfg.RetryAfter)}); derr == nil {
		st = ds
	}
	return st.Err()
}
