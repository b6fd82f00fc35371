package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/internal/server"
)

// configEnv is a fake environment for loadConfig's lookupEnv. A key mapped
// to "" is set to the empty string; a missing key is unset.
type configEnv map[string]string

func (e configEnv) lookup(k string) (string, bool) {
	v, ok := e[k]
	return v, ok
}

// loadTestConfig runs loadConfig and returns what it printed to stderr.
func loadTestConfig(t *testing.T, args []string, env configEnv) (server.Config, string, error) {
	t.Helper()
	var stderr bytes.Buffer
	cfg, err := loadConfig(args, env.lookup, &stderr)
	return cfg, stderr.String(), err
}

// writeTestConfigFile writes a YAML config file in a fresh directory.
func writeTestConfigFile(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "proxylens.yaml")
	require.NoError(t, os.WriteFile(path, []byte(yaml), 0o600))
	return path
}

func TestLoadConfigDefaults(t *testing.T) {
	cfg, stderr, err := loadTestConfig(t, nil, configEnv{"HOME": "/root", "PROXYLENS_UNRELATED": "x"})
	require.NoError(t, err)
	require.Empty(t, stderr)
	require.Equal(t, server.DefaultConfig(), cfg)

	require.Equal(t, "./data", cfg.DataDir)
	require.Equal(t, 15*time.Second, cfg.FlushInterval)
	require.Equal(t, "127.0.0.1:4317", cfg.OTLPGRPCAddr)
	require.Equal(t, "127.0.0.1:4318", cfg.OTLPHTTPAddr)
	require.Equal(t, "127.0.0.1:9464", cfg.HTTPAddr)
	require.Empty(t, cfg.OTLPMetricsEndpoint)
	require.Equal(t, "info", cfg.LogLevel)
	require.Equal(t, "text", cfg.LogFormat)
	for _, addr := range []string{cfg.OTLPGRPCAddr, cfg.OTLPHTTPAddr, cfg.HTTPAddr} {
		host, _, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		require.Truef(t, net.ParseIP(host).IsLoopback(), "default address %s is not on loopback", addr)
	}
}

func TestLoadConfigEnvName(t *testing.T) {
	for flagName, want := range map[string]string{
		"data-dir":              "PROXYLENS_DATA_DIR",
		"otlp-grpc-addr":        "PROXYLENS_OTLP_GRPC_ADDR",
		"otlp-http-addr":        "PROXYLENS_OTLP_HTTP_ADDR",
		"http-addr":             "PROXYLENS_HTTP_ADDR",
		"flush-interval":        "PROXYLENS_FLUSH_INTERVAL",
		"otlp-metrics-endpoint": "PROXYLENS_OTLP_METRICS_ENDPOINT",
		"log-level":             "PROXYLENS_LOG_LEVEL",
		"log-format":            "PROXYLENS_LOG_FORMAT",
		"config":                "PROXYLENS_CONFIG",
	} {
		require.Equal(t, want, envName(flagName))
	}
}

// configSettingCases holds, for every setting, a valid non-default value and
// how to read it back.
var configSettingCases = []struct {
	flag, yamlKey, value string
	get                  func(server.Config) string
}{
	{"data-dir", "data_dir", "/var/lib/proxylens", func(c server.Config) string { return c.DataDir }},
	{"otlp-grpc-addr", "otlp_grpc_addr", "0.0.0.0:14317", func(c server.Config) string { return c.OTLPGRPCAddr }},
	{"otlp-http-addr", "otlp_http_addr", "[::1]:14318", func(c server.Config) string { return c.OTLPHTTPAddr }},
	{"http-addr", "http_addr", "localhost:19464", func(c server.Config) string { return c.HTTPAddr }},
	{"flush-interval", "flush_interval", "1m0s", func(c server.Config) string { return c.FlushInterval.String() }},
	{"otlp-metrics-endpoint", "otlp_metrics_endpoint", "http://collector:4318/v1/metrics", func(c server.Config) string { return c.OTLPMetricsEndpoint }},
	{"admin-token-file", "admin_token_file", "testdata/admin.token", func(c server.Config) string { return c.AdminTokenFile }},
	{"log-level", "log_level", "debug", func(c server.Config) string { return c.LogLevel }},
	{"log-format", "log_format", "json", func(c server.Config) string { return c.LogFormat }},
}

func TestLoadConfigEachSetting(t *testing.T) {
	// The cases cover every setting that has a flag.
	var flags []string
	for _, s := range settings {
		flags = append(flags, s.flag)
	}
	var covered []string
	for _, tc := range configSettingCases {
		covered = append(covered, tc.flag)
	}
	require.ElementsMatch(t, flags, covered)

	for _, tc := range configSettingCases {
		t.Run(tc.flag, func(t *testing.T) {
			require.NotEqual(t, tc.value, tc.get(server.DefaultConfig()), "the test value must not be the default")
			sources := map[string]func(t *testing.T) ([]string, configEnv){
				"flag": func(*testing.T) ([]string, configEnv) {
					return []string{"--" + tc.flag, tc.value}, nil
				},
				"flag=": func(*testing.T) ([]string, configEnv) {
					return []string{"-" + tc.flag + "=" + tc.value}, nil
				},
				"env": func(*testing.T) ([]string, configEnv) {
					return nil, configEnv{envName(tc.flag): tc.value}
				},
				"file": func(t *testing.T) ([]string, configEnv) {
					return []string{"--config", writeTestConfigFile(t, fmt.Sprintf("%s: %q\n", tc.yamlKey, tc.value))}, nil
				},
			}
			for name, source := range sources {
				t.Run(name, func(t *testing.T) {
					args, env := source(t)
					cfg, stderr, err := loadTestConfig(t, args, env)
					require.NoError(t, err)
					require.Empty(t, stderr)
					require.Equal(t, tc.value, tc.get(cfg))

					// Nothing else changed.
					want := server.DefaultConfig()
					require.NoError(t, (func() error {
						for _, s := range settings {
							if s.flag == tc.flag {
								return s.set(&want, tc.value)
							}
						}
						return fmt.Errorf("no setting %s", tc.flag)
					})())
					require.Equal(t, want, cfg)
				})
			}
		})
	}
}

// TestLoadConfigPrecedence sets a setting from every combination of the
// sources: a flag wins over an env var, which wins over the config file,
// which wins over the default.
func TestLoadConfigPrecedence(t *testing.T) {
	for _, tc := range []struct {
		flag, yamlKey             string
		def, file, env, flagValue string
		get                       func(server.Config) string
	}{
		{"data-dir", "data_dir", "./data", "/from/file", "/from/env", "/from/flag", func(c server.Config) string { return c.DataDir }},
		{"flush-interval", "flush_interval", "15s", "30s", "1m0s", "5s", func(c server.Config) string { return c.FlushInterval.String() }},
		{"otlp-grpc-addr", "otlp_grpc_addr", "127.0.0.1:4317", "127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003", func(c server.Config) string { return c.OTLPGRPCAddr }},
		{"log-level", "log_level", "info", "warn", "error", "debug", func(c server.Config) string { return c.LogLevel }},
	} {
		for _, fromFile := range []bool{false, true} {
			for _, fromEnv := range []bool{false, true} {
				for _, fromFlag := range []bool{false, true} {
					name := fmt.Sprintf("%s/file=%t,env=%t,flag=%t", tc.flag, fromFile, fromEnv, fromFlag)
					t.Run(name, func(t *testing.T) {
						var args []string
						env := configEnv{}
						want := tc.def
						if fromFile {
							args = append(args, "--config", writeTestConfigFile(t, fmt.Sprintf("%s: %q\n", tc.yamlKey, tc.file)))
							want = tc.file
						}
						if fromEnv {
							env[envName(tc.flag)] = tc.env
							want = tc.env
						}
						if fromFlag {
							args = append(args, "--"+tc.flag, tc.flagValue)
							want = tc.flagValue
						}
						cfg, stderr, err := loadTestConfig(t, args, env)
						require.NoError(t, err)
						require.Empty(t, stderr)
						require.Equal(t, want, tc.get(cfg))
					})
				}
			}
		}
	}
}

// The flag wins even when it comes before --config on the command line.
func TestLoadConfigFlagBeforeConfigFile(t *testing.T) {
	path := writeTestConfigFile(t, "data_dir: /from/file\nlog_level: warn\n")
	cfg, stderr, err := loadTestConfig(t, []string{"--data-dir", "/from/flag", "--config", path}, nil)
	require.NoError(t, err)
	require.Empty(t, stderr)
	require.Equal(t, "/from/flag", cfg.DataDir)
	require.Equal(t, "warn", cfg.LogLevel)
}

// An env var set to "" is set: it empties the setting, which disables an
// OTLP listener. An unset env var leaves the file's value.
func TestLoadConfigEmptyEnvDisablesOTLP(t *testing.T) {
	path := writeTestConfigFile(t, "otlp_grpc_addr: 127.0.0.1:14317\notlp_http_addr: 127.0.0.1:14318\n")
	for _, tc := range []struct {
		name           string
		args           []string
		env            configEnv
		grpc, httpAddr string
	}{
		{name: "unset", env: configEnv{}, grpc: "127.0.0.1:14317", httpAddr: "127.0.0.1:14318"},
		{name: "grpc empty", env: configEnv{"PROXYLENS_OTLP_GRPC_ADDR": ""}, grpc: "", httpAddr: "127.0.0.1:14318"},
		{name: "http empty", env: configEnv{"PROXYLENS_OTLP_HTTP_ADDR": ""}, grpc: "127.0.0.1:14317", httpAddr: ""},
		{name: "flag empty", args: []string{"--otlp-grpc-addr="}, env: configEnv{}, grpc: "", httpAddr: "127.0.0.1:14318"},
		{name: "flag over empty env", args: []string{"--otlp-grpc-addr", "127.0.0.1:24317"}, env: configEnv{"PROXYLENS_OTLP_GRPC_ADDR": ""}, grpc: "127.0.0.1:24317", httpAddr: "127.0.0.1:14318"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, stderr, err := loadTestConfig(t, append([]string{"--config", path}, tc.args...), tc.env)
			require.NoError(t, err)
			require.Empty(t, stderr)
			require.Equal(t, tc.grpc, cfg.OTLPGRPCAddr)
			require.Equal(t, tc.httpAddr, cfg.OTLPHTTPAddr)
		})
	}

	// Without a config file, an empty env var disables a default listener too.
	cfg, _, err := loadTestConfig(t, nil, configEnv{"PROXYLENS_OTLP_GRPC_ADDR": "", "PROXYLENS_OTLP_HTTP_ADDR": ""})
	require.NoError(t, err)
	require.Empty(t, cfg.OTLPGRPCAddr)
	require.Empty(t, cfg.OTLPHTTPAddr)
}

// An empty value is refused where it cannot mean "disabled".
func TestLoadConfigEmptyValueRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		env    configEnv
		stderr string
	}{
		{name: "http-addr env", env: configEnv{"PROXYLENS_HTTP_ADDR": ""}, stderr: "proxylens: invalid configuration:\n  PROXYLENS_HTTP_ADDR (http_addr): must not be empty\n"},
		{name: "data-dir flag", args: []string{"--data-dir="}, stderr: "proxylens: invalid configuration:\n  --data-dir (data_dir): must not be empty\n"},
		{name: "flush-interval env", env: configEnv{"PROXYLENS_FLUSH_INTERVAL": ""}, stderr: "proxylens: invalid configuration:\n  PROXYLENS_FLUSH_INTERVAL: \"\" is not a duration such as 15s\n"},
		{name: "log-level env", env: configEnv{"PROXYLENS_LOG_LEVEL": ""}, stderr: "proxylens: invalid configuration:\n  PROXYLENS_LOG_LEVEL (log_level): must be debug, info, warn or error, got \"\"\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, err := loadTestConfig(t, tc.args, tc.env)
			require.ErrorIs(t, err, errUsage)
			require.Equal(t, tc.stderr, stderr)
		})
	}
}

func TestLoadConfigFileFromEnv(t *testing.T) {
	envFile := writeTestConfigFile(t, "data_dir: /from/env/file\nflush_interval: 30s\n")
	flagFile := writeTestConfigFile(t, "data_dir: /from/flag/file\n")

	t.Run("PROXYLENS_CONFIG", func(t *testing.T) {
		cfg, stderr, err := loadTestConfig(t, nil, configEnv{"PROXYLENS_CONFIG": envFile})
		require.NoError(t, err)
		require.Empty(t, stderr)
		require.Equal(t, "/from/env/file", cfg.DataDir)
		require.Equal(t, 30*time.Second, cfg.FlushInterval)
	})
	t.Run("--config wins", func(t *testing.T) {
		cfg, _, err := loadTestConfig(t, []string{"--config", flagFile}, configEnv{"PROXYLENS_CONFIG": envFile})
		require.NoError(t, err)
		require.Equal(t, "/from/flag/file", cfg.DataDir)
		require.Equal(t, 15*time.Second, cfg.FlushInterval)
	})
	t.Run("--config= reads no file", func(t *testing.T) {
		cfg, _, err := loadTestConfig(t, []string{"--config="}, configEnv{"PROXYLENS_CONFIG": envFile})
		require.NoError(t, err)
		require.Equal(t, server.DefaultConfig(), cfg)
	})
	t.Run("empty PROXYLENS_CONFIG reads no file", func(t *testing.T) {
		cfg, _, err := loadTestConfig(t, nil, configEnv{"PROXYLENS_CONFIG": ""})
		require.NoError(t, err)
		require.Equal(t, server.DefaultConfig(), cfg)
	})
	t.Run("env over file named by env", func(t *testing.T) {
		cfg, _, err := loadTestConfig(t, nil, configEnv{"PROXYLENS_CONFIG": envFile, "PROXYLENS_DATA_DIR": "/from/env"})
		require.NoError(t, err)
		require.Equal(t, "/from/env", cfg.DataDir)
		require.Equal(t, 30*time.Second, cfg.FlushInterval)
	})
}

func TestLoadConfigBadFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	_, stderr, err := loadTestConfig(t, []string{"--config", missing}, nil)
	require.ErrorIs(t, err, errUsage)
	require.Equal(t, "proxylens: read config file: open "+missing+": no such file or directory\n", stderr)

	unknown := writeTestConfigFile(t, "data_dir: ./data\nsampling:\n  flor: 0.5\n")
	_, stderr, err = loadTestConfig(t, []string{"--config", unknown}, nil)
	require.ErrorIs(t, err, errUsage)
	require.Equal(t, "proxylens: config file "+unknown+": line 3: sampling.flor: unknown key\n", stderr)

	// A value in the file that a flag overrides is not refused.
	invalid := writeTestConfigFile(t, "log_level: loud\nflush_interval: 7s\n")
	cfg, stderr, err := loadTestConfig(t, []string{"--config", invalid, "--log-level", "warn"}, configEnv{"PROXYLENS_FLUSH_INTERVAL": "1m"})
	require.NoError(t, err)
	require.Empty(t, stderr)
	require.Equal(t, "warn", cfg.LogLevel)
	require.Equal(t, time.Minute, cfg.FlushInterval)

	// A value the file sets alone is.
	_, stderr, err = loadTestConfig(t, []string{"--config", invalid}, nil)
	require.ErrorIs(t, err, errUsage)
	require.Equal(t, "proxylens: invalid configuration:\n"+
		"  flush_interval: must divide an hour evenly (1s, 5s, 15s, 30s, 1m…), got \"7s\"\n"+
		"  log_level: must be debug, info, warn or error, got \"loud\"\n", stderr)
}

func TestLoadConfigHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "-help"} {
		t.Run(arg, func(t *testing.T) {
			_, stderr, err := loadTestConfig(t, []string{arg}, nil)
			require.ErrorIs(t, err, flag.ErrHelp)
			require.True(t, strings.HasPrefix(stderr, "Usage: proxylens [serve] [flags]\n"), stderr)
			for _, s := range settings {
				require.Contains(t, stderr, "-"+s.flag+" string")
				require.Contains(t, stderr, "(env "+envName(s.flag)+")")
			}
			require.Contains(t, stderr, "-config string")
			require.Contains(t, stderr, "env PROXYLENS_CONFIG")
			// The defaults are shown.
			require.Contains(t, stderr, `(default "127.0.0.1:4317")`)
			require.Contains(t, stderr, `(default "./data")`)
			require.Contains(t, stderr, `(default "15s")`)
		})
	}
}

func TestLoadConfigUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		// stderr starts with this line.
		first string
		// and shows the usage.
		usage bool
	}{
		{name: "unknown flag", args: []string{"--nope"}, first: "flag provided but not defined: -nope", usage: true},
		{name: "unknown flag after good ones", args: []string{"--data-dir", "/x", "--retention", "30d"}, first: "flag provided but not defined: -retention", usage: true},
		{name: "missing value", args: []string{"--data-dir"}, first: "flag needs an argument: -data-dir", usage: true},
		{name: "extra argument", args: []string{"extra"}, first: `proxylens serve: unexpected argument "extra"`},
		{name: "argument after flags", args: []string{"--data-dir", "/x", "more", "args"}, first: `proxylens serve: unexpected argument "more"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, err := loadTestConfig(t, tc.args, nil)
			require.ErrorIs(t, err, errUsage)
			first, rest, _ := strings.Cut(stderr, "\n")
			require.Equal(t, tc.first, first)
			if tc.usage {
				require.True(t, strings.HasPrefix(rest, "Usage: proxylens [serve] [flags]\n"), rest)
			} else {
				require.Empty(t, rest)
			}
		})
	}
}

func TestLoadConfigInvalidValues(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		env    configEnv
		stderr string
	}{
		{
			name:   "flush-interval not a duration",
			args:   []string{"--flush-interval", "abc"},
			stderr: "proxylens: invalid configuration:\n  --flush-interval: \"abc\" is not a duration such as 15s\n",
		},
		{
			name:   "flush-interval not a duration from env",
			env:    configEnv{"PROXYLENS_FLUSH_INTERVAL": "15"},
			stderr: "proxylens: invalid configuration:\n  PROXYLENS_FLUSH_INTERVAL: \"15\" is not a duration such as 15s\n",
		},
		{
			name:   "flush-interval does not divide an hour",
			args:   []string{"--flush-interval", "7s"},
			stderr: "proxylens: invalid configuration:\n  --flush-interval (flush_interval): must divide an hour evenly (1s, 5s, 15s, 30s, 1m…), got \"7s\"\n",
		},
		{
			name:   "flush-interval below 1s",
			args:   []string{"--flush-interval=500ms"},
			stderr: "proxylens: invalid configuration:\n  --flush-interval (flush_interval): must be at least 1s, got \"500ms\"\n",
		},
		{
			name:   "http-addr",
			args:   []string{"--http-addr", "nonsense"},
			stderr: "proxylens: invalid configuration:\n  --http-addr (http_addr): \"nonsense\" is not a host:port address with a port from 0 to 65535\n",
		},
		{
			name:   "otlp-grpc-addr from env",
			env:    configEnv{"PROXYLENS_OTLP_GRPC_ADDR": "4317"},
			stderr: "proxylens: invalid configuration:\n  PROXYLENS_OTLP_GRPC_ADDR (otlp_grpc_addr): \"4317\" is not a host:port address with a port from 0 to 65535\n",
		},
		{
			name:   "log-level",
			args:   []string{"--log-level", "loud"},
			stderr: "proxylens: invalid configuration:\n  --log-level (log_level): must be debug, info, warn or error, got \"loud\"\n",
		},
		{
			name:   "log-format",
			args:   []string{"--log-format", "xml"},
			stderr: "proxylens: invalid configuration:\n  --log-format (log_format): must be text or json, got \"xml\"\n",
		},
		{
			name:   "otlp-metrics-endpoint scheme",
			args:   []string{"--otlp-metrics-endpoint", "ftp://x:1"},
			stderr: "proxylens: invalid configuration:\n  --otlp-metrics-endpoint (otlp_metrics_endpoint): \"ftp://x:1\": the scheme must be http, https or grpc\n",
		},
		{
			name:   "otlp-metrics-endpoint no host",
			env:    configEnv{"PROXYLENS_OTLP_METRICS_ENDPOINT": "https://"},
			stderr: "proxylens: invalid configuration:\n  PROXYLENS_OTLP_METRICS_ENDPOINT (otlp_metrics_endpoint): \"https://\" has no host\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, stderr, err := loadTestConfig(t, tc.args, tc.env)
			require.ErrorIs(t, err, errUsage)
			require.Equal(t, tc.stderr, stderr)
			require.Equal(t, server.DefaultConfig(), cfg)
		})
	}
}

func TestLoadConfigReportsEveryProblem(t *testing.T) {
	path := writeTestConfigFile(t, "data_dir: \"\"\nsampling:\n  floor: 0\n")
	_, stderr, err := loadTestConfig(t,
		[]string{"--config", path, "--flush-interval", "7s", "--http-addr", "nonsense", "--log-level", "loud"},
		configEnv{"PROXYLENS_LOG_FORMAT": "xml", "PROXYLENS_OTLP_METRICS_ENDPOINT": "ftp://x:1"})
	require.ErrorIs(t, err, errUsage)
	require.Equal(t, "proxylens: invalid configuration:\n"+
		"  data_dir: must not be empty\n"+
		"  --http-addr (http_addr): \"nonsense\" is not a host:port address with a port from 0 to 65535\n"+
		"  --flush-interval (flush_interval): must divide an hour evenly (1s, 5s, 15s, 30s, 1m…), got \"7s\"\n"+
		"  PROXYLENS_OTLP_METRICS_ENDPOINT (otlp_metrics_endpoint): \"ftp://x:1\": the scheme must be http, https or grpc\n"+
		"  --log-level (log_level): must be debug, info, warn or error, got \"loud\"\n"+
		"  PROXYLENS_LOG_FORMAT (log_format): must be text or json, got \"xml\"\n"+
		"  sampling.floor: must be in (0, 1], got 0\n", stderr)

	// An env var that a flag overrides is not parsed, so not reported.
	_, stderr, err = loadTestConfig(t, []string{"--flush-interval", "abc"}, configEnv{"PROXYLENS_FLUSH_INTERVAL": "ignored"})
	require.ErrorIs(t, err, errUsage)
	require.Equal(t, "proxylens: invalid configuration:\n  --flush-interval: \"abc\" is not a duration such as 15s\n", stderr)
}

// TestLoadConfigReportsParseAndValidateProblems: a value that does not parse
// does not stop the other checks; every problem is reported at once.
func TestLoadConfigReportsParseAndValidateProblems(t *testing.T) {
	_, stderr, err := loadTestConfig(t, []string{"--flush-interval", "abc", "--log-level", "loud"}, nil)
	require.ErrorIs(t, err, errUsage)
	require.Contains(t, stderr, `--flush-interval: "abc" is not a duration such as 15s`)
	require.Contains(t, stderr, `--log-level (log_level): must be debug, info, warn or error, got "loud"`)
}

func TestRunVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"version"}, &stdout, &stderr))
	require.Equal(t, "proxylens "+server.Version+"\n", stdout.String())
	require.Empty(t, stderr.String())
}

func TestRunHelpCommand(t *testing.T) {
	var stdout, stderr bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"help"}, &stdout, &stderr))
	require.Equal(t, usage, stdout.String())
	require.Empty(t, stderr.String())
}

func TestRunUnknownCommand(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"frobnicate", "--data-dir", "/x"}, &stdout, &stderr)
	require.ErrorIs(t, err, errUsage)
	require.Empty(t, stdout.String())
	require.Equal(t, "proxylens: unknown command \"frobnicate\"\n\n"+usage, stderr.String())
}

// serve is the default command: flags without a command go to it.
func TestRunServeDefaultCommand(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"serve", "-h"}} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, &stdout, &stderr)
		require.ErrorIs(t, err, flag.ErrHelp)
		require.True(t, strings.HasPrefix(stderr.String(), "Usage: proxylens [serve] [flags]\n"), stderr.String())
	}
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"--log-level", "loud"}, &stdout, &stderr)
	require.ErrorIs(t, err, errUsage)
	require.Contains(t, stderr.String(), `--log-level (log_level): must be debug, info, warn or error, got "loud"`)
}

func TestProcs(t *testing.T) {
	unset := func(string) (string, bool) { return "", false }
	set := func(k string) (string, bool) { return "2", k == "GOMAXPROCS" }
	require.Equal(t, 3, procs(unset, 2), "one P more than the runtime's choice, for the cut's low-priority thread")
	require.Equal(t, 2, procs(set, 2), "an operator's GOMAXPROCS is kept")
}
