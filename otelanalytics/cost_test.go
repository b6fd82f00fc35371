package otelanalytics

import (
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

func price(v float64) *float64 { return &v }

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

func atp(s string) *time.Time { t := at(s); return &t }

// errorLines splits a joined error into its messages.
func errorLines(err error) []string {
	if err == nil {
		return nil
	}
	return strings.Split(err.Error(), "\n")
}

func TestValidateCostModels(t *testing.T) {
	jan := at("2026-01-01T00:00:00Z")
	ok := func(m CostModel) CostModel {
		if m.Source == "" {
			m.Source = "s"
		}
		if m.From.IsZero() {
			m.From = jan
		}
		return m
	}
	for _, c := range []struct {
		name string
		m    CostModel
		want []string // messages, in order; nil means valid
	}{
		{"per_request", ok(CostModel{Model: "per_request", PerRequest: price(0.001)}), nil},
		{"free source", ok(CostModel{Model: "per_request", PerRequest: price(0)}), nil},
		{"data_transfer", ok(CostModel{Model: "data_transfer", PerGB: price(3.5), Currency: "eur"}), nil},
		{"subscription", ok(CostModel{Model: "subscription", Subscription: price(300), Period: "month"}), nil},
		{"subscription duration", ok(CostModel{Model: "subscription", Subscription: price(300), Period: "720h"}), nil},
		{"hybrid one price", ok(CostModel{Model: "hybrid", PerGB: price(1)}), nil},
		{"hybrid all", ok(CostModel{Model: "hybrid", PerRequest: price(1), PerGB: price(1), Subscription: price(1), Period: "1w"}), nil},
		{"until after from", ok(CostModel{Model: "per_request", PerRequest: price(1), Until: atp("2026-01-01T00:00:00.001Z")}), nil},

		{"no source", CostModel{Model: "per_request", PerRequest: price(1), From: jan},
			[]string{"costs[0].source: required"}},
		{"bad utf-8 source", ok(CostModel{Source: "a\xffb", Model: "per_request", PerRequest: price(1)}),
			[]string{`costs[0].source: "a\xffb" is not valid UTF-8`}},
		{"long source", ok(CostModel{Source: strings.Repeat("x", 257), Model: "per_request", PerRequest: price(1)}),
			[]string{"costs[0].source: longer than 256 bytes, which no source label is"}},
		{"no model", ok(CostModel{PerRequest: price(1)}),
			[]string{"costs[0].model: required: per_request, data_transfer, subscription or hybrid"}},
		{"unknown model", ok(CostModel{Model: "flat", PerRequest: price(1), Period: "day"}),
			[]string{`costs[0].model: "flat" is not per_request, data_transfer, subscription or hybrid`}},
		{"bad currency", ok(CostModel{Model: "per_request", PerRequest: price(1), Currency: "usd1"}),
			[]string{`costs[0].currency: "usd1" is not an ISO 4217 currency code`}},
		{"unknown currency", ok(CostModel{Model: "per_request", PerRequest: price(1), Currency: "ABC"}),
			[]string{`costs[0].currency: "ABC" is not an ISO 4217 currency code`}},
		{"no from", CostModel{Source: "s", Model: "per_request", PerRequest: price(1)},
			[]string{"costs[0].from: required"}},
		{"until not after from", ok(CostModel{Model: "per_request", PerRequest: price(1), Until: atp("2026-01-01T00:00:00Z")}),
			[]string{"costs[0].until: 2026-01-01T00:00:00Z is not after from (2026-01-01T00:00:00Z)"}},
		{"negative price", ok(CostModel{Model: "per_request", PerRequest: price(-1)}),
			[]string{"costs[0].per_request: must be a finite number ≥ 0, got -1"}},
		{"NaN price", ok(CostModel{Model: "data_transfer", PerGB: price(math.NaN())}),
			[]string{"costs[0].per_gb: must be a finite number ≥ 0, got NaN"}},
		{"infinite price", ok(CostModel{Model: "subscription", Subscription: price(math.Inf(1)), Period: "day"}),
			[]string{"costs[0].subscription: must be a finite number ≥ 0, got +Inf"}},
		{"missing price", ok(CostModel{Model: "per_request"}),
			[]string{`costs[0].per_request: required by model "per_request"`}},
		{"price not used", ok(CostModel{Model: "per_request", PerRequest: price(1), PerGB: price(0)}),
			[]string{`costs[0].per_gb: not used by model "per_request"`}},
		{"data_transfer prices", ok(CostModel{Model: "data_transfer", PerRequest: price(1), Subscription: price(1), Period: "day"}),
			[]string{
				`costs[0].per_request: not used by model "data_transfer"`,
				`costs[0].per_gb: required by model "data_transfer"`,
				`costs[0].subscription: not used by model "data_transfer"`,
			}},
		{"subscription without price", ok(CostModel{Model: "subscription", Period: "month"}),
			[]string{`costs[0].subscription: required by model "subscription"`}},
		{"subscription without period", ok(CostModel{Model: "subscription", Subscription: price(1)}),
			[]string{"costs[0].period: required with subscription"}},
		{"bad period", ok(CostModel{Model: "subscription", Subscription: price(1), Period: "fortnight"}),
			[]string{`costs[0].period: "fortnight" is not day, week, month, year or a positive duration such as 720h or 30d`}},
		{"zero period", ok(CostModel{Model: "subscription", Subscription: price(1), Period: "0d"}),
			[]string{`costs[0].period: "0d" is not day, week, month, year or a positive duration such as 720h or 30d`}},
		{"period without subscription", ok(CostModel{Model: "per_request", PerRequest: price(1), Period: "month"}),
			[]string{`costs[0].period: not used by model "per_request"`}},
		{"hybrid period without subscription", ok(CostModel{Model: "hybrid", PerRequest: price(1), Period: "month"}),
			[]string{"costs[0].period: set without subscription"}},
		{"hybrid without prices", ok(CostModel{Model: "hybrid"}),
			[]string{`costs[0].model: "hybrid" needs at least one of per_request, per_gb, subscription`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := ValidateCostModels([]CostModel{c.m})
			require.Equal(t, c.want, errorLines(err))
			if c.want == nil {
				_, err := NewCostBook([]CostModel{c.m})
				require.NoError(t, err)
			}
		})
	}
}

// TestValidateCostModelsEveryProblem: every problem of every model is
// reported at once, overlaps naming both models.
func TestValidateCostModelsEveryProblem(t *testing.T) {
	models := []CostModel{
		{Source: "a", Model: "per_request", PerRequest: price(1), From: at("2026-01-01T00:00:00Z"), Until: atp("2026-03-01T00:00:00Z")},
		{Source: "b", Model: "per_request", PerRequest: price(1), From: at("2026-01-01T00:00:00Z")},
		{Source: "a", Model: "per_request", PerRequest: price(1), From: at("2026-02-01T00:00:00Z")},
		{Source: "", Model: "hybrid", Currency: "usd1"},
		{Source: "b", Model: "data_transfer", PerGB: price(2), From: at("2027-01-01T00:00:00Z")},
		// Not an overlap: it starts where costs[0] ends.
		{Source: "a", Model: "per_request", PerRequest: price(2), From: at("2026-03-01T00:00:00Z"), Until: atp("2026-04-01T00:00:00Z"),
			Currency: "EUR"},
	}
	err := ValidateCostModels(models)
	require.Equal(t, []string{
		"costs[3].source: required",
		`costs[3].currency: "usd1" is not an ISO 4217 currency code`,
		"costs[3].from: required",
		`costs[3].model: "hybrid" needs at least one of per_request, per_gb, subscription`,
		`costs[2].from: validity overlaps costs[0] of the same source "a" (from 2026-01-01T00:00:00Z, until 2026-03-01T00:00:00Z)`,
		`costs[5].from: validity overlaps costs[2] of the same source "a" (from 2026-02-01T00:00:00Z, until open)`,
		`costs[4].from: validity overlaps costs[1] of the same source "b" (from 2026-01-01T00:00:00Z, until open)`,
	}, errorLines(err))

	// An overlap with a model that is not the one just before.
	err = ValidateCostModels([]CostModel{
		{Source: "a", Model: "per_request", PerRequest: price(1), From: at("2026-01-01T00:00:00Z"), Until: atp("2026-12-01T00:00:00Z")},
		{Source: "a", Model: "per_request", PerRequest: price(1), From: at("2026-02-01T00:00:00Z"), Until: atp("2026-03-01T00:00:00Z")},
		{Source: "a", Model: "per_request", PerRequest: price(1), From: at("2026-06-01T00:00:00Z"), Until: atp("2026-07-01T00:00:00Z")},
		{Source: "a", Model: "per_request", PerRequest: price(1), From: at("2026-12-01T00:00:00Z")},
	})
	require.Equal(t, []string{
		`costs[1].from: validity overlaps costs[0] of the same source "a" (from 2026-01-01T00:00:00Z, until 2026-12-01T00:00:00Z)`,
		`costs[2].from: validity overlaps costs[0] of the same source "a" (from 2026-01-01T00:00:00Z, until 2026-12-01T00:00:00Z)`,
	}, errorLines(err))

	_, err = NewCostBook(models)
	require.ErrorContains(t, err, "costs[3].source: required")
	require.NoError(t, ValidateCostModels(nil))
}

func TestPeriods(t *testing.T) {
	for _, c := range []struct {
		period, label string
		secs          float64
	}{
		{"day", "day", 86400},
		{"week", "week", 604800},
		{"month", "month", 2592000},
		{"year", "year", 31536000},
		{"720h", "30d", 2592000},
		{"30d", "30d", 2592000},
		{"1w", "1w", 604800},
		{"90m", "1h30m", 5400},
	} {
		label, secs, err := parsePeriod(c.period)
		require.NoError(t, err, c.period)
		require.Equal(t, c.label, label, c.period)
		require.Equal(t, c.secs, secs, c.period)
		require.Equal(t, c.secs, CostModel{Period: c.period}.PeriodSeconds())
	}
	require.Zero(t, CostModel{}.PeriodSeconds())
	require.Zero(t, CostModel{Period: "Month"}.PeriodSeconds())
}

func TestDecodeCostModelsJSON(t *testing.T) {
	models, err := DecodeCostModelsJSON(strings.NewReader(`[
		{"source": "brightdata", "model": "hybrid", "currency": "eur", "from": "2026-01-01T00:00:00Z",
		 "until": "2026-02-01T00:00:00+01:00", "per_gb": 8.4, "subscription": 500, "period": "720h"},
		{"source": "free", "model": "per_request", "from": "2026-01-01T00:00:00Z", "per_request": 0, "until": null}
	]`))
	require.NoError(t, err)
	require.Equal(t, []CostModel{
		{Source: "brightdata", Model: "hybrid", Currency: "EUR", From: at("2026-01-01T00:00:00Z"),
			Until: atp("2026-02-01T00:00:00+01:00"), PerGB: price(8.4), Subscription: price(500), Period: "30d"},
		{Source: "free", Model: "per_request", Currency: "USD", From: at("2026-01-01T00:00:00Z"), PerRequest: price(0)},
	}, models)

	models, err = DecodeCostModelsJSON(strings.NewReader(" null "))
	require.NoError(t, err)
	require.Empty(t, models)

	for _, c := range []struct{ in, want string }{
		{`{"source": "x"}`, "costs: not a JSON array of cost models: json: cannot unmarshal object into Go value of type []json.RawMessage"},
		{`[`, "costs: not a JSON array of cost models: unexpected EOF"},
		{`[] []`, "costs: unexpected data after the JSON array"},
		{`[{"source": "x", "model": "per_request", "from": "2026-01-01T00:00:00Z", "per_request": 1, "per_gigabyte": 2}]`,
			`costs[0]: json: unknown field "per_gigabyte"`},
		{`[{"source": "x", "model": "per_request", "from": "2026-01-01T00:00:00Z", "per_request": "1"}]`,
			"costs[0].per_request: cannot decode JSON string as float64"},
		{`[{"source": "x", "model": "per_request", "from": "2026-01-01", "per_request": 1}]`,
			`costs[0].from: "2026-01-01" is not an RFC 3339 time`},
		{`[{"source": "x", "model": "per_request", "from": "2026-01-01T00:00:00Z", "until": 5, "per_request": 1}]`,
			"costs[0].until: 5 is not an RFC 3339 time string"},
		{`[{"source": "x", "model": "per_request", "from": "2026-01-01T00:00:00Z", "per_request": 1}, 7]`,
			"costs[1]: json: cannot unmarshal number into Go value of type struct"},
		{`[{"source": "x", "model": "per_request", "from": "2026-01-01T00:00:00Z", "per_request": 1},
		   {"source": "x", "model": "per_request", "from": "2026-02-01T00:00:00Z", "per_request": 1, "currency": "usd1"}]`,
			`costs[1].currency: "usd1" is not an ISO 4217 currency code` + "\n" +
				`costs[1].from: validity overlaps costs[0] of the same source "x" (from 2026-01-01T00:00:00Z, until open)`},
		{`[{"model": "per_request", "from": null, "per_request": 1}]`,
			"costs[0].source: required\ncosts[0].from: required"},
	} {
		_, err := DecodeCostModelsJSON(strings.NewReader(c.in))
		require.Error(t, err, c.in)
		require.True(t, strings.HasPrefix(err.Error(), c.want), "%s:\n got %s\nwant %s", c.in, err, c.want)
	}
}

// TestCostModelYAML: the config file's form, with the strict decoding the
// config loader uses.
func TestCostModelYAML(t *testing.T) {
	var cfg struct {
		Costs []CostModel `yaml:"costs"`
	}
	dec := yaml.NewDecoder(strings.NewReader(`
costs:
  - source: brightdata
    model: per_request
    currency: eur
    from: 2026-01-01T00:00:00Z
    until: 2026-07-01T00:00:00Z
    per_request: 0.0012
  - source: freeproxy-list
    model: per_request
    from: "2026-01-01T00:00:00Z"
    until: 2026-02-01
    per_request: 0
  - source: oxylabs
    model: hybrid
    from: 2026-01-01T00:00:00Z
    per_gb: 4
    subscription: 99
    period: month
`))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&cfg))
	require.NoError(t, ValidateCostModels(cfg.Costs))
	require.Equal(t, CostModel{Source: "brightdata", Model: "per_request", Currency: "eur", From: at("2026-01-01T00:00:00Z"),
		Until: atp("2026-07-01T00:00:00Z"), PerRequest: price(0.0012)}, cfg.Costs[0])
	require.Equal(t, price(0.0), cfg.Costs[1].PerRequest, "price 0 is present, not absent")
	require.Equal(t, at("2026-01-01T00:00:00Z"), cfg.Costs[1].From, "a quoted time decodes too")
	require.Equal(t, at("2026-02-01T00:00:00Z"), *cfg.Costs[1].Until, "a date is midnight UTC")

	dec = yaml.NewDecoder(strings.NewReader("costs:\n  - source: x\n    per_gigabyte: 1\n"))
	dec.KnownFields(true)
	require.ErrorContains(t, dec.Decode(&cfg), "field per_gigabyte not found")
}

func TestCostBookLookup(t *testing.T) {
	models := []CostModel{
		{Source: "b", Model: "per_request", PerRequest: price(3), From: at("2026-01-01T00:00:00Z")},
		{Source: "a", Model: "per_request", PerRequest: price(2), From: at("2026-02-01T00:00:00Z"), Until: atp("2026-03-01T00:00:00Z")},
		{Source: "a", Model: "per_request", PerRequest: price(1), From: at("2026-01-01T00:00:00Z"), Until: atp("2026-02-01T00:00:00Z")},
		// A gap in February-March, then sub-millisecond bounds.
		{Source: "a", Model: "per_request", PerRequest: price(4), From: at("2026-04-01T00:00:00.0005Z"), Until: atp("2026-05-01T00:00:00.0005Z")},
	}
	b, err := NewCostBook(models)
	require.NoError(t, err)
	ms := func(s string) int64 { return at(s).UnixMilli() }
	lookup := func(src, ts string) float64 {
		m := b.Lookup(src, ms(ts))
		if m == nil {
			return -1
		}
		return *m.PerRequest
	}
	for _, c := range []struct {
		src, ts string
		want    float64
	}{
		{"a", "2025-12-31T23:59:59.999Z", -1},
		{"a", "2026-01-01T00:00:00Z", 1},
		{"a", "2026-01-31T23:59:59.999Z", 1},
		{"a", "2026-02-01T00:00:00Z", 2},
		{"a", "2026-02-28T23:59:59.999Z", 2},
		{"a", "2026-03-01T00:00:00Z", -1},
		{"a", "2026-04-01T00:00:00Z", -1}, // before from by half a millisecond
		{"a", "2026-04-01T00:00:00.001Z", 4},
		{"a", "2026-05-01T00:00:00Z", 4}, // before until by half a millisecond
		{"a", "2026-05-01T00:00:00.001Z", -1},
		{"b", "2025-12-31T23:59:59.999Z", -1},
		{"b", "2030-01-01T00:00:00Z", 3},
		{"c", "2026-01-15T00:00:00Z", -1},
	} {
		require.Equal(t, c.want, lookup(c.src, c.ts), "%s at %s", c.src, c.ts)
	}
	require.Equal(t, "USD", b.Lookup("b", ms("2026-06-01T00:00:00Z")).Currency)

	got := b.Models()
	require.Len(t, got, 4)
	require.Equal(t, []float64{1, 2, 4, 3}, []float64{*got[0].PerRequest, *got[1].PerRequest, *got[2].PerRequest, *got[3].PerRequest},
		"sorted by source, then from")
	*got[0].PerRequest, *got[0].Until = 100, time.Time{}
	require.Equal(t, 1.0, *b.Models()[0].PerRequest, "Models returns a copy")
	require.Equal(t, at("2026-02-01T00:00:00Z"), *b.Models()[0].Until)
	*models[2].PerRequest = 100
	require.Equal(t, 1.0, lookup("a", "2026-01-01T00:00:00Z"), "the book copies the models it is given")

	var nilBook *CostBook
	require.Nil(t, nilBook.Lookup("a", 0))
	require.Empty(t, nilBook.Models())
	require.NotNil(t, nilBook.Models(), "an empty list, as JSON [] rather than null")
	require.NoError(t, nilBook.SubscriptionSamples(0, func(labels.Labels, float64) error { panic("no models") }))
}

func TestSubscriptionSamples(t *testing.T) {
	b, err := NewCostBook([]CostModel{
		{Source: "s1", Model: "subscription", Subscription: price(300), Period: "month", Currency: "eur",
			From: at("2026-01-01T00:00:00Z"), Until: atp("2026-02-01T00:00:00Z")},
		{Source: "s1", Model: "subscription", Subscription: price(3600), Period: "8760h",
			From: at("2026-02-01T00:00:00Z")},
		{Source: "s0", Model: "hybrid", Subscription: price(10), Period: "day", PerRequest: price(0.1),
			From: at("2026-01-15T00:00:00Z")},
		{Source: "s2", Model: "per_request", PerRequest: price(0.1), From: at("2026-01-01T00:00:00Z")},
	})
	require.NoError(t, err)
	collect := func(ts string) map[string]float64 {
		got := map[string]float64{}
		require.NoError(t, b.SubscriptionSamples(at(ts).UnixMilli(), func(ls labels.Labels, v float64) error {
			got[ls.String()] = v
			return nil
		}))
		return got
	}
	require.Empty(t, collect("2025-12-01T00:00:00Z"))
	require.Equal(t, map[string]float64{
		`{__name__="proxy_subscription_cost", currency="EUR", period="month", source="s1"}`:           300,
		`{__name__="proxy_subscription_period_seconds", currency="EUR", period="month", source="s1"}`: 2592000,
	}, collect("2026-01-10T00:00:00Z"))
	require.Equal(t, map[string]float64{
		`{__name__="proxy_subscription_cost", currency="USD", period="day", source="s0"}`:           10,
		`{__name__="proxy_subscription_period_seconds", currency="USD", period="day", source="s0"}`: 86400,
		`{__name__="proxy_subscription_cost", currency="USD", period="1y", source="s1"}`:            3600,
		`{__name__="proxy_subscription_period_seconds", currency="USD", period="1y", source="s1"}`:  31536000,
	}, collect("2026-02-01T00:00:00Z"))

	boom := errors.New("boom")
	calls := 0
	err = b.SubscriptionSamples(at("2026-02-01T00:00:00Z").UnixMilli(), func(labels.Labels, float64) error { calls++; return boom })
	require.ErrorIs(t, err, boom)
	require.Equal(t, 1, calls)
}

// TestCostIncrements prices a cut's increments and checks them against the
// bill computed from the records themselves.
func TestCostIncrements(t *testing.T) {
	hour := int64(time.Hour)
	t0 := base                              // an interval end
	change := time.Unix(0, t0+2*hour).UTC() // a price change, on an interval end
	b, err := NewCostBook([]CostModel{
		{Source: "pr", Model: "per_request", PerRequest: price(0.002), From: time.Unix(0, t0-hour).UTC(), Until: &change},
		{Source: "pr", Model: "per_request", PerRequest: price(0.003), From: change},
		{Source: "dt", Model: "data_transfer", PerGB: price(5), Currency: "EUR", From: time.Unix(0, 0).UTC()},
		{Source: "hy", Model: "hybrid", PerRequest: price(0.01), PerGB: price(2), Subscription: price(100), Period: "month",
			From: time.Unix(0, 0).UTC()},
		{Source: "sub", Model: "subscription", Subscription: price(100), Period: "month", From: time.Unix(0, 0).UTC()},
		{Source: "free", Model: "per_request", PerRequest: price(0), From: time.Unix(0, 0).UTC()},
	})
	require.NoError(t, err)

	a := NewAggregator(AggregationConfig{MaxSeriesPerFamily: 12}, time.Hour, nil)
	d := NewDict(0)
	type bill struct {
		src, app, comp string
		t              int64
	}
	want := map[bill]float64{}
	var recs []Record
	apps := []string{"crawler", "", "pricer"}
	for i := range 400 {
		src := []string{"pr", "dt", "hy", "sub", "free", "none"}[i%6]
		r := reqRecord(t0-hour+int64(i)*int64(30*time.Second)+1, src, "x.com", i%5 != 0, 0.1*float64(i%7), 1+float64(i%3)/2)
		r.Application = apps[i%len(apps)]
		r.BytesSent, r.BytesReceived = uint64(1000*i), uint64(12345*(i%11))
		recs = append(recs, r)
	}
	// Past the series limit of a family, spans go to its overflow series,
	// which has no source and costs nothing.
	for i := range 20 {
		r := reqRecord(t0, "pr", "x.com", true, 0.2, 1)
		r.Application = "extra" + string(rune('a'+i))
		recs = append(recs, r)
	}
	applyOne(a, d, recs...)
	refs := make([]Refs, len(recs))
	d.Intern(recs, refs, nil)
	overflows := func(f Family, i int) bool {
		return int64(a.series(f, keyFor(f, &recs[i], &refs[i]), false)) == a.fams[f].overflow
	}
	for i := range recs {
		r := &recs[i]
		end := a.IntervalEnd(r.EndTime)
		m := b.Lookup(r.Source, end/1e6)
		if m == nil {
			continue
		}
		if m.PerRequest != nil && !overflows(FamilyDuration, i) {
			want[bill{r.Source, r.Application, "request", end / 1e6}] += r.Weight * *m.PerRequest
		}
		if m.PerGB != nil && !overflows(FamilyTransfer, i) {
			want[bill{r.Source, r.Application, "transfer", end / 1e6}] += r.Weight * float64(r.BytesSent+r.BytesReceived) / 1e9 * *m.PerGB
		}
	}
	require.NotZero(t, a.OverflowSpans(FamilyDuration), "the test must reach the overflow series")
	require.NotZero(t, a.OverflowSpans(FamilyTransfer))

	c := a.Cut()
	got := map[bill]float64{}
	currencies := map[string]string{}
	seen := map[string]bool{}
	allocated := map[bill]float64{}
	require.NoError(t, c.CostIncrements(d, b, func(ls labels.Labels, tMs int64, v float64) error {
		key := bill{ls.Get("source"), ls.Get("application"), ls.Get("component"), tMs}
		if ls.Get("__name__") == AllocatedCostMetric {
			require.Equal(t, CostComponentUsage, key.comp)
			key.comp = ""
			require.NotContains(t, allocated, key, "one call per series and time")
			allocated[key] = v
			return nil
		}
		require.Equal(t, CostMetric, ls.Get("__name__"))
		require.False(t, seen[ls.String()+time.UnixMilli(tMs).String()], "one call per series and time")
		seen[ls.String()+time.UnixMilli(tMs).String()] = true
		currencies[key.src] = ls.Get("currency")
		if key.app == "" {
			require.False(t, ls.Has("application"), "an empty application is left out")
		}
		got[key] += v
		return nil
	}))
	require.Len(t, got, len(want))
	usage := map[bill]float64{}
	for k, v := range want {
		require.InDelta(t, v, got[k], 1e-12*math.Max(1, v), "%+v", k)
		k.comp = ""
		usage[k] += v
	}
	// The usage component of the allocated counter is each application's
	// request and transfer cost together.
	require.Len(t, allocated, len(usage))
	for k, v := range usage {
		require.InDelta(t, v, allocated[k], 1e-12*math.Max(1, v), "%+v", k)
	}
	require.Equal(t, map[string]string{"pr": "USD", "dt": "EUR", "hy": "USD", "free": "USD"}, currencies,
		"no series for the subscription-only source nor for the source without a model")
	// Both prices of pr were used: the change is at an interval end, which
	// takes the new price.
	var before, after float64
	for k, v := range got {
		if k.src == "pr" && k.t < change.UnixMilli() {
			before += v
		} else if k.src == "pr" {
			after += v
		}
	}
	require.NotZero(t, before)
	require.NotZero(t, after)

	// No book, an empty book: nothing.
	never := func(labels.Labels, int64, float64) error { panic("no cost without models") }
	require.NoError(t, c.CostIncrements(d, nil, never))
	empty, err := NewCostBook(nil)
	require.NoError(t, err)
	require.NoError(t, c.CostIncrements(d, empty, never))

	// The callback's error stops the walk, for either component.
	boom := errors.New("boom")
	for _, comp := range []string{"request", "transfer"} {
		err = c.CostIncrements(d, b, func(ls labels.Labels, _ int64, _ float64) error {
			if ls.Get("component") == comp {
				return boom
			}
			return nil
		})
		require.ErrorIs(t, err, boom, comp)
	}
}

func TestCostsConcurrent(t *testing.T) {
	var c Costs
	require.Nil(t, c.Book())
	books := make([]*CostBook, 4)
	for i := range books {
		var err error
		books[i], err = NewCostBook([]CostModel{{Source: "s", Model: "per_request", PerRequest: price(float64(i)), From: at("2026-01-01T00:00:00Z")}})
		require.NoError(t, err)
	}
	var wg sync.WaitGroup
	for i := range books {
		wg.Go(func() {
			for range 200 {
				c.Set(books[i])
			}
		})
		wg.Go(func() {
			for range 200 {
				if b := c.Book(); b != nil {
					m := b.Lookup("s", at("2026-06-01T00:00:00Z").UnixMilli())
					require.NotNil(t, m)
					require.Less(t, *m.PerRequest, 4.0)
				}
			}
		})
	}
	wg.Wait()
	require.NotNil(t, c.Book())
	c.Set(nil)
	require.Nil(t, c.Book())
}
