package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/proxylens/proxylens/internal/backup"
	"github.com/proxylens/proxylens/internal/peers"
	"github.com/proxylens/proxylens/internal/remotewrite"
	"github.com/proxylens/proxylens/internal/ruler"
	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
	"github.com/proxylens/proxylens/promql"
	"github.com/proxylens/proxylens/receiver"
)

// Config is the whole proxylens configuration: the YAML config file's
// schema. Flags and PROXYLENS_* environment variables override its
// top-level fields (see cmd/proxylens).
type Config struct {
	// DataDir holds the Pebble database. Default ./data.
	DataDir string `yaml:"data_dir"`
	// OTLPGRPCAddr is the OTLP/gRPC listen address. Default 127.0.0.1:4317.
	OTLPGRPCAddr string `yaml:"otlp_grpc_addr"`
	// OTLPHTTPAddr is the OTLP/HTTP listen address. Default 127.0.0.1:4318.
	OTLPHTTPAddr string `yaml:"otlp_http_addr"`
	// HTTPAddr serves the Prometheus query API (/api/v1/…), /metrics,
	// /-/healthy, /-/ready and /debug/pprof.
	// Default 127.0.0.1:9464.
	HTTPAddr string `yaml:"http_addr"`
	// FlushInterval is how often aggregates are cut and written, and the
	// event-time resolution of their history. Default 15s.
	FlushInterval time.Duration `yaml:"flush_interval"`
	// OTLPMetricsEndpoint, when set, also pushes the aggregates over OTLP:
	// http(s)://host:port[/path] for OTLP/HTTP, grpc://host:port or
	// host:port for OTLP/gRPC (without TLS). Empty disables the push.
	OTLPMetricsEndpoint string `yaml:"otlp_metrics_endpoint"`
	// LogLevel is debug, info, warn or error. Default info.
	LogLevel string `yaml:"log_level"`
	// LogFormat is text or json. Default text.
	LogFormat string `yaml:"log_format"`
	// AdminTokenFile holds the bootstrap admin bearer token; without it
	// the admin API (/api/v1/admin/…) is disabled (404).
	AdminTokenFile string `yaml:"admin_token_file"`

	Receiver    ReceiverConfig                  `yaml:"receiver"`
	Mapping     otelanalytics.MappingConfig     `yaml:"mapping"`
	Sampling    otelanalytics.SamplingConfig    `yaml:"sampling"`
	Aggregation otelanalytics.AggregationConfig `yaml:"aggregation"`
	Storage     StorageConfig                   `yaml:"storage"`
	Query       promql.Config                   `yaml:"query"`
	// Retention, when present, is applied at every start as a PUT of the
	// admin API would be (the compliance hold included); without it the
	// policy stored in the database (the defaults at first) is used.
	Retention *pebblestore.RetentionPolicy `yaml:"retention"`
	// Costs, when present, are the cost models at every start (replacing
	// those the admin API stored); without it the stored ones are used.
	Costs []otelanalytics.CostModel `yaml:"costs"`
	// CostAllocation is what a subscription is allocated to applications
	// by, hour by hour: requests (the default) or bytes.
	CostAllocation string `yaml:"cost_allocation"`
	// FixedCosts says whether this instance accrues the subscriptions and
	// writes the subscription and budget gauges: accrue (the default) or
	// skip. In a fleet writing into one TSDB, every instance but one
	// skips them (docs/scaling.md#several-instances).
	FixedCosts string `yaml:"fixed_costs"`
	// Backup configures scheduled backups and their uploads.
	Backup backup.Config `yaml:"backup"`
	// Auth lists the users and tokens of the HTTP endpoints.
	Auth AuthConfig `yaml:"auth"`
	// TLS, when set, serves every listener over TLS (1.2 or later).
	TLS TLSConfig `yaml:"tls"`
	// Degradation tunes the detection of degraded sources.
	Degradation otelanalytics.DegradationConfig `yaml:"degradation"`
	// PeakHours configures the hour-of-week counters.
	PeakHours PeakHoursConfig `yaml:"peak_hours"`
	// Rules are the top-level rule_files, alerting, evaluation_interval
	// and shipped_rules keys, as Prometheus has them (docs/alerting.md).
	Rules ruler.Config `yaml:",inline"`
	// RemoteWrite is the top-level remote_write, external_labels and
	// remote_write_send: what is sent to Prometheus remote write
	// receivers (docs/scaling.md).
	RemoteWrite remotewrite.Config `yaml:",inline"`
	// Peers are the other proxylens instances whose raw records an export
	// of records also asks for, merged in time order (docs/scaling.md).
	// Empty: this instance's records only.
	Peers []peers.Config `yaml:"peers"`
}

// PeakHoursConfig is the peak_hours section of the config file.
type PeakHoursConfig struct {
	// TZ is an IANA time zone (e.g. Europe/Berlin) in which the
	// hour-of-week counters are written too, beside UTC. Empty: UTC only.
	TZ string `yaml:"tz"`
}

// ReceiverConfig is the receiver section of the config file.
type ReceiverConfig struct {
	// MaxRequestBytes bounds one request after decompression. Default 64 MiB.
	MaxRequestBytes int64 `yaml:"max_request_bytes"`
	// MaxInflightBytes bounds the request bytes handled at once. Default 256 MiB.
	MaxInflightBytes int64 `yaml:"max_inflight_bytes"`
	// RetryAfter is the delay suggested to throttled clients. Default 1s.
	RetryAfter time.Duration `yaml:"retry_after"`
	// MaxInflightRecords bounds the records being committed at once.
	// Default 1048576.
	MaxInflightRecords int `yaml:"max_inflight_records"`
	// AcceptReservedNames lets writers of series (remote write, OTLP
	// metrics) write the names proxylens writes itself, proxy_* and
	// proxylens_*: only to load a copy of proxylens' own series. Default
	// false.
	AcceptReservedNames bool `yaml:"accept_reserved_names"`
	// ReadHeaderTimeout bounds reading a request's headers on every HTTP
	// listener (OTLP/HTTP and the query API's). Default 10s.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// ReadTimeout bounds reading a request's body on every HTTP listener,
	// and an OTLP/gRPC call's message; past it the request is refused (408
	// on OTLP/HTTP; on OTLP/gRPC the connection is closed). Default 1m.
	ReadTimeout time.Duration `yaml:"read_timeout"`
}

// StorageConfig is the storage section of the config file.
type StorageConfig struct {
	// DictionarySize bounds the interned label strings. Default 1048576.
	DictionarySize int `yaml:"dictionary_size"`
	// OutOfOrderWindow is how much older than a series' newest sample a
	// written sample (remote write, OTLP metrics) may be and still be
	// accepted. Default 1h.
	OutOfOrderWindow time.Duration `yaml:"out_of_order_window"`
	// CacheSize is the size in bytes of the block cache that serves
	// queries. Default 268435456 (256 MiB).
	CacheSize int64 `yaml:"cache_size"`
	// RetentionInterval is how often the retention policy is enforced
	// (also at start and when the policy changes). Default 1h.
	RetentionInterval time.Duration `yaml:"retention_interval"`
	// MinFreeDiskBytes is the free space on the data directory's file
	// system below which the store turns read-only: ingest is refused as
	// retryable, cuts wait, /-/ready answers 503; writes resume by
	// themselves at a quarter more. 0: no bound. Default 536870912
	// (512 MiB).
	MinFreeDiskBytes int64 `yaml:"min_free_disk_bytes"`
	// DiskBallastBytes is the size of <data dir>/ballast, a file deleted
	// when a Pebble write finds the disk full anyway, so that the write
	// succeeds and the store turns read-only instead of stopping. 0: no
	// ballast. Default 134217728 (128 MiB).
	DiskBallastBytes int64 `yaml:"disk_ballast_bytes"`
}

// Values of Config.FixedCosts.
const (
	FixedCostsAccrue = "accrue"
	FixedCostsSkip   = "skip"
)

// DefaultConfig returns the embedded defaults: everything on loopback,
// data in ./data.
func DefaultConfig() Config {
	rc := receiver.DefaultConfig()
	return Config{
		DataDir:       "./data",
		OTLPGRPCAddr:  rc.GRPCAddr,
		OTLPHTTPAddr:  rc.HTTPAddr,
		HTTPAddr:      "127.0.0.1:9464",
		FlushInterval: 15 * time.Second,
		FixedCosts:    FixedCostsAccrue,
		LogLevel:      "info",
		LogFormat:     "text",
		Receiver: ReceiverConfig{
			MaxRequestBytes:    rc.MaxRequestBytes,
			MaxInflightBytes:   rc.MaxInflightBytes,
			RetryAfter:         rc.RetryAfter,
			MaxInflightRecords: 1 << 20,
			ReadHeaderTimeout:  rc.ReadHeaderTimeout,
			ReadTimeout:        rc.ReadTimeout,
		},
		Mapping:     otelanalytics.DefaultMappingConfig(),
		Sampling:    otelanalytics.DefaultSamplingConfig(),
		Aggregation: otelanalytics.DefaultAggregationConfig(),
		Storage:     StorageConfig{DictionarySize: otelanalytics.DefaultDictSize, OutOfOrderWindow: time.Hour, CacheSize: pebblestore.DefaultCacheSize, RetentionInterval: time.Hour, MinFreeDiskBytes: pebblestore.DefaultMinFreeBytes, DiskBallastBytes: pebblestore.DefaultBallastBytes},
		Query:       promql.DefaultConfig(),
		Backup:      backup.DefaultConfig(),
		Degradation: otelanalytics.DefaultDegradationConfig(),
		Rules:       ruler.DefaultConfig(),
		RemoteWrite: remotewrite.DefaultConfig(),
	}
}

// LoadFile reads a YAML config file over the defaults. Unknown keys are an
// error. The result is not validated; call Validate.
func LoadFile(path string) (Config, error) {
	cfg := DefaultConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("read config file: %w", err)
	}
	if err := Parse(b, &cfg); err != nil {
		return cfg, fmt.Errorf("config file %s: %w", path, err)
	}
	cfg.Rules.SetDirectory(filepath.Dir(path)) // rule files are relative to the config file, as in Prometheus
	cfg.RemoteWrite.SetDirectory(filepath.Dir(path))
	peers.SetDirectory(cfg.Peers, filepath.Dir(path))
	return cfg, nil
}

// Parse decodes YAML into cfg strictly: unknown keys, wrong types and more
// than one document are errors, each naming the key.
func Parse(b []byte, cfg *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return describeYAMLError(b, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return errors.New("the file holds more than one YAML document (a '---' separator); proxylens reads one")
	}
	return nil
}

var (
	yamlLine        = regexp.MustCompile("^line ([0-9]+): (.*)$")
	yamlUnknownKey  = regexp.MustCompile(`^field (\S+) not found in type`)
	yamlWrongScalar = regexp.MustCompile("^cannot unmarshal !!(\\w+) `(.*)` into (\\S+)$")
	yamlWrongNode   = regexp.MustCompile(`^cannot unmarshal !!(\w+) into (\S+)$`)
)

// describeYAMLError rewrites yaml's type errors, which name Go types
// ("field flor not found in type otelanalytics.SamplingConfig"), to name the
// config key instead ("line 3: sampling.flor: unknown key").
func describeYAMLError(b []byte, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	var root yaml.Node
	_ = yaml.Unmarshal(b, &root)
	msgs := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		m := yamlLine.FindStringSubmatch(e)
		if m == nil {
			msgs = append(msgs, e)
			continue
		}
		line, _ := strconv.Atoi(m[1])
		key := keyAtLine(&root, line, "")
		what := m[2]
		if strings.HasSuffix(what, "into server.Config") {
			key = "" // the whole file is of the wrong kind
		}
		switch {
		case yamlUnknownKey.MatchString(what):
			what = "unknown key"
		case yamlWrongScalar.MatchString(what):
			v := yamlWrongScalar.FindStringSubmatch(what)
			what = fmt.Sprintf("%q is not %s", v[2], expected(v[3]))
		case yamlWrongNode.MatchString(what):
			v := yamlWrongNode.FindStringSubmatch(what)
			what = fmt.Sprintf("expected %s, got a %s", expected(v[2]), map[string]string{"seq": "list", "map": "section"}[v[1]])
		}
		if key != "" {
			what = key + ": " + what
		}
		msgs = append(msgs, "line "+m[1]+": "+what)
	}
	if len(msgs) == 1 {
		return errors.New(msgs[0])
	}
	return errors.New(strings.Join(append([]string{"several problems:"}, msgs...), "\n  "))
}

// expected names what a Go type expects in the config file's words.
func expected(goType string) string {
	switch goType {
	case "time.Duration":
		return "a duration such as 15s"
	case "int", "int64", "uint64", "int32":
		return "a whole number"
	case "float64":
		return "a number"
	case "string":
		return "a string"
	case "[]string":
		return "a list of strings"
	}
	return "a section of keys"
}

// keyAtLine returns the dotted path of the key on the given line.
func keyAtLine(n *yaml.Node, line int, prefix string) string {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if k := keyAtLine(c, line, prefix); k != "" {
				return k
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			path := k.Value
			if prefix != "" {
				path = prefix + "." + k.Value
			}
			if k.Line == line {
				return path
			}
			if sub := keyAtLine(v, line, path); sub != "" {
				return sub
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if c.Line == line && c.Kind == yaml.ScalarNode {
				return fmt.Sprintf("%s[%d]", prefix, i)
			}
			if sub := keyAtLine(c, line, fmt.Sprintf("%s[%d]", prefix, i)); sub != "" {
				return sub
			}
		}
	}
	return ""
}

// Validate reports every problem at once, each naming the field and the
// value.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if strings.TrimSpace(c.DataDir) == "" {
		add("data_dir: must not be empty")
	}
	for _, a := range []struct{ field, addr string }{
		{"otlp_grpc_addr", c.OTLPGRPCAddr}, {"otlp_http_addr", c.OTLPHTTPAddr}, {"http_addr", c.HTTPAddr},
	} {
		if a.addr == "" && a.field == "http_addr" {
			add("http_addr: must not be empty")
			continue
		}
		if a.addr == "" {
			continue // that OTLP transport is disabled
		}
		if !validHostPort(a.addr) {
			add("%s: %q is not a host:port address with a port from 0 to 65535", a.field, a.addr)
		}
	}
	if c.FlushInterval < time.Second {
		add("flush_interval: must be at least 1s, got %q", c.FlushInterval.String())
	} else if time.Hour%c.FlushInterval != 0 {
		add("flush_interval: must divide an hour evenly (1s, 5s, 15s, 30s, 1m…), got %q", c.FlushInterval.String())
	}
	if c.OTLPMetricsEndpoint != "" {
		if _, _, err := ParseMetricsEndpoint(c.OTLPMetricsEndpoint); err != nil {
			add("otlp_metrics_endpoint: %v", err)
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		add("log_level: must be debug, info, warn or error, got %q", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		add("log_format: must be text or json, got %q", c.LogFormat)
	}
	rc := receiver.Config{MaxRequestBytes: c.Receiver.MaxRequestBytes, MaxInflightBytes: c.Receiver.MaxInflightBytes, RetryAfter: c.Receiver.RetryAfter,
		ReadHeaderTimeout: c.Receiver.ReadHeaderTimeout, ReadTimeout: c.Receiver.ReadTimeout}
	if err := rc.Validate(); err != nil {
		errs = append(errs, prefixErrors("receiver.", err)...)
	}
	if c.Receiver.MaxInflightRecords < 1 {
		add("receiver.max_inflight_records: must be at least 1, got %d", c.Receiver.MaxInflightRecords)
	}
	if c.PeakHours.TZ != "" {
		if _, err := time.LoadLocation(c.PeakHours.TZ); err != nil {
			add("peak_hours.tz: %q is not an IANA time zone such as Europe/Berlin", c.PeakHours.TZ)
		}
	}
	for _, v := range []interface{ Validate() error }{c.Mapping, c.Sampling, c.Aggregation, c.Query, c.Degradation} {
		if err := v.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Storage.DictionarySize < 1024 {
		add("storage.dictionary_size: must be at least 1024, got %d", c.Storage.DictionarySize)
	}
	if c.Storage.CacheSize < 1<<20 {
		add("storage.cache_size: must be at least 1048576 (1 MiB), got %d", c.Storage.CacheSize)
	}
	if c.Storage.MinFreeDiskBytes < 0 {
		add("storage.min_free_disk_bytes: must not be negative (0: no bound), got %d", c.Storage.MinFreeDiskBytes)
	}
	if c.Storage.DiskBallastBytes < 0 {
		add("storage.disk_ballast_bytes: must not be negative (0: no ballast), got %d", c.Storage.DiskBallastBytes)
	}
	if c.Storage.RetentionInterval < time.Minute {
		add("storage.retention_interval: must be at least 1m, got %q", c.Storage.RetentionInterval.String())
	}
	if c.Retention != nil {
		if err := c.Retention.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.Backup.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := backup.CheckDirs(c.Backup.Dir, c.DataDir); err != nil && strings.TrimSpace(c.DataDir) != "" {
		errs = append(errs, err)
	}
	if err := c.Auth.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Auth.OTLPRequireToken && !c.Auth.hasIngestToken() && c.AdminTokenFile == "" {
		errs = append(errs, errors.New("auth.otlp_require_token: needs a token with the writer or admin role (or admin_token_file) to accept"))
	}
	if c.TLS.Enabled() {
		if _, err := c.TLS.Load(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Costs != nil {
		if err := otelanalytics.ValidateCostModels(c.Costs); err != nil {
			errs = append(errs, err)
		}
	}
	switch c.CostAllocation {
	case "", otelanalytics.AllocateByRequests, otelanalytics.AllocateByBytes:
	default:
		add("cost_allocation: must be requests or bytes, got %q", c.CostAllocation)
	}
	switch c.FixedCosts {
	case FixedCostsAccrue, FixedCostsSkip:
	default:
		add("fixed_costs: must be accrue or skip, got %q", c.FixedCosts)
	}
	if c.AdminTokenFile != "" {
		if _, err := readAdminToken(c.AdminTokenFile); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.Rules.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.RemoteWrite.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := peers.Validate(c.Peers); err != nil {
		errs = append(errs, err)
	}
	if len(c.Peers) > 0 && c.AdminTokenFile == "" && !c.Auth.Enabled() {
		add("peers: exports, which peers serve, are off without auth.users, auth.tokens or admin_token_file")
	}
	if c.Storage.OutOfOrderWindow < 0 {
		add("storage.out_of_order_window: must not be negative, got %q", c.Storage.OutOfOrderWindow.String())
	}
	return errors.Join(errs...)
}

// validHostPort reports whether addr is host:port with a numeric port.
func validHostPort(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 0 && n <= 65535 && strconv.Itoa(n) == port
}

// prefixErrors unwraps a joined error and prefixes each message.
func prefixErrors(prefix string, err error) []error {
	var out []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			out = append(out, fmt.Errorf("%s%w", prefix, e))
		}
		return out
	}
	return []error{fmt.Errorf("%s%w", prefix, err)}
}

// ParseMetricsEndpoint parses --otlp-metrics-endpoint into a protocol
// ("grpc" or "http") and a URL for the exporter: host:port or
// grpc://host:port for OTLP/gRPC (a port is required), http(s)://host[:port]
// [/path] for OTLP/HTTP.
func ParseMetricsEndpoint(s string) (protocol string, u *url.URL, err error) {
	full := s
	if !strings.Contains(s, "://") {
		full = "grpc://" + s
	}
	u, err = url.Parse(full)
	if err != nil {
		return "", nil, fmt.Errorf("%q is not a URL or host:port", s)
	}
	if u.Hostname() == "" {
		return "", nil, fmt.Errorf("%q has no host", s)
	}
	if p := u.Port(); p != "" && !validHostPort(u.Host) {
		return "", nil, fmt.Errorf("%q: the port must be a number from 0 to 65535", s)
	}
	switch u.Scheme {
	case "grpc":
		if u.Port() == "" {
			return "", nil, fmt.Errorf("%q: an OTLP/gRPC endpoint needs a port, such as collector:4317", s)
		}
		return "grpc", u, nil
	case "http", "https":
		return "http", u, nil
	}
	return "", nil, fmt.Errorf("%q: the scheme must be http, https or grpc", s)
}
