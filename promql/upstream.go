package promql

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
)

// UpstreamConfig is the query.upstream section: the Prometheus-compatible
// engine (Thanos Query, Mimir, VictoriaMetrics, a Prometheus) that answers
// PromQL, series, labels and metadata in proxylens' place. Its HTTP
// client keys (basic_auth, authorization, oauth2, tls_config, proxy_url,
// follow_redirects, enable_http2) are those of Prometheus' remote_write
// and remote_read, from prometheus/common's HTTPClientConfig.
type UpstreamConfig struct {
	// URL is the API root: the requests go to URL + "/api/v1/query" and
	// so on (for example http://vmselect:8481/select/0/prometheus or
	// http://mimir:8080/prometheus). Required.
	URL string `yaml:"url"`
	// Headers are sent with every request (for example X-Scope-OrgID for
	// Mimir's tenant). Authorization is set with authorization instead.
	Headers map[string]string `yaml:"headers"`
	// Timeout bounds one request to the upstream, answer included.
	// 0: query.timeout plus 10s, so that the upstream's own timeout error
	// (it receives query.timeout as the timeout parameter) comes back
	// rather than proxylens'.
	Timeout time.Duration `yaml:"timeout"`
	// MaxResponseBytes bounds an answer read from the upstream; a larger
	// one is refused (execution error). 0: 268435456 (256 MiB).
	MaxResponseBytes int64 `yaml:"max_response_bytes"`

	HTTPClientConfig config.HTTPClientConfig `yaml:",inline"`
}

// UnmarshalYAML starts from Prometheus' client defaults
// (follow_redirects and enable_http2 true), as remote_write does.
func (c *UpstreamConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = UpstreamConfig{HTTPClientConfig: config.DefaultHTTPClientConfig}
	type plain UpstreamConfig
	return unmarshal((*plain)(c))
}

// defaultMaxResponseBytes bounds an upstream answer held in memory.
const defaultMaxResponseBytes = 256 << 20

// upstreamGrace is how much longer than the query timeout proxylens waits
// for the upstream, so that the upstream reports its own timeout.
const upstreamGrace = 10 * time.Second

// Validate reports every problem of c at once.
func (c *UpstreamConfig) Validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("query.upstream.url: required"))
	} else if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("query.upstream.url: must be an http or https URL, got %q", c.URL))
	}
	for name := range c.Headers {
		if strings.EqualFold(name, "Authorization") {
			errs = append(errs, errors.New("query.upstream.headers: set Authorization with authorization or basic_auth, not as a header"))
		}
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("query.upstream.timeout: must not be negative, got %q", c.Timeout.String()))
	}
	if c.MaxResponseBytes < 0 {
		errs = append(errs, fmt.Errorf("query.upstream.max_response_bytes: must not be negative, got %d", c.MaxResponseBytes))
	}
	if err := c.HTTPClientConfig.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("query.upstream: %w", err))
	}
	return errors.Join(errs...)
}

// Upstream is the HTTP client of a query upstream. It is safe for
// concurrent use.
type Upstream struct {
	base    string // URL without its trailing slash
	shown   string // base with any password redacted, for errors and logs
	headers map[string]string
	client  *http.Client
	maxBody int64
	timeout time.Duration // 0: the API's timeout plus upstreamGrace
	metrics *prometheus.CounterVec
}

// UpstreamOptions are an Upstream's collaborators; all may be zero.
type UpstreamOptions struct {
	// UserAgent is sent with every request.
	UserAgent string
	// Registerer takes proxylens_query_upstream_requests_total.
	Registerer prometheus.Registerer
}

// NewUpstream returns the client of the upstream c describes. It reads
// no credentials file yet: those are read at each request, as Prometheus
// does, so that a rotated token is taken up.
func NewUpstream(c UpstreamConfig, opts UpstreamOptions) (*Upstream, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var copts []config.HTTPClientOption
	if opts.UserAgent != "" {
		copts = append(copts, config.WithUserAgent(opts.UserAgent))
	}
	client, err := config.NewClientFromConfig(c.HTTPClientConfig, "query_upstream", copts...)
	if err != nil {
		return nil, fmt.Errorf("query.upstream: build the HTTP client: %w", err)
	}
	u := &Upstream{base: strings.TrimRight(c.URL, "/"), headers: c.Headers, client: client,
		maxBody: c.MaxResponseBytes, timeout: c.Timeout}
	u.shown = u.base
	if pu, err := url.Parse(u.base); err == nil {
		u.shown = pu.Redacted()
	}
	if u.maxBody == 0 {
		u.maxBody = defaultMaxResponseBytes
	}
	u.metrics = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "proxylens_query_upstream_requests_total",
		Help: "Requests proxylens sent to the query upstream, by endpoint and outcome (success, error: an error answer, unavailable: no answer or not the Prometheus API's).",
	}, []string{"endpoint", "outcome"})
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(u.metrics); err != nil {
			return nil, fmt.Errorf("register the query upstream's metrics: %w", err)
		}
	}
	return u, nil
}

// String returns the upstream's URL, any password in it redacted.
func (u *Upstream) String() string { return u.shown }

// Close releases the client's idle connections.
func (u *Upstream) Close() { u.client.CloseIdleConnections() }

// upstreamAnswer is the upstream's answer in the Prometheus API envelope:
// the bytes as they came, and what the audit and Exec need of them.
type upstreamAnswer struct {
	code        int
	contentType string
	body        []byte
	env         upstreamEnvelope
}

type upstreamEnvelope struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Warnings  []string        `json:"warnings"`
	Infos     []string        `json:"infos"`
}

// The ways a request to the upstream fails without an answer in the
// Prometheus API envelope.
var (
	errUpstreamUnavailable = errors.New("query upstream unavailable")
	errUpstreamTooLarge    = errors.New("query upstream answer too large")
)

// do sends form to the upstream's path (GET with the form as the query
// string, or POST with it as the body) and reads the answer.
func (u *Upstream) do(ctx context.Context, method, path string, form url.Values) (*upstreamAnswer, error) {
	endpoint := path
	if strings.HasPrefix(path, "/api/v1/label/") {
		endpoint = "/api/v1/label/:name/values"
	}
	ans, err := u.send(ctx, method, path, form)
	outcome := "success"
	switch {
	case err != nil:
		outcome = "unavailable"
	case ans.env.Status != "success":
		outcome = "error"
	}
	u.metrics.WithLabelValues(endpoint, outcome).Inc()
	return ans, err
}

func (u *Upstream) send(ctx context.Context, method, path string, form url.Values) (*upstreamAnswer, error) {
	target := u.base + path
	var body io.Reader
	if method == http.MethodGet {
		if len(form) > 0 {
			target += "?" + form.Encode()
		}
	} else {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, fmt.Errorf("%w: build the request to %s: %w", errUpstreamUnavailable, target, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("Accept", "application/json")
	// prometheus/common's transport does not ask for compression; query
	// answers compress about tenfold.
	req.Header.Set("Accept-Encoding", "gzip")
	for k, v := range u.headers {
		req.Header.Set(k, v)
	}
	resp, err := u.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("query upstream %s: %w", u.shown+path, ctx.Err())
		}
		return nil, fmt.Errorf("%w: %s: %w", errUpstreamUnavailable, u.shown+path, err)
	}
	defer resp.Body.Close()
	var r io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: read the gzip answer: %w", errUpstreamUnavailable, u.shown+path, err)
		}
		defer zr.Close()
		r = zr
	}
	b, err := io.ReadAll(io.LimitReader(r, u.maxBody+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("query upstream %s: read the answer: %w", u.shown+path, ctx.Err())
		}
		return nil, fmt.Errorf("%w: %s: read the answer: %w", errUpstreamUnavailable, u.shown+path, err)
	}
	if int64(len(b)) > u.maxBody {
		return nil, fmt.Errorf("%w: %s answered more than query.upstream.max_response_bytes (%d bytes)", errUpstreamTooLarge, u.shown+path, u.maxBody)
	}
	ans := &upstreamAnswer{code: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: b}
	if status, ok := answerStatus(b); ok && status == "success" {
		// Passed on as it is: not decoded unless Exec needs its values.
		ans.env.Status = status
		return ans, nil
	}
	if err := json.Unmarshal(b, &ans.env); err != nil || (ans.env.Status != "success" && ans.env.Status != "error") {
		snippet := b[:min(len(b), 256)]
		return nil, fmt.Errorf("%w: %s answered %d (%s) and not with the Prometheus API: %q", errUpstreamUnavailable, u.shown+path, resp.StatusCode, ans.contentType, bytes.TrimSpace(snippet))
	}
	if ans.env.Status == "error" && ans.env.ErrorType == "" {
		ans.env.ErrorType = errorExec
	}
	return ans, nil
}

// count is how many series, samples, names or metric families the
// answer's data holds, for the audit log; 0 for an error.
func (ans *upstreamAnswer) count() int {
	if ans.env.Status != "success" {
		return 0
	}
	return max(answerCount(ans.body), 0)
}

// decode decodes the whole envelope (send decodes only errors').
func (ans *upstreamAnswer) decode() error {
	if ans.env.Data != nil {
		return nil
	}
	return json.Unmarshal(ans.body, &ans.env)
}

// apiError returns the answer's error, or nil on success.
func (ans *upstreamAnswer) apiError() *apiError {
	if ans.env.Status == "success" {
		return nil
	}
	return &apiError{typ: ans.env.ErrorType, err: errors.New(ans.env.Error)}
}

// upstreamError maps a request that got no answer to an API error:
// the request's own deadline or cancellation, a too large answer, or
// the upstream unavailable.
func upstreamError(err error) *apiError {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return &apiError{typ: errorTimeout, err: err}
	case errors.Is(err, context.Canceled):
		return &apiError{typ: errorCanceled, err: err}
	case errors.Is(err, errUpstreamTooLarge):
		return &apiError{typ: errorExec, err: err}
	}
	return &apiError{typ: errorUnavailable, err: err}
}

// requestTimeout is how long proxylens waits for the upstream when the
// query may run for d.
func (u *Upstream) requestTimeout(d time.Duration) time.Duration {
	if u.timeout > 0 {
		return u.timeout
	}
	return d + upstreamGrace
}

// durationParam formats d as the timeout parameter: Prometheus' duration
// syntax, which Prometheus, Thanos, Mimir and VictoriaMetrics all read.
func durationParam(d time.Duration) string {
	if d < time.Millisecond {
		d = time.Millisecond
	}
	return model.Duration(d).String()
}
