package peers

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/common/config"
)

// Config is one entry of the top-level peers: list, another proxylens
// instance whose raw records an export asks for. Its HTTP client keys
// (authorization, basic_auth, tls_config, proxy_url, follow_redirects,
// enable_http2 …) are prometheus/common's HTTPClientConfig, as in
// query.upstream and remote_write; a peer is normally asked with a
// bearer token of one of its auth.tokens (role analyst or admin) or its
// admin token: authorization: {credentials_file: …}.
type Config struct {
	// Name names the peer in errors, logs and the audit log. Default: the
	// URL's host:port.
	Name string `yaml:"name"`
	// URL is the peer's API root: its records are asked at URL +
	// "/api/v1/peer/records" (for example http://proxylens-2:9464).
	// Required.
	URL string `yaml:"url"`
	// Timeout is how long the peer may send nothing, neither its answer's
	// headers nor a byte of its records, before the export gives up on
	// it. 0: 2m.
	Timeout time.Duration `yaml:"timeout"`

	HTTPClientConfig config.HTTPClientConfig `yaml:",inline"`
}

// DefaultTimeout is a peer's timeout when its config sets none.
const DefaultTimeout = 2 * time.Minute

// UnmarshalYAML starts from Prometheus' client defaults
// (follow_redirects and enable_http2 true), as remote_write does.
func (c *Config) UnmarshalYAML(unmarshal func(any) error) error {
	*c = Config{HTTPClientConfig: config.DefaultHTTPClientConfig}
	type plain Config
	return unmarshal((*plain)(c))
}

// DisplayName returns the peer's name, or its URL's host:port.
func (c *Config) DisplayName() string {
	if c.Name != "" {
		return c.Name
	}
	if u, err := url.Parse(c.URL); err == nil && u.Host != "" {
		return u.Host
	}
	return c.URL
}

// Validate reports every problem of the peers list at once, each naming
// the entry (peers[i]) and the value.
func Validate(peers []Config) error {
	var errs []error
	names := map[string]int{}
	for i := range peers {
		c := &peers[i]
		path := fmt.Sprintf("peers[%d]", i)
		add := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf(path+"."+format, args...))
		}
		if c.URL == "" {
			add("url: required")
		} else if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("url: must be an http or https URL, got %q", c.URL)
		} else if u.RawQuery != "" || u.Fragment != "" {
			add("url: must be the API root, without a query or fragment, got %q", c.URL)
		}
		if strings.ContainsAny(c.Name, "\n,") {
			add("name: must not hold a comma or a line break, got %q", c.Name)
		}
		if c.Timeout < 0 {
			add("timeout: must not be negative, got %q", c.Timeout.String())
		}
		if err := c.HTTPClientConfig.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
		}
		if c.URL == "" {
			continue
		}
		name := c.DisplayName()
		if j, dup := names[name]; dup {
			errs = append(errs, fmt.Errorf("%s: the same name (or, without one, host:port) as peers[%d]: %q", path, j, name))
		} else {
			names[name] = i
		}
	}
	return errors.Join(errs...)
}

// SetDirectory makes the peers' credential and certificate files
// relative to dir (the config file's directory), as Prometheus does.
func SetDirectory(peers []Config, dir string) {
	for i := range peers {
		peers[i].HTTPClientConfig.SetDirectory(dir)
	}
}
