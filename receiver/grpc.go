package receiver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
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
		bound := r.boundGRPCRead(ctx)
		err := dec(&msg)
		if bound != nil && !bound.Stop() {
			// The read timeout closed the connection as the message came:
			// the client cannot hear of it, and sends it again.
			if err == nil {
				msg.buf.Free()
			}
			return nil, status.Error(codes.Unavailable, "the message did not arrive within receiver.read_timeout")
		}
		if err != nil {
			if sig.done != nil && status.Code(err) == codes.ResourceExhausted {
				sig.done("too_large", start)
			}
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
	switch err := inflateRefusal(body); {
	case errors.Is(err, errInflateBudget):
		return exportResult{}, fmt.Errorf("%w: %w", otelanalytics.ErrOverloaded, err)
	case err != nil:
		return exportResult{}, err
	}
	n := int64(len(body))
	if !r.budget.acquire(n, 0) {
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
	case errors.Is(err, errTooLarge):
		return status.Error(codes.ResourceExhausted, err.Error())
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
