package receiver

import (
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"

	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/selfmetrics"
)

// maxAhead is how far in the future a written sample may be, as in
// Prometheus.
const maxAhead = 10 * time.Minute

// SeriesWriterOptions are a SeriesWriter's collaborators and limits.
type SeriesWriterOptions struct {
	// MaxRequestBytes bounds a request after decompression. Default 64 MiB.
	MaxRequestBytes int64
	// MaxInflightBytes bounds the request bytes held at once until a
	// receiver shares its budget with the writer (Receiver.ServeMetricsTo).
	// Requests begun before then keep to this one to their end, so for as
	// long as they last the two may hold twice the bound. Default 256 MiB.
	MaxInflightBytes int64
	// SeriesCacheSize bounds how many remote-written series keep their
	// labels memoised by their bytes on the wire (see seriesCache).
	// Default 65,536.
	SeriesCacheSize int
	// AcceptReservedNames writes series named proxy_* and proxylens_*
	// too (see ReservedName): off, they are refused.
	AcceptReservedNames bool
	// SetMetadata records the metadata of written families (nil: dropped).
	SetMetadata func(map[string]metadata.Metadata) error
	// RetryAfter is suggested to clients refused while the store is
	// read-only (a full disk); 0: none.
	RetryAfter time.Duration
	Metrics    *selfmetrics.Registry
	Logger     *slog.Logger
	Now        func() time.Time
}

// SeriesWriter takes series written from outside into the store: Prometheus
// remote write 1.0 (POST /api/v1/write) and OTLP metrics (the OTLP
// receiver's /v1/metrics and MetricsService/Export, and Prometheus' own
// path POST /api/v1/otlp/v1/metrics).
//
// All methods are safe for concurrent use.
type SeriesWriter struct {
	app   storage.AppendableV2
	opts  SeriesWriterOptions
	http  httpExports // Prometheus' OTLP path
	cache *seriesCache
	// budget is the in-flight byte budget request bodies are read and
	// decoded under: the receiver's, once it serves metrics to w
	// (Receiver.ServeMetricsTo); until then one of w's own.
	budget atomic.Pointer[budget]

	requests func(api, outcome string) *metrics.Counter
	samples  func(api string) *metrics.Counter
	refused  func(api, reason string) *metrics.Counter
}

// NewSeriesWriter returns a writer appending to app.
func NewSeriesWriter(app storage.AppendableV2, opts SeriesWriterOptions) *SeriesWriter {
	def := DefaultConfig() // the receiver's bounds
	if opts.MaxRequestBytes <= 0 {
		opts.MaxRequestBytes = def.MaxRequestBytes
	}
	if opts.MaxInflightBytes <= 0 {
		opts.MaxInflightBytes = def.MaxInflightBytes
	}
	if opts.SeriesCacheSize <= 0 {
		opts.SeriesCacheSize = 1 << 16
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	reg := selfmetrics.OrNew(opts.Metrics)
	w := &SeriesWriter{app: app, opts: opts, http: httpExports{limit: opts.MaxRequestBytes, retryAfter: opts.RetryAfter}, cache: newSeriesCache(opts.SeriesCacheSize)}
	w.budget.Store(&budget{max: opts.MaxInflightBytes})
	w.requests = func(api, outcome string) *metrics.Counter {
		return reg.Counter(fmt.Sprintf(`proxylens_write_requests_total{api=%q,outcome=%q}`, api, outcome),
			"Remote write and OTLP metrics requests by API (remote_write, otlp) and outcome (accepted, partial, invalid, failed, overloaded).")
	}
	w.samples = func(api string) *metrics.Counter {
		return reg.Counter(fmt.Sprintf(`proxylens_write_samples_total{api=%q}`, api),
			"Samples and histograms written through remote write and OTLP metrics.")
	}
	w.refused = func(api, reason string) *metrics.Counter {
		return reg.Counter(fmt.Sprintf(`proxylens_write_refused_samples_total{api=%q,reason=%q}`, api, reason),
			"Samples (remote write) and data points (OTLP) refused by reason (reserved_name: a name proxylens writes itself).")
	}
	for _, api := range []string{"remote_write", "otlp"} {
		for _, o := range []string{"accepted", "partial", "invalid", "failed", "overloaded"} {
			w.requests(api, o)
		}
		w.samples(api)
		w.refused(api, reasonReservedName)
	}
	return w
}

// Register adds the write endpoints to mux: remote write, and Prometheus'
// path for OTLP metrics.
func (w *SeriesWriter) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/v1/write", w.ServeRemoteWrite)
	mux.HandleFunc("POST /api/v1/otlp/v1/metrics", w.ServeOTLP)
}

// errBadData marks a request refused as invalid: 400, not to be retried.
var errBadData = errors.New("bad data")

// reasonReservedName is the refusal reason of series whose names
// proxylens writes itself.
const reasonReservedName = "reserved_name"

// ReservedName reports whether a metric name is one proxylens owns: its
// usage counters (proxy_*) and its self-metrics (proxylens_*). Series of
// such names are refused to every writer, whatever its role: written from
// outside they would forge the counters every dashboard shows.
func ReservedName(name string) bool {
	return strings.HasPrefix(name, "proxy_") || strings.HasPrefix(name, "proxylens_")
}

// refuses reports whether w refuses a series named name.
func (w *SeriesWriter) refuses(name string) bool {
	return !w.opts.AcceptReservedNames && ReservedName(name)
}

// maxNamedSeries bounds a refused series as an error message names it.
const maxNamedSeries = 256

// reservedRefusal is what a remote write request had of reserved names:
// the series and samples skipped, and the first such series.
type reservedRefusal struct {
	series, samples int
	first           labels.Labels
}

func (rr *reservedRefusal) add(ls labels.Labels, samples int) {
	if rr.series == 0 {
		rr.first = ls
	}
	rr.series++
	rr.samples += samples
}

// message is the 400 answer of a request that had reserved names.
func (rr *reservedRefusal) message(written int) string {
	first := rr.first.String()
	if len(first) > maxNamedSeries {
		first = first[:maxNamedSeries] + "…"
	}
	return fmt.Sprintf("%d series (%d samples) refused: names starting with proxy_ or proxylens_ are written by proxylens only; the first: %s; the other %d samples were written",
		rr.series, rr.samples, first, written)
}

// isSampleError reports an append error that the sample causes, as opposed
// to the store failing.
func isSampleError(err error) bool {
	return errors.Is(err, storage.ErrOutOfOrderSample) || errors.Is(err, storage.ErrTooOldSample) ||
		errors.Is(err, storage.ErrDuplicateSampleForTimestamp) || errors.Is(err, storage.ErrOutOfBounds)
}

// ServeRemoteWrite handles POST /api/v1/write: a snappy-compressed
// prometheus.WriteRequest (remote write 1.0). Success is 204. An invalid
// series or sample refuses the whole request with 400. Series with a
// reserved name (ReservedName) are skipped and the rest written, as
// Prometheus' receiver handles a partly bad request: the answer is then
// 400 (not retried by senders) naming the first and the count. The body
// is read and decoded under the in-flight budget (remoteWrite); when it
// is full the answer is 503 with Retry-After, which senders retry.
func (w *SeriesWriter) ServeRemoteWrite(rw http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, params, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/x-protobuf" {
			w.requests("remote_write", "invalid").Inc()
			http.Error(rw, fmt.Sprintf("unsupported content type %q: remote write sends application/x-protobuf", ct), http.StatusUnsupportedMediaType)
			return
		}
		if p := params["proto"]; p != "" && p != "prometheus.WriteRequest" {
			w.requests("remote_write", "invalid").Inc()
			http.Error(rw, fmt.Sprintf("unsupported protobuf message %q: proxylens takes remote write 1.0 (prometheus.WriteRequest)", p), http.StatusUnsupportedMediaType)
			return
		}
	}
	if enc := r.Header.Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "snappy") {
		w.requests("remote_write", "invalid").Inc()
		http.Error(rw, fmt.Sprintf("unsupported content encoding %q: remote write 1.0 is snappy-compressed", enc), http.StatusUnsupportedMediaType)
		return
	}
	n, reserved, err := w.remoteWrite(r)
	switch {
	case err == nil && reserved.series > 0:
		w.requests("remote_write", "partial").Inc()
		w.samples("remote_write").Add(n)
		w.refused("remote_write", reasonReservedName).Add(reserved.samples)
		msg := reserved.message(n)
		w.opts.Logger.Warn("remote write: series with reserved names refused, the rest written", "series", reserved.series, "samples", reserved.samples, "first", reserved.first.Get(model.MetricNameLabel))
		http.Error(rw, msg, http.StatusBadRequest)
	case err == nil:
		w.requests("remote_write", "accepted").Inc()
		w.samples("remote_write").Add(n)
		rw.WriteHeader(http.StatusNoContent)
	case errors.Is(err, errBadData):
		w.requests("remote_write", "invalid").Inc()
		w.opts.Logger.Warn("remote write refused", "err", err)
		http.Error(rw, err.Error(), http.StatusBadRequest)
	case errors.Is(err, otelanalytics.ErrOverloaded):
		// The in-flight budget is full: the sender retries.
		w.requests("remote_write", "overloaded").Inc()
		if w.opts.RetryAfter > 0 {
			rw.Header().Set("Retry-After", strconv.Itoa(int(w.opts.RetryAfter/time.Second)))
		}
		http.Error(rw, "ingest saturated: the request bytes in flight are at receiver.max_inflight_bytes; retry later", http.StatusServiceUnavailable)
	case errors.Is(err, syscall.ENOSPC):
		// The store is read-only for lack of disk space (it logs that
		// once): the sender retries, nothing it was told is written is lost.
		w.requests("remote_write", "failed").Inc()
		if w.opts.RetryAfter > 0 {
			rw.Header().Set("Retry-After", strconv.Itoa(int(w.opts.RetryAfter/time.Second)))
		}
		http.Error(rw, err.Error(), http.StatusServiceUnavailable)
	default:
		w.requests("remote_write", "failed").Inc()
		w.opts.Logger.Error("remote write failed", "err", err)
		http.Error(rw, err.Error(), http.StatusInternalServerError)
	}
}

// readBody reads r's body, at most MaxRequestBytes, into *bp, reserving
// from b as the bytes arrive (readReserving), never from the announced
// Content-Length. *reserved is what the request holds of b when readBody
// returns; the caller releases it.
func (w *SeriesWriter) readBody(r *http.Request, b *budget, bp *[]byte, reserved *int64) ([]byte, error) {
	limit := w.opts.MaxRequestBytes
	if r.ContentLength > limit {
		return nil, fmt.Errorf("%w: the request is larger than %d bytes", errBadData, limit)
	}
	defer func() { b.arrived(*reserved) }()
	size := limit + 1
	if r.ContentLength >= 0 {
		size = r.ContentLength + 1
	}
	body, err := readReserving(r.Body, bp, size, limit, b.arrivingInto(reserved))
	switch {
	case err == nil, errors.Is(err, otelanalytics.ErrOverloaded):
		return body, err
	case errors.Is(err, errTooLarge):
		return nil, fmt.Errorf("%w: the request is larger than %d bytes", errBadData, limit)
	}
	return nil, fmt.Errorf("%w: read body: %w", errBadData, err)
}

// remoteWrite writes a request and returns the samples written and what
// was skipped for reserved names; an error means nothing was written. The
// request's bytes, compressed and decoded, are held within the in-flight
// budget shared with the receiver (see ServeMetricsTo) until it returns.
func (w *SeriesWriter) remoteWrite(r *http.Request) (int, reservedRefusal, error) {
	var none reservedRefusal
	b := w.budget.Load()
	bp := bufPool.Get().(*[]byte)
	held := int64(0)
	defer func() {
		b.release(held)
		if cap(*bp) <= maxPooledBuf {
			bufPool.Put(bp)
		}
	}()
	compressed, err := w.readBody(r, b, bp, &held)
	if err != nil {
		return 0, none, err
	}
	size, err := snappy.DecodedLen(compressed)
	if err != nil {
		return 0, none, fmt.Errorf("%w: snappy: %w", errBadData, err)
	}
	if int64(size) > w.opts.MaxRequestBytes {
		return 0, none, fmt.Errorf("%w: the request decompresses to %d bytes, more than %d", errBadData, size, w.opts.MaxRequestBytes)
	}
	// The decoded size is reserved before it is allocated: a few
	// kilobytes that claim 64 MiB decoded hold the 64 MiB.
	if !b.acquire(int64(size), held) {
		return 0, none, otelanalytics.ErrOverloaded
	}
	held += int64(size)
	buf := requestBuffers.Get(size)
	defer requestBuffers.Put(buf)
	raw, err := snappy.Decode(*buf, compressed)
	if err != nil {
		return 0, none, fmt.Errorf("%w: snappy: %w", errBadData, err)
	}
	// The fast path takes what every sender sends; whatever it does not
	// take (reserved names among it), the path below decides.
	limit := w.opts.Now().Add(maxAhead).UnixMilli()
	app := w.app.AppenderV2(r.Context())
	if n, ok := w.appendFast(app, raw, limit); ok {
		if err := app.Commit(); err != nil {
			return 0, none, err
		}
		return n, none, nil
	}
	if err := app.Rollback(); err != nil {
		return 0, none, err
	}
	var req prompb.WriteRequest
	if err := req.Unmarshal(raw); err != nil {
		return 0, none, fmt.Errorf("%w: not a prometheus.WriteRequest: %w", errBadData, err)
	}
	app = w.app.AppenderV2(r.Context())
	n, reserved, err := w.appendRemoteWrite(app, &req, limit)
	if err != nil {
		_ = app.Rollback()
		return 0, none, err
	}
	if err := app.Commit(); err != nil {
		return 0, none, err
	}
	w.setMetadata(remoteWriteMetadata(req.Metadata, w.refuses))
	return n, reserved, nil
}

// appendRemoteWrite appends a decoded request; samples after limit (Unix
// ms) are refused. Series with reserved names are skipped and reported.
func (w *SeriesWriter) appendRemoteWrite(app storage.AppenderV2, req *prompb.WriteRequest, limit int64) (int, reservedRefusal, error) {
	var b labels.ScratchBuilder
	var reserved reservedRefusal
	n := 0
	for i := range req.Timeseries {
		ts := &req.Timeseries[i]
		b.Reset()
		for _, l := range ts.Labels {
			if l.Value != "" {
				b.Add(l.Name, l.Value)
			}
		}
		b.Sort()
		ls := b.Labels()
		if err := validSeries(ls); err != nil {
			return 0, reserved, fmt.Errorf("%w: series %d: %w", errBadData, i, err)
		}
		if w.refuses(ls.Get(model.MetricNameLabel)) {
			reserved.add(ls, len(ts.Samples)+len(ts.Histograms))
			continue
		}
		ref := storage.SeriesRef(0)
		for _, s := range ts.Samples {
			if s.Timestamp > limit {
				return 0, reserved, fmt.Errorf("%w: %v for series %s at %d: more than %s in the future", errBadData, storage.ErrOutOfBounds, ls, s.Timestamp, maxAhead)
			}
			var err error
			if ref, err = app.Append(ref, ls, 0, s.Timestamp, s.Value, nil, nil, storage.AOptions{}); err != nil {
				return 0, reserved, appendError(err, ls, s.Timestamp)
			}
			n++
		}
		for _, h := range ts.Histograms {
			if h.Timestamp > limit {
				return 0, reserved, fmt.Errorf("%w: %v for series %s at %d: more than %s in the future", errBadData, storage.ErrOutOfBounds, ls, h.Timestamp, maxAhead)
			}
			var err error
			if h.IsFloatHistogram() {
				fh := h.ToFloatHistogram()
				if verr := fh.Validate(); verr != nil {
					return 0, reserved, fmt.Errorf("%w: series %s at %d: %w", errBadData, ls, h.Timestamp, verr)
				}
				ref, err = app.Append(ref, ls, 0, h.Timestamp, 0, nil, fh, storage.AOptions{})
			} else {
				ih := h.ToIntHistogram()
				if verr := ih.Validate(); verr != nil {
					return 0, reserved, fmt.Errorf("%w: series %s at %d: %w", errBadData, ls, h.Timestamp, verr)
				}
				ref, err = app.Append(ref, ls, 0, h.Timestamp, 0, ih, nil, storage.AOptions{})
			}
			if err != nil {
				return 0, reserved, appendError(err, ls, h.Timestamp)
			}
			n++
		}
	}
	return n, reserved, nil
}

// validSeries checks a written series' labels as Prometheus does.
func validSeries(ls labels.Labels) error {
	if ls.Get(model.MetricNameLabel) == "" {
		return fmt.Errorf("no metric name in %s", ls)
	}
	if !ls.IsValid(model.UTF8Validation) {
		return fmt.Errorf("invalid metric name or labels in %s", ls)
	}
	if dup, ok := ls.HasDuplicateLabelNames(); ok {
		return fmt.Errorf("label %q repeated in %s", dup, ls)
	}
	return nil
}

func appendError(err error, ls labels.Labels, t int64) error {
	if isSampleError(err) {
		return fmt.Errorf("%w: %w for series %s at %d", errBadData, err, ls, t)
	}
	return fmt.Errorf("append to series %s: %w", ls, err)
}

// remoteWriteMetadata is a request's metadata, but of the names refused.
func remoteWriteMetadata(mds []prompb.MetricMetadata, refused func(string) bool) map[string]metadata.Metadata {
	out := map[string]metadata.Metadata{}
	for _, md := range mds {
		if refused(md.MetricFamilyName) {
			continue
		}
		typ := strings.ToLower(md.Type.String())
		if md.Type == prompb.MetricMetadata_GAUGEHISTOGRAM {
			typ = "gaugehistogram"
		}
		out[md.MetricFamilyName] = metadata.Metadata{Type: model.MetricType(typ), Help: md.Help, Unit: md.Unit}
	}
	return out
}

func (w *SeriesWriter) setMetadata(mds map[string]metadata.Metadata) {
	if w.opts.SetMetadata == nil || len(mds) == 0 {
		return
	}
	if err := w.opts.SetMetadata(mds); err != nil {
		w.opts.Logger.Warn("store metric metadata", "err", err)
	}
}
