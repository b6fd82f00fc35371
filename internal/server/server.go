// Package server assembles proxylens: it reads the config, opens the
// store, restores the ingest pipeline from it, and wires the receiver, the
// query API, the export jobs, the OTLP metrics push and the background
// loops (self-metrics, retention, backups) to each other and to the HTTP
// routes, behind authentication. It does wiring, config, auth and routes;
// the work is done in the packages it wires. cmd/proxylens runs it;
// end-to-end tests start it in process on loopback ports.
//
// Start and Shutdown are safe to call from any goroutine; Shutdown may be
// called more than once, and without Start.
package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"

	"github.com/proxylens/proxylens/internal/changes"
	"github.com/proxylens/proxylens/internal/export"
	"github.com/proxylens/proxylens/internal/peers"
	"github.com/proxylens/proxylens/internal/remotewrite"
	"github.com/proxylens/proxylens/internal/ruler"
	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
	"github.com/proxylens/proxylens/promql"
	"github.com/proxylens/proxylens/receiver"
	"github.com/proxylens/proxylens/selfmetrics"
)

// Version is proxylens' version, set at build time with -ldflags.
var Version = "0.1.0-dev"

// Options are settings that are not part of the config file.
type Options struct {
	// Logger receives the server's logs (nil: discarded).
	Logger *slog.Logger
	// DisableCompression writes uncompressed Pebble blocks (tests that
	// inspect the files on disk).
	DisableCompression bool
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// FreeDiskBytes returns the free bytes of the data directory's file
	// system (nil: statfs); tests drive the full-disk guard with it.
	FreeDiskBytes func(dir string) (uint64, error)
	// DiskCheckInterval is how often the free space is checked (0: 1s).
	DiskCheckInterval time.Duration
}

// Server is a running proxylens.
type Server struct {
	cfg  Config
	opts Options
	log  *slog.Logger

	self     *selfmetrics.Registry
	promReg  *prometheus.Registry
	store    *pebblestore.DB
	dict     *otelanalytics.Dict
	agg      *otelanalytics.Aggregator
	sampler  *otelanalytics.Sampler
	pipeline *otelanalytics.Pipeline
	recv     *receiver.Receiver
	api      *promql.API
	series   *receiver.SeriesWriter
	changes  *changes.Tracker // what the series store and ingest changed, for the query result cache
	meters   *sdkmetric.MeterProvider
	ruler    *ruler.Ruler
	remote   *remotewrite.Manager // remote write out; nil without remote_write
	ruleReg  *prometheus.Registry // the rule engine's and notifier's metrics: on /metrics and in the store
	httpSrv  *http.Server
	httpLn   net.Listener

	costs         otelanalytics.Costs
	detector      *otelanalytics.Detector
	retired       retired    // the retired sources; replaced whole under retiredMu
	retiredMu     sync.Mutex // one change of the retired sources at a time
	tls           *tls.Config
	backupMu      sync.Mutex
	exports       *export.Jobs
	reports       *export.Jobs   // report jobs: the export queue in <data-dir>/reports
	peers         *peers.Peers   // the instances exports of records also ask; nil without peers
	peerStreams   chan struct{}  // the peer records streams served at once
	auth          *authenticator // set when users, tokens or an ingest token are configured
	enforceMu     sync.Mutex
	retentionKick chan struct{}
	stopBg        context.CancelFunc // stops the background loops: self-metrics, retention, backups
	bgDone        sync.WaitGroup

	ready    atomic.Bool
	mu       sync.Mutex
	started  bool
	stopOnce sync.Once
	stopErr  error
}

// New returns a server for cfg, which must be valid.
func New(cfg Config, opts Options) *Server {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Server{cfg: cfg, opts: opts, log: log}
}

// Start opens the store, replays its journal and starts every listener.
// If it fails halfway, what was started is shut down again.
func (s *Server) Start(ctx context.Context) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("server already started")
	}
	s.started = true
	defer func() {
		if err != nil {
			s.mu.Unlock()
			err = errors.Join(err, s.Shutdown(ctx))
			s.mu.Lock()
		}
	}()

	if s.cfg.TLS.Enabled() {
		if s.tls, err = s.cfg.TLS.Load(); err != nil {
			return err
		}
	}
	s.self = selfmetrics.New()
	s.self.Gauge("proxylens_build_info{version=\""+Version+"\"}", "proxylens build information.", func() float64 { return 1 })
	s.changes = changes.New()
	s.store, err = pebblestore.Open(s.cfg.DataDir, pebblestore.Options{
		Logger: s.log, Metrics: s.self, DisableCompression: s.opts.DisableCompression, Now: s.opts.Now,
		CacheSize:    s.cfg.Storage.CacheSize,
		MinFreeBytes: uint64(s.cfg.Storage.MinFreeDiskBytes), FreeBytes: s.opts.FreeDiskBytes, DiskCheckInterval: s.opts.DiskCheckInterval,
		BallastBytes: s.cfg.Storage.DiskBallastBytes,
		Series: pebblestore.SeriesOptions{
			OutOfOrderWindow:  s.cfg.Storage.OutOfOrderWindow,
			IncrementInterval: s.cfg.FlushInterval,
			Changes:           s.changes,
			Feed:              len(s.cfg.RemoteWrite.RemoteWrite) > 0,
		},
	})
	if err != nil {
		return err
	}
	s.dict = otelanalytics.NewDict(s.cfg.Storage.DictionarySize)
	s.agg = otelanalytics.NewAggregator(s.cfg.Aggregation, s.cfg.FlushInterval, s.self)
	start := time.Now()
	nextSeq, err := otelanalytics.Restore(s.store, s.dict, s.agg)
	if err != nil {
		return fmt.Errorf("load store %s: %w", s.cfg.DataDir, err)
	}
	s.log.Info("store loaded", "dir", s.cfg.DataDir, "took", time.Since(start).Round(time.Millisecond),
		"series", s.agg.SeriesCount(otelanalytics.FamilyRequests), "dictionary", s.dict.Len())
	// Queries see the increments no cut has written yet, as soon as a
	// batch is applied (docs/query.md#freshness).
	s.store.Series().SetOverlay(otelanalytics.NewOverlay(s.agg, s.dict))
	sampling, err := s.startSampling()
	if err != nil {
		return err
	}
	if err := s.loadRetired(); err != nil {
		return err
	}
	var extraZones []string
	if s.cfg.PeakHours.TZ != "" {
		extraZones = append(extraZones, s.cfg.PeakHours.TZ)
	}
	zones, err := otelanalytics.PeakZones(extraZones)
	if err != nil {
		return fmt.Errorf("peak_hours.tz: %w", err)
	}
	s.detector = otelanalytics.NewDetector(s.cfg.Degradation, s.cfg.FlushInterval, s.self)
	s.detector.SetRetired(s.retired.lookup)
	s.sampler = otelanalytics.NewSampler(sampling)
	s.pipeline = otelanalytics.NewPipeline(otelanalytics.PipelineConfig{
		FlushInterval:      s.cfg.FlushInterval,
		MaxInflightRecords: s.cfg.Receiver.MaxInflightRecords,
		Costs:              &s.costs,
		CostAllocation:     s.cfg.CostAllocation,
		SkipFixedCosts:     s.cfg.FixedCosts == FixedCostsSkip,
		Changes:            s.changes,
		PeakZones:          zones,
		AfterCut:           s.judgeSources,
	}, s.dict, s.sampler, s.agg, s.store, nextSeq, s.self, s.log, s.opts.Now)
	if err := s.pipeline.Start(ctx); err != nil {
		return err
	}
	if s.store.Replayed() {
		// Batches replayed from the journal go to the series at once, so
		// that queries answer for them from the start (after a crash, or
		// from a restored backup).
		if err := s.pipeline.Flush(); errors.Is(err, pebblestore.ErrDiskFull) {
			// Read-only until space is back: the journal keeps them, and
			// the queries read them from memory meanwhile.
			s.log.Warn("replayed batches wait for disk space to be cut", "err", err)
		} else if err != nil {
			return fmt.Errorf("write the replayed batches: %w", err)
		}
	}

	s.promReg = prometheus.NewRegistry()
	s.promReg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		otelanalytics.NewCollector(s.agg, s.dict),
	)
	if err := s.startMetricsPush(ctx); err != nil {
		return err
	}
	s.newRuler()
	var upstream *promql.Upstream
	if s.cfg.Query.Upstream != nil {
		// The query proxy (docs/query-proxy.md): the upstream answers
		// queries, HTTP and Exec (rules, exports, reports) alike.
		up, err := promql.NewUpstream(*s.cfg.Query.Upstream, promql.UpstreamOptions{UserAgent: "proxylens/" + Version, Registerer: s.promReg})
		if err != nil {
			return err
		}
		upstream = up
		s.log.Info("queries go to the query upstream; the result cache is off", "url", up.String())
	}
	s.api = promql.New(s.cfg.Query, s.store.Series(), promql.Options{
		Metadata:   s.metadata,
		BuildInfo:  promql.BuildInfo{Version: Version},
		Logger:     s.log,
		Registerer: s.promReg,
		Now:        s.opts.Now,
		Audit:      s.auditAccess,
		Changes:    s.changes,
		Rules:      s.ruler,
		Upstream:   upstream,
	})
	s.series = receiver.NewSeriesWriter(s.store.Series(), receiver.SeriesWriterOptions{
		MaxRequestBytes:     s.cfg.Receiver.MaxRequestBytes,
		MaxInflightBytes:    s.cfg.Receiver.MaxInflightBytes, // until the receiver shares its budget
		AcceptReservedNames: s.cfg.Receiver.AcceptReservedNames,
		SetMetadata:         s.store.Series().SetMetadata,
		RetryAfter:          s.cfg.Receiver.RetryAfter,
		Metrics:             s.self,
		Logger:              s.log,
		Now:                 s.opts.Now,
	})
	if err := s.startRemoteWrite(ctx); err != nil {
		return err
	}
	bgCtx, stopBg := context.WithCancel(context.Background())
	s.stopBg, s.retentionKick = stopBg, make(chan struct{}, 1)
	s.bgDone.Go(func() { s.recordSelfMetrics(bgCtx) })
	_, keepGOGC := os.LookupEnv("GOGC")
	gc := &backlogGC{backlog: s.agg.Backlog, bound: s.agg.MaxPending(), keep: keepGOGC, log: s.log}
	s.bgDone.Go(func() { gc.run(bgCtx, time.Second) })
	if err := s.applyConfigRetention(); err != nil {
		return err
	}
	if s.cfg.AdminTokenFile != "" || s.cfg.Auth.Enabled() {
		// Exports need a credential: the bootstrap admin token or users.
		if s.peers, err = peers.New(s.cfg.Peers, peers.Options{UserAgent: "proxylens/" + Version, Registerer: s.promReg}); err != nil {
			return err
		}
		if err := s.startExporter(); err != nil {
			return err
		}
	}
	if err := s.loadCosts(); err != nil {
		return err
	}
	if err := s.seedDetector(ctx); err != nil {
		// The detector learns its baselines again from live traffic.
		s.log.Warn("seed the degradation baselines from the store, starting them empty", "err", err)
	}
	s.bgDone.Go(func() { s.retentionLoop(bgCtx, s.cfg.Storage.RetentionInterval) })
	if s.cfg.Backup.Interval > 0 {
		s.bgDone.Go(func() { s.backupLoop(bgCtx) })
	}
	if err := s.startHTTP(ctx); err != nil {
		return err
	}
	if err := s.ruler.Start(ctx); err != nil {
		return err
	}

	mapper := otelanalytics.NewMapper(s.cfg.Mapping, s.opts.Now)
	mapper.CountDroppedHosts(s.self)
	s.recv, err = receiver.New(receiver.Config{
		GRPCAddr:         s.cfg.OTLPGRPCAddr,
		HTTPAddr:         s.cfg.OTLPHTTPAddr,
		MaxRequestBytes:  s.cfg.Receiver.MaxRequestBytes,
		MaxInflightBytes: s.cfg.Receiver.MaxInflightBytes,
		RetryAfter:       s.cfg.Receiver.RetryAfter,
		TLS:              s.tls,

		ReadHeaderTimeout: s.cfg.Receiver.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.Receiver.ReadTimeout,
		Authorize:         s.ingestAuthorizer(),
	}, mapper, s.pipeline, s.self, s.log)
	if err != nil {
		return err
	}
	s.recv.ServeMetricsTo(s.series)
	if err := s.recv.Start(ctx); err != nil {
		return err
	}
	s.ready.Store(true)
	return nil
}

// startRemoteWrite starts sending the store's series to the remote_write
// receivers, if any (docs/scaling.md#remote-write-out).
func (s *Server) startRemoteWrite(ctx context.Context) error {
	if len(s.cfg.RemoteWrite.RemoteWrite) == 0 {
		return nil
	}
	m, err := remotewrite.New(s.cfg.RemoteWrite, s.store.Series(), remotewrite.Options{
		Logger: s.log, Metrics: s.self, Now: s.opts.Now, UserAgent: "proxylens/" + Version,
	})
	if err != nil {
		return err
	}
	s.remote = m
	return m.Start(ctx)
}

func (s *Server) startMetricsPush(ctx context.Context) error {
	if s.cfg.OTLPMetricsEndpoint == "" {
		return nil
	}
	protocol, u, err := ParseMetricsEndpoint(s.cfg.OTLPMetricsEndpoint)
	if err != nil {
		return err
	}
	var exp sdkmetric.Exporter
	if protocol == "grpc" {
		exp, err = otlpmetricgrpc.New(ctx, otlpmetricgrpc.WithEndpoint(u.Host), otlpmetricgrpc.WithInsecure())
	} else {
		opts := []otlpmetrichttp.Option{otlpmetrichttp.WithEndpoint(u.Host)}
		if u.Scheme == "http" {
			opts = append(opts, otlpmetrichttp.WithInsecure())
		}
		if u.Path != "" && u.Path != "/" {
			opts = append(opts, otlpmetrichttp.WithURLPath(u.Path))
		}
		exp, err = otlpmetrichttp.New(ctx, opts...)
	}
	if err != nil {
		return fmt.Errorf("create OTLP metrics exporter for %s: %w", s.cfg.OTLPMetricsEndpoint, err)
	}
	reader := sdkmetric.NewPeriodicReader(exp,
		sdkmetric.WithInterval(s.cfg.FlushInterval),
		sdkmetric.WithProducer(otelanalytics.NewProducer(s.agg, s.dict, s.store.Created())))
	res := resource.NewSchemaless(attribute.String("service.name", "proxylens"), attribute.String("service.version", Version))
	s.meters = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader), sdkmetric.WithResource(res))
	s.log.Info("pushing aggregates over OTLP", "endpoint", s.cfg.OTLPMetricsEndpoint, "interval", s.cfg.FlushInterval)
	return nil
}

func (s *Server) startHTTP(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen for HTTP on %s: %w", s.cfg.HTTPAddr, err)
	}
	if s.tls != nil {
		c := s.tls.Clone()
		c.NextProtos = []string{"http/1.1"}
		ln = tls.NewListener(ln, c)
	}
	s.httpLn = ln
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(prometheus.Gatherers{s.promReg, s.ruleReg, s.self}, promhttp.HandlerOpts{
		EnableOpenMetrics: true,
		ErrorHandling:     promhttp.ContinueOnError,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}))
	s.api.Register(mux)
	s.series.Register(mux)
	var token *[sha256.Size]byte
	if s.cfg.AdminTokenFile != "" {
		t, err := readAdminToken(s.cfg.AdminTokenFile)
		if err != nil {
			return err
		}
		token = &t
	}
	if token != nil || s.cfg.Auth.hasAdmin() {
		admin := s.newAdminHandler(token)
		mux.Handle("/api/v1/admin/", admin)
		mux.Handle("/api/v1/audit", admin)
	} else {
		mux.Handle("/api/v1/admin/", http.NotFoundHandler()) // disabled without an admin credential
		mux.Handle("/api/v1/audit", http.NotFoundHandler())
	}
	for _, jobs := range []struct {
		path    string
		running bool
		handler func() http.Handler
	}{{"/api/v1/exports", s.exports != nil, s.exportsHandler}, {"/api/v1/reports", s.reports != nil, s.reportsHandler},
		{peers.RecordsPath, s.exports != nil, s.peerRecordsHandler}} {
		h := http.NotFoundHandler() // disabled without a credential
		if jobs.running {
			h = s.requireAdmin(token, jobs.handler())
		}
		mux.Handle(jobs.path, h)
		mux.Handle(jobs.path+"/", h)
	}
	var handler http.Handler = mux
	if s.cfg.Auth.Enabled() || s.cfg.Auth.OTLPRequireToken {
		s.auth = newAuthenticator(s.cfg.Auth, token)
		s.auth.now = s.opts.Now
		s.auth.audit = func(e pebblestore.AuditEntry) {
			if err := s.store.Audit(e); err != nil {
				s.log.Warn("audit a refusal", "err", err)
			}
		}
	}
	if s.cfg.Auth.Enabled() {
		handler = s.auth.wrap(mux)
	} else if host, _, _ := net.SplitHostPort(ln.Addr().String()); !net.ParseIP(host).IsLoopback() {
		s.log.Warn("the HTTP listener is not on loopback and no users are configured: anyone who reaches it can query and write series", "addr", ln.Addr().String())
	}
	mux.Handle("/debug/pprof/", s.pprofHandler(token))
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("proxylens is healthy.\n"))
	})
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "proxylens is not ready.", http.StatusServiceUnavailable)
			return
		}
		if err := s.store.Writable(); err != nil {
			// Queries are served; ingest is refused until the store takes
			// writes again (docs/operations.md#a-full-disk).
			http.Error(w, "proxylens is not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("proxylens is ready.\n"))
	})
	s.httpSrv = &http.Server{
		// Reading a request is bounded, writing the answer is not: queries
		// and exports may take minutes.
		Handler:           receiver.BoundReads(withRequester(handler), s.cfg.Receiver.ReadTimeout, s.self, "api"),
		ReadHeaderTimeout: s.cfg.Receiver.ReadHeaderTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	go func() {
		if err := s.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("HTTP server stopped", "err", err)
		}
	}()
	s.log.Info("HTTP server listening", "addr", ln.Addr().String(), "endpoints", "/api/v1/ (query, write, otlp) /metrics /-/healthy /-/ready")
	return nil
}

// Shutdown stops accepting spans, waits for the batches in flight, writes a
// final aggregate cut, stops the metrics push and the HTTP server, and
// closes the store.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() { s.stopErr = s.shutdown(ctx) })
	return s.stopErr
}

func (s *Server) shutdown(ctx context.Context) error {
	s.ready.Store(false)
	var errs []error
	if s.recv != nil {
		if err := s.recv.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if s.pipeline != nil {
		if err := s.pipeline.Shutdown(ctx); errors.Is(err, pebblestore.ErrDiskFull) {
			// Every acknowledged batch is in the journal: the next start
			// replays it. Not a failure of the stop.
			s.log.Warn("final cut not written for lack of disk space; the journal keeps the data for the next start", "err", err)
		} else if err != nil {
			errs = append(errs, fmt.Errorf("stop ingest pipeline: %w", err))
		}
	}
	if s.stopBg != nil {
		s.stopBg()
		s.bgDone.Wait()
	}
	if s.remote != nil {
		if err := s.remote.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if s.ruler != nil {
		if err := s.ruler.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if s.meters != nil {
		if err := s.meters.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop OTLP metrics push: %w", err))
		}
	}
	if s.httpSrv != nil {
		if err := s.httpSrv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop HTTP server: %w", err))
		}
	}
	if s.exports != nil {
		s.exports.Close()
	}
	if s.reports != nil {
		s.reports.Close()
	}
	s.peers.Close()
	if s.api != nil {
		if err := s.api.Close(); err != nil {
			errs = append(errs, fmt.Errorf("stop query engine: %w", err))
		}
	}
	if s.store != nil {
		if err := s.store.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// HTTPAddr returns the address of the HTTP server (/metrics…).
func (s *Server) HTTPAddr() net.Addr { return s.httpLn.Addr() }

// OTLPGRPCAddr returns the address of the OTLP/gRPC receiver, or nil.
func (s *Server) OTLPGRPCAddr() net.Addr { return s.recv.GRPCAddr() }

// OTLPHTTPAddr returns the address of the OTLP/HTTP receiver, or nil.
func (s *Server) OTLPHTTPAddr() net.Addr { return s.recv.HTTPAddr() }

// Store returns the server's store.
func (s *Server) Store() *pebblestore.DB { return s.store }

// Pipeline returns the server's ingest pipeline.
func (s *Server) Pipeline() *otelanalytics.Pipeline { return s.pipeline }

// Sampler returns the server's sampler.
func (s *Server) Sampler() *otelanalytics.Sampler { return s.sampler }

// ingestAuthorizer is the OTLP receiver's token check, or nil when
// ingest is open.
func (s *Server) ingestAuthorizer() func(string) bool {
	if !s.cfg.Auth.OTLPRequireToken {
		return nil
	}
	return s.auth.ingestAllowed
}

// ScanRecords calls fn for every stored record f matches, in end-time
// order (see otelanalytics.ScanRecords).
func (s *Server) ScanRecords(ctx context.Context, f otelanalytics.RecordFilter, fn func(*otelanalytics.Record) error) error {
	return otelanalytics.ScanRecords(ctx, s.store, s.dict, f, fn)
}
