package receiver

import (
	"context"
	"fmt"
	"net/http"

	"github.com/prometheus/prometheus/storage"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
)

// exportOTLP decodes one protobuf-encoded OTLP metrics export request and
// writes it (see writeOTLP).
func (w *SeriesWriter) exportOTLP(ctx context.Context, body []byte) (exportResult, error) {
	req := pmetricotlp.NewExportRequest()
	if err := req.UnmarshalProto(body); err != nil {
		return exportResult{}, fmt.Errorf("%w: not a valid OTLP ExportMetricsServiceRequest", errMalformed)
	}
	return w.writeOTLP(ctx, req.Metrics())
}

// ServeOTLP handles Prometheus' path for OTLP metrics, POST
// /api/v1/otlp/v1/metrics, as the receiver's /v1/metrics answers.
// Its body is read under the in-flight budget shared with the receiver.
func (w *SeriesWriter) ServeOTLP(rw http.ResponseWriter, r *http.Request) {
	h := w.http
	h.budget = w.budget.Load()
	h.serve(rw, r, metricsSignal(w))
}

// writeOTLP converts OTLP metrics as Prometheus' OTLP endpoint does and
// writes them in one synced commit. Data points that cannot be converted
// (delta temporality, a bad histogram, a reserved name) or appended (too old, a different
// value at the same time, too far in the future) are refused and counted
// in the result; the rest are written. An error means nothing was written
// and the client should retry.
func (w *SeriesWriter) writeOTLP(ctx context.Context, md pmetric.Metrics) (exportResult, error) {
	conv := convertOTLP(md, w.refuses)
	app := w.app.AppenderV2(ctx)
	limit := w.opts.Now().Add(maxAhead).UnixMilli()
	written := 0
	for _, s := range conv.samples {
		var err error
		if s.t > limit {
			err = storage.ErrOutOfBounds
		} else {
			_, err = app.Append(0, s.ls, 0, s.t, s.f, s.h, nil, storage.AOptions{})
		}
		switch {
		case err == nil:
			written++
		case isSampleError(err):
			conv.reject(1, "%v for series %s at %d", err, s.ls, s.t)
		default:
			_ = app.Rollback()
			w.requests("otlp", "failed").Inc()
			return exportResult{}, fmt.Errorf("append to series %s: %w", s.ls, err)
		}
	}
	if err := app.Commit(); err != nil {
		w.requests("otlp", "failed").Inc()
		return exportResult{}, err
	}
	w.setMetadata(conv.metadata)
	w.samples("otlp").Add(written)
	w.refused("otlp", reasonReservedName).Add(int(conv.reserved))
	res := exportResult{rejected: conv.rejected}
	if err := errList(conv.errs); err != nil {
		res.message = err.Error()
	}
	if res.rejected > 0 {
		w.requests("otlp", "partial").Inc()
	} else {
		w.requests("otlp", "accepted").Inc()
	}
	return res, nil
}
