package receiver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"google.golang.org/grpc"

	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/selfmetrics"
)

// Consumer takes the mapped records of one request. otelanalytics.Pipeline
// implements it. When Consume returns nil the records are durable.
type Consumer interface {
	Consume(ctx context.Context, recs []otelanalytics.Record) error
}

// saturater is a Consumer that can tell it would refuse any records now
// (otelanalytics.Pipeline, while the history it holds is at its bound):
// requests are then refused as overloaded before they are decoded.
type saturater interface {
	Saturated() bool
}

// saturated reports whether the consumer refuses any records now.
func (r *Receiver) saturated() bool {
	s, ok := r.consumer.(saturater)
	return ok && s.Saturated()
}

// Config configures the receiver.
type Config struct {
	// GRPCAddr is the OTLP/gRPC listen address; empty disables gRPC.
	GRPCAddr string
	// HTTPAddr is the OTLP/HTTP listen address; empty disables HTTP.
	HTTPAddr string
	// MaxRequestBytes bounds a request body after decompression. Default
	// 64 MiB.
	MaxRequestBytes int64
	// MaxInflightBytes bounds the request bodies held at once; past it,
	// requests are refused as retryable (503 / Unavailable). A single larger
	// request is still taken when nothing else is in flight. Default 256 MiB.
	MaxInflightBytes int64
	// RetryAfter is the delay suggested to throttled clients. Default 1s.
	RetryAfter time.Duration
	// ReadHeaderTimeout bounds the time to read an HTTP request's headers;
	// past it the connection is closed. Default 10s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds the time to read an HTTP request's body, from
	// the end of its headers; past it the request is refused with 408 and
	// the connection closed (see BoundReads). On OTLP/gRPC it bounds a
	// call's message, from the call's headers; past it the call's
	// connection is closed. Default 1m.
	ReadTimeout time.Duration
	// TLS, when set, serves both listeners over TLS with it.
	TLS *tls.Config
	// Authorize, when set, is asked about every request's Authorization
	// header (gRPC: the authorization metadata); a request it refuses
	// gets 401 / Unauthenticated.
	Authorize func(authorization string) bool
}

// DefaultConfig returns the receiver's defaults, on the loopback interface.
func DefaultConfig() Config {
	return Config{
		GRPCAddr:         "127.0.0.1:4317",
		HTTPAddr:         "127.0.0.1:4318",
		MaxRequestBytes:  64 << 20,
		MaxInflightBytes: 256 << 20,
		RetryAfter:       time.Second,

		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
	}
}

// Validate reports every problem of c at once.
func (c Config) Validate() error {
	var errs []error
	if c.MaxRequestBytes < 1024 {
		errs = append(errs, fmt.Errorf("max_request_bytes: must be at least 1024, got %d", c.MaxRequestBytes))
	}
	if c.MaxInflightBytes < 1024 {
		errs = append(errs, fmt.Errorf("max_inflight_bytes: must be at least 1024, got %d", c.MaxInflightBytes))
	}
	if c.RetryAfter < time.Second || c.RetryAfter%time.Second != 0 {
		errs = append(errs, fmt.Errorf("retry_after: must be a whole number of seconds, at least 1s, got %q", c.RetryAfter.String()))
	}
	if c.ReadHeaderTimeout < time.Second {
		errs = append(errs, fmt.Errorf("read_header_timeout: must be at least 1s, got %q", c.ReadHeaderTimeout.String()))
	}
	if c.ReadTimeout < time.Second {
		errs = append(errs, fmt.Errorf("read_timeout: must be at least 1s, got %q", c.ReadTimeout.String()))
	}
	return errors.Join(errs...)
}

// Errors that decide the status of a refused request.
var (
	errMalformed   = errors.New("malformed request")
	errTooLarge    = errors.New("request too large")
	errUnsupported = errors.New("unsupported media type or encoding")
)

// Receiver serves OTLP trace exports, and metrics exports when given a
// SeriesWriter.
type Receiver struct {
	cfg      Config
	mapper   *otelanalytics.Mapper
	consumer Consumer
	series   *SeriesWriter // nil: metrics are not served
	log      *slog.Logger

	budget   budget // request bytes held
	reg      *selfmetrics.Registry
	http     httpExports
	decoders sync.Pool

	mu      sync.Mutex
	grpcSrv *grpc.Server
	grpcLn  net.Listener
	// grpcConns: the gRPC listener's connections, for its read
	// timeout; set before the gRPC server serves.
	grpcConns *grpcConns
	httpSrv   *httpServer
	started   bool
	shutdown  bool
	// inflating: the budget is gRPC decompression's (see
	// grpcInflateBudget), from Start to Shutdown.
	inflating bool

	m receiverMetrics
}

type receiverMetrics struct {
	requests      [2]map[string]*metrics.Counter // by transport, outcome
	spansReceived [2]*metrics.Counter            // by transport
	refused       func(reason string) *metrics.Counter
	notSelected   *metrics.Counter
	duration      [2]*metrics.PrometheusHistogram
	// grpcReadTimeouts: calls whose message did not arrive in time.
	grpcReadTimeouts *metrics.Counter
}

const (
	transportGRPC = 0
	transportHTTP = 1
)

var transportNames = [2]string{"grpc", "http"}

// New returns a receiver that maps spans with mapper and hands the records
// to consumer. reg and log may be nil.
func New(cfg Config, mapper *otelanalytics.Mapper, consumer Consumer, reg *selfmetrics.Registry, log *slog.Logger) (*Receiver, error) {
	def := DefaultConfig()
	if cfg.MaxRequestBytes == 0 {
		cfg.MaxRequestBytes = def.MaxRequestBytes
	}
	if cfg.MaxInflightBytes == 0 {
		cfg.MaxInflightBytes = def.MaxInflightBytes
	}
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = def.RetryAfter
	}
	if cfg.ReadHeaderTimeout == 0 {
		cfg.ReadHeaderTimeout = def.ReadHeaderTimeout
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = def.ReadTimeout
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg = selfmetrics.OrNew(reg)
	r := &Receiver{cfg: cfg, mapper: mapper, consumer: consumer, log: log, budget: budget{max: cfg.MaxInflightBytes}}
	r.http = httpExports{limit: cfg.MaxRequestBytes, retryAfter: cfg.RetryAfter, budget: &r.budget}
	r.decoders.New = func() any { return &decoder{m: mapper} }
	r.m.refused = func(reason string) *metrics.Counter {
		return reg.Counter(fmt.Sprintf(`proxylens_spans_refused_total{reason=%q}`, reason),
			"Spans refused: rejected as unmappable (reported in partial_success) or refused with the whole request (overloaded, unavailable).")
	}
	for t, name := range transportNames {
		r.m.spansReceived[t] = reg.Counter(fmt.Sprintf(`proxylens_spans_received_total{transport=%q}`, name),
			"Spans received in well-formed OTLP requests.")
		r.m.duration[t] = reg.Histogram(fmt.Sprintf(`proxylens_otlp_request_duration_seconds{transport=%q}`, name),
			"Time to handle one OTLP export request, durable commit included.",
			[]float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5})
	}
	if cfg.GRPCAddr != "" {
		r.m.grpcReadTimeouts = readTimeouts(reg, "otlp_grpc")
	}
	r.m.notSelected = reg.Counter(`proxylens_spans_dropped_total{reason="not_selected"}`,
		"Spans ignored because they are not proxied requests (no selector attribute).")
	for t, tn := range transportNames {
		r.m.requests[t] = map[string]*metrics.Counter{}
		for _, o := range outcomes {
			r.m.requests[t][o] = reg.Counter(fmt.Sprintf(`proxylens_otlp_requests_total{transport=%q,outcome=%q}`, tn, o),
				"OTLP export requests by transport and outcome (accepted, partial, malformed, too_large, unsupported, overloaded, unavailable).")
		}
	}
	// Create the refusal series up front so they read 0 rather than missing.
	for rej := otelanalytics.RejectNoTimestamps; rej < otelanalytics.NumRejections; rej++ {
		r.m.refused(rej.Label())
	}
	r.m.refused("overloaded")
	r.m.refused("unavailable")
	reg.Gauge("proxylens_inflight_request_bytes", "OTLP, remote write and OTLP metrics request bytes being handled right now.", func() float64 {
		return float64(r.budget.inflight.Load())
	})
	reg.Gauge("proxylens_inflight_request_bytes_peak", "Highest proxylens_inflight_request_bytes since start (receiver.max_inflight_bytes bounds it).", func() float64 {
		return float64(r.budget.peak.Load())
	})
	r.reg = reg
	return r, nil
}

// ServeMetricsTo makes the receiver serve OTLP metrics too (gRPC
// MetricsService/Export, HTTP POST /v1/metrics), written as series by w.
// w's own endpoints (remote write, Prometheus' OTLP path) then read and
// decode their bodies under the receiver's in-flight byte budget too
// (Config.MaxInflightBytes). Call it before Start.
func (r *Receiver) ServeMetricsTo(w *SeriesWriter) {
	r.series = w
	w.budget.Store(&r.budget)
}

// Start listens on the configured addresses and serves in the background.
// If it fails halfway, everything started is stopped again.
func (r *Receiver) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started || r.shutdown {
		return errors.New("receiver already started or shut down")
	}
	r.started = true
	var lc net.ListenConfig
	if r.cfg.GRPCAddr != "" {
		ln, err := lc.Listen(ctx, "tcp", r.cfg.GRPCAddr)
		if err != nil {
			return fmt.Errorf("listen for OTLP/gRPC on %s: %w", r.cfg.GRPCAddr, err)
		}
		r.grpcLn = ln
		r.grpcConns = &grpcConns{}
		ln = grpcListener{Listener: ln, conns: r.grpcConns}
		r.grpcSrv = r.newGRPCServer()
		grpcInflateBudget.started(&r.budget)
		r.inflating = true
		go func() {
			if err := r.grpcSrv.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				r.log.Error("OTLP/gRPC server stopped", "err", err)
			}
		}()
		r.log.Info("OTLP/gRPC receiver listening", "addr", ln.Addr().String())
	}
	if r.cfg.HTTPAddr != "" {
		ln, err := lc.Listen(ctx, "tcp", r.cfg.HTTPAddr)
		if err != nil {
			if r.grpcSrv != nil {
				r.grpcSrv.Stop()
				grpcInflateBudget.stopped(&r.budget)
				r.inflating = false
			}
			return fmt.Errorf("listen for OTLP/HTTP on %s: %w", r.cfg.HTTPAddr, err)
		}
		if r.cfg.TLS != nil {
			c := r.cfg.TLS.Clone()
			c.NextProtos = []string{"http/1.1"}
			ln = tls.NewListener(ln, c)
		}
		r.httpSrv = newHTTPServer(r, ln)
		r.log.Info("OTLP/HTTP receiver listening", "addr", ln.Addr().String())
	}
	return nil
}

// GRPCAddr returns the gRPC listener's address, or nil.
func (r *Receiver) GRPCAddr() net.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.grpcLn == nil {
		return nil
	}
	return r.grpcLn.Addr()
}

// HTTPAddr returns the HTTP listener's address, or nil.
func (r *Receiver) HTTPAddr() net.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.httpSrv == nil {
		return nil
	}
	return r.httpSrv.ln.Addr()
}

// Shutdown stops accepting requests and waits for those in progress, until
// ctx ends. It may be called more than once, and without Start.
func (r *Receiver) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	r.shutdown = true
	grpcSrv, httpSrv, inflating := r.grpcSrv, r.httpSrv, r.inflating
	r.inflating = false
	r.mu.Unlock()
	if inflating {
		defer grpcInflateBudget.stopped(&r.budget)
	}
	var errs []error
	if httpSrv != nil {
		if err := httpSrv.srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop OTLP/HTTP server: %w", err))
		}
	}
	if grpcSrv != nil {
		done := make(chan struct{})
		go func() {
			grpcSrv.GracefulStop()
			close(done)
		}()
		select {
		case <-done:
		case <-ctx.Done():
			grpcSrv.Stop()
			errs = append(errs, fmt.Errorf("stop OTLP/gRPC server: %w", ctx.Err()))
		}
	}
	return errors.Join(errs...)
}

// exportResult is what a successful export answers.
type exportResult struct {
	rejected int64
	message  string
}

// export maps and consumes one protobuf-encoded trace request. body must
// have been reserved from the budget by the caller.
func (r *Receiver) export(ctx context.Context, transport int, body []byte) (exportResult, error) {
	if r.saturated() {
		return exportResult{}, otelanalytics.ErrOverloaded
	}
	d := r.decoders.Get().(*decoder)
	defer func() {
		clear(d.recs) // drop references into the request buffer
		r.decoders.Put(d)
	}()
	d.reset(r.mapper.Now())
	if err := d.decode(body); err != nil {
		return exportResult{}, fmt.Errorf("%w: %w", errMalformed, err)
	}
	r.m.spansReceived[transport].Add(d.stats.spans)
	r.m.notSelected.Add(d.stats.rejected[otelanalytics.NotSelected])
	var res exportResult
	if n := d.stats.rejectedTotal(); n > 0 {
		res.rejected = int64(n)
		res.message = rejectionMessage(&d.stats)
		for rej := otelanalytics.RejectNoTimestamps; rej < otelanalytics.NumRejections; rej++ {
			r.m.refused(rej.Label()).Add(d.stats.rejected[rej])
		}
	}
	if len(d.recs) > 0 {
		if err := r.consumer.Consume(ctx, d.recs); err != nil {
			reason := "unavailable"
			if errors.Is(err, otelanalytics.ErrOverloaded) {
				reason = "overloaded"
			}
			r.m.refused(reason).Add(len(d.recs))
			return exportResult{}, err
		}
	}
	return res, nil
}

// rejectionMessage says why spans were rejected, without quoting any of
// their content (which may hold credentials).
func rejectionMessage(s *decodeStats) string {
	var b strings.Builder
	b.WriteString("rejected ")
	b.WriteString(strconv.Itoa(s.rejectedTotal()))
	b.WriteString(" of ")
	b.WriteString(strconv.Itoa(s.spans))
	b.WriteString(" spans:")
	sep := " "
	for rej := otelanalytics.RejectNoTimestamps; rej < otelanalytics.NumRejections; rej++ {
		if n := s.rejected[rej]; n > 0 {
			fmt.Fprintf(&b, "%s%d %s", sep, n, rej)
			sep = "; "
		}
	}
	return b.String()
}

var outcomes = []string{"accepted", "partial", "malformed", "too_large", "unsupported", "overloaded", "unavailable"}

// outcome names a request's outcome for metrics.
func outcome(res exportResult, err error) string {
	switch {
	case err == nil && res.rejected > 0:
		return "partial"
	case err == nil:
		return "accepted"
	case errors.Is(err, errMalformed):
		return "malformed"
	case errors.Is(err, errTooLarge):
		return "too_large"
	case errors.Is(err, errUnsupported):
		return "unsupported"
	case errors.Is(err, otelanalytics.ErrOverloaded):
		return "overloaded"
	}
	return "unavailable"
}
