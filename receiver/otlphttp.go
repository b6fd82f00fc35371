package receiver

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/proxylens/proxylens/otelanalytics"
)

// OTLP/HTTP: POST /v1/traces and /v1/metrics on the receiver's listener,
// and Prometheus' path for OTLP metrics on the query API's
// (SeriesWriter.Register). Every signal is served by httpExports.serve.

const (
	contentProtobuf = "application/x-protobuf"
	contentJSON     = "application/json"
)

type httpServer struct {
	srv *http.Server
	ln  net.Listener
}

func newHTTPServer(r *Receiver, ln net.Listener) *httpServer {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/traces", r.ServeTraces)
	if r.series != nil {
		mux.HandleFunc("/v1/metrics", r.ServeMetrics)
	}
	var h http.Handler = mux
	if auth := r.cfg.Authorize; auth != nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if !auth(req.Header.Get("Authorization")) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="proxylens OTLP"`)
				http.Error(w, "an ingest token is required (Authorization: Bearer …)", http.StatusUnauthorized)
				return
			}
			mux.ServeHTTP(w, req)
		})
	}
	srv := &http.Server{
		Handler:           BoundReads(h, r.cfg.ReadTimeout, r.reg, "otlp_http"),
		ReadHeaderTimeout: r.cfg.ReadHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(r.log.Handler(), slog.LevelDebug),
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.log.Error("OTLP/HTTP server stopped", "err", err)
		}
	}()
	return &httpServer{srv: srv, ln: ln}
}

// signal is what differs between the OTLP signals served: traces, mapped
// to records, and metrics, written as series.
type signal struct {
	// fromJSON re-encodes an OTLP/JSON export request as protobuf.
	fromJSON func(body []byte) ([]byte, error)
	// refused, if set, reports whether every request is refused as
	// overloaded now: it is asked before an OTLP/JSON body is parsed.
	refused func() bool
	// export handles one protobuf export request.
	export func(ctx context.Context, body []byte) (exportResult, error)
	// response is the export response for res (its partial success).
	response func(res exportResult) marshaler
	// done, if set, is told of every request's outcome and start.
	done func(outcome string, start time.Time)
}

// marshaler is an OTLP export response.
type marshaler interface {
	MarshalJSON() ([]byte, error)
	MarshalProto() ([]byte, error)
}

// traceSignal is the trace signal over transport.
func (r *Receiver) traceSignal(transport int) signal {
	return signal{
		fromJSON: func(body []byte) ([]byte, error) {
			if err := checkJSON(body); err != nil {
				return nil, err
			}
			er := ptraceotlp.NewExportRequest()
			if err := er.UnmarshalJSON(body); err != nil {
				// The JSON parser's message quotes the body, which may hold
				// credentials: keep only that it failed.
				return nil, fmt.Errorf("%w: not a valid OTLP/JSON ExportTraceServiceRequest", errMalformed)
			}
			return er.MarshalProto()
		},
		refused: r.saturated,
		export: func(ctx context.Context, body []byte) (exportResult, error) {
			return r.export(ctx, transport, body)
		},
		response: func(res exportResult) marshaler {
			resp := ptraceotlp.NewExportResponse()
			if res.rejected > 0 {
				resp.PartialSuccess().SetRejectedSpans(res.rejected)
				resp.PartialSuccess().SetErrorMessage(res.message)
			}
			return resp
		},
		done: func(outcome string, start time.Time) {
			r.m.requests[transport][outcome].Inc()
			if !start.IsZero() {
				r.m.duration[transport].UpdateDuration(start)
			}
		},
	}
}

// metricsSignal is the metrics signal: OTLP metrics written as series by w.
func metricsSignal(w *SeriesWriter) signal {
	return signal{
		fromJSON: func(body []byte) ([]byte, error) {
			if err := checkJSON(body); err != nil {
				return nil, err
			}
			er := pmetricotlp.NewExportRequest()
			if err := er.UnmarshalJSON(body); err != nil {
				return nil, fmt.Errorf("%w: not a valid OTLP/JSON ExportMetricsServiceRequest", errMalformed)
			}
			return er.MarshalProto()
		},
		export: w.exportOTLP,
		response: func(res exportResult) marshaler {
			resp := pmetricotlp.NewExportResponse()
			if res.rejected > 0 {
				resp.PartialSuccess().SetRejectedDataPoints(res.rejected)
				resp.PartialSuccess().SetErrorMessage(res.message)
			}
			return resp
		},
		// writeOTLP counts what reached it; a body refused before it is
		// invalid (not a method or content type refused before reading).
		done: func(outcome string, start time.Time) {
			switch {
			case outcome == "malformed" || outcome == "too_large" || (outcome == "unsupported" && !start.IsZero()):
				w.requests("otlp", "invalid").Inc()
			case outcome == "overloaded":
				w.requests("otlp", "overloaded").Inc()
			}
		},
	}
}

// ServeTraces handles POST /v1/traces.
func (r *Receiver) ServeTraces(w http.ResponseWriter, req *http.Request) {
	r.http.serve(w, req, r.traceSignal(transportHTTP))
}

// ServeMetrics handles POST /v1/metrics.
func (r *Receiver) ServeMetrics(w http.ResponseWriter, req *http.Request) {
	r.http.serve(w, req, metricsSignal(r.series))
}

// httpExports serves OTLP/HTTP export requests as the OTLP specification
// says: protobuf or JSON, gzip or zstd, status codes, partial success,
// throttling with Retry-After.
type httpExports struct {
	limit      int64         // bytes of a request, decompressed
	retryAfter time.Duration // suggested to throttled clients; 0: none
	budget     *budget       // request bytes held at once; nil: no bound
}

var (
	bufPool  = sync.Pool{New: func() any { return new([]byte) }}
	gzipPool sync.Pool // *gzip.Reader
	zstdPool sync.Pool // *zstd.Decoder
)

// maxPooledBuf is the largest request buffer kept for reuse.
const maxPooledBuf = 4 << 20

// serve handles one export request of signal sig.
func (h *httpExports) serve(w http.ResponseWriter, req *http.Request, sig signal) {
	start := time.Now()
	done := func(outcome string, start time.Time) {
		if sig.done != nil {
			sig.done(outcome, start)
		}
	}
	if req.Method != http.MethodPost {
		done("unsupported", time.Time{})
		w.Header().Set("Allow", http.MethodPost)
		writeStatus(w, "", http.StatusMethodNotAllowed, codes.Unimplemented, "method not allowed: OTLP/HTTP exports are POST requests", 0)
		return
	}
	ctype, _, err := mime.ParseMediaType(req.Header.Get("Content-Type"))
	if err != nil || (ctype != contentProtobuf && ctype != contentJSON) {
		done("unsupported", time.Time{})
		writeStatus(w, "", http.StatusUnsupportedMediaType, codes.InvalidArgument,
			"unsupported content type: send application/x-protobuf or application/json", 0)
		return
	}
	res, err := h.handle(req, ctype, sig)
	done(outcome(res, err), start)
	if err != nil {
		h.writeError(w, ctype, err)
		return
	}
	writeResponse(w, ctype, sig.response(res))
}

func (h *httpExports) handle(req *http.Request, ctype string, sig signal) (exportResult, error) {
	bp := bufPool.Get().(*[]byte)
	reserved := int64(0)
	defer func() {
		h.budget.release(reserved)
		if cap(*bp) <= maxPooledBuf {
			bufPool.Put(bp)
		}
	}()
	body, err := h.readBody(req, bp, &reserved)
	if err != nil {
		return exportResult{}, err
	}
	if ctype == contentJSON {
		if sig.refused != nil && sig.refused() {
			return exportResult{}, otelanalytics.ErrOverloaded
		}
		if body, err = sig.fromJSON(body); err != nil {
			return exportResult{}, err
		}
	}
	return sig.export(req.Context(), body)
}

// writeResponse writes an OTLP export response with 200, in the
// request's encoding.
func writeResponse(w http.ResponseWriter, ctype string, resp marshaler) {
	var body []byte
	var err error
	if ctype == contentJSON {
		body, err = resp.MarshalJSON()
	} else {
		body, err = resp.MarshalProto()
	}
	if err != nil {
		writeStatus(w, ctype, http.StatusInternalServerError, codes.Internal, "encode response", 0)
		return
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// readBody reads and decompresses the request body into *bp. The in-flight
// budget is reserved as bytes arrive (or come out of the decompressor),
// never from the announced Content-Length, and reading stops at the size
// limit, so that neither a slow or large body nor a decompression bomb
// holds more than it has sent or than the budget. *reserved is what the
// request holds of the budget when readBody returns; the caller releases
// it.
func (h *httpExports) readBody(req *http.Request, bp *[]byte, reserved *int64) ([]byte, error) {
	limit := h.limit
	// Everything reserved while reading counts as arriving until the body
	// is complete; the decompressor's state is released at the end.
	var state int64
	defer func() {
		h.budget.arrived(*reserved)
		h.budget.release(state)
		*reserved -= state
	}()
	reserve := h.budget.arrivingInto(reserved)
	var src io.Reader = req.Body
	switch enc := strings.ToLower(req.Header.Get("Content-Encoding")); enc {
	case "", "identity":
		if req.ContentLength > limit {
			return nil, fmt.Errorf("%w: %d bytes, the limit is %d", errTooLarge, req.ContentLength, limit)
		}
	case "gzip":
		if !reserve(gzipState) {
			return nil, otelanalytics.ErrOverloaded
		}
		state = gzipState
		zr, _ := gzipPool.Get().(*gzip.Reader)
		var err error
		if zr == nil {
			zr, err = gzip.NewReader(req.Body)
		} else {
			err = zr.Reset(req.Body)
		}
		if err != nil {
			return nil, gzipError(err)
		}
		defer gzipPool.Put(zr)
		src = zr
	case "zstd":
		window, stream, err := zstdWindow(req.Body)
		if err != nil {
			return nil, readError(err)
		}
		if !reserve(zstdState(window)) {
			return nil, otelanalytics.ErrOverloaded
		}
		state = zstdState(window)
		zr, _ := zstdPool.Get().(*zstd.Decoder)
		if zr == nil {
			zr, err = newZstdDecoder()
		}
		if err == nil {
			err = resetZstd(zr, stream, window)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: zstd: %w", errMalformed, err)
		}
		defer func() {
			_ = zr.Reset(nil)
			zstdPool.Put(zr)
		}()
		src = zr
	default:
		return nil, fmt.Errorf("%w: content encoding %q", errUnsupported, enc)
	}

	// A body of known length gets a buffer of that length (+1 to see EOF
	// without growing) as its reservation reaches it, not before.
	size := limit + 1
	if req.ContentLength >= 0 && src == io.Reader(req.Body) {
		size = req.ContentLength + 1
	}
	buf, err := readReserving(src, bp, size, limit, reserve)
	switch {
	case err == nil, errors.Is(err, errTooLarge), errors.Is(err, otelanalytics.ErrOverloaded):
		return buf, err
	case src != io.Reader(req.Body) && !errors.Is(err, ErrReadTimeout):
		return nil, decompressError(req, err)
	}
	return nil, readError(err)
}

// readError classifies an error reading the request body.
func readError(err error) error {
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, ErrReadTimeout):
		return err
	case errors.As(err, &mbe):
		return fmt.Errorf("%w: %w", errTooLarge, err)
	case errors.Is(err, errZstdWindow):
		return err
	}
	return fmt.Errorf("%w: read body: %w", errMalformed, err)
}

func gzipError(err error) error {
	if errors.Is(err, ErrReadTimeout) {
		return err
	}
	return fmt.Errorf("%w: gzip: %w", errMalformed, err)
}

// decompressError classifies an error of a decompressing read: the body's
// own read errors are passed on by the decompressors.
func decompressError(req *http.Request, err error) error {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return fmt.Errorf("%w: %w", errTooLarge, err)
	case errors.Is(err, zstd.ErrWindowSizeExceeded), errors.Is(err, zstd.ErrDecoderSizeExceeded):
		return errZstdWindow
	}
	return fmt.Errorf("%w: %s: %w", errMalformed, strings.ToLower(req.Header.Get("Content-Encoding")), err)
}

// writeError answers a failed export as the OTLP specification says.
func (h *httpExports) writeError(w http.ResponseWriter, ctype string, err error) {
	switch {
	case errors.Is(err, errMalformed):
		writeStatus(w, ctype, http.StatusBadRequest, codes.InvalidArgument, err.Error(), 0)
	case errors.Is(err, errTooLarge):
		writeStatus(w, ctype, http.StatusRequestEntityTooLarge, codes.ResourceExhausted, err.Error(), 0)
	case errors.Is(err, errUnsupported):
		writeStatus(w, ctype, http.StatusUnsupportedMediaType, codes.InvalidArgument, err.Error(), 0)
	case errors.Is(err, ErrReadTimeout): // the client is too slow to be told to retry sooner
		writeStatus(w, ctype, http.StatusRequestTimeout, codes.DeadlineExceeded, err.Error(), 0)
	default: // saturated, stopping, canceled, or the store failed: the client retries
		writeStatus(w, ctype, http.StatusServiceUnavailable, codes.Unavailable, err.Error(), h.retryAfter)
	}
}

// writeStatus writes a google.rpc.Status body in the request's encoding
// (plain text when the request's encoding is unknown).
func writeStatus(w http.ResponseWriter, ctype string, httpCode int, code codes.Code, msg string, retryAfter time.Duration) {
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(retryAfter/time.Second)))
	}
	st := &spb.Status{Code: int32(code), Message: msg}
	var body []byte
	var err error
	switch ctype {
	case contentProtobuf:
		body, err = proto.Marshal(st)
	case contentJSON:
		body, err = protojson.Marshal(st)
	default:
		ctype, body = "text/plain; charset=utf-8", []byte(msg+"\n")
	}
	if err != nil {
		ctype, body = "text/plain; charset=utf-8", []byte(msg+"\n")
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(httpCode)
	_, _ = w.Write(body)
}
