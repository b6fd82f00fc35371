package otelanalytics

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/common/model"
	"golang.org/x/text/currency"
)

// The kinds of cost model (CostModel.Model).
const (
	// CostModelPerRequest charges per_request for every request.
	CostModelPerRequest = "per_request"
	// CostModelDataTransfer charges per_gb for every GB (10^9 bytes) sent
	// and received.
	CostModelDataTransfer = "data_transfer"
	// CostModelSubscription charges a fixed subscription per period.
	CostModelSubscription = "subscription"
	// CostModelHybrid charges any sum of the three prices above.
	CostModelHybrid = "hybrid"
)

// The series cost models produce. Their labels are listed in
// docs/analytics.md.
const (
	// CostMetric is the counter of usage cost, in the model's currency:
	// labels source, application, currency and component.
	CostMetric = "proxy_cost_total"
	// SubscriptionCostMetric is the gauge of a subscription's price per
	// period: labels source, currency and period.
	SubscriptionCostMetric = "proxy_subscription_cost"
	// SubscriptionPeriodMetric is the gauge of a subscription period's
	// length in seconds, with the labels of SubscriptionCostMetric.
	SubscriptionPeriodMetric = "proxy_subscription_period_seconds"
	// BudgetMetric is the gauge of a source's budget per budget period
	// (CostModel.BudgetPeriod): labels source, currency and period.
	BudgetMetric = "proxy_cost_budget"
	// BudgetPeriodMetric is the gauge of a budget period's length in
	// seconds, with the labels of BudgetMetric.
	BudgetPeriodMetric = "proxy_cost_budget_period_seconds"
)

// Values of the component label of CostMetric.
const (
	CostComponentRequest  = "request"
	CostComponentTransfer = "transfer"
)

// DefaultCurrency is the currency of a model that names none.
const DefaultCurrency = "USD"

// BytesPerGB is the GB of data_transfer prices: 10^9 bytes, as providers
// bill, not 2^30.
const BytesPerGB = 1e9

// The named billing periods. A month is 30 days and a year 365 days, as
// Prometheus durations count them.
var namedPeriods = map[string]int64{
	"day":   86400,
	"week":  7 * 86400,
	"month": 30 * 86400,
	"year":  365 * 86400,
}

// CostModel is what one proxy source costs during a validity period. It is
// configured under costs: in the config file and by the admin API; a price
// change is a new model from the date of the change, so history keeps the
// prices it was computed with.
//
// Prices are pointers so that a price of 0 (a free source) differs from an
// absent one: each model kind requires the prices it uses and refuses the
// others (see ValidateCostModels).
type CostModel struct {
	// Source is the value of the source label the model prices. Required.
	Source string `yaml:"source" json:"source"`
	// Model is per_request, data_transfer, subscription or hybrid. Required.
	Model string `yaml:"model" json:"model"`
	// Currency is an ISO 4217 code, stored upper-case. Empty means USD.
	Currency string `yaml:"currency,omitempty" json:"currency,omitempty"`
	// From is the start of the validity period (inclusive), RFC 3339.
	// Required.
	From time.Time `yaml:"from" json:"from"`
	// Until is the end of the validity period (exclusive), after From. Nil
	// means the model stays valid.
	Until *time.Time `yaml:"until,omitempty" json:"until,omitempty"`
	// PerRequest is the price of one request (per_request, hybrid).
	PerRequest *float64 `yaml:"per_request,omitempty" json:"per_request,omitempty"`
	// PerGB is the price of one GB, 10^9 bytes, sent plus received
	// (data_transfer, hybrid).
	PerGB *float64 `yaml:"per_gb,omitempty" json:"per_gb,omitempty"`
	// Subscription is the fixed price of one Period (subscription, hybrid).
	Subscription *float64 `yaml:"subscription,omitempty" json:"subscription,omitempty"`
	// Period is the billing period of Subscription: day, week, month (30
	// days), year (365 days) or a Prometheus duration such as 720h or 30d.
	// A duration is stored in Prometheus' canonical form (720h → 30d).
	Period string `yaml:"period,omitempty" json:"period,omitempty"`
	// Budget, when set, is what the source may cost, all spend counted,
	// per BudgetPeriod, in the model's currency: written as the gauge
	// proxy_cost_budget, which the shipped rule ProxySourceOverBudget
	// compares the spend with. Nil means no budget.
	Budget *float64 `yaml:"budget,omitempty" json:"budget,omitempty"`
}

// BudgetPeriod is the period of Budget: the model's billing period, or a
// month (30 days) when it has none.
func (m CostModel) BudgetPeriod() string {
	if m.Period == "" {
		return "month"
	}
	return m.Period
}

// PeriodSeconds returns the length of the model's billing period in
// seconds, or 0 if it has no valid period.
func (m CostModel) PeriodSeconds() float64 {
	_, secs, err := parsePeriod(m.Period)
	if err != nil {
		return 0
	}
	return secs
}

// parsePeriod parses a billing period into its canonical label value and
// its length in seconds.
func parsePeriod(s string) (string, float64, error) {
	if secs, ok := namedPeriods[s]; ok {
		return s, float64(secs), nil
	}
	d, err := model.ParseDuration(s)
	if err != nil || d <= 0 {
		return "", 0, fmt.Errorf("%q is not day, week, month, year or a positive duration such as 720h or 30d", s)
	}
	return d.String(), time.Duration(d).Seconds(), nil
}

// normalized returns m with its currency upper-case (USD if empty) and its
// period in canonical form. m must be valid.
func (m CostModel) normalized() CostModel {
	if m.Currency == "" {
		m.Currency = DefaultCurrency
	} else if u, err := currency.ParseISO(m.Currency); err == nil {
		m.Currency = u.String()
	}
	if m.Period != "" {
		if p, _, err := parsePeriod(m.Period); err == nil {
			m.Period = p
		}
	}
	return m
}

// clone returns a copy of m that shares no pointer with it.
func (m CostModel) clone() CostModel {
	dup := func(p *float64) *float64 {
		if p == nil {
			return nil
		}
		v := *p
		return &v
	}
	m.PerRequest, m.PerGB, m.Subscription, m.Budget = dup(m.PerRequest), dup(m.PerGB), dup(m.Subscription), dup(m.Budget)
	if m.Until != nil {
		u := *m.Until
		m.Until = &u
	}
	return m
}

// priceFields lists, in message order, the prices of a model.
var priceFields = [...]string{"per_request", "per_gb", "subscription"}

// prices returns m's prices in priceFields order.
func (m *CostModel) prices() [3]*float64 {
	return [3]*float64{m.PerRequest, m.PerGB, m.Subscription}
}

// modelPrices gives, per model kind, which prices it requires (all of them
// for the single-price models, at least one for hybrid) and permits.
var modelPrices = map[string][3]bool{
	CostModelPerRequest:   {true, false, false},
	CostModelDataTransfer: {false, true, false},
	CostModelSubscription: {false, false, true},
	CostModelHybrid:       {true, true, true},
}

// ValidateCostModels reports every problem of models at once, each naming
// its field by YAML path (costs[2].currency). Two models of one source
// whose validity periods overlap are an error naming both.
func ValidateCostModels(models []CostModel) error {
	var errs []error
	fail := func(i int, field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("costs[%d].%s: %s", i, field, fmt.Sprintf(format, args...)))
	}
	valid := make([]bool, len(models)) // validity period usable for the overlap check
	for i := range models {
		m := &models[i]
		switch {
		case m.Source == "":
			fail(i, "source", "required")
		case !utf8.ValidString(m.Source):
			fail(i, "source", "%q is not valid UTF-8", m.Source)
		case len(m.Source) > maxLabelLen:
			fail(i, "source", "longer than %d bytes, which no source label is", maxLabelLen)
		}
		if m.Currency != "" {
			if _, err := currency.ParseISO(m.Currency); err != nil {
				fail(i, "currency", "%q is not an ISO 4217 currency code", m.Currency)
			}
		}
		valid[i] = true
		if m.From.IsZero() {
			fail(i, "from", "required")
			valid[i] = false
		}
		if m.Until != nil && !m.From.IsZero() && !m.Until.After(m.From) {
			fail(i, "until", "%s is not after from (%s)", m.Until.Format(time.RFC3339Nano), m.From.Format(time.RFC3339Nano))
			valid[i] = false
		}

		prices := m.prices()
		for j, p := range prices {
			if p != nil && (math.IsNaN(*p) || math.IsInf(*p, 0) || *p < 0) {
				fail(i, priceFields[j], "must be a finite number ≥ 0, got %v", *p)
			}
		}
		if b := m.Budget; b != nil && (math.IsNaN(*b) || math.IsInf(*b, 0) || *b < 0) {
			fail(i, "budget", "must be a finite number ≥ 0, got %v", *b)
		}
		uses, known := modelPrices[m.Model]
		switch {
		case m.Model == "":
			fail(i, "model", "required: per_request, data_transfer, subscription or hybrid")
		case !known:
			fail(i, "model", "%q is not per_request, data_transfer, subscription or hybrid", m.Model)
		case m.Model == CostModelHybrid:
			if prices == [3]*float64{} {
				fail(i, "model", `"hybrid" needs at least one of per_request, per_gb, subscription`)
			}
		default:
			for j, p := range prices {
				switch {
				case uses[j] && p == nil:
					fail(i, priceFields[j], "required by model %q", m.Model)
				case !uses[j] && p != nil:
					fail(i, priceFields[j], "not used by model %q", m.Model)
				}
			}
		}
		switch {
		case m.Subscription != nil && m.Period == "":
			fail(i, "period", "required with subscription")
		case m.Subscription != nil:
			if _, _, err := parsePeriod(m.Period); err != nil {
				fail(i, "period", "%v", err)
			}
		case m.Period == "" || m.Model == CostModelSubscription || !known:
			// Nothing to add: a subscription model without its price is
			// reported above, and so is an unknown model.
		case m.Model == CostModelHybrid:
			fail(i, "period", "set without subscription")
		default:
			fail(i, "period", "not used by model %q", m.Model)
		}
	}

	// Overlaps: per source, in order of from, each model against the one
	// of the models before it that stays valid the longest.
	order := make([]int, 0, len(models))
	for i := range models {
		if valid[i] && models[i].Source != "" {
			order = append(order, i)
		}
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return cmp.Or(strings.Compare(models[a].Source, models[b].Source), models[a].From.Compare(models[b].From))
	})
	for k := 0; k < len(order); {
		src := models[order[k]].Source
		longest := order[k]
		for k++; k < len(order) && models[order[k]].Source == src; k++ {
			i, prev := order[k], &models[longest]
			if prev.Until == nil || models[i].From.Before(*prev.Until) {
				until := "open"
				if prev.Until != nil {
					until = prev.Until.Format(time.RFC3339Nano)
				}
				fail(i, "from", "validity overlaps costs[%d] of the same source %q (from %s, until %s)",
					longest, src, prev.From.Format(time.RFC3339Nano), until)
			}
			if prev.Until != nil && (models[i].Until == nil || models[i].Until.After(*prev.Until)) {
				longest = i
			}
		}
	}
	return errors.Join(errs...)
}

// DecodeCostModelsJSON decodes a JSON array of cost models, as the admin
// API receives it, refusing unknown fields, and validates them. It returns
// the models normalised: currency upper-case (USD if absent), period in
// canonical form. JSON null is an empty list.
func DecodeCostModelsJSON(r io.Reader) ([]CostModel, error) {
	dec := json.NewDecoder(r)
	var raw []json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("costs: not a JSON array of cost models: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("costs: unexpected data after the JSON array")
	}
	models := make([]CostModel, len(raw))
	var errs []error
	for i, b := range raw {
		if err := decodeCostModelJSON(b, &models[i]); err != nil {
			errs = append(errs, fmt.Errorf("costs[%d]%w", i, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := ValidateCostModels(models); err != nil {
		return nil, err
	}
	for i := range models {
		models[i] = models[i].normalized()
	}
	return models, nil
}

// decodeCostModelJSON decodes one model, refusing unknown fields. Its
// errors start with the field's path after the model's index: ".from: …",
// or ": …" for the model as a whole.
func decodeCostModelJSON(b []byte, m *CostModel) error {
	// The outer From and Until hide the embedded ones, so that a bad time
	// can be reported with its field.
	var shadow struct {
		CostModel
		From  json.RawMessage `json:"from"`
		Until json.RawMessage `json:"until"`
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&shadow); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			field := strings.TrimPrefix(te.Field, "CostModel.")
			return fmt.Errorf(".%s: cannot decode JSON %s as %s", field, te.Value, te.Type)
		}
		return fmt.Errorf(": %w", err)
	}
	*m = shadow.CostModel
	parse := func(field string, raw json.RawMessage) (*time.Time, error) {
		if len(raw) == 0 || string(raw) == "null" {
			return nil, nil
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf(".%s: %s is not an RFC 3339 time string", field, raw)
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return nil, fmt.Errorf(".%s: %q is not an RFC 3339 time", field, s)
		}
		return &t, nil
	}
	from, err := parse("from", shadow.From)
	if err != nil {
		return err
	}
	if from != nil {
		m.From = *from
	}
	m.Until, err = parse("until", shadow.Until)
	return err
}
