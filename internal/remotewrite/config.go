package remotewrite

import (
	"errors"
	"fmt"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"go.yaml.in/yaml/v3"
)

// What a remote is sent (Config.Send).
const (
	// SendProxy sends the proxy_* series: the usage aggregates.
	SendProxy = "proxy"
	// SendAll sends every stored series: also remote-written and OTLP
	// metrics, the cost series and proxylens' own proxylens_* metrics.
	SendAll = "all"
)

// Config is the top-level remote write configuration: Prometheus'
// remote_write: list and external_labels (which Prometheus keeps under
// global:), and what is sent.
type Config struct {
	// RemoteWrite lists the receivers. Empty (the default): nothing is
	// sent and the store keeps no series feed.
	RemoteWrite []*RemoteWriteConfig `yaml:"remote_write"`
	// ExternalLabels are added to every series sent (before
	// write_relabel_configs, as Prometheus does); a series' own label of
	// the same name wins. Empty by default.
	ExternalLabels labels.Labels `yaml:"external_labels"`
	// Send says which series are sent: proxy (the default, the proxy_*
	// series) or all (every stored series).
	Send string `yaml:"remote_write_send"`
	// MaxPendingBytes bounds the series feed on disk: the bytes a remote
	// may leave unsent (from its position to the newest entry). Past it,
	// the remote drops its oldest unsent batches, counted, without
	// sending them: counters lose points, not counts. Default 1 GiB.
	MaxPendingBytes int64 `yaml:"remote_write_max_pending_bytes"`
}

// DefaultMaxPendingBytes is the default MaxPendingBytes: 1 GiB, about
// half a day of 20,000 series at a 15 s flush interval.
const DefaultMaxPendingBytes = 1 << 30

// DefaultConfig returns the defaults: no remote, proxy_* series, 1 GiB
// of feed a remote may leave unsent.
func DefaultConfig() Config { return Config{Send: SendProxy, MaxPendingBytes: DefaultMaxPendingBytes} }

// RemoteWriteConfig is one entry of remote_write: Prometheus'
// config.RemoteWriteConfig (url, name, headers, basic_auth, authorization,
// oauth2, tls_config, proxy_url, remote_timeout, queue_config,
// write_relabel_configs, protobuf_message…), decoded and defaulted by
// Prometheus' own code.
type RemoteWriteConfig struct {
	config.RemoteWriteConfig `yaml:",inline"`
}

// UnmarshalYAML decodes with the caller's decoder, so that unknown keys
// stay errors, and names the section in the errors Prometheus' own checks
// return.
func (c *RemoteWriteConfig) UnmarshalYAML(unmarshal func(any) error) error {
	err := unmarshal(&c.RemoteWriteConfig)
	var te *yaml.TypeError
	if err == nil || errors.As(err, &te) {
		return err
	}
	return fmt.Errorf("remote_write: %w", err)
}

// RemoteName is how a remote is named in metrics, logs and its saved
// position: its name, or its URL without credentials.
func (c *RemoteWriteConfig) RemoteName() string {
	if c.Name != "" {
		return c.Name
	}
	return c.redactedURL()
}

func (c *RemoteWriteConfig) redactedURL() string {
	if c.URL == nil || c.URL.URL == nil {
		return ""
	}
	return c.URL.Redacted()
}

// Validate reports every problem at once, each naming its remote.
func (c *Config) Validate() error {
	var errs []error
	switch c.Send {
	case SendProxy, SendAll:
	default:
		errs = append(errs, fmt.Errorf("remote_write_send: must be proxy or all, got %q", c.Send))
	}
	if c.MaxPendingBytes <= 0 {
		errs = append(errs, fmt.Errorf("remote_write_max_pending_bytes: must be positive, got %d", c.MaxPendingBytes))
	}
	if err := c.ExternalLabels.Validate(func(l labels.Label) error {
		if !model.UTF8Validation.IsValidLabelName(l.Name) || strings.HasPrefix(l.Name, "__") {
			return fmt.Errorf("external_labels: %q is not a valid label name", l.Name)
		}
		if l.Value == "" {
			return fmt.Errorf("external_labels: %s has an empty value", l.Name)
		}
		return nil
	}); err != nil {
		errs = append(errs, err)
	}
	names := map[string]int{}
	for i, rw := range c.RemoteWrite {
		add := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("remote_write[%d]: "+format, append([]any{i}, args...)...))
		}
		if rw == nil {
			add("empty")
			continue
		}
		if s := rw.URL.Scheme; s != "http" && s != "https" {
			add("url: scheme must be http or https, got %q", rw.redactedURL())
		}
		if rw.URL.Host == "" {
			add("url: no host in %q", rw.redactedURL())
		}
		name := rw.RemoteName()
		if j, dup := names[name]; dup {
			add("the same name (or, without one, URL) as remote_write[%d]: %q", j, name)
		}
		names[name] = i
		if err := rw.RemoteWriteConfig.Validate(model.UTF8Validation); err != nil {
			add("write_relabel_configs: %w", err)
		}
		q := rw.QueueConfig
		if q.MaxSamplesPerSend <= 0 {
			add("queue_config.max_samples_per_send: must be positive, got %d", q.MaxSamplesPerSend)
		}
		if q.Capacity < q.MaxSamplesPerSend {
			add("queue_config.capacity: must be at least max_samples_per_send (%d), got %d", q.MaxSamplesPerSend, q.Capacity)
		}
		if q.BatchSendDeadline <= 0 {
			add("queue_config.batch_send_deadline: must be positive, got %q", q.BatchSendDeadline)
		}
		if q.MinBackoff <= 0 || q.MaxBackoff < q.MinBackoff {
			add("queue_config: min_backoff must be positive and at most max_backoff, got %q and %q", q.MinBackoff, q.MaxBackoff)
		}
		if rw.RemoteTimeout <= 0 {
			add("remote_timeout: must be positive, got %q", rw.RemoteTimeout)
		}
		for _, u := range []struct {
			key string
			set bool
		}{
			{"sigv4", rw.SigV4Config != nil}, {"azuread", rw.AzureADConfig != nil}, {"google_iam", rw.GoogleIAMConfig != nil},
			{"round_robin_dns", rw.RoundRobinDNS}, {"convert_nhcb_to_classic", rw.ConvertNHCBToClassic},
		} {
			if u.set {
				add("%s: not supported by proxylens", u.key)
			}
		}
	}
	return errors.Join(errs...)
}

// SetDirectory resolves relative file paths (credentials_file, TLS files,
// password_file) against dir, the config file's directory, as Prometheus
// does.
func (c *Config) SetDirectory(dir string) {
	for _, rw := range c.RemoteWrite {
		if rw != nil {
			rw.SetDirectory(dir)
		}
	}
}
