package ruler

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	commonconfig "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

// Config holds the rule keys of the config file. They are top-level keys,
// as in Prometheus' configuration (the server inlines this struct).
type Config struct {
	// RuleFiles are globs of Prometheus rule files (filepath.Glob
	// patterns), as Prometheus' rule_files. A pattern that matches no file
	// loads nothing. Empty: only the shipped rules.
	RuleFiles []string `yaml:"rule_files"`
	// Alerting lists the Alertmanagers alerts are sent to, in Prometheus'
	// alerting: shape. Empty: alerts are evaluated and listed at
	// /api/v1/alerts but sent nowhere.
	Alerting AlertingConfig `yaml:"alerting"`
	// EvaluationInterval is how often rule groups are evaluated, unless a
	// group sets its own interval. Default 1m, as in Prometheus.
	EvaluationInterval time.Duration `yaml:"evaluation_interval"`
	// ShippedRules evaluates the rules shipped in the binary
	// (dashboards/alerts/proxylens.rules.yml). Default true.
	ShippedRules bool `yaml:"shipped_rules"`
}

// DefaultConfig returns the defaults: shipped rules on, every minute.
func DefaultConfig() Config {
	return Config{EvaluationInterval: time.Minute, ShippedRules: true}
}

// AlertingConfig is Prometheus' alerting: section (config.AlertingConfig:
// alertmanagers with static_configs, scheme, path_prefix, timeout,
// api_version, basic_auth, authorization, tls_config…, and
// alert_relabel_configs). Of the service discoveries only static_configs
// is known.
type AlertingConfig struct {
	config.AlertingConfig `yaml:",inline"`
}

// UnmarshalYAML decodes with the caller's decoder, so that unknown keys
// stay errors, and names the section in the errors Prometheus' own
// checks return (a target with a scheme, an unsupported api_version).
func (c *AlertingConfig) UnmarshalYAML(unmarshal func(any) error) error {
	err := unmarshal(&c.AlertingConfig)
	var te *yaml.TypeError
	if err == nil || errors.As(err, &te) {
		return err
	}
	return fmt.Errorf("alerting: %w", err)
}

// MinEvaluationInterval is the shortest evaluation_interval accepted.
const MinEvaluationInterval = time.Second

// Validate reports every problem at once: a bad interval, a bad glob, a
// rule file that cannot be read or does not parse (naming the file, the
// group and the rule), and bad relabel configs.
func (c *Config) Validate() error {
	var errs []error
	if c.EvaluationInterval < MinEvaluationInterval {
		errs = append(errs, fmt.Errorf("evaluation_interval: must be at least %s, got %q", MinEvaluationInterval, c.EvaluationInterval.String()))
	}
	files, err := c.Files()
	if err != nil {
		errs = append(errs, err)
	}
	p := parser.NewParser(parser.Options{})
	for _, f := range files {
		if _, ferrs := rulefmt.ParseFile(f, false, model.UTF8Validation, p, slog.New(slog.DiscardHandler)); len(ferrs) > 0 {
			for _, e := range ferrs {
				errs = append(errs, fmt.Errorf("rule_files: %w", e))
			}
		}
	}
	if err := c.Alerting.Validate(model.UTF8Validation); err != nil {
		errs = append(errs, fmt.Errorf("alerting: %w", err))
	}
	for i, am := range c.Alerting.AlertmanagerConfigs {
		if am == nil {
			errs = append(errs, fmt.Errorf("alerting.alertmanagers[%d]: empty", i))
		}
	}
	return errors.Join(errs...)
}

// SetDirectory resolves relative rule_files patterns and the
// Alertmanagers' relative file paths (TLS files, password files) against
// dir, the config file's directory, as Prometheus does.
func (c *Config) SetDirectory(dir string) {
	for i, f := range c.RuleFiles {
		c.RuleFiles[i] = commonconfig.JoinDir(dir, f)
	}
	c.Alerting.SetDirectory(dir)
}

// Files expands RuleFiles into the rule files they match, in order,
// without duplicates.
func (c *Config) Files() ([]string, error) {
	var (
		out  []string
		seen = map[string]bool{}
		errs []error
	)
	for i, pat := range c.RuleFiles {
		m, err := filepath.Glob(pat)
		if err != nil {
			errs = append(errs, fmt.Errorf("rule_files[%d]: %q is not a valid glob: %w", i, pat, err))
			continue
		}
		for _, f := range m {
			if !seen[f] {
				seen[f] = true
				out = append(out, f)
			}
		}
	}
	return out, errors.Join(errs...)
}
