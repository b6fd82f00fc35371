package dashboards

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"sort"
)

// datasourceRef is how every panel and target names its data source: the
// dashboard's datasource variable, so that one dashboard serves any
// proxylens (or Prometheus) data source.
var datasourceRef = map[string]any{"type": "prometheus", "uid": "${datasource}"}

// A target is one PromQL query of a panel.
type target struct {
	expr   string
	legend string
	// instant asks for the value at the end of the range only (tables, bar
	// gauges and stats over $__range).
	instant bool
	// unit overrides the panel's unit for this query's column (tables).
	unit string
}

// A panel is one Grafana panel; Grafana's JSON is built by json.
type panel struct {
	kind  string // timeseries, stat, table, bargauge or row
	title string
	desc  string
	unit  string
	w, h  int
	// min and max bound the axis or gauge; nil leaves Grafana's default.
	min, max *float64
	// interval is the panel's minimum interval (the step and $__interval),
	// e.g. "1d" for daily figures; empty leaves the data source's.
	interval string
	// stack stacks the series of a time series panel.
	stack bool
	// thresholds are the red steps above the green base (bargauge, stat,
	// time series threshold lines; in a table, the colour of the first
	// query's column).
	thresholds []float64
	targets    []target
	// matrix, for a table, lays its one query's instant values out as a
	// grid: rows by the first label, columns by the second, each cell
	// coloured by its value (a heatmap).
	matrix *[2]string
}

// A dashboard is one Grafana dashboard.
type dashboard struct {
	file, uid, title, desc string
	// variables lists the template variables besides datasource: "source",
	// "application".
	variables []string
	// valuesFrom is the metric the variables' values come from (default
	// proxy_requests_total).
	valuesFrom string
	timeFrom   string
	panels     []panel
}

func f(v float64) *float64 { return &v }

// json returns the dashboard as Grafana's JSON model, indented, with a
// final newline. The output depends only on the dashboard: maps are
// written with sorted keys.
func (d dashboard) json() ([]byte, error) {
	var panels []any
	x, y, rowH := 0, 0, 0
	for i, p := range d.panels {
		w, h := p.w, p.h
		if p.kind == "row" {
			w, h = 24, 1
		}
		if x+w > 24 || p.kind == "row" {
			x, y, rowH = 0, y+rowH, 0
		}
		jp := map[string]any{
			"id":      i + 1,
			"type":    p.kind,
			"title":   p.title,
			"gridPos": map[string]any{"x": x, "y": y, "w": w, "h": h},
		}
		x += w
		rowH = max(rowH, h)
		if p.kind == "row" {
			jp["collapsed"] = false
			jp["panels"] = []any{}
			panels = append(panels, jp)
			x, y, rowH = 0, y+1, 0
			continue
		}
		if len(p.targets) == 0 {
			return nil, fmt.Errorf("dashboard %s: panel %q has no query", d.uid, p.title)
		}
		jp["description"] = p.desc
		jp["datasource"] = datasourceRef
		if p.interval != "" {
			jp["interval"] = p.interval
		}
		defaults := map[string]any{}
		if p.unit != "" {
			defaults["unit"] = p.unit
		}
		if p.min != nil {
			defaults["min"] = *p.min
		}
		if p.max != nil {
			defaults["max"] = *p.max
		}
		steps := []any{map[string]any{"color": "green", "value": nil}}
		for _, t := range p.thresholds {
			steps = append(steps, map[string]any{"color": "red", "value": t})
		}
		defaults["thresholds"] = map[string]any{"mode": "absolute", "steps": steps}
		custom := map[string]any{}
		switch p.kind {
		case "timeseries":
			custom["drawStyle"] = "line"
			custom["lineWidth"] = 1
			custom["fillOpacity"] = 10
			custom["showPoints"] = "never"
			custom["spanNulls"] = false
			stacking := "none"
			if p.stack {
				stacking = "normal"
			}
			custom["stacking"] = map[string]any{"mode": stacking, "group": "A"}
			style := "off"
			if len(p.thresholds) > 0 {
				style = "dashed"
			}
			custom["thresholdsStyle"] = map[string]any{"mode": style}
			jp["options"] = map[string]any{
				"legend":  map[string]any{"displayMode": "table", "placement": "right", "showLegend": true, "calcs": []any{"mean", "max"}},
				"tooltip": map[string]any{"mode": "multi", "sort": "desc"},
			}
		case "stat":
			defaults["color"] = map[string]any{"mode": "thresholds"}
			jp["options"] = map[string]any{
				"reduceOptions": map[string]any{"calcs": []any{"lastNotNull"}, "fields": "", "values": false},
				"colorMode":     "value",
				"graphMode":     "none",
				"textMode":      "auto",
				"justifyMode":   "auto",
				"orientation":   "auto",
			}
		case "bargauge":
			defaults["color"] = map[string]any{"mode": "thresholds"}
			jp["options"] = map[string]any{
				"reduceOptions": map[string]any{"calcs": []any{"lastNotNull"}, "fields": "", "values": false},
				"displayMode":   "gradient",
				"orientation":   "horizontal",
				"showUnfilled":  true,
			}
		case "table":
			custom["align"] = "auto"
			jp["options"] = map[string]any{"showHeader": true, "cellHeight": "sm"}
			// One row per label set: the instant values of every query
			// side by side, without the time column.
			jp["transformations"] = []any{
				map[string]any{"id": "merge", "options": map[string]any{}},
				map[string]any{"id": "organize", "options": map[string]any{"excludeByName": map[string]any{"Time": true}}},
			}
			if p.matrix != nil {
				jp["transformations"] = []any{map[string]any{"id": "groupingToMatrix", "options": map[string]any{
					"rowField": p.matrix[0], "columnField": p.matrix[1], "valueField": "Value", "emptyValue": "null",
				}}}
				custom["cellOptions"] = map[string]any{"type": "color-background", "mode": "gradient"}
				defaults["color"] = map[string]any{"mode": "continuous-GrYlRd"}
			}
		default:
			return nil, fmt.Errorf("dashboard %s: panel %q: unknown type %q", d.uid, p.title, p.kind)
		}
		if len(custom) > 0 {
			defaults["custom"] = custom
		}
		overrides := []any{}
		if p.kind == "table" && p.matrix == nil {
			// Name each query's column after its legend (Grafana calls
			// them "Value #A", "Value #B", …, or "Value" if there is one).
			for j, t := range p.targets {
				column := "Value #" + string(rune('A'+j))
				if len(p.targets) == 1 {
					column = "Value"
				}
				props := []any{map[string]any{"id": "displayName", "value": t.legend}}
				if t.unit != "" {
					props = append(props, map[string]any{"id": "unit", "value": t.unit})
				}
				if j == 0 && len(p.thresholds) > 0 {
					props = append(props, map[string]any{"id": "custom.cellOptions", "value": map[string]any{"type": "color-text"}})
				}
				overrides = append(overrides, map[string]any{
					"matcher":    map[string]any{"id": "byName", "options": column},
					"properties": props,
				})
			}
		}
		jp["fieldConfig"] = map[string]any{"defaults": defaults, "overrides": overrides}
		var targets []any
		for j, t := range p.targets {
			jt := map[string]any{
				"refId":        string(rune('A' + j)),
				"datasource":   datasourceRef,
				"editorMode":   "code",
				"expr":         t.expr,
				"legendFormat": t.legend,
				"range":        !t.instant,
				"instant":      t.instant,
			}
			if p.kind == "table" {
				jt["format"] = "table"
			}
			targets = append(targets, jt)
		}
		jp["targets"] = targets
		panels = append(panels, jp)
	}

	vars := []any{map[string]any{
		"name":    "datasource",
		"label":   "Data source",
		"type":    "datasource",
		"query":   "prometheus",
		"current": map[string]any{"selected": true, "text": "proxylens", "value": "proxylens"},
		"hide":    0,
		"refresh": 1,
		"regex":   "",
		"options": []any{},
	}}
	for _, v := range d.variables {
		if v == "tz" {
			// One time zone at a time, UTC unless the config adds one.
			q := "label_values(proxy_peak_source_requests_total, tz)"
			vars = append(vars, map[string]any{
				"name": "tz", "label": "Time zone", "type": "query", "datasource": datasourceRef,
				"definition": q, "query": q, "refresh": 2, "multi": false, "includeAll": false,
				"current": map[string]any{"selected": true, "text": "UTC", "value": "UTC"},
				"sort":    1, "regex": "", "hide": 0, "options": []any{},
			})
			continue
		}
		metric := cmp.Or(d.valuesFrom, "proxy_requests_total")
		q := "label_values(" + metric + ", " + v + ")"
		if v == "application" && contains(d.variables, "source") {
			q = "label_values(" + metric + `{source=~"$source"}, application)`
		}
		vars = append(vars, map[string]any{
			"name":       v,
			"label":      labelOf(v),
			"type":       "query",
			"datasource": datasourceRef,
			"definition": q,
			// The classic string form, which every Grafana version reads
			// (and migrates to its editor's form on load).
			"query":      q,
			"refresh":    2, // on time range change
			"multi":      true,
			"includeAll": true,
			"allValue":   ".*",
			"current":    map[string]any{"selected": true, "text": []any{"All"}, "value": []any{"$__all"}},
			"sort":       1,
			"regex":      "",
			"hide":       0,
			"options":    []any{},
		})
	}

	out := map[string]any{
		"uid":                  d.uid,
		"title":                d.title,
		"description":          d.desc,
		"tags":                 []any{"proxylens"},
		"schemaVersion":        39,
		"version":              1,
		"editable":             true,
		"graphTooltip":         1,
		"timezone":             "browser",
		"refresh":              "1m",
		"time":                 map[string]any{"from": d.timeFrom, "to": "now"},
		"fiscalYearStartMonth": 0,
		"liveNow":              false,
		"panels":               panels,
		"templating":           map[string]any{"list": vars},
		"annotations":          map[string]any{"list": []any{}},
		"links": []any{map[string]any{
			"title": "proxylens dashboards", "type": "dashboards", "tags": []any{"proxylens"},
			"asDropdown": true, "includeVars": true, "keepTime": true,
		}},
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return nil, fmt.Errorf("encode dashboard %s: %w", d.uid, err)
	}
	return buf.Bytes(), nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func labelOf(v string) string {
	switch v {
	case "source":
		return "Source"
	case "application":
		return "Application"
	}
	return v
}

// Generate returns every dashboard's JSON by file name (e.g.
// "proxy-usage.json").
func Generate() (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, d := range all() {
		b, err := d.json()
		if err != nil {
			return nil, err
		}
		if _, dup := out[d.file]; dup {
			return nil, fmt.Errorf("two dashboards write %s", d.file)
		}
		out[d.file] = b
	}
	return out, nil
}

// Files returns the names Generate writes, sorted.
func Files() []string {
	var names []string
	for _, d := range all() {
		names = append(names, d.file)
	}
	sort.Strings(names)
	return names
}
