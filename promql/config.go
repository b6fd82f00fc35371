package promql

import (
	"errors"
	"fmt"
	"time"
)

// Config sets the query limits. Zero fields take the defaults, Prometheus'
// own, except ResultCache.MaxBytes, where 0 disables the cache.
type Config struct {
	// Timeout is the longest a query may run. Default 2m; a request's
	// timeout parameter can only shorten it.
	Timeout time.Duration `yaml:"timeout"`
	// MaxSamples bounds the samples a query may hold in memory at once.
	// Default 50,000,000.
	MaxSamples int `yaml:"max_samples"`
	// MaxConcurrent bounds the queries running at once; others wait.
	// Default 20.
	MaxConcurrent int `yaml:"max_concurrent"`
	// MaxPoints bounds the points per series of a range query. Default 11,000.
	MaxPoints int `yaml:"max_points_per_series"`
	// MaxQueryLength bounds the time span a query covers (end − start of a
	// range query, plus its longest range). Default 0: no bound.
	MaxQueryLength time.Duration `yaml:"max_query_length"`
	// MaxQueryBytes bounds the length of a query, and of each match[]
	// selector, in bytes; longer ones are refused before they are parsed.
	// Default 131072 (128 KiB, Tempo's max_query_expression_size_bytes;
	// VictoriaMetrics' -search.maxQueryLen is 16 KiB).
	MaxQueryBytes int `yaml:"max_query_bytes"`
	// MaxQueryDepth bounds how deeply a query nests brackets and
	// operators (see scanQuery); deeper ones are refused before they are
	// parsed, as the parser's time grows with the square of the depth.
	// Default 256.
	MaxQueryDepth int `yaml:"max_query_depth"`
	// LookbackDelta is how far back an instant selector looks. Default 5m.
	LookbackDelta time.Duration `yaml:"lookback_delta"`
	// ResultCache caches range queries' answers day by day.
	ResultCache ResultCacheConfig `yaml:"result_cache"`
	// Upstream, if set, makes proxylens a query proxy: the engine it
	// names answers queries, series, labels and metadata (proxy.go).
	// Default nil: the local series store answers.
	Upstream *UpstreamConfig `yaml:"upstream"`
}

// ResultCacheConfig configures the result cache of range queries.
type ResultCacheConfig struct {
	// MaxBytes bounds the estimated memory of the cached answers; the
	// least recently used go first. 0 disables the cache. Default (from
	// DefaultConfig) 268435456 (256 MiB).
	MaxBytes int64 `yaml:"max_bytes"`
}

// DefaultConfig returns Prometheus' limits.
func DefaultConfig() Config {
	return Config{Timeout: 2 * time.Minute, MaxSamples: 50_000_000, MaxConcurrent: 20, MaxPoints: 11000,
		MaxQueryBytes: 128 << 10, MaxQueryDepth: 256, LookbackDelta: 5 * time.Minute,
		ResultCache: ResultCacheConfig{MaxBytes: 256 << 20}}
}

// Validate reports every problem of c at once.
func (c Config) Validate() error {
	var errs []error
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("query.timeout: must not be negative, got %q", c.Timeout.String()))
	}
	if c.MaxSamples < 0 {
		errs = append(errs, fmt.Errorf("query.max_samples: must not be negative, got %d", c.MaxSamples))
	}
	if c.MaxConcurrent < 0 {
		errs = append(errs, fmt.Errorf("query.max_concurrent: must not be negative, got %d", c.MaxConcurrent))
	}
	if c.MaxPoints < 0 {
		errs = append(errs, fmt.Errorf("query.max_points_per_series: must not be negative, got %d", c.MaxPoints))
	}
	if c.MaxQueryLength < 0 {
		errs = append(errs, fmt.Errorf("query.max_query_length: must not be negative, got %q", c.MaxQueryLength.String()))
	}
	if c.MaxQueryBytes < 0 {
		errs = append(errs, fmt.Errorf("query.max_query_bytes: must not be negative, got %d", c.MaxQueryBytes))
	}
	if c.MaxQueryDepth < 0 {
		errs = append(errs, fmt.Errorf("query.max_query_depth: must not be negative, got %d", c.MaxQueryDepth))
	}
	if c.LookbackDelta < 0 {
		errs = append(errs, fmt.Errorf("query.lookback_delta: must not be negative, got %q", c.LookbackDelta.String()))
	}
	if c.ResultCache.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("query.result_cache.max_bytes: must not be negative, got %d", c.ResultCache.MaxBytes))
	}
	if c.Upstream != nil {
		if err := c.Upstream.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Timeout == 0 {
		c.Timeout = d.Timeout
	}
	if c.MaxSamples == 0 {
		c.MaxSamples = d.MaxSamples
	}
	if c.MaxConcurrent == 0 {
		c.MaxConcurrent = d.MaxConcurrent
	}
	if c.MaxPoints == 0 {
		c.MaxPoints = d.MaxPoints
	}
	if c.MaxQueryBytes == 0 {
		c.MaxQueryBytes = d.MaxQueryBytes
	}
	if c.MaxQueryDepth == 0 {
		c.MaxQueryDepth = d.MaxQueryDepth
	}
	if c.LookbackDelta == 0 {
		c.LookbackDelta = d.LookbackDelta
	}
	return c
}
