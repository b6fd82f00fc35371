package ruler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/notifier"
	promqlengine "github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/storage"

	"github.com/proxylens/proxylens/dashboards"
	"github.com/proxylens/proxylens/promql"
)

// ShippedRulesFile is the file name the shipped rules are listed under
// (the file of their groups at /api/v1/rules).
const ShippedRulesFile = "proxylens/shipped/proxylens.rules.yml"

// Prometheus' defaults for what its flags set (cmd/prometheus).
const (
	outageTolerance    = time.Hour        // --rules.alert.for-outage-tolerance
	forGracePeriod     = 10 * time.Minute // --rules.alert.for-grace-period
	resendDelay        = time.Minute      // --rules.alert.resend-delay
	notificationsQueue = 10000            // --alertmanager.notification-queue-capacity
)

// Options are a Ruler's collaborators.
type Options struct {
	// QueryFunc runs the rules' instant queries. Required.
	QueryFunc rules.QueryFunc
	// Appendable receives recording rules' output and the ALERTS and
	// ALERTS_FOR_STATE series. Required.
	Appendable storage.AppendableV2
	// Queryable is read to restore the for state of pending alerts after
	// a restart (ALERTS_FOR_STATE). Required.
	Queryable storage.Queryable
	// ExternalURL returns the URL alerts link back to (their
	// generatorURL and $externalURL); it is called once, at Start.
	ExternalURL func() *url.URL
	// Registerer receives the prometheus_rule_* and
	// prometheus_notifications_* metrics (nil: not registered).
	Registerer prometheus.Registerer
	// Logger may be nil (discard).
	Logger *slog.Logger
}

// Ruler evaluates the configured and shipped rules.
type Ruler struct {
	cfg  Config
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	started  bool
	stopped  bool
	manager  *rules.Manager
	notifier *notifier.Manager
	done     sync.WaitGroup // the rule manager's and the notifier's Run
	stopOnce sync.Once
	stopErr  error
}

// New returns a ruler for cfg, which must be valid.
func New(cfg Config, opts Options) *Ruler {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Ruler{cfg: cfg, opts: opts, log: log}
}

// Files returns the rule files the ruler loads: the shipped rules
// (ShippedRulesFile) if enabled, then the files rule_files matches.
func (r *Ruler) Files() ([]string, error) {
	files, err := r.cfg.Files()
	if r.cfg.ShippedRules {
		files = append([]string{ShippedRulesFile}, files...)
	}
	return files, err
}

// Start loads the rule files and starts evaluating them, and the
// notifier when Alertmanagers are configured. A rule file that does not
// load is an error (Validate reports it earlier).
func (r *Ruler) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started || r.stopped {
		return errors.New("ruler already started or shut down")
	}
	r.started = true
	if err := ctx.Err(); err != nil {
		return err
	}
	files, err := r.Files()
	if err != nil {
		return err
	}
	var ext *url.URL
	if r.opts.ExternalURL != nil {
		ext = r.opts.ExternalURL()
	}
	if ext == nil {
		ext = &url.URL{}
	}

	notify := func(context.Context, string, ...*rules.Alert) {}
	if len(r.cfg.Alerting.AlertmanagerConfigs) > 0 {
		if err := r.startNotifierLocked(); err != nil {
			return err
		}
		notify = rules.SendAlerts(r.notifier, ext.String())
	}
	r.manager = r.newManager(ext, notify)
	if err := r.manager.Update(r.cfg.EvaluationInterval, files, labels.EmptyLabels(), ext.String(), nil); err != nil {
		// Update logs the reasons; say them again in the error.
		_, errs := r.manager.LoadGroups(r.cfg.EvaluationInterval, labels.EmptyLabels(), ext.String(), nil, false, files...)
		return fmt.Errorf("load rule files: %w", errors.Join(append(errs, err)...))
	}
	r.done.Go(r.manager.Run)
	n := 0
	for _, g := range r.manager.RuleGroups() {
		n += len(g.Rules())
	}
	r.log.Info("evaluating rules", "files", len(files), "groups", len(r.manager.RuleGroups()), "rules", n,
		"interval", r.cfg.EvaluationInterval, "alertmanagers", len(r.cfg.Alerting.AlertmanagerConfigs))
	return nil
}

// newManager returns a rule manager that evaluates with the ruler's
// options, not yet loaded or running.
func (r *Ruler) newManager(ext *url.URL, notify rules.NotifyFunc) *rules.Manager {
	p := parser.NewParser(parser.Options{})
	return rules.NewManager(&rules.ManagerOptions{
		NameValidationScheme: model.UTF8Validation,
		ExternalURL:          ext,
		QueryFunc:            r.opts.QueryFunc,
		NotifyFunc:           notify,
		Context:              context.Background(),
		AppendableV2:         r.opts.Appendable,
		Queryable:            r.opts.Queryable,
		Logger:               r.log.With("component", "rule manager"),
		Registerer:           r.opts.Registerer,
		OutageTolerance:      outageTolerance,
		ForGracePeriod:       forGracePeriod,
		ResendDelay:          resendDelay,
		GroupLoader:          loader{parser: p, log: r.log},
		Parser:               p,
	})
}

// QueryFunc returns the rules' query function over the query API: each
// evaluation is an instant query through API.Exec, with the configured
// limits, timeout, concurrency gate and the store's pushdown, as an HTTP
// query has (rather than rules.EngineQueryFunc on the bare engine), but
// not audited: rules run every evaluation interval. A scalar result
// becomes a one-sample vector, as rules.EngineQueryFunc makes it.
func QueryFunc(api *promql.API) rules.QueryFunc {
	return func(ctx context.Context, q string, t time.Time) (promqlengine.Vector, error) {
		res, err := api.Exec(ctx, promql.Request{Query: q, End: t, Unaudited: true})
		if err != nil {
			res.Close()
			return nil, err
		}
		defer res.Close()
		switch v := res.Value.(type) {
		case promqlengine.Vector:
			return v, nil
		case promqlengine.Scalar:
			return promqlengine.Vector{promqlengine.Sample{T: v.T, F: v.V, Metric: labels.EmptyLabels()}}, nil
		}
		return nil, errors.New("rule result is not a vector or scalar")
	}
}

// startNotifierLocked starts Prometheus' notifier with the configured
// Alertmanagers. Their static_configs are its only targets: they are
// handed to it as the discovery manager would.
func (r *Ruler) startNotifierLocked() error {
	r.notifier = notifier.NewManager(&notifier.Options{
		QueueCapacity:   notificationsQueue,
		DrainOnShutdown: true,
		Registerer:      r.opts.Registerer,
	}, model.UTF8Validation, r.log.With("component", "notifier"))
	pcfg := &config.Config{AlertingConfig: r.cfg.Alerting.AlertingConfig}
	if err := r.notifier.ApplyConfig(pcfg); err != nil {
		return fmt.Errorf("configure alertmanagers: %w", err)
	}
	targets := map[string][]*targetgroup.Group{}
	for key, am := range r.cfg.Alerting.AlertmanagerConfigs.ToMap() {
		targets[key] = []*targetgroup.Group{}
		for _, sd := range am.ServiceDiscoveryConfigs {
			if sc, ok := sd.(discovery.StaticConfig); ok {
				targets[key] = append(targets[key], sc...)
			}
		}
	}
	tsets := make(chan map[string][]*targetgroup.Group, 1)
	tsets <- targets
	r.done.Go(func() { r.notifier.Run(tsets) })
	return nil
}

// Shutdown stops the rule evaluations (an evaluation under way finishes)
// and the notifier, which first sends the alerts it holds. It honours
// ctx's deadline: the goroutines then end in the background.
func (r *Ruler) Shutdown(ctx context.Context) error {
	r.stopOnce.Do(func() { r.stopErr = r.shutdown(ctx) })
	return r.stopErr
}

func (r *Ruler) shutdown(ctx context.Context) error {
	r.mu.Lock()
	r.stopped = true
	m, n := r.manager, r.notifier
	r.mu.Unlock()
	stopped := make(chan struct{})
	go func() {
		if m != nil {
			m.Stop()
		}
		if n != nil {
			n.Stop()
		}
		r.done.Wait()
		close(stopped)
	}()
	select {
	case <-stopped:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop the rule manager: %w", ctx.Err())
	}
}

// groups returns the rule groups being evaluated, nil before Start.
func (r *Ruler) groups() []*rules.Group {
	r.mu.Lock()
	m := r.manager
	r.mu.Unlock()
	if m == nil {
		return nil
	}
	return m.RuleGroups()
}

// Alertmanagers returns the URLs alerts are sent to.
func (r *Ruler) Alertmanagers() []*url.URL {
	r.mu.Lock()
	n := r.notifier
	r.mu.Unlock()
	if n == nil {
		return nil
	}
	return n.Alertmanagers()
}

// loader is the rule manager's GroupLoader: the shipped rules from the
// binary, every other file from disk.
type loader struct {
	parser parser.Parser
	log    *slog.Logger
}

func (l loader) Load(id string, ignoreUnknownFields bool, scheme model.ValidationScheme) (*rulefmt.RuleGroups, []error) {
	if id == ShippedRulesFile {
		rgs, errs := rulefmt.Parse(dashboards.RulesFile, ignoreUnknownFields, scheme, l.parser, l.log)
		for i := range errs {
			errs[i] = fmt.Errorf("%s: %w", id, errs[i])
		}
		return rgs, errs
	}
	return rulefmt.ParseFile(id, ignoreUnknownFields, scheme, l.parser, l.log)
}

func (l loader) Parse(query string) (parser.Expr, error) { return l.parser.ParseExpr(query) }
