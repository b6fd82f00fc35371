package dashboards

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// TestCommittedMatchGenerated: the committed dashboards/*.json are what
// `go run ./dashboards/gen` writes, and there is no other JSON file.
func TestCommittedMatchGenerated(t *testing.T) {
	files, err := Generate()
	require.NoError(t, err)
	for name, want := range files {
		got, err := os.ReadFile(name)
		require.NoError(t, err, "run: go run ./dashboards/gen")
		require.Equal(t, string(want), string(got), "%s differs from the generator's output; run: go run ./dashboards/gen", name)
	}
	committed, err := filepath.Glob("*.json")
	require.NoError(t, err)
	require.ElementsMatch(t, Files(), committed, "dashboards/*.json that the generator does not write")
}

type jsonDashboard struct {
	UID        string      `json:"uid"`
	Title      string      `json:"title"`
	Schema     int         `json:"schemaVersion"`
	Panels     []jsonPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Query      any    `json:"query"`
			AllValue   string `json:"allValue"`
			Multi      bool   `json:"multi"`
			IncludeAll bool   `json:"includeAll"`
		} `json:"list"`
	} `json:"templating"`
}

type jsonPanel struct {
	ID         int               `json:"id"`
	Type       string            `json:"type"`
	Title      string            `json:"title"`
	Datasource map[string]string `json:"datasource"`
	Targets    []struct {
		RefID      string            `json:"refId"`
		Expr       string            `json:"expr"`
		Datasource map[string]string `json:"datasource"`
	} `json:"targets"`
	Panels []jsonPanel `json:"panels"`
}

// exampleValues replaces Grafana's variables with values of their kind,
// so that a query can be parsed.
var exampleValues = strings.NewReplacer(
	"$source", "(brightdata|oxylabs)",
	"$application", ".*",
	"$tz", "UTC",
	"$__rate_interval", "1m",
	"$__range_s", "86400",
	"$__range", "1d",
	"$__interval_ms", "60000",
	"$__interval", "1m",
)

// TestDashboards: every dashboard has a unique uid, the datasource,
// source and application variables it uses, and every panel a title, the
// datasource variable and at least one query that parses.
func TestDashboards(t *testing.T) {
	files, err := Generate()
	require.NoError(t, err)
	require.Len(t, files, 4)
	p := parser.NewParser(parser.Options{})
	uids := map[string]string{}
	for name, b := range files {
		var d jsonDashboard
		require.NoError(t, json.Unmarshal(b, &d), name)
		require.NotEmpty(t, d.UID, name)
		require.NotContains(t, uids, d.UID, "%s: uid %s also in %s", name, d.UID, uids[d.UID])
		uids[d.UID] = name
		require.GreaterOrEqual(t, d.Schema, 39, name)

		vars := map[string]bool{}
		for _, v := range d.Templating.List {
			vars[v.Name] = true
			switch v.Name {
			case "datasource":
				require.Equal(t, "datasource", v.Type, name)
				require.Equal(t, "prometheus", v.Query, name)
			case "tz":
				require.Equal(t, "query", v.Type, name)
				require.False(t, v.Multi, "%s: one time zone at a time", name)
			case "source", "application":
				require.Equal(t, "query", v.Type, name)
				require.True(t, v.Multi && v.IncludeAll, "%s: $%s multi and include all", name, v.Name)
				require.Equal(t, ".*", v.AllValue, name)
			}
		}
		require.True(t, vars["datasource"], "%s: no datasource variable", name)

		ids := map[int]bool{}
		var check func([]jsonPanel)
		check = func(panels []jsonPanel) {
			for _, pn := range panels {
				require.NotEmpty(t, pn.Title, "%s: panel %d has no title", name, pn.ID)
				require.False(t, ids[pn.ID], "%s: panel id %d twice", name, pn.ID)
				ids[pn.ID] = true
				if pn.Type == "row" {
					check(pn.Panels)
					continue
				}
				where := name + ": panel " + pn.Title
				require.Equal(t, map[string]string{"type": "prometheus", "uid": "${datasource}"}, pn.Datasource, where)
				require.NotEmpty(t, pn.Targets, "%s has no query", where)
				for _, tg := range pn.Targets {
					require.Equal(t, pn.Datasource, tg.Datasource, where)
					require.NotEmpty(t, tg.RefID, where)
					for _, v := range []string{"source", "application", "tz"} {
						if strings.Contains(tg.Expr, "$"+v) {
							require.True(t, vars[v], "%s uses $%s, not a variable of the dashboard", where, v)
						}
					}
					expr := exampleValues.Replace(tg.Expr)
					require.NotContains(t, expr, "$", "%s: a variable the test does not know: %s", where, tg.Expr)
					_, err := p.ParseExpr(expr)
					require.NoError(t, err, "%s, query %s:\n%s", where, tg.RefID, expr)
				}
			}
		}
		check(d.Panels)
	}
}

// TestAlertRules: the rule file is valid Prometheus rule-file format,
// every expression parses and the documented alerts are there.
func TestAlertRules(t *testing.T) {
	p := parser.NewParser(parser.Options{})
	groups, errs := rulefmt.ParseFile("alerts/proxylens.rules.yml", false, model.UTF8Validation, p, slog.New(slog.DiscardHandler))
	require.Empty(t, errs)
	alerts := map[string]bool{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			_, err := p.ParseExpr(r.Expr)
			require.NoError(t, err, "%s: %s", r.Alert, r.Expr)
			require.NotEmpty(t, r.Alert, "only alerting rules: %s", r.Expr)
			require.NotEmpty(t, r.Annotations["summary"], r.Alert)
			alerts[r.Alert] = true
			switch r.Alert {
			case "ProxySourceDegraded":
				require.Contains(t, r.Expr, "proxy_source_degraded")
				require.Contains(t, r.Annotations["description"], "proxy_source_signal", "how bad: current against baseline")
				require.Contains(t, r.Annotations["description"], "proxy_source_degraded_onset_timestamp_seconds", "since when")
			case "ProxyCostSpike":
				require.Contains(t, r.Expr, "offset 1w")
			case "ProxySourceOverBudget":
				require.Contains(t, r.Expr, "proxy_cost_budget")
			}
		}
	}
	for _, name := range []string{"ProxySourceDegraded", "ProxySourceFailing", "ProxyCostSpike", "ProxySourceOverBudget",
		"ProxylensSpansRefused", "ProxylensCommitFailures", "ProxylensFlushFailures", "ProxylensNoFlushes",
		"ProxylensSeriesOverflow", "ProxylensStorageGrowing", "ProxylensRuleEvaluationFailures", "ProxylensNotificationsFailing"} {
		require.True(t, alerts[name], "alert %s missing", name)
	}
	require.False(t, alerts["ProxySourceDegrading"], "replaced by ProxySourceDegraded")
}

// TestRulesFileEmbedded: the binary carries the committed rule file.
func TestRulesFileEmbedded(t *testing.T) {
	b, err := os.ReadFile("alerts/proxylens.rules.yml")
	require.NoError(t, err)
	require.Equal(t, string(b), string(RulesFile))
}

// TestProvisioning: the data source is proxylens, with the uid the
// dashboards default to, and the dashboard provider reads files.
func TestProvisioning(t *testing.T) {
	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name     string         `yaml:"name"`
			Type     string         `yaml:"type"`
			UID      string         `yaml:"uid"`
			URL      string         `yaml:"url"`
			JSONData map[string]any `yaml:"jsonData"`
		} `yaml:"datasources"`
	}
	b, err := os.ReadFile("provisioning/datasources/proxylens.yaml")
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, &ds))
	require.Equal(t, 1, ds.APIVersion)
	require.Len(t, ds.Datasources, 1)
	d := ds.Datasources[0]
	require.Equal(t, "proxylens", d.Name)
	require.Equal(t, "prometheus", d.Type)
	require.Equal(t, "proxylens", d.UID)
	require.Equal(t, "http://127.0.0.1:9464", d.URL)
	require.Equal(t, "POST", d.JSONData["httpMethod"])

	var dp struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name    string         `yaml:"name"`
			Type    string         `yaml:"type"`
			Options map[string]any `yaml:"options"`
		} `yaml:"providers"`
	}
	b, err = os.ReadFile("provisioning/dashboards/proxylens.yaml")
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, &dp))
	require.Equal(t, 1, dp.APIVersion)
	require.Len(t, dp.Providers, 1)
	require.Equal(t, "file", dp.Providers[0].Type)
	path, _ := dp.Providers[0].Options["path"].(string)
	require.True(t, filepath.IsAbs(path), "provider path %q", path)
}
