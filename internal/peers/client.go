package peers

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/config"

	"github.com/proxylens/proxylens/otelanalytics"
)

// The ways asking a peer fails; every error also names the peer.
var (
	// ErrUnavailable: no answer (refused connection, timeout, TLS).
	ErrUnavailable = errors.New("peer unavailable")
	// ErrRefused: the peer answered with an error status (401, 403, 503…).
	ErrRefused = errors.New("peer refused the request")
	// ErrBroken: the stream broke off, reported a failure, or was not a
	// records stream.
	ErrBroken = errors.New("peer records stream broken")
)

// errIdle cancels a request whose peer sent nothing for its timeout.
var errIdle = errors.New("sent nothing")

// Options are the peers' collaborators; all may be zero.
type Options struct {
	// UserAgent is sent with every request.
	UserAgent string
	// Registerer takes proxylens_peer_requests_total.
	Registerer prometheus.Registerer
}

// Peers is the client of the configured peers. It is safe for
// concurrent use.
type Peers struct {
	peers   []*Peer
	metrics *prometheus.CounterVec
}

// Peer is the client of one peer.
type Peer struct {
	name    string
	base    string // URL without its trailing slash
	shown   string // base with any password redacted
	client  *http.Client
	timeout time.Duration
	metrics *prometheus.CounterVec
}

// New returns the clients of the peers cs describes; none for an empty
// list. Credential files are read at each request, so a rotated token is
// taken up.
func New(cs []Config, opts Options) (*Peers, error) {
	if err := Validate(cs); err != nil {
		return nil, err
	}
	ps := &Peers{metrics: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "proxylens_peer_requests_total",
		Help: "Records streams asked of peers for exports, by peer and outcome (success: the whole stream read; refused: an error status; unavailable: no answer; broken: cut short or failed mid-way; canceled).",
	}, []string{"peer", "outcome"})}
	var copts []config.HTTPClientOption
	if opts.UserAgent != "" {
		copts = append(copts, config.WithUserAgent(opts.UserAgent))
	}
	for i, c := range cs {
		client, err := config.NewClientFromConfig(c.HTTPClientConfig, "peer_"+c.DisplayName(), copts...)
		if err != nil {
			return nil, fmt.Errorf("peers[%d]: build the HTTP client: %w", i, err)
		}
		p := &Peer{name: c.DisplayName(), base: strings.TrimRight(c.URL, "/"), client: client, timeout: c.Timeout, metrics: ps.metrics}
		p.shown = p.base
		if u, err := url.Parse(p.base); err == nil {
			p.shown = u.Redacted()
		}
		if p.timeout == 0 {
			p.timeout = DefaultTimeout
		}
		ps.peers = append(ps.peers, p)
	}
	if opts.Registerer != nil && len(ps.peers) > 0 {
		if err := opts.Registerer.Register(ps.metrics); err != nil {
			return nil, fmt.Errorf("register the peers' metrics: %w", err)
		}
	}
	return ps, nil
}

// Len returns the number of peers.
func (ps *Peers) Len() int {
	if ps == nil {
		return 0
	}
	return len(ps.peers)
}

// Names returns the peers' names, in config order.
func (ps *Peers) Names() []string {
	if ps == nil {
		return nil
	}
	names := make([]string, len(ps.peers))
	for i, p := range ps.peers {
		names[i] = p.name
	}
	return names
}

// Close releases the clients' idle connections.
func (ps *Peers) Close() {
	if ps == nil {
		return
	}
	for _, p := range ps.peers {
		p.client.CloseIdleConnections()
	}
}

// String names the peer and its URL, any password redacted.
func (p *Peer) String() string { return fmt.Sprintf("peer %q (%s)", p.name, p.shown) }

// Stream is an open records stream of a peer. Next and Close are called
// from one goroutine.
type Stream struct {
	peer   *Peer
	body   io.ReadCloser
	sc     *bufio.Scanner
	cancel context.CancelCauseFunc
	ctx    context.Context
	idle   *time.Timer
	line   wireLine
	intern interner
	rec    otelanalytics.Record
	n      int64
	done   bool
	once   sync.Once
}

// Open asks the peer for the records f selects, as a stream. The
// request's context is ctx; the peer's timeout bounds each wait for the
// peer, not the whole stream.
func (p *Peer) Open(ctx context.Context, f otelanalytics.RecordFilter) (_ *Stream, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	idle := time.AfterFunc(p.timeout, func() { cancel(errIdle) })
	s := &Stream{peer: p, cancel: cancel, ctx: ctx, idle: idle, intern: interner{}}
	defer func() {
		if err != nil {
			idle.Stop()
			cancel(context.Canceled)
		}
	}()
	target := p.base + RecordsPath
	if q := FilterQuery(f).Encode(); q != "" {
		target += "?" + q
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		s.finish("unavailable")
		return nil, fmt.Errorf("%s: %w: build the request: %w", p, ErrUnavailable, err)
	}
	req.Header.Set("Accept", ContentType)
	resp, err := p.client.Do(req)
	if err != nil {
		err = s.cause(err)
		s.finish(outcomeOf(ctx, "unavailable"))
		return nil, fmt.Errorf("%s: %w: %w", p, ErrUnavailable, err)
	}
	idle.Reset(p.timeout)
	if resp.StatusCode != http.StatusOK {
		msg := errorMessage(resp)
		resp.Body.Close()
		s.finish("refused")
		return nil, fmt.Errorf("%s: %w: %s: %s", p, ErrRefused, resp.Status, msg)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, ContentType) {
		resp.Body.Close()
		s.finish("broken")
		return nil, fmt.Errorf("%s: %w: answered %q, not %s: is the URL a proxylens API root?", p, ErrBroken, ct, ContentType)
	}
	s.body = resp.Body
	s.sc = bufio.NewScanner(idleReader{resp.Body, idle, p.timeout})
	s.sc.Buffer(make([]byte, 64<<10), maxLine)
	return s, nil
}

// errorMessage is the error of a refusal: the message of proxylens'
// error envelope, else the start of the body.
func errorMessage(resp *http.Response) string {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	var env struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &env) == nil && env.Error != "" {
		return env.Error
	}
	if s := strings.TrimSpace(string(b)); s != "" {
		return fmt.Sprintf("%q", s)
	}
	return "no message"
}

// idleReader restarts the idle timer at every read that brings bytes.
type idleReader struct {
	r       io.Reader
	t       *time.Timer
	timeout time.Duration
}

func (r idleReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.t.Reset(r.timeout)
	}
	return n, err
}

// cause turns an error of a request the idle timer canceled into one
// that says so.
func (s *Stream) cause(err error) error {
	if errors.Is(context.Cause(s.ctx), errIdle) {
		return fmt.Errorf("%w for %s", errIdle, s.peer.timeout)
	}
	return err
}

func outcomeOf(ctx context.Context, otherwise string) string {
	if ctx.Err() != nil && !errors.Is(context.Cause(ctx), errIdle) {
		return "canceled"
	}
	return otherwise
}

// Next returns the next record, reused by the next call, or io.EOF after
// the stream's end line.
func (s *Stream) Next() (*otelanalytics.Record, error) {
	if s.done {
		return nil, io.EOF
	}
	if !s.sc.Scan() {
		err := s.sc.Err()
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		err = s.cause(err)
		s.finish(outcomeOf(s.ctx, "broken"))
		return nil, fmt.Errorf("%s: %w after %d records: %w", s.peer, ErrBroken, s.n, err)
	}
	kind, n, msg, err := decodeLine(s.sc.Bytes(), &s.line, &s.rec, s.intern)
	switch {
	case err != nil:
		s.finish("broken")
		return nil, fmt.Errorf("%s: %w: line %d: %w", s.peer, ErrBroken, s.n+1, err)
	case kind == lineError:
		s.finish("broken")
		return nil, fmt.Errorf("%s: %w: it failed after %d records: %s", s.peer, ErrBroken, s.n, msg)
	case kind == lineEnd:
		if n != s.n {
			s.finish("broken")
			return nil, fmt.Errorf("%s: %w: it counted %d records and sent %d", s.peer, ErrBroken, n, s.n)
		}
		s.done = true
		s.finish("success")
		return nil, io.EOF
	}
	s.n++
	return &s.rec, nil
}

// Records returns the number of records read so far.
func (s *Stream) Records() int64 { return s.n }

// finish counts the stream's outcome, once.
func (s *Stream) finish(outcome string) {
	s.once.Do(func() { s.peer.metrics.WithLabelValues(s.peer.name, outcome).Inc() })
}

// Close ends the request; a stream not read to its end is counted as
// canceled.
func (s *Stream) Close() error {
	s.finish("canceled")
	s.idle.Stop()
	s.cancel(context.Canceled)
	if s.body != nil {
		return s.body.Close()
	}
	return nil
}
