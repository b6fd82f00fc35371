package otelanalytics

// How a cut is priced: the CostBook holds the cost models in force over
// time; a cut's usage increments cost what the model valid at their
// interval says (CostIncrements), and subscriptions are gauges of their
// price and period at every interval end (SubscriptionSamples), which
// PromQL amortises over any range. The pipeline's cut hands both to the
// store with its increments (storeCut.price).

import (
	"cmp"
	"errors"
	"math"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
)

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
// range seconds. A model with a budget adds BudgetMetric and
// BudgetPeriodMetric, labelled with its BudgetPeriod. Sources come in
// sorted order.
func (b *CostBook) SubscriptionSamples(tMs int64, fn func(ls labels.Labels, v float64) error) error {
	if b == nil {
		return nil
	}
	sb := labels.NewScratchBuilder(4)
	for _, src := range b.sources {
		m := b.Lookup(src, tMs)
		if m == nil {
			continue
		}
		type gauge struct {
			name, period string
			v            float64
		}
		var gauges [4]gauge
		n := 0
		if m.Subscription != nil {
			gauges[n], gauges[n+1] = gauge{SubscriptionCostMetric, m.Period, *m.Subscription}, gauge{SubscriptionPeriodMetric, m.Period, m.PeriodSeconds()}
			n += 2
		}
		if m.Budget != nil {
			_, secs, _ := parsePeriod(m.BudgetPeriod())
			gauges[n], gauges[n+1] = gauge{BudgetMetric, m.BudgetPeriod(), *m.Budget}, gauge{BudgetPeriodMetric, m.BudgetPeriod(), secs}
			n += 2
		}
		for _, s := range gauges[:n] {
			sb.Reset()
			sb.Add(model.MetricNameLabel, s.name)
			sb.Add("currency", m.Currency)
			sb.Add("period", s.period)
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
	return costIncrements(c.usage(), d, book, fn)
}

// usage returns what each (source, application, interval) of the cut
// used: its requests, the bucket counts of its
// proxy_request_duration_seconds increments, and its bytes sent and
// received, from its proxy_transfer_bytes_total increments. Overflow
// series, which have no source, are left out.
func (c *Cut) usage() map[costKey]*costUsage {
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
	for i := range dur.NumIncs() {
		k := dur.IncKey(i)
		if k.Overflow {
			continue
		}
		var n float64
		for _, v := range dur.Inc(i)[:durationBuckets] {
			n += v
		}
		u := get(k, dur.IncTime(i))
		u.requests += n
		u.hasReqs = true
	}
	xfer := &c.Families[FamilyTransfer]
	for i := range xfer.NumIncs() {
		k := xfer.IncKey(i)
		if k.Overflow {
			continue
		}
		u := get(k, xfer.IncTime(i))
		v := xfer.Inc(i)
		u.bytes += v[transferSent] + v[transferReceived]
		u.hasBytes = true
	}
	return usage
}

// costIncrements prices usage under book (see Cut.CostIncrements), and
// adds each (source, application, interval)'s total as the usage
// component of AllocatedCostMetric.
func costIncrements(usage map[costKey]*costUsage, d *Dict, book *CostBook, fn func(ls labels.Labels, tMs int64, v float64) error) error {
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
			name := CostMetric
			if component == CostComponentUsage {
				name = AllocatedCostMetric
			}
			return fn(costLabels(&sb, name, src, app, m.Currency, component), tMs, v)
		}
		var total float64
		priced := false
		if m.PerRequest != nil && u.hasReqs {
			v := u.requests * *m.PerRequest
			if err := emit(CostComponentRequest, v); err != nil {
				return err
			}
			total, priced = total+v, true
		}
		if m.PerGB != nil && u.hasBytes {
			v := u.bytes / BytesPerGB * *m.PerGB
			if err := emit(CostComponentTransfer, v); err != nil {
				return err
			}
			total, priced = total+v, true
		}
		if priced {
			if err := emit(CostComponentUsage, total); err != nil {
				return err
			}
		}
	}
	return nil
}

// costLabels returns the labels of a cost series (an empty application
// left out, as in the usage series), built in sb.
func costLabels(sb *labels.ScratchBuilder, name, source, application, currency, component string) labels.Labels {
	sb.Reset()
	sb.Add(model.MetricNameLabel, name)
	if application != "" {
		sb.Add("application", application)
	}
	sb.Add("component", component)
	sb.Add("currency", currency)
	sb.Add("source", source)
	return sb.Labels()
}

// AppendSubscriptions appends, through add, the subscription gauges of
// every model valid at tMs (see SubscriptionSamples). A price already
// stored at tMs with another value stays: a price that changed applies
// from the change on, history is not rewritten.
func (b *CostBook) AppendSubscriptions(tMs int64, add func(ls labels.Labels, t int64, v float64) error) error {
	return b.SubscriptionSamples(tMs, func(ls labels.Labels, v float64) error {
		if err := add(ls, tMs, v); err != nil && !errors.Is(err, storage.ErrDuplicateSampleForTimestamp) {
			return err
		}
		return nil
	})
}

// price adds the cut's costs: proxy_cost_total increments by the model
// valid at each interval, and the subscription gauges at every interval
// end the cut has increments for (the server also writes them every flush
// interval, traffic or not: see CostBook.AppendSubscriptions).
func (s *storeCut) price(increment, sample func(ls labels.Labels, t int64, v float64) error) error {
	if s.book == nil {
		return nil
	}
	if s.usage == nil {
		s.usage = s.c.usage()
	}
	if err := costIncrements(s.usage, s.dict, s.book, increment); err != nil {
		return err
	}
	times := map[int64]struct{}{}
	for f := range s.c.Families {
		fc := &s.c.Families[f]
		for i := range fc.NumIncs() {
			times[fc.IncTime(i)/1e6] = struct{}{}
		}
	}
	if s.noFixed {
		return nil
	}
	for t := range times {
		if err := s.book.AppendSubscriptions(t, sample); err != nil {
			return err
		}
	}
	return nil
}
