package server

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	promconfig "github.com/prometheus/common/config"
	"github.com/prometheus/prometheus/discovery"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/internal/backup"
	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
	"github.com/proxylens/proxylens/promql"
)

func TestDefaultConfigValid(t *testing.T) {
	cfg := DefaultConfig()
	require.NoError(t, cfg.Validate())

	// The defaults listen on loopback only.
	require.Equal(t, "127.0.0.1:4317", cfg.OTLPGRPCAddr)
	require.Equal(t, "127.0.0.1:4318", cfg.OTLPHTTPAddr)
	require.Equal(t, "127.0.0.1:9464", cfg.HTTPAddr)
	require.Equal(t, "./data", cfg.DataDir)
	require.Equal(t, 15*time.Second, cfg.FlushInterval)
	require.Empty(t, cfg.OTLPMetricsEndpoint)
}

// An empty file, or one with only comments, gives the defaults.
func TestLoadFileEmptyConfig(t *testing.T) {
	for name, content := range map[string]string{
		"empty":    "",
		"comments": "# nothing set\n",
		"document": "---\n",
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "proxylens.yaml")
			require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
			cfg, err := LoadFile(path)
			require.NoError(t, err)
			require.Equal(t, DefaultConfig(), cfg)
		})
	}
}

func TestLoadFileMissingConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing.yaml")
	_, err := LoadFile(path)
	require.ErrorIs(t, err, os.ErrNotExist)
	require.EqualError(t, err, "read config file: open "+path+": no such file or directory")
}

// A key present with no value (YAML null) keeps its default; only an
// explicit "" empties a string. A null list is an empty list.
func TestLoadFileNullValuesConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "proxylens.yaml")
	require.NoError(t, os.WriteFile(path, []byte("otlp_grpc_addr:\nflush_interval: ~\nreceiver:\nmapping:\n  selector:\n"), 0o600))
	cfg, err := LoadFile(path)
	require.NoError(t, err)
	want := DefaultConfig()
	want.Mapping.Selector = nil
	require.Equal(t, want, cfg)
	require.EqualError(t, cfg.Validate(), "mapping.selector: must list at least one attribute key")
}

func TestGoodConfig(t *testing.T) {
	cfg, err := LoadFile("testdata/good.yaml")
	require.NoError(t, err)
	require.NoError(t, cfg.Validate())

	require.Equal(t, []string{"testdata/rules/*.good.yml"}, cfg.Rules.RuleFiles, "relative to the config file")
	require.Equal(t, 30*time.Second, cfg.Rules.EvaluationInterval)
	require.False(t, cfg.Rules.ShippedRules)
	require.Len(t, cfg.Rules.Alerting.AlertmanagerConfigs, 1)
	am := cfg.Rules.Alerting.AlertmanagerConfigs[0]
	require.Equal(t, "5s", am.Timeout.String())
	require.Equal(t, "http", am.Scheme, "Prometheus' default")
	require.Equal(t, "v2", string(am.APIVersion))
	require.Equal(t, "alertmanager:9093", string(am.ServiceDiscoveryConfigs[0].(discovery.StaticConfig)[0].Targets[0]["__address__"]))
	require.Len(t, cfg.Rules.Alerting.AlertRelabelConfigs, 1)
	require.Equal(t, "drop", string(cfg.Rules.Alerting.AlertRelabelConfigs[0].Action))

	require.Equal(t, Config{
		DataDir:             "/var/lib/proxylens",
		OTLPGRPCAddr:        "0.0.0.0:4317",
		OTLPHTTPAddr:        "",
		HTTPAddr:            "[::1]:9090",
		FlushInterval:       30 * time.Second,
		OTLPMetricsEndpoint: "https://collector.example.com:4318/otlp/v1/metrics",
		LogLevel:            "debug",
		LogFormat:           "json",
		AdminTokenFile:      "testdata/admin.token",
		Receiver: ReceiverConfig{
			MaxRequestBytes:     16 << 20,
			MaxInflightBytes:    128 << 20,
			RetryAfter:          2 * time.Second,
			MaxInflightRecords:  65536,
			AcceptReservedNames: true,
			ReadHeaderTimeout:   5 * time.Second,
			ReadTimeout:         2 * time.Minute,
		},
		Mapping: otelanalytics.MappingConfig{
			Selector:     []string{"proxy.source", "proxy.url", "gateway.route"},
			MaxClockSkew: 5 * time.Minute,
		},
		Sampling:    otelanalytics.SamplingConfig{LowPerMinute: 5000, HighPerMinute: 50000, Floor: 0.25},
		Aggregation: otelanalytics.AggregationConfig{MaxSeriesPerFamily: 50000, MaxDomains: 2000, MaxPendingIncrements: 500000},
		Storage:     StorageConfig{DictionarySize: 256 << 10, OutOfOrderWindow: 30 * time.Minute, CacheSize: 64 << 20, RetentionInterval: 30 * time.Minute, MinFreeDiskBytes: 1 << 30, DiskBallastBytes: 64 << 20},
		Retention: &pebblestore.RetentionPolicy{
			RawRecordsDays: 14, RawSeriesDays: 7, HourlyDays: 60, DailyDays: 730, BackupDays: 30, ExportDays: 90, AuditDays: 730,
			ImmutableUntil: new(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)),
		},
		Costs: []otelanalytics.CostModel{{
			Source: "brightdata", Model: "hybrid", Currency: "EUR", From: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
			PerRequest: new(0.001), PerGB: new(3.5), Subscription: new(500.0), Period: "month",
		}},
		CostAllocation: "bytes",
		FixedCosts:     "skip",
		TLS:            TLSConfig{CertFile: "testdata/tls-cert.pem", KeyFile: "testdata/tls-key.pem"},
		Rules:          cfg.Rules,       // checked above
		RemoteWrite:    cfg.RemoteWrite, // checked below
		Peers:          cfg.Peers,       // checked below
		Auth: AuthConfig{
			Users:            []AuthUser{{Name: "vera", Role: RoleViewer, PasswordHash: "$2a$04$Gq4S0vDr1L8u8qDk2VYwY.5kUqbXqKcbw2v0j0YzGm2Q3oIhQ6c1W"}},
			Tokens:           []AuthToken{{Name: "grafana", Role: RoleViewer, TokenSHA256: "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"}},
			OTLPRequireToken: true,
		},
		Backup: backup.Config{Dir: "/var/backups/proxylens", Interval: 12 * time.Hour, Archive: true, Upload: []backup.UploadCommand{
			{Name: "git-lfs", Command: []string{"/usr/local/bin/push-backup", "--remote", "origin"}, Timeout: 5 * time.Minute},
		}},
		Query: promql.Config{Timeout: time.Minute, MaxSamples: 10_000_000, MaxConcurrent: 8, MaxPoints: 5000,
			MaxQueryLength: 30 * 24 * time.Hour, MaxQueryBytes: 64 << 10, MaxQueryDepth: 128, LookbackDelta: 2 * time.Minute, ResultCache: promql.ResultCacheConfig{MaxBytes: 64 << 20},
			Upstream: &promql.UpstreamConfig{URL: "http://vmselect:8481/select/0/prometheus", Headers: map[string]string{"X-Scope-OrgID": "team-a"},
				Timeout: 90 * time.Second, MaxResponseBytes: 64 << 20, HTTPClientConfig: promconfig.HTTPClientConfig{
					Authorization:   &promconfig.Authorization{Type: "Bearer", CredentialsFile: "/etc/proxylens/upstream.token"},
					FollowRedirects: true, EnableHTTP2: true,
				}}},
		Degradation: otelanalytics.DegradationConfig{Window: 10 * time.Minute, Baseline: 336 * time.Hour, MinRequests: 100,
			MinSuccessDrop: 0.1, MinLatencyRatio: 2, Significance: 1e-5, MinDuration: 2 * time.Minute, MaxSources: 200},
		PeakHours: PeakHoursConfig{TZ: "Europe/Berlin"},
	}, cfg)

	rw := cfg.RemoteWrite
	require.Equal(t, `{proxylens_instance="eu-1"}`, rw.ExternalLabels.String())
	require.Equal(t, "all", rw.Send)
	require.Equal(t, int64(256<<20), rw.MaxPendingBytes)
	require.Len(t, rw.RemoteWrite, 2)
	mimir := rw.RemoteWrite[0]
	require.Equal(t, "mimir", mimir.RemoteName())
	require.Equal(t, "https://mimir.example.com/api/v1/push", mimir.URL.String())
	require.Equal(t, "10s", mimir.RemoteTimeout.String())
	require.Equal(t, map[string]string{"X-Scope-OrgID": "proxies"}, mimir.Headers)
	require.Equal(t, "testdata/secrets/rw.token", mimir.HTTPClientConfig.Authorization.CredentialsFile, "relative to the config file")
	require.Equal(t, "Bearer", mimir.HTTPClientConfig.Authorization.Type)
	require.True(t, mimir.HTTPClientConfig.TLSConfig.InsecureSkipVerify)
	require.Equal(t, "io.prometheus.write.v2.Request", string(mimir.ProtobufMessage))
	q := mimir.QueueConfig
	require.Equal(t, []any{20000, 5000, "2s", "100ms", "10s", true},
		[]any{q.Capacity, q.MaxSamplesPerSend, q.BatchSendDeadline.String(), q.MinBackoff.String(), q.MaxBackoff.String(), q.RetryOnRateLimit})
	require.Len(t, mimir.WriteRelabelConfigs, 1)
	vm := rw.RemoteWrite[1]
	require.Equal(t, "http://vm.example.com:8428/api/v1/write", vm.RemoteName(), "named by its URL")
	require.Equal(t, "proxylens", vm.HTTPClientConfig.BasicAuth.Username)
	require.Equal(t, "prometheus.WriteRequest", string(vm.ProtobufMessage), "Prometheus' default")
	require.Equal(t, 10000, vm.QueueConfig.Capacity, "Prometheus' default")
	require.False(t, vm.QueueConfig.RetryOnRateLimit, "Prometheus' default")

	require.Len(t, cfg.Peers, 1)
	peer := cfg.Peers[0]
	require.Equal(t, []any{"eu-2", "https://proxylens-eu-2.example.com:9464", 30 * time.Second}, []any{peer.Name, peer.URL, peer.Timeout})
	require.Equal(t, "testdata/secrets/peer.token", peer.HTTPClientConfig.Authorization.CredentialsFile, "relative to the config file")
	require.Equal(t, "Bearer", peer.HTTPClientConfig.Authorization.Type)
	require.Equal(t, "testdata/tls-cert.pem", peer.HTTPClientConfig.TLSConfig.CAFile)
	require.True(t, peer.HTTPClientConfig.FollowRedirects, "Prometheus' default")

	// good.yaml exercises every key: each field differs from its default,
	// so a new key that is not added to good.yaml fails here.
	for _, f := range leafFields(reflect.ValueOf(cfg), reflect.ValueOf(DefaultConfig()), "") {
		require.Falsef(t, reflect.DeepEqual(f.got, f.def), "testdata/good.yaml does not set %s to a value other than its default %v", f.key, f.def)
	}
}

type leafField struct {
	key      string
	got, def any
}

// leafFields lists the non-struct fields of two Configs by YAML key.
func leafFields(got, def reflect.Value, prefix string) []leafField {
	var out []leafField
	for i := range got.NumField() {
		sf := got.Type().Field(i)
		key := prefix + strings.Split(sf.Tag.Get("yaml"), ",")[0]
		if sf.Type.Kind() == reflect.Struct && sf.Type != reflect.TypeFor[time.Duration]() && sf.Type != reflect.TypeFor[labels.Labels]() {
			out = append(out, leafFields(got.Field(i), def.Field(i), key+".")...)
			continue
		}
		out = append(out, leafField{key: key, got: got.Field(i).Interface(), def: def.Field(i).Interface()})
	}
	return out
}

// badConfigs maps each testdata/*.bad.yaml file to the lines of the error
// LoadFile and Validate produce for it. Errors from LoadFile start with
// "config file testdata/NAME: ", which is left out here.
var badConfigs = map[string][]string{
	// YAML that does not decode into Config.
	"unknown_key.bad.yaml": {
		"line 2: retention_days: unknown key",
	},
	"unknown_nested_key.bad.yaml": {
		"line 3: sampling.flor: unknown key",
	},
	"unknown_section.bad.yaml": {
		"line 3: exporter: unknown key",
	},
	"flush_interval_type.bad.yaml": {
		`line 1: flush_interval: "yes" is not a duration such as 15s`,
	},
	"flush_interval_int.bad.yaml": {
		`line 1: flush_interval: "15" is not a duration such as 15s`,
	},
	"section_type.bad.yaml": {
		`line 1: storage: "1048576" is not a section of keys`,
	},
	"not_a_mapping.bad.yaml": {
		"line 1: expected a section of keys, got a list",
	},
	"duplicate_key.bad.yaml": {
		`line 2: log_level: mapping key "log_level" already defined at line 1`,
	},
	"syntax.bad.yaml": {
		// The "[" is on line 2; the YAML library reports line 1.
		"yaml: line 1: did not find expected ',' or ']'",
	},
	"several_parse_errors.bad.yaml": {
		"several problems:",
		`  line 1: flush_interval: "15" is not a duration such as 15s`,
		`  line 3: receiver.max_request_bytes: "lots" is not a whole number`,
		"  line 4: receiver.retry: unknown key",
	},

	// Top-level settings.
	"data_dir_empty.bad.yaml":                {"data_dir: must not be empty"},
	"otlp_grpc_addr.bad.yaml":                {`otlp_grpc_addr: "localhost" is not a host:port address with a port from 0 to 65535`},
	"otlp_http_addr.bad.yaml":                {`otlp_http_addr: "127.0.0.1:" is not a host:port address with a port from 0 to 65535`},
	"http_addr.bad.yaml":                     {`http_addr: "nonsense" is not a host:port address with a port from 0 to 65535`},
	"http_addr_empty.bad.yaml":               {"http_addr: must not be empty"},
	"flush_interval_zero.bad.yaml":           {`flush_interval: must be at least 1s, got "0s"`},
	"flush_interval_negative.bad.yaml":       {`flush_interval: must be at least 1s, got "-15s"`},
	"flush_interval_7s.bad.yaml":             {`flush_interval: must divide an hour evenly (1s, 5s, 15s, 30s, 1m…), got "7s"`},
	"log_level.bad.yaml":                     {`log_level: must be debug, info, warn or error, got "loud"`},
	"cost_allocation.bad.yaml":               {`cost_allocation: must be requests or bytes, got "seats"`},
	"log_format.bad.yaml":                    {`log_format: must be text or json, got "xml"`},
	"otlp_metrics_endpoint_scheme.bad.yaml":  {`otlp_metrics_endpoint: "ftp://x:1": the scheme must be http, https or grpc`},
	"otlp_metrics_endpoint_no_host.bad.yaml": {`otlp_metrics_endpoint: "http:///v1/metrics" has no host`},

	// receiver
	"receiver_max_request_bytes.bad.yaml":    {"receiver.max_request_bytes: must be at least 1024, got -1"},
	"receiver_max_inflight_bytes.bad.yaml":   {"receiver.max_inflight_bytes: must be at least 1024, got 0"},
	"receiver_retry_after.bad.yaml":          {`receiver.retry_after: must be a whole number of seconds, at least 1s, got "500ms"`},
	"receiver_retry_after_fraction.bad.yaml": {`receiver.retry_after: must be a whole number of seconds, at least 1s, got "1.5s"`},
	"receiver_max_inflight_records.bad.yaml": {"receiver.max_inflight_records: must be at least 1, got 0"},
	"receiver_read_timeouts.bad.yaml": {
		`receiver.read_header_timeout: must be at least 1s, got "0s"`,
		`receiver.read_timeout: must be at least 1s, got "100ms"`,
	},

	// mapping
	"mapping_selector_empty.bad.yaml":     {"mapping.selector: must list at least one attribute key"},
	"mapping_selector_empty_key.bad.yaml": {"mapping.selector[1]: empty attribute key"},
	"mapping_max_clock_skew.bad.yaml":     {`mapping.max_clock_skew: must not be negative, got "-1m0s"`},

	// sampling
	"sampling_floor_zero.bad.yaml":      {"sampling.floor: must be in (0, 1], got 0"},
	"sampling_floor_above_one.bad.yaml": {"sampling.floor: must be in (0, 1], got 1.5"},
	"sampling_floor_nan.bad.yaml":       {"sampling.floor: must be in (0, 1], got NaN"},
	"sampling_low_negative.bad.yaml":    {"sampling.low_per_minute: must be a finite number >= 0, got -1"},
	"sampling_high_below_low.bad.yaml":  {"sampling.high_per_minute: must be finite and >= low_per_minute (20000), got 5000"},
	"sampling_high_infinite.bad.yaml":   {"sampling.high_per_minute: must be finite and >= low_per_minute (10000), got +Inf"},

	// aggregation
	"aggregation_max_series_per_family.bad.yaml":  {"aggregation.max_series_per_family: must be at least 1, got 0"},
	"aggregation_max_domains.bad.yaml":            {"aggregation.max_domains: must be at least 1, got 0"},
	"aggregation_max_pending_increments.bad.yaml": {"aggregation.max_pending_increments: must be at least 1000, got 10"},

	// storage
	"storage_dictionary_size.bad.yaml":     {"storage.dictionary_size: must be at least 1024, got 10"},
	"storage_out_of_order_window.bad.yaml": {`storage.out_of_order_window: must not be negative, got "-5m0s"`},
	"costs_retention.bad.yaml": {
		`storage.retention_interval: must be at least 1m, got "10s"`,
		"retention.hourly_days: must be at least raw_series_days (7), got 3",
		"retention.hourly_days: must be at least raw_records_days (7), got 3",
		`costs[0].currency: "usdx" is not an ISO 4217 currency code`,
		`costs[0].per_gb: not used by model "per_request"`,
	},
	"storage_cache_size.bad.yaml": {"storage.cache_size: must be at least 1048576 (1 MiB), got 1000"},
	"storage_min_free_disk_bytes.bad.yaml": {
		"storage.min_free_disk_bytes: must not be negative (0: no bound), got -1",
		"storage.disk_ballast_bytes: must not be negative (0: no ballast), got -5",
	},
	"degradation.bad.yaml": {
		`degradation.window: must be from 1m to 30m, got "30s"`,
		`degradation.baseline: must be whole hours from 1h to 720h, got "1h30m0s"`,
		"degradation.min_requests: must be at least 1, got 0",
		"degradation.min_success_drop: must be between 0 and 1, got 1",
		"degradation.min_latency_ratio: must be more than 1, got 0.5",
		"degradation.significance: must be between 0 and 0.5, got 0.5",
		`degradation.min_duration: must be from 0 to the window (30s), got "-1s"`,
		"degradation.max_sources: must be at least 1, got 0",
	},
	"peak_hours_tz.bad.yaml": {`peak_hours.tz: "Mars/Olympus_Mons" is not an IANA time zone such as Europe/Berlin`},
	"query_limits.bad.yaml": {
		`query.timeout: must not be negative, got "-1s"`,
		"query.max_samples: must not be negative, got -5",
		"query.max_concurrent: must not be negative, got -1",
		"query.max_points_per_series: must not be negative, got -10",
		`query.max_query_length: must not be negative, got "-1h0m0s"`,
		"query.max_query_bytes: must not be negative, got -2",
		"query.max_query_depth: must not be negative, got -3",
		`query.lookback_delta: must not be negative, got "-1m0s"`,
		"query.result_cache.max_bytes: must not be negative, got -1",
	},
	"query_upstream.bad.yaml": {
		`query.upstream.url: must be an http or https URL, got "ftp://vm:8428"`,
		"query.upstream.headers: set Authorization with authorization or basic_auth, not as a header",
		`query.upstream.timeout: must not be negative, got "-1s"`,
		"query.upstream.max_response_bytes: must not be negative, got -5",
		"query.upstream: at most one of basic_auth, oauth2 & authorization must be configured",
	},
	"query_upstream_unknown_key.bad.yaml": {
		"line 4: query.upstream.bearer_tokn: unknown key",
	},

	// auth: a viewer's token may not ingest; a misspelt role
	"auth_otlp_require_token.bad.yaml": {
		`auth.tokens[1].role: must be viewer, analyst, admin or writer, got "writter"`,
		"auth.otlp_require_token: needs a token with the writer or admin role (or admin_token_file) to accept",
	},

	// Every problem of a file is reported at once.
	// remote write
	"remote_write_url.bad.yaml": {
		`remote_write[0]: url: scheme must be http or https, got "ftp://vm.example.com/api/v1/write"`,
		"remote_write[1]: queue_config.capacity: must be at least max_samples_per_send (100), got 10",
		`remote_write[3]: the same name (or, without one, URL) as remote_write[2]: "twice"`,
		"remote_write[3]: sigv4: not supported by proxylens",
	},
	"remote_write_no_url.bad.yaml":      {"remote_write: url for remote_write is empty"},
	"remote_write_unknown_key.bad.yaml": {"line 4: remote_write[0].queue_config.capacityy: unknown key"},
	"remote_write_send.bad.yaml": {
		`remote_write_send: must be proxy or all, got "everything"`,
		`external_labels: "__replica__" is not a valid label name`,
	},
	"remote_write_protobuf.bad.yaml": {
		"remote_write: invalid protobuf_message value: unknown type for remote write protobuf message prometheus.WriteRequestV3, supported: prometheus.WriteRequest, io.prometheus.write.v2.Request",
	},

	// peers
	"peers.bad.yaml": {
		`peers[0].url: must be an http or https URL, got "proxylens-eu-2:9464"`,
		`peers[1].timeout: must not be negative, got "-5s"`,
		"peers[1]: at most one of basic_auth, oauth2 & authorization must be configured",
		`peers[1]: the same name (or, without one, host:port) as peers[0]: "eu-2"`,
		"peers: exports, which peers serve, are off without auth.users, auth.tokens or admin_token_file",
	},
	"peers_unknown_key.bad.yaml": {"line 4: peers[0].bearer_tokn: unknown key"},

	// rules
	"rule_file_broken.bad.yaml": {
		`rule_files: testdata/rules/broken.rules.yml: 8:15: group "proxy", rule 2, "Broken": could not parse expression: 1:52: parse error: unclosed left parenthesis`,
	},
	"evaluation_interval.bad.yaml":    {`evaluation_interval: must be at least 1s, got "500ms"`},
	"alerting_unknown_key.bad.yaml":   {"line 4: alerting.alertmanagers[0].static_config: unknown key"},
	"alerting_target_scheme.bad.yaml": {`alerting: "http://alertmanager:9093" is not a valid hostname`},

	"several_problems.bad.yaml": {
		"data_dir: must not be empty",
		`otlp_grpc_addr: "localhost" is not a host:port address with a port from 0 to 65535`,
		"http_addr: must not be empty",
		`flush_interval: must divide an hour evenly (1s, 5s, 15s, 30s, 1m…), got "7s"`,
		`otlp_metrics_endpoint: "ftp://collector:4318": the scheme must be http, https or grpc`,
		`log_level: must be debug, info, warn or error, got "loud"`,
		`log_format: must be text or json, got "xml"`,
		"receiver.max_request_bytes: must be at least 1024, got 0",
		"receiver.max_inflight_bytes: must be at least 1024, got 100",
		`receiver.retry_after: must be a whole number of seconds, at least 1s, got "500ms"`,
		"receiver.max_inflight_records: must be at least 1, got 0",
		"mapping.selector[1]: empty attribute key",
		`mapping.max_clock_skew: must not be negative, got "-1s"`,
		"sampling.high_per_minute: must be finite and >= low_per_minute (20000), got 5000",
		"sampling.floor: must be in (0, 1], got 0",
		"aggregation.max_series_per_family: must be at least 1, got 0",
		"aggregation.max_domains: must be at least 1, got -5",
		"aggregation.max_pending_increments: must be at least 1000, got 10",
		"storage.dictionary_size: must be at least 1024, got 10",
	},
}

func TestBadConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/*.bad.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, files)

	// Every bad file has an expectation, and every expectation a file.
	seen := map[string]bool{}
	for _, path := range files {
		name := filepath.Base(path)
		seen[name] = true
		t.Run(name, func(t *testing.T) {
			want, ok := badConfigs[name]
			require.Truef(t, ok, "%s has no expected error in badConfigs", path)

			cfg, err := LoadFile(path)
			if err == nil {
				err = cfg.Validate()
			} else {
				prefix := "config file " + path + ": "
				require.Truef(t, strings.HasPrefix(err.Error(), prefix), "error %q does not start with %q", err, prefix)
				err = errorString(strings.TrimPrefix(err.Error(), prefix))
			}
			require.Errorf(t, err, "%s was accepted", path)
			require.ElementsMatch(t, want, strings.Split(err.Error(), "\n"))
		})
	}
	for name := range badConfigs {
		require.Truef(t, seen[name], "badConfigs lists %s, which is not in testdata", name)
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }

// TestConfigRefusesBadPort: a port out of range is refused at start with a
// message naming the setting, not when the server listens.
func TestConfigRefusesBadPort(t *testing.T) {
	cfg := DefaultConfig()
	cfg.OTLPGRPCAddr = "127.0.0.1:99999"
	cfg.OTLPHTTPAddr = "127.0.0.1:-1"
	cfg.HTTPAddr = "127.0.0.1:65536"
	err := cfg.Validate()
	require.Error(t, err)
	require.Len(t, strings.Split(err.Error(), "\n"), 3)
	require.Contains(t, err.Error(), `otlp_grpc_addr: "127.0.0.1:99999"`)
	require.Contains(t, err.Error(), `otlp_http_addr: "127.0.0.1:-1"`)
	require.Contains(t, err.Error(), `http_addr: "127.0.0.1:65536"`)
}

// TestLoadFileRefusesSecondDocumentConfig: settings (and unknown keys)
// after a "---" are refused rather than silently ignored.
func TestLoadFileRefusesSecondDocumentConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "proxylens.yaml")
	require.NoError(t, os.WriteFile(path, []byte("data_dir: /a\n---\nlog_level: loud\nretention: 30d\n"), 0o600))
	_, err := LoadFile(path)
	require.Error(t, err)
}

func TestParseMetricsEndpoint(t *testing.T) {
	for _, tc := range []struct {
		in                           string
		protocol, scheme, host, path string
	}{
		{in: "collector:4317", protocol: "grpc", scheme: "grpc", host: "collector:4317"},
		{in: "127.0.0.1:4317", protocol: "grpc", scheme: "grpc", host: "127.0.0.1:4317"},
		{in: "[::1]:4317", protocol: "grpc", scheme: "grpc", host: "[::1]:4317"},
		{in: "grpc://collector:4317", protocol: "grpc", scheme: "grpc", host: "collector:4317"},
		{in: "http://collector:4318", protocol: "http", scheme: "http", host: "collector:4318"},
		{in: "https://collector.example.com:443", protocol: "http", scheme: "https", host: "collector.example.com:443"},
		{in: "https://collector.example.com", protocol: "http", scheme: "https", host: "collector.example.com"},
		{in: "http://collector:4318/v1/metrics", protocol: "http", scheme: "http", host: "collector:4318", path: "/v1/metrics"},
		{in: "https://gw.example.com/otlp/v1/metrics", protocol: "http", scheme: "https", host: "gw.example.com", path: "/otlp/v1/metrics"},
		{in: "HTTP://collector:4318", protocol: "http", scheme: "http", host: "collector:4318"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			protocol, u, err := ParseMetricsEndpoint(tc.in)
			require.NoError(t, err)
			require.Equal(t, tc.protocol, protocol)
			require.Equal(t, tc.scheme, u.Scheme)
			require.Equal(t, tc.host, u.Host)
			require.Equal(t, tc.path, u.Path)
		})
	}
}

func TestParseMetricsEndpointErrors(t *testing.T) {
	for in, want := range map[string]string{
		"ftp://x:1":          `"ftp://x:1": the scheme must be http, https or grpc`,
		"grpcs://x:4317":     `"grpcs://x:4317": the scheme must be http, https or grpc`,
		"http://":            `"http://" has no host`,
		"http:///v1/metrics": `"http:///v1/metrics" has no host`,
		// Without a scheme, grpc:// is assumed, and the message shows it.
		"collector:port": `"collector:port" is not a URL or host:port`,
		"http://a b:1":   `"http://a b:1" is not a URL or host:port`,
	} {
		t.Run(in, func(t *testing.T) {
			_, _, err := ParseMetricsEndpoint(in)
			require.EqualError(t, err, want)
		})
	}
}

// ParseMetricsEndpoint refuses a port out of range, and an OTLP/gRPC
// endpoint without a port (the gRPC client would dial 443).
func TestParseMetricsEndpointBadPort(t *testing.T) {
	for _, in := range []string{"collector:99999", "http://collector:70000", "collector", "grpc://collector"} {
		_, _, err := ParseMetricsEndpoint(in)
		require.Errorf(t, err, "%s was accepted", in)
	}
}

// TestDocumentedExample: the example config file of docs/configuration.md
// loads and validates, and sets every key to its default but where its
// comment says otherwise.
func TestDocumentedExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	require.NoError(t, err)
	_, rest, ok := strings.Cut(string(doc), "```yaml\n# /etc/proxylens/proxylens.yaml\n")
	require.True(t, ok, "docs/configuration.md has no example config")
	example, _, ok := strings.Cut(rest, "```")
	require.True(t, ok)
	cfg := DefaultConfig()
	require.NoError(t, Parse([]byte(example), &cfg))
	require.NoError(t, cfg.Validate())
	want := DefaultConfig()
	want.DataDir, want.OTLPGRPCAddr, want.OTLPHTTPAddr = "/var/lib/proxylens", "0.0.0.0:4317", ""
	want.OTLPMetricsEndpoint, want.LogFormat = "https://collector.example.com:4318/v1/metrics", "json"
	require.Equal(t, want, cfg)
}
