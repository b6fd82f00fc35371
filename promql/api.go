package promql

import (
	"context"
	"log/slog"
	"net/http"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
)

// BuildInfo is what /api/v1/status/buildinfo answers.
type BuildInfo struct {
	Version   string `json:"version"`
	Revision  string `json:"revision"`
	Branch    string `json:"branch"`
	BuildUser string `json:"buildUser"`
	BuildDate string `json:"buildDate"`
	GoVersion string `json:"goVersion"`
}

// API serves the query API.
type API struct {
	cfg       Config
	queryable storage.Queryable
	engine    *promql.Engine
	parser    parser.Parser
	handoff   *handoffParser // the engine's parser
	refused   *prometheus.CounterVec
	metadata  func() map[string][]metadata.Metadata
	build     BuildInfo
	log       *slog.Logger
	now       func() time.Time
	audit     func(context.Context, Access)
	cache     *resultCache // nil: range queries are not cached
	rules     RulesAPI
	gate      *gate
	upstream  *Upstream // nil: the local engine answers (see proxy.go)
}

// Options are an API's collaborators. Metadata and Logger may be nil.
type Options struct {
	// Metadata lists the metric families /api/v1/metadata answers for.
	Metadata func() map[string][]metadata.Metadata
	// BuildInfo describes the binary; fields left empty are filled from
	// the Go build information (revision, build date, Go version).
	BuildInfo  BuildInfo
	Logger     *slog.Logger
	Registerer prometheus.Registerer // the engine's own metrics
	Now        func() time.Time
	// Audit, if set, is told of every query, HTTP or Exec, and every
	// series, label and metadata lookup once it is answered, with the
	// context of the request (which says who asked).
	Audit func(ctx context.Context, a Access)
	// Changes says which sample times changed since when. With it, and
	// Config.ResultCache.MaxBytes above 0, range queries are answered day
	// by day from a result cache (see cached.go); without it, nothing is
	// cached.
	Changes ChangeTracker
	// Rules, if set, answers /api/v1/rules and /api/v1/alerts (a ruler);
	// without it both answer empty lists.
	Rules RulesAPI
	// Upstream, if set, answers queries, series, labels, metadata and
	// exemplars in place of the engine over the queryable, for HTTP and
	// Exec alike (proxy.go). The result cache is then off: proxylens
	// cannot know when the upstream's data changes.
	Upstream *Upstream
}

// RulesAPI answers /api/v1/rules and /api/v1/alerts: the data of
// Prometheus' answer, which the API wraps in its envelope. An error is
// the request's fault (bad_data).
type RulesAPI interface {
	Rules(r *http.Request) (any, error)
	Alerts(r *http.Request) (any, error)
}

// Access is one answered data request, for the audit log.
type Access struct {
	Action     string // query, query_range, series, labels, label_values, metadata, query_exemplars
	Query      string // the query, the match[] selectors or the label name
	Start, End string // the time range asked for: as given over HTTP, RFC 3339 from Exec
	Results    int    // series, samples or names answered
	Took       time.Duration
	Err        string // empty on success
}

// New returns an API over q with the limits of cfg.
func New(cfg Config, q storage.Queryable, opts Options) *API {
	cfg = cfg.withDefaults()
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	p := parser.NewParser(parser.Options{})
	handoff := newHandoffParser(p)
	g := newGate(cfg.MaxConcurrent)
	engine := promql.NewEngine(promql.EngineOpts{
		Logger:                   log,
		Reg:                      opts.Registerer,
		MaxSamples:               cfg.MaxSamples,
		Timeout:                  cfg.Timeout,
		ActiveQueryTracker:       g,
		LookbackDelta:            cfg.LookbackDelta,
		NoStepSubqueryIntervalFn: noStepInterval,
		EnableAtModifier:         true,
		EnableNegativeOffset:     true,
		EnablePerStepStats:       true,
		Parser:                   handoff,
	})
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "proxylens_query_refused_total",
		Help: "Requests of the query API refused before parsing: reason = too_long, too_deep, format_cost, too_many_params, body_too_large."},
		[]string{"reason"})
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(refused)
	}
	a := &API{cfg: cfg, queryable: q, engine: engine, parser: p, handoff: handoff, refused: refused, metadata: opts.Metadata,
		build: withGoBuildInfo(opts.BuildInfo), log: log, now: now, audit: opts.Audit, rules: opts.Rules,
		gate: g, upstream: opts.Upstream}
	if cfg.ResultCache.MaxBytes > 0 && opts.Changes != nil && opts.Upstream == nil {
		a.cache = newResultCache(cfg.ResultCache.MaxBytes, opts.Changes, opts.Registerer)
	}
	return a
}

// withGoBuildInfo fills the empty fields of bi from the binary's build
// information: the VCS revision and time, and the Go version.
func withGoBuildInfo(bi BuildInfo) BuildInfo {
	if info, ok := debug.ReadBuildInfo(); ok {
		if bi.GoVersion == "" {
			bi.GoVersion = info.GoVersion
		}
		for _, s := range info.Settings {
			switch {
			case s.Key == "vcs.revision" && bi.Revision == "":
				bi.Revision = s.Value
			case s.Key == "vcs.time" && bi.BuildDate == "":
				bi.BuildDate = s.Value
			}
		}
	}
	if bi.GoVersion == "" {
		bi.GoVersion = runtime.Version()
	}
	return bi
}

// Close stops the engine and lets the upstream's idle connections go.
func (a *API) Close() error {
	if a.upstream != nil {
		a.upstream.Close()
	}
	return a.engine.Close()
}

// Register adds the API's handlers to mux.
func (a *API) Register(mux *http.ServeMux) {
	query, queryRange, series, labelNames, labelValues, metadata, exemplars :=
		a.query, a.queryRange, a.series, a.labelNames, a.labelValues, a.metadataHandler, a.exemplars
	if a.upstream != nil {
		query, queryRange, series, labelNames, labelValues, metadata, exemplars =
			a.upQuery, a.upQueryRange, a.upLookup("/api/v1/series", true), a.upLookup("/api/v1/labels", false),
			a.upLabelValues, a.upMetadata, a.upExemplars
	}
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		mux.HandleFunc(m+" /api/v1/query", a.audited("query", a.wrap(query)))
		mux.HandleFunc(m+" /api/v1/query_range", a.audited("query_range", a.wrap(queryRange)))
		mux.HandleFunc(m+" /api/v1/series", a.audited("series", a.wrap(series)))
		mux.HandleFunc(m+" /api/v1/labels", a.audited("labels", a.wrap(labelNames)))
		mux.HandleFunc(m+" /api/v1/query_exemplars", a.audited("query_exemplars", a.wrap(exemplars)))
		mux.HandleFunc(m+" /api/v1/format_query", a.wrap(a.formatQuery))
	}
	mux.HandleFunc("GET /api/v1/label/{name}/values", a.audited("label_values", a.wrap(labelValues)))
	mux.HandleFunc("GET /api/v1/metadata", a.audited("metadata", a.wrap(metadata)))
	mux.HandleFunc("GET /api/v1/status/buildinfo", a.wrap(a.buildInfo))
	// Grafana asks for rules and alerts when it starts.
	rules, alerts := func(*http.Request) result {
		return result{data: map[string]any{"groups": []any{}}}
	}, func(*http.Request) result {
		return result{data: map[string]any{"alerts": []any{}}}
	}
	if a.rules != nil {
		rules, alerts = a.ruleHandler(a.rules.Rules), a.ruleHandler(a.rules.Alerts)
	}
	mux.HandleFunc("GET /api/v1/rules", a.wrap(rules))
	mux.HandleFunc("GET /api/v1/alerts", a.wrap(alerts))
}

// ruleHandler answers with f's data, or its error as bad_data; match[]
// selectors past the query bounds are refused before the ruler parses
// them.
func (a *API) ruleHandler(f func(*http.Request) (any, error)) func(*http.Request) result {
	return func(r *http.Request) result {
		if err := r.ParseForm(); err != nil {
			return result{err: a.formError(err)}
		}
		if aerr := a.checkMatchSizes(r); aerr != nil {
			return result{err: aerr}
		}
		data, err := f(r)
		if err != nil {
			return result{err: badData("%w", err)}
		}
		return result{data: data}
	}
}
