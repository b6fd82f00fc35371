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
	"sort"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
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
	m.PerRequest, m.PerGB, m.Subscription = dup(m.PerRequest), dup(m.PerGB), dup(m.Subscription)
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

// CostBook is an immutable, validated set of cost models, indexed by
// source for lookup by time. A nil *CostBook holds no models.
type CostBook struct {
	models  []CostModel // normalised, sorted by source then from
	fromMs  []int64     // by model: first millisecond of validity
	untilMs []int64     // by model: first millisecond past it, MaxInt64 if open
	sources []string    // distinct sources, sorted
	spans   map[string][2]int
}

// NewCostBook validates models and returns the book of their normalised
// copies: currency upper-case (USD if empty), period in canonical form.
func NewCostBook(models []CostModel) (*CostBook, error) {
	if err := ValidateCostModels(models); err != nil {
		return nil, err
	}
	b := &CostBook{spans: make(map[string][2]int)}
	b.models = make([]CostModel, len(models))
	for i := range models {
		b.models[i] = models[i].normalized().clone()
	}
	slices.SortStableFunc(b.models, func(x, y CostModel) int {
		return cmp.Or(strings.Compare(x.Source, y.Source), x.From.Compare(y.From))
	})
	b.fromMs = make([]int64, len(b.models))
	b.untilMs = make([]int64, len(b.models))
	for i := range b.models {
		m := &b.models[i]
		b.fromMs[i] = ceilMs(m.From)
		b.untilMs[i] = math.MaxInt64
		if m.Until != nil {
			b.untilMs[i] = ceilMs(*m.Until)
		}
		span, ok := b.spans[m.Source]
		if !ok {
			span[0] = i
			b.sources = append(b.sources, m.Source)
		}
		span[1] = i + 1
		b.spans[m.Source] = span
	}
	return b, nil
}

// ceilMs returns the first Unix millisecond at or after t, so that for a
// millisecond time ms, ms ≥ ceilMs(t) exactly when ms is not before t.
func ceilMs(t time.Time) int64 {
	ms := t.UnixMilli() // floors: the nanoseconds of t are never negative
	if t.Nanosecond()%1e6 != 0 {
		ms++
	}
	return ms
}

// Lookup returns the model of source valid at tMs (Unix milliseconds):
// From ≤ t < Until. It returns nil if there is none. The model belongs to
// the book and must not be modified.
func (b *CostBook) Lookup(source string, tMs int64) *CostModel {
	if b == nil {
		return nil
	}
	span, ok := b.spans[source]
	if !ok {
		return nil
	}
	from := b.fromMs[span[0]:span[1]]
	i := sort.Search(len(from), func(i int) bool { return from[i] > tMs }) - 1
	if i < 0 || tMs >= b.untilMs[span[0]+i] {
		return nil
	}
	return &b.models[span[0]+i]
}

// Models returns a copy of the book's models, sorted by source then from.
func (b *CostBook) Models() []CostModel {
	if b == nil {
		return []CostModel{}
	}
	out := make([]CostModel, len(b.models))
	for i := range b.models {
		out[i] = b.models[i].clone()
	}
	return out
}

// SubscriptionSamples calls fn, for every model valid at tMs (Unix
// milliseconds) that has a subscription price, with two gauges labelled
// {source, currency, period}: SubscriptionCostMetric, the price of one
// period, and SubscriptionPeriodMetric, the period's length in seconds.
// PromQL amortises a subscription over a range as price ÷ period seconds ×
// range seconds. Sources come in sorted order.
func (b *CostBook) SubscriptionSamples(tMs int64, fn func(ls labels.Labels, v float64) error) error {
	if b == nil {
		return nil
	}
	sb := labels.NewScratchBuilder(4)
	for _, src := range b.sources {
		m := b.Lookup(src, tMs)
		if m == nil || m.Subscription == nil {
			continue
		}
		for _, s := range [...]struct {
			name string
			v    float64
		}{{SubscriptionCostMetric, *m.Subscription}, {SubscriptionPeriodMetric, m.PeriodSeconds()}} {
			sb.Reset()
			sb.Add(model.MetricNameLabel, s.name)
			sb.Add("currency", m.Currency)
			sb.Add("period", m.Period)
			sb.Add("source", src)
			if err := fn(sb.Labels(), s.v); err != nil {
				return err
			}
		}
	}
	return nil
}

// Costs holds the cost book in force. The ingest path reads it at every
// flush; the admin API replaces it. Its zero value holds no book (Book
// returns nil, which prices nothing). All methods are safe for concurrent
// use.
type Costs struct {
	book atomic.Pointer[CostBook]
}

// Set makes b the book in force; nil removes every model.
func (c *Costs) Set(b *CostBook) { c.book.Store(b) }

// Book returns the book in force, nil if none was set.
func (c *Costs) Book() *CostBook { return c.book.Load() }

// costKey is a (source, application, interval) of a cut.
type costKey struct {
	source, application uint32
	t                   int64 // interval end, Unix ns
}

// costUsage is what a costKey used in a cut.
type costUsage struct {
	requests, bytes   float64
	hasReqs, hasBytes bool
}

// CostIncrements calls fn with the increments of proxy_cost_total{source,
// application, currency, component} that the cut's increments cost under
// book, one call per series and interval (times in milliseconds):
//
//   - component="request": requests × per_request, the requests of a
//     (source, application, interval) being the bucket counts of its
//     proxy_request_duration_seconds increments;
//   - component="transfer": (bytes sent + received) / 10^9 × per_gb, from
//     its proxy_transfer_bytes_total increments.
//
// The model is the one valid at the interval's end. A source without a
// model there, a model without the component's price (subscription prices
// are SubscriptionSamples') and the overflow series, which have no source,
// cost nothing.
func (c *Cut) CostIncrements(d *Dict, book *CostBook, fn func(ls labels.Labels, tMs int64, v float64) error) error {
	if book == nil || len(book.models) == 0 {
		return nil
	}
	usage := map[costKey]*costUsage{}
	get := func(k SeriesKey, t int64) *costUsage {
		ck := costKey{k.Source, k.Application, t}
		u := usage[ck]
		if u == nil {
			u = &costUsage{}
			usage[ck] = u
		}
		return u
	}
	dur := &c.Families[FamilyDuration]
	w := FamilyDuration.Width()
	for i, k := range dur.IncKeys {
		if k.Overflow {
			continue
		}
		var n float64
		for _, v := range dur.IncValues[i*w : i*w+durationBuckets] {
			n += v
		}
		u := get(k, dur.IncTimes[i])
		u.requests += n
		u.hasReqs = true
	}
	xfer := &c.Families[FamilyTransfer]
	w = FamilyTransfer.Width()
	for i, k := range xfer.IncKeys {
		if k.Overflow {
			continue
		}
		u := get(k, xfer.IncTimes[i])
		u.bytes += xfer.IncValues[i*w+transferSent] + xfer.IncValues[i*w+transferReceived]
		u.hasBytes = true
	}

	keys := make([]costKey, 0, len(usage))
	for k := range usage {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b costKey) int {
		return cmp.Or(cmp.Compare(a.t, b.t), cmp.Compare(a.source, b.source), cmp.Compare(a.application, b.application))
	})
	names := map[uint32]string{}
	name := func(id uint32) string {
		s, ok := names[id]
		if !ok {
			s = d.String(id)
			names[id] = s
		}
		return s
	}
	sb := labels.NewScratchBuilder(5)
	for _, k := range keys {
		u := usage[k]
		src := name(k.source)
		tMs := k.t / 1e6
		m := book.Lookup(src, tMs)
		if m == nil {
			continue
		}
		app := name(k.application)
		emit := func(component string, v float64) error {
			sb.Reset()
			sb.Add(model.MetricNameLabel, CostMetric)
			if app != "" {
				sb.Add("application", app)
			}
			sb.Add("component", component)
			sb.Add("currency", m.Currency)
			sb.Add("source", src)
			return fn(sb.Labels(), tMs, v)
		}
		if m.PerRequest != nil && u.hasReqs {
			if err := emit(CostComponentRequest, u.requests**m.PerRequest); err != nil {
				return err
			}
		}
		if m.PerGB != nil && u.hasBytes {
			if err := emit(CostComponentTransfer, u.bytes/BytesPerGB**m.PerGB); err != nil {
				return err
			}
		}
	}
	return nil
}
