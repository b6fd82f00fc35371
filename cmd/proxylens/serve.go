package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/proxylens/proxylens/internal/server"
)

func version() string { return server.Version }

// setting is one top-level setting that a flag, an environment variable
// (PROXYLENS_<NAME>) and the config file can all set.
type setting struct {
	flag  string // flag name; the env var is PROXYLENS_ + upper-cased with '_'
	usage string
	get   func(*server.Config) string
	set   func(*server.Config, string) error
}

// configKey returns the config file key of a flag: data-dir → data_dir.
func configKey(flagName string) string { return strings.ReplaceAll(flagName, "-", "_") }

func envName(flagName string) string {
	return "PROXYLENS_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func strSetting(name, usage string, field func(*server.Config) *string) setting {
	return setting{
		flag: name, usage: usage,
		get: func(c *server.Config) string { return *field(c) },
		set: func(c *server.Config, v string) error { *field(c) = v; return nil },
	}
}

var settings = []setting{
	strSetting("data-dir", "directory of the Pebble database", func(c *server.Config) *string { return &c.DataDir }),
	strSetting("otlp-grpc-addr", "OTLP/gRPC listen address (empty disables it)", func(c *server.Config) *string { return &c.OTLPGRPCAddr }),
	strSetting("otlp-http-addr", "OTLP/HTTP listen address (empty disables it)", func(c *server.Config) *string { return &c.OTLPHTTPAddr }),
	strSetting("http-addr", "listen address of /metrics, /-/healthy, /-/ready and /debug/pprof", func(c *server.Config) *string { return &c.HTTPAddr }),
	{
		flag: "flush-interval", usage: "how often aggregates are cut and written; also the resolution of their history",
		get: func(c *server.Config) string { return c.FlushInterval.String() },
		set: func(c *server.Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("%q is not a duration such as 15s", v)
			}
			c.FlushInterval = d
			return nil
		},
	},
	strSetting("otlp-metrics-endpoint", "also push the aggregates over OTLP to this collector: http(s)://host:port or grpc://host:port (empty: no push)",
		func(c *server.Config) *string { return &c.OTLPMetricsEndpoint }),
	strSetting("admin-token-file", "file holding the bootstrap admin bearer token; without it the admin API is disabled",
		func(c *server.Config) *string { return &c.AdminTokenFile }),
	strSetting("log-level", "debug, info, warn or error", func(c *server.Config) *string { return &c.LogLevel }),
	strSetting("log-format", "text or json", func(c *server.Config) *string { return &c.LogFormat }),
}

// loadConfig builds the configuration: defaults, then the config file, then
// PROXYLENS_* environment variables, then flags; each later source wins.
func loadConfig(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (server.Config, error) {
	fs := flag.NewFlagSet("proxylens serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := server.DefaultConfig()
	envConfig, _ := lookupEnv("PROXYLENS_CONFIG")
	configFile := fs.String("config", envConfig, "YAML config file (env PROXYLENS_CONFIG); flags and environment variables override it")
	vals := make([]*string, len(settings))
	for i, s := range settings {
		vals[i] = fs.String(s.flag, s.get(&def), s.usage+" (env "+envName(s.flag)+")")
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: proxylens [serve] [flags]\n\nRun the proxylens server. Flags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return def, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "proxylens serve: unexpected argument %q\n", fs.Arg(0))
		return def, errUsage
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	cfg := def
	if *configFile != "" {
		var err error
		if cfg, err = server.LoadFile(*configFile); err != nil {
			fmt.Fprintln(stderr, "proxylens:", err)
			return def, errUsage
		}
	}
	// Apply flags and environment variables, then validate, and report
	// every problem of both at once. A problem with a value that came from
	// a flag or an environment variable names it as well as the key.
	var msgs []string
	source := map[string]string{} // config key → the flag or variable that set it
	for i, s := range settings {
		v, from := "", ""
		if set[s.flag] {
			v, from = *vals[i], "--"+s.flag
		} else if e, ok := lookupEnv(envName(s.flag)); ok {
			v, from = e, envName(s.flag)
		} else {
			continue
		}
		source[configKey(s.flag)] = from
		if err := s.set(&cfg, v); err != nil {
			msgs = append(msgs, fmt.Sprintf("%s: %v", from, err))
		}
	}
	if err := cfg.Validate(); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			key, _, _ := strings.Cut(line, ":")
			if from, ok := source[key]; ok {
				line = from + " (" + line[:len(key)] + ")" + line[len(key):]
			}
			msgs = append(msgs, line)
		}
	}
	if len(msgs) > 0 {
		fmt.Fprintln(stderr, "proxylens: invalid configuration:\n  "+strings.Join(msgs, "\n  "))
		return def, errUsage
	}
	return cfg, nil
}

func newLogger(cfg server.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// procs returns the GOMAXPROCS the server runs with, given the runtime's
// choice: one more. The aggregate cut runs on an OS thread at the lowest
// CPU priority (nice 19), and holds one of the runtime's Ps while the
// kernel, busy with everything else, runs that thread last; with one P
// more than CPUs, request goroutines keep every CPU meanwhile and the
// kernel's priorities decide. At 20,000 spans/s the longest export fell
// from 41–78 ms to 21–43 ms (docs/benchmarks.md). A GOMAXPROCS set in the
// environment is the operator's choice and is kept.
func procs(lookupEnv func(string) (string, bool), runtimeChoice int) int {
	if _, set := lookupEnv("GOMAXPROCS"); set {
		return runtimeChoice
	}
	return runtimeChoice + 1
}

// serve runs the server until ctx ends (SIGINT or SIGTERM), then shuts it
// down gracefully: stop accepting, drain, flush aggregates, close Pebble.
func serve(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := loadConfig(args, os.LookupEnv, stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	runtime.GOMAXPROCS(procs(os.LookupEnv, runtime.GOMAXPROCS(0)))
	srv := server.New(cfg, server.Options{Logger: log})
	if err := srv.Start(ctx); err != nil {
		return err
	}
	log.Info("proxylens started", "version", version(), "gomaxprocs", runtime.GOMAXPROCS(0),
		"otlp_grpc", cfg.OTLPGRPCAddr, "otlp_http", cfg.OTLPHTTPAddr, "http", cfg.HTTPAddr, "data_dir", cfg.DataDir)
	<-ctx.Done()
	log.Info("shutting down: draining in-flight batches and writing the final cut")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("proxylens stopped")
	return nil
}
