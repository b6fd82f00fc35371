package ruler

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/rules"
)

// The answers of /api/v1/rules and /api/v1/alerts, field for field as
// Prometheus' web/api/v1 writes them (its RuleDiscovery, RuleGroup,
// AlertingRule, RecordingRule, AlertDiscovery and Alert), which Grafana's
// alert list reads.

// RuleDiscovery is the data of /api/v1/rules.
type RuleDiscovery struct {
	RuleGroups     []*RuleGroup `json:"groups"`
	GroupNextToken string       `json:"groupNextToken,omitempty"`
}

// RuleGroup is one rule group with its rules, alerting and recording in
// file order.
type RuleGroup struct {
	Name           string    `json:"name"`
	File           string    `json:"file"`
	Rules          []any     `json:"rules"` // AlertingRule or RecordingRule
	Interval       float64   `json:"interval"`
	Limit          int       `json:"limit"`
	EvaluationTime float64   `json:"evaluationTime"`
	LastEvaluation time.Time `json:"lastEvaluation"`
}

// AlertingRule is an alerting rule with its active alerts.
type AlertingRule struct {
	State          string           `json:"state"` // pending, firing or inactive
	Name           string           `json:"name"`
	Query          string           `json:"query"`
	Duration       float64          `json:"duration"`
	KeepFiringFor  float64          `json:"keepFiringFor"`
	Labels         labels.Labels    `json:"labels"`
	Annotations    labels.Labels    `json:"annotations"`
	Alerts         []*Alert         `json:"alerts"`
	Health         rules.RuleHealth `json:"health"`
	LastError      string           `json:"lastError,omitempty"`
	EvaluationTime float64          `json:"evaluationTime"`
	LastEvaluation time.Time        `json:"lastEvaluation"`
	Type           string           `json:"type"` // always "alerting"
}

// RecordingRule is a recording rule.
type RecordingRule struct {
	Name           string           `json:"name"`
	Query          string           `json:"query"`
	Labels         labels.Labels    `json:"labels"`
	Health         rules.RuleHealth `json:"health"`
	LastError      string           `json:"lastError,omitempty"`
	EvaluationTime float64          `json:"evaluationTime"`
	LastEvaluation time.Time        `json:"lastEvaluation"`
	Type           string           `json:"type"` // always "recording"
}

// AlertDiscovery is the data of /api/v1/alerts.
type AlertDiscovery struct {
	Alerts []*Alert `json:"alerts"`
}

// Alert is one pending or firing alert.
type Alert struct {
	Labels          labels.Labels `json:"labels"`
	Annotations     labels.Labels `json:"annotations"`
	State           string        `json:"state"`
	ActiveAt        *time.Time    `json:"activeAt,omitempty"`
	KeepFiringSince *time.Time    `json:"keepFiringSince,omitempty"`
	Value           string        `json:"value"`
}

// Alerts answers /api/v1/alerts: every pending and firing alert.
func (r *Ruler) Alerts(*http.Request) (any, error) {
	alerts := []*Alert{}
	for _, g := range r.groups() {
		for _, rl := range g.Rules() {
			if ar, ok := rl.(*rules.AlertingRule); ok {
				alerts = append(alerts, apiAlerts(ar.ActiveAlerts())...)
			}
		}
	}
	return &AlertDiscovery{Alerts: alerts}, nil
}

func apiAlerts(in []*rules.Alert) []*Alert {
	out := make([]*Alert, len(in))
	for i, a := range in {
		out[i] = &Alert{
			Labels:      a.Labels,
			Annotations: a.Annotations,
			State:       a.State.String(),
			ActiveAt:    &a.ActiveAt,
			Value:       strconv.FormatFloat(a.Value, 'e', -1, 64),
		}
		if !a.KeepFiringSince.IsZero() {
			out[i].KeepFiringSince = &a.KeepFiringSince
		}
	}
	return out
}

// Rules answers /api/v1/rules with Prometheus' parameters: type (alert
// or record), rule_name[], rule_group[], file[], match[] (on the rules'
// labels), exclude_alerts, and group_limit with group_next_token to page
// through the groups.
func (r *Ruler) Rules(req *http.Request) (any, error) {
	if err := req.ParseForm(); err != nil {
		return nil, fmt.Errorf("error parsing form values: %w", err)
	}
	set := func(values []string) map[string]bool {
		s := make(map[string]bool, len(values))
		for _, v := range values {
			s[v] = true
		}
		return s
	}
	names, groupNames, files := set(req.Form["rule_name[]"]), set(req.Form["rule_group[]"]), set(req.Form["file[]"])
	matcherSets, err := parseMatchers(req.Form["match[]"])
	if err != nil {
		return nil, err
	}
	q := req.URL.Query()
	typ := strings.ToLower(q.Get("type"))
	if typ != "" && typ != "alert" && typ != "record" {
		return nil, invalidParam("type", fmt.Errorf("not supported value %q", typ))
	}
	alerting, recording := typ == "" || typ == "alert", typ == "" || typ == "record"
	excludeAlerts := false
	if v := strings.ToLower(q.Get("exclude_alerts")); v != "" {
		if excludeAlerts, err = strconv.ParseBool(v); err != nil {
			return nil, invalidParam("exclude_alerts", fmt.Errorf("error converting exclude_alerts: %w", err))
		}
	}
	maxGroups, nextToken, err := parsePagination(q.Get("group_limit"), q.Get("group_next_token"))
	if err != nil {
		return nil, err
	}

	res := &RuleDiscovery{RuleGroups: []*RuleGroup{}}
	foundToken := false
	for _, g := range r.groups() {
		if maxGroups > 0 && nextToken != "" && !foundToken {
			if nextToken != groupToken(g.File(), g.Name()) {
				continue
			}
			foundToken = true
		}
		if (len(groupNames) > 0 && !groupNames[g.Name()]) || (len(files) > 0 && !files[g.File()]) {
			continue
		}
		ag := &RuleGroup{
			Name:           g.Name(),
			File:           g.File(),
			Interval:       g.Interval().Seconds(),
			Limit:          g.Limit(),
			Rules:          []any{},
			EvaluationTime: g.GetEvaluationTime().Seconds(),
			LastEvaluation: g.GetLastEvaluation(),
		}
		for _, rl := range g.Rules(matcherSets...) {
			if len(names) > 0 && !names[rl.Name()] {
				continue
			}
			lastError := ""
			if err := rl.LastError(); err != nil {
				lastError = err.Error()
			}
			switch rl := rl.(type) {
			case *rules.AlertingRule:
				if !alerting {
					continue
				}
				var active []*Alert
				if !excludeAlerts {
					active = apiAlerts(rl.ActiveAlerts())
				}
				ag.Rules = append(ag.Rules, AlertingRule{
					State:          rl.State().String(),
					Name:           rl.Name(),
					Query:          rl.Query().String(),
					Duration:       rl.HoldDuration().Seconds(),
					KeepFiringFor:  rl.KeepFiringFor().Seconds(),
					Labels:         rl.Labels(),
					Annotations:    rl.Annotations(),
					Alerts:         active,
					Health:         rl.Health(),
					LastError:      lastError,
					EvaluationTime: rl.GetEvaluationDuration().Seconds(),
					LastEvaluation: rl.GetEvaluationTimestamp(),
					Type:           "alerting",
				})
			case *rules.RecordingRule:
				if !recording {
					continue
				}
				ag.Rules = append(ag.Rules, RecordingRule{
					Name:           rl.Name(),
					Query:          rl.Query().String(),
					Labels:         rl.Labels(),
					Health:         rl.Health(),
					LastError:      lastError,
					EvaluationTime: rl.GetEvaluationDuration().Seconds(),
					LastEvaluation: rl.GetEvaluationTimestamp(),
					Type:           "recording",
				})
			}
		}
		if len(ag.Rules) == 0 {
			continue // every rule filtered out: the group is left out, as Prometheus does
		}
		if maxGroups > 0 && len(res.RuleGroups) == maxGroups {
			res.GroupNextToken = groupToken(g.File(), g.Name())
			break
		}
		res.RuleGroups = append(res.RuleGroups, ag)
	}
	if maxGroups > 0 && nextToken != "" && !foundToken {
		return nil, invalidParam("group_next_token", fmt.Errorf("invalid group_next_token '%v'. were rule groups changed?", nextToken))
	}
	return res, nil
}

// parseMatchers parses match[] as Prometheus does: each a selector with
// at least one matcher that does not match the empty string.
func parseMatchers(in []string) ([][]*labels.Matcher, error) {
	sets, err := parser.NewParser(parser.Options{}).ParseMetricSelectors(in)
	if err != nil {
		return nil, err
	}
outer:
	for _, ms := range sets {
		for _, m := range ms {
			if m != nil && !m.Matches("") {
				continue outer
			}
		}
		return nil, errors.New("match[] must contain at least one non-empty matcher")
	}
	return sets, nil
}

func parsePagination(limit, token string) (int, string, error) {
	if token != "" && limit == "" {
		return 0, "", invalidParam("group_next_token", errors.New("group_limit needs to be present in order to paginate over the groups"))
	}
	if limit == "" {
		return 0, "", nil
	}
	n, err := strconv.ParseInt(limit, 10, 32)
	if err != nil {
		return 0, "", invalidParam("group_limit", fmt.Errorf("group_limit needs to be a valid number: %w", err))
	}
	if n <= 0 {
		return 0, "", invalidParam("group_limit", errors.New("group_limit needs to be greater than 0"))
	}
	return int(n), token, nil
}

// groupToken is Prometheus' group_next_token of a group.
func groupToken(file, group string) string {
	h := sha256.Sum256([]byte(file + ";" + group))
	return hex.EncodeToString(h[:])
}

func invalidParam(name string, err error) error {
	return fmt.Errorf("invalid parameter %q: %w", name, err)
}
