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
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/proxylens/proxylens/otelanalytics"
)

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
	if r.metrics != nil {
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
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
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

var (
	bufPool  = sync.Pool{New: func() any { return new([]byte) }}
	gzipPool sync.Pool // *gzip.Reader
	zstdPool sync.Pool // *zstd.Decoder
)

// maxPooledBuf is the largest request buffer kept for reuse.
const maxPooledBuf = 4 << 20

// ServeTraces handles POST /v1/traces.
func (r *Receiver) ServeTraces(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	if req.Method != http.MethodPost {
		r.m.requests[transportHTTP]["unsupported"].Inc()
		w.Header().Set("Allow", http.MethodPost)
		writeStatus(w, "", http.StatusMethodNotAllowed, codes.Unimplemented, "method not allowed: OTLP/HTTP exports are POST requests", 0)
		return
	}
	ctype, _, err := mime.ParseMediaType(req.Header.Get("Content-Type"))
	if err != nil || (ctype != contentProtobuf && ctype != contentJSON) {
		r.m.requests[transportHTTP]["unsupported"].Inc()
		writeStatus(w, "", http.StatusUnsupportedMediaType, codes.InvalidArgument,
			"unsupported content type: send application/x-protobuf or application/json", 0)
		return
	}
	res, err := r.httpHandle(req, ctype)
	r.m.requests[transportHTTP][outcome(res, err)].Inc()
	r.m.duration[transportHTTP].UpdateDuration(start)
	if err != nil {
		r.writeError(w, ctype, err)
		return
	}
	resp := ptraceotlp.NewExportResponse()
	if res.rejected > 0 {
		resp.PartialSuccess().SetRejectedSpans(res.rejected)
		resp.PartialSuccess().SetErrorMessage(res.message)
	}
	writeResponse(w, ctype, resp)
}

// writeResponse writes an OTLP export response (traces or metrics) with
// 200, in the request's encoding.
func writeResponse(w http.ResponseWriter, ctype string, resp interface {
	MarshalJSON() ([]byte, error)
	MarshalProto() ([]byte, error)
}) {
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

func (r *Receiver) httpHandle(req *http.Request, ctype string) (exportResult, error) {
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
		return exportResult{}, err
	}
	if ctype == contentJSON {
		er := ptraceotlp.NewExportRequest()
		if err := er.UnmarshalJSON(body); err != nil {
			// The JSON parser's message quotes the body, which may hold
			// credentials: keep only that it failed.
			return exportResult{}, fmt.Errorf("%w: not a valid OTLP/JSON ExportTraceServiceRequest", errMalformed)
		}
		if body, err = er.MarshalProto(); err != nil {
			return exportResult{}, fmt.Errorf("re-encode JSON request: %w", err)
		}
	}
	return r.export(req.Context(), transportHTTP, body)
}

// readBody reads and decompresses the request body into *bp, reserving
// in-flight bytes as the buffer grows and stopping at the size limit, so
// that neither a large body nor a decompression bomb is read whole.
func (r *Receiver) readBody(req *http.Request, bp *[]byte, reserved *int64) ([]byte, error) {
	limit := r.cfg.MaxRequestBytes
	var src io.Reader = req.Body
	switch enc := strings.ToLower(req.Header.Get("Content-Encoding")); enc {
	case "", "identity":
		if req.ContentLength > limit {
			return nil, fmt.Errorf("%w: %d bytes, the limit is %d", errTooLarge, req.ContentLength, limit)
		}
	case "gzip":
		zr, _ := gzipPool.Get().(*gzip.Reader)
		var err error
		if zr == nil {
			zr, err = gzip.NewReader(req.Body)
		} else {
			err = zr.Reset(req.Body)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %w", errMalformed, err)
		}
		defer gzipPool.Put(zr)
		src = zr
	case "zstd":
		zr, _ := zstdPool.Get().(*zstd.Decoder)
		var err error
		if zr == nil {
			zr, err = newZstdDecoder()
		}
		if err == nil {
			err = zr.Reset(req.Body)
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

	buf := (*bp)[:0]
	if req.ContentLength > 0 && src == io.Reader(req.Body) && int64(cap(buf)) < req.ContentLength {
		buf = make([]byte, 0, req.ContentLength+1) // +1 to see EOF without growing
	}
	if !r.acquire(int64(cap(buf))) {
		return nil, otelanalytics.ErrOverloaded
	}
	*reserved = int64(cap(buf))
	for {
		if len(buf) == cap(buf) {
			newCap := min(max(2*int64(cap(buf)), 64<<10), limit+1)
			if newCap <= int64(cap(buf)) {
				return nil, fmt.Errorf("%w: more than %d bytes", errTooLarge, limit)
			}
			if !r.acquire(newCap - *reserved) {
				return nil, otelanalytics.ErrOverloaded
			}
			*reserved = newCap
			grown := make([]byte, len(buf), newCap)
			copy(grown, buf)
			buf = grown
		}
		n, err := src.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			*bp = buf
			return nil, fmt.Errorf("%w: more than %d bytes", errTooLarge, limit)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			*bp = buf
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, fmt.Errorf("%w: %w", errTooLarge, err)
			}
			return nil, fmt.Errorf("%w: read body: %w", errMalformed, err)
		}
	}
	*bp = buf
	return buf, nil
}

// writeError answers a failed export as the OTLP specification says.
func (r *Receiver) writeError(w http.ResponseWriter, ctype string, err error) {
	switch {
	case errors.Is(err, errMalformed):
		writeStatus(w, ctype, http.StatusBadRequest, codes.InvalidArgument, err.Error(), 0)
	case errors.Is(err, errTooLarge):
		writeStatus(w, ctype, http.StatusRequestEntityTooLarge, codes.ResourceExhausted, err.Error(), 0)
	case errors.Is(err, errUnsupported):
		writeStatus(w, ctype, http.StatusUnsupportedMediaType, codes.InvalidArgument, err.Error(), 0)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		writeStatus(w, ctype, http.StatusServiceUnavailable, codes.Unavailable, err.Error(), r.cfg.RetryAfter)
	default: // saturated, stopping, or the store failed: the client retries
		writeStatus(w, ctype, http.StatusServiceUnavailable, codes.Unavailable, err.Error(), r.cfg.RetryAfter)
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
