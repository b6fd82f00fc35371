package receiver

import (
	"context"
	"fmt"
	"mime"
	"net/http"

	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/proxylens/proxylens/otelanalytics"
)

// MetricsConsumer takes the OTLP metrics of one request. When it returns
// without error, what it did not report as rejected is durable.
type MetricsConsumer interface {
	ConsumeMetrics(ctx context.Context, md pmetric.Metrics) (rejected int64, message string, err error)
}

var metricsServiceDesc = grpc.ServiceDesc{
	ServiceName: "opentelemetry.proto.collector.metrics.v1.MetricsService",
	HandlerType: (*any)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Export", Handler: nil}}, // set per server
	Metadata:    "opentelemetry/proto/collector/metrics/v1/metrics_service.proto",
}

// exportMetrics decodes and consumes one protobuf-encoded metrics request.
func (r *Receiver) exportMetrics(ctx context.Context, body []byte) (exportResult, error) {
	req := pmetricotlp.NewExportRequest()
	if err := req.UnmarshalProto(body); err != nil {
		return exportResult{}, fmt.Errorf("%w: not a valid OTLP ExportMetricsServiceRequest", errMalformed)
	}
	rejected, msg, err := r.metrics.ConsumeMetrics(ctx, req.Metrics())
	if err != nil {
		return exportResult{}, err
	}
	return exportResult{rejected: rejected, message: msg}, nil
}

func (r *Receiver) grpcExportMetrics(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	if err := r.grpcAuthorize(ctx); err != nil {
		return nil, err
	}
	var msg rawMessage
	if err := dec(&msg); err != nil {
		return nil, err
	}
	defer msg.buf.Free()
	body := msg.buf.ReadOnlyData()
	n := int64(len(body))
	if !r.acquire(n) {
		return nil, r.grpcStatus(otelanalytics.ErrOverloaded)
	}
	defer r.release(n)
	res, err := r.exportMetrics(ctx, body)
	if err != nil {
		return nil, r.grpcStatus(err)
	}
	if res.rejected > 0 {
		resp := pmetricotlp.NewExportResponse()
		resp.PartialSuccess().SetRejectedDataPoints(res.rejected)
		resp.PartialSuccess().SetErrorMessage(res.message)
		if msg.resp, err = resp.MarshalProto(); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	return &msg, nil
}

// ServeMetrics handles POST /v1/metrics.
func (r *Receiver) ServeMetrics(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeStatus(w, "", http.StatusMethodNotAllowed, codes.Unimplemented, "method not allowed: OTLP/HTTP exports are POST requests", 0)
		return
	}
	ctype, _, err := mime.ParseMediaType(req.Header.Get("Content-Type"))
	if err != nil || (ctype != contentProtobuf && ctype != contentJSON) {
		writeStatus(w, "", http.StatusUnsupportedMediaType, codes.InvalidArgument,
			"unsupported content type: send application/x-protobuf or application/json", 0)
		return
	}
	bp := bufPool.Get().(*[]byte)
	reserved := int64(0)
	defer func() {
		r.release(reserved)
		if cap(*bp) <= maxPooledBuf {
			bufPool.Put(bp)
		}
	}()
	body, err := r.readBody(req, bp, &reserved)
	if err != nil {
		r.writeError(w, ctype, err)
		return
	}
	if ctype == contentJSON {
		er := pmetricotlp.NewExportRequest()
		if err := er.UnmarshalJSON(body); err != nil {
			r.writeError(w, ctype, fmt.Errorf("%w: not a valid OTLP/JSON ExportMetricsServiceRequest", errMalformed))
			return
		}
		if body, err = er.MarshalProto(); err != nil {
			r.writeError(w, ctype, fmt.Errorf("re-encode JSON request: %w", err))
			return
		}
	}
	res, err := r.exportMetrics(req.Context(), body)
	if err != nil {
		r.writeError(w, ctype, err)
		return
	}
	resp := pmetricotlp.NewExportResponse()
	if res.rejected > 0 {
		resp.PartialSuccess().SetRejectedDataPoints(res.rejected)
		resp.PartialSuccess().SetErrorMessage(res.message)
	}
	writeResponse(w, ctype, resp)
}
