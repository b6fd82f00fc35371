package remotewrite

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"sync"
	"time"

	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	commonconfig "github.com/prometheus/common/config"

	"github.com/proxylens/proxylens/pebblestore"
	"github.com/proxylens/proxylens/selfmetrics"
)

// Options are what a Manager needs besides its config.
type Options struct {
	Logger    *slog.Logger             // nil: discard
	Metrics   *selfmetrics.Registry    // nil: a private registry
	Now       func() time.Time         // nil: time.Now
	UserAgent string                   // sent with every request
	Transport func() http.RoundTripper // nil: from each remote's HTTP client config (tests only)
}

// Manager runs one sender per remote_write entry over a store's series
// feed. Its methods are safe for concurrent use.
type Manager struct {
	cfg     Config
	store   *pebblestore.SeriesStore
	log     *slog.Logger
	now     func() time.Time
	remotes []*remote

	mu      sync.Mutex
	started bool
	cancel  context.CancelFunc
	done    sync.WaitGroup
	pruneMu sync.Mutex // one prune at a time
}

// New builds the senders of cfg (which must be valid; a MaxPendingBytes
// of 0 is the default) over store, whose series feed must be on when cfg
// lists remotes.
func New(cfg Config, store *pebblestore.SeriesStore, opts Options) (*Manager, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	reg := selfmetrics.OrNew(opts.Metrics)
	if cfg.MaxPendingBytes <= 0 {
		cfg.MaxPendingBytes = DefaultMaxPendingBytes
	}
	m := &Manager{cfg: cfg, store: store, log: opts.Logger, now: opts.Now}
	if len(cfg.RemoteWrite) > 0 && !store.FeedEnabled() {
		return nil, errors.New("remote write needs the store's series feed (pebblestore.SeriesOptions.Feed)")
	}
	for _, rw := range cfg.RemoteWrite {
		r, err := newRemote(m, rw, reg, opts)
		if err != nil {
			return nil, fmt.Errorf("remote_write %s: %w", rw.RemoteName(), err)
		}
		m.remotes = append(m.remotes, r)
	}
	return m, nil
}

func newRemote(m *Manager, rw *RemoteWriteConfig, reg *selfmetrics.Registry, opts Options) (*remote, error) {
	var rt http.RoundTripper
	if opts.Transport != nil {
		rt = opts.Transport()
	} else {
		var err error
		rt, err = commonconfig.NewRoundTripperFromConfig(rw.HTTPClientConfig, "remote_write_"+rw.RemoteName(),
			commonconfig.WithUserAgent(opts.UserAgent))
		if err != nil {
			return nil, fmt.Errorf("HTTP client: %w", err)
		}
	}
	if len(rw.Headers) > 0 {
		rt = headerTransport{rt: rt, headers: rw.Headers}
	}
	client := &http.Client{Transport: rt, Timeout: time.Duration(rw.RemoteTimeout)}
	apiOpts := []remoteapi.APIOption{
		remoteapi.WithAPIHTTPClient(client),
		remoteapi.WithAPIPath(""), // the url is the write endpoint, as in Prometheus
		remoteapi.WithAPIBackoff(remoteapi.BackoffConfig{
			Min: time.Duration(rw.QueueConfig.MinBackoff), Max: time.Duration(rw.QueueConfig.MaxBackoff),
			MaxRetries: 0, // until it succeeds or the sender stops; the position keeps what waits
		}),
	}
	if !rw.QueueConfig.RetryOnRateLimit {
		apiOpts = append(apiOpts, remoteapi.WithAPINoRetryOnRateLimit())
	}
	api, err := remoteapi.NewAPI(rw.URL.String(), apiOpts...)
	if err != nil {
		return nil, err
	}
	r := &remote{
		m:       m,
		cfg:     rw,
		name:    rw.RemoteName(),
		api:     api,
		log:     m.log.With("remote_name", rw.RemoteName(), "url", rw.redactedURL()),
		state:   map[uint64]*seriesState{},
		labels:  map[uint64]*outLabels{},
		relabel: rw.WriteRelabelConfigs,
	}
	r.metrics = newMetrics(reg, r)
	return r, nil
}

// Start loads each remote's saved position (a new remote starts at the
// feed's head: it sends what is committed from now on), forgets the
// positions of remotes no longer configured, and starts the senders.
func (m *Manager) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started {
		return errors.New("remote write already started")
	}
	m.started = true
	if !m.store.FeedEnabled() {
		return nil
	}
	keep := make([]string, 0, len(m.remotes))
	for _, r := range m.remotes {
		keep = append(keep, r.name)
	}
	if err := m.store.DropFeedConsumers(keep); err != nil {
		return fmt.Errorf("forget removed remotes: %w", err)
	}
	for _, r := range m.remotes {
		if err := r.load(); err != nil {
			return err
		}
	}
	if err := m.prune(); err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	for _, r := range m.remotes {
		r.log.Info("remote write started", "position", r.sentPos().Seq, "pending_samples", r.pending())
		m.done.Go(func() { r.run(runCtx) })
	}
	return nil
}

// Shutdown stops the senders: a batch in flight is abandoned, and sent
// again from the saved position at the next start. It works twice and
// without Start, and honours ctx's deadline.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	cancel := m.cancel
	m.cancel = nil
	m.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	stopped := make(chan struct{})
	go func() { m.done.Wait(); close(stopped) }()
	select {
	case <-stopped:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop remote write: %w", ctx.Err())
	}
}

// prune deletes the feed entries every remote has sent.
func (m *Manager) prune() error {
	m.pruneMu.Lock()
	defer m.pruneMu.Unlock()
	oldest := uint64(math.MaxUint64)
	for _, r := range m.remotes {
		oldest = min(oldest, r.sentPos().Seq)
	}
	if len(m.remotes) == 0 {
		head, _ := m.store.FeedHead()
		oldest = head.Seq
	}
	return m.store.PruneFeed(oldest)
}

// headerTransport adds the configured headers to every request.
type headerTransport struct {
	rt      http.RoundTripper
	headers map[string]string
}

func (t headerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	for k, v := range t.headers {
		req.Header.Set(k, v)
	}
	return t.rt.RoundTrip(req)
}
