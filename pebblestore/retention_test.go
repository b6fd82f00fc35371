package pebblestore_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/internal/race"
	"github.com/proxylens/proxylens/internal/traffic"
	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
)

// store is a loaded store fed as the pipeline feeds it.
type store struct {
	db    *pebblestore.DB
	dict  *otelanalytics.Dict
	agg   *otelanalytics.Aggregator
	seq   uint64
	costs *otelanalytics.Costs // prices the cuts if set
}

func openStore(t *testing.T, dir string) *store {
	t.Helper()
	db, err := pebblestore.Open(dir, pebblestore.Options{Series: pebblestore.SeriesOptions{IncrementInterval: 15 * time.Second}})
	require.NoError(t, err)
	st := &store{db: db, dict: otelanalytics.NewDict(0), agg: otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, 15*time.Second, nil)}
	st.seq, err = otelanalytics.Restore(db, st.dict, st.agg)
	require.NoError(t, err)
	return st
}

// ingest commits records (all kept) as one batch and cuts.
func (st *store) ingest(t *testing.T, recs []otelanalytics.Record) {
	t.Helper()
	refs := make([]otelanalytics.Refs, len(recs))
	pending := st.dict.Intern(recs, refs, nil)
	keep := make([]bool, len(recs))
	for i := range keep {
		keep[i] = true
	}
	batch := &otelanalytics.Batch{Seq: st.seq, Records: recs, Refs: refs, Kept: keep, Probability: 1, Dict: pending}
	require.NoError(t, st.db.CommitBatch(batch.AppendEntry(nil), nil))
	st.seq++
	st.agg.Apply(recs, refs)
	st.dict.MarkDurable(pending)
	st.cut(t)
}

// cut seals the journal and writes a cut, as the pipeline's Flush does.
func (st *store) cut(t *testing.T) {
	t.Helper()
	sealed, err := st.db.Seal()
	require.NoError(t, err)
	var book *otelanalytics.CostBook
	if st.costs != nil {
		book = st.costs.Book()
	}
	require.NoError(t, st.db.WriteCut(sealed, otelanalytics.NewStoreCut(st.agg.Cut(), st.dict, book, st.seq-1)))
}

func (st *store) countRecords(t *testing.T, from, to time.Time) int {
	t.Helper()
	n := 0
	require.NoError(t, otelanalytics.ScanRecords(context.Background(), st.db, st.dict, otelanalytics.RecordFilter{}, func(r *otelanalytics.Record) error {
		if end := time.Unix(0, r.EndTime); !end.Before(from) && end.Before(to) {
			n++
		}
		return nil
	}))
	return n
}

// TestRetentionEnforcement: after a run of the policy nothing older than it
// is queryable or scannable, the daily rollup still answers every day it
// keeps exactly as before, the hourly summaries every hour they keep, the
// disk space comes back, and a compliance hold stops every deletion.
func TestRetentionEnforcement(t *testing.T) {
	t.Parallel() // among the slowest under -race: CI runs them side by side
	dir := t.TempDir()
	st := openStore(t, dir)
	const day = 24 * time.Hour
	now := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	start := now.Add(-40 * day)
	g := traffic.NewGenerator(traffic.NewModel(5), 7)
	// Forty days of traffic, a span every 10 minutes (40 under -race,
	// where Pebble's invariant checks make each read twenty times
	// dearer), cut every day.
	every := race.Pick(10*time.Minute, 40*time.Minute)
	perDay := int(day / every)
	var recs []otelanalytics.Record
	for ts := start; ts.Before(now); ts = ts.Add(every) {
		r := g.Next(ts)
		recs = append(recs, r.Record())
		if len(recs) == perDay {
			st.ingest(t, recs)
			recs = recs[:0]
		}
	}
	st.ingest(t, recs)
	// A sample series, as remote write stores it: a gauge every 10 minutes.
	s := st.db.Series()
	app := s.Appender(context.Background())
	gauge := labels.FromStrings("__name__", "queue_depth", "job", "a")
	for ts := start; ts.Before(now); ts = ts.Add(10 * time.Minute) {
		_, err := app.Append(0, gauge, ts.UnixMilli(), 1)
		require.NoError(t, err)
	}
	require.NoError(t, app.Commit())

	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 50_000_000, Timeout: 30 * time.Minute, Parser: parser.NewParser(parser.Options{})})
	ms := func(t time.Time) int64 { return t.UnixMilli() }
	daily := func() promql.Matrix {
		return runQuery(t, engine, s, context.Background(), `sum by (source) (increase(proxy_requests_total[1d]))`, ms(start.Add(day)), ms(now), day)
	}
	hourly := func(from time.Time) promql.Matrix {
		return runQuery(t, engine, s, context.Background(), `sum by (source) (increase(proxy_requests_total[1h]))`, ms(from), ms(now), time.Hour)
	}
	fine := func(from, to time.Time) promql.Matrix {
		return runQuery(t, engine, s, s.WithRawData(context.Background()), `sum(rate(proxy_requests_total[5m]))`, ms(from), ms(to), time.Minute)
	}
	gauges := func() promql.Matrix {
		return runQuery(t, engine, s, context.Background(), `queue_depth`, ms(start), ms(now), time.Hour)
	}
	// A window that starts past the hourly rollup's 30 days, off the day
	// grid: once the windows there are gone, the daily rollup answers its
	// start, a day counted at its end.
	long := func() float64 {
		m := runQuery(t, engine, s, context.Background(), `sum(increase(proxy_requests_total[35d]))`, 0, ms(now.Add(-12*time.Hour)), 0)
		require.Len(t, m, 1)
		return m[0].Floats[0].F
	}
	dailyBefore, hourlyBefore, longBefore := daily(), hourly(now.Add(-29*day)), long()
	recentBefore := fine(now.Add(-6*day), now.Add(-5*day))
	require.Len(t, dailyBefore, 20)
	require.Len(t, gauges(), 1)
	require.Len(t, gauges()[0].Floats, 40*24)
	require.NotZero(t, st.countRecords(t, start, now.Add(-8*day)))

	// Under a compliance hold nothing goes.
	policy := pebblestore.DefaultRetention()
	hold := now.Add(time.Hour)
	policy.ImmutableUntil = &hold
	e, err := st.db.EnforceRetention(context.Background(), policy, now, true)
	require.NoError(t, err)
	require.True(t, e.Held)
	require.NotZero(t, st.countRecords(t, start, now.Add(-8*day)))
	require.Len(t, gauges()[0].Floats, 40*24)

	policy.ImmutableUntil = nil
	// A run cut short (as by a crash, here a cancelled context after its
	// first step) leaves a store that answers as before, and the next run
	// finishes the job.
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = st.db.EnforceRetention(cancelled, policy, now, true)
	require.ErrorIs(t, err, context.Canceled)
	require.Zero(t, st.countRecords(t, start, now.Add(-7*day)))
	requireSameResults(t, dailyBefore, daily(), 1e-9, "daily, after a cut-short run")
	require.NoError(t, st.db.Close())
	st = openStore(t, dir)
	s = st.db.Series()
	requireSameResults(t, dailyBefore, daily(), 1e-9, "daily, after a cut-short run and a restart")

	e, err = st.db.EnforceRetention(context.Background(), policy, now, true)
	require.NoError(t, err)
	require.False(t, e.Held)
	t.Logf("enforcement: %+v", e)
	require.Less(t, e.BytesAfter, e.BytesBefore, "the disk space comes back")

	// Records: nothing older than 7 days; the rest all there.
	require.Zero(t, st.countRecords(t, start, now.Add(-7*day)))
	require.Equal(t, 7*perDay, st.countRecords(t, now.Add(-7*day), now))
	// The sample series keeps its last 7 days.
	got := gauges()
	require.Len(t, got, 1)
	require.Equal(t, ms(now.Add(-7*day)), got[0].Floats[0].T)
	// The daily rollup answers as before, every day; the hourly
	// summaries every hour of their 30 days.
	requireSameResults(t, dailyBefore, daily(), 1e-9, "daily")
	requireSameResults(t, hourlyBefore, hourly(now.Add(-29*day)), 1e-9, "hourly")
	// Raw data within its 7 days answers as before.
	requireSameResults(t, recentBefore, fine(now.Add(-6*day), now.Add(-5*day)), 1e-9, "raw")

	// Twice is the same as once, and a restart changes nothing.
	_, err = st.db.EnforceRetention(context.Background(), policy, now, true)
	require.NoError(t, err)
	require.NoError(t, st.db.Close())
	st = openStore(t, dir)
	defer func() { require.NoError(t, st.db.Close()) }()
	s = st.db.Series()
	_, err = st.db.EnforceRetention(context.Background(), policy, now, true)
	require.NoError(t, err)
	requireSameResults(t, dailyBefore, daily(), 1e-9, "daily after restart")
	requireSameResults(t, hourlyBefore, hourly(now.Add(-29*day)), 1e-9, "hourly after restart")
	require.InDelta(t, longBefore, long(), float64(perDay), "35 days: within the spans of a day (a day's spans count at its end)")

	// Spans that arrive after the run, late ones included, carry on the
	// counters: the days before are unchanged.
	late, fresh := g.Next(now.Add(-20*day)), g.Next(now.Add(time.Minute))
	st.ingest(t, []otelanalytics.Record{late.Record(), fresh.Record()})
	after := runQuery(t, engine, s, context.Background(), `sum(increase(proxy_requests_total[1d]))`, ms(now.Add(-10*day)), ms(now.Add(day)), day)
	require.Len(t, after, 1)
	before := 0.0
	for _, sr := range dailyBefore {
		for _, p := range sr.Floats {
			if p.T == ms(now.Add(-10*day)) {
				before += p.F
			}
		}
	}
	require.InDelta(t, before, after[0].Floats[0].F, 1e-9)
	require.InDelta(t, 1, after[0].Floats[len(after[0].Floats)-1].F, 1e-6) // the engine extrapolates over the first millisecond
}

// TestRetentionPolicyRules: validation, and the compliance hold on changes.
func TestRetentionPolicyRules(t *testing.T) {
	p := pebblestore.DefaultRetention()
	require.NoError(t, p.Validate())
	bad := p
	bad.RawSeriesDays, bad.AuditDays, bad.HourlyDays = 0, -1, 40
	bad.DailyDays = 30
	require.EqualError(t, bad.Validate(), "retention.raw_series_days: must be from 1 to 36500 days, got 0\nretention.audit_days: must be from 1 to 36500 days, got -1")
	bad = p
	bad.DailyDays = 20
	require.EqualError(t, bad.Validate(), "retention.daily_days: must be at least hourly_days (30), got 20")
	bad = p
	bad.RawRecordsDays = 31
	require.EqualError(t, bad.Validate(), "retention.hourly_days: must be at least raw_records_days (31), got 30")

	dir := t.TempDir()
	st := openStore(t, dir)
	defer func() { require.NoError(t, st.db.Close()) }()
	now := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	got, err := st.db.Retention()
	require.NoError(t, err)
	require.Equal(t, p, got)

	hold := now.Add(30 * 24 * time.Hour)
	held := p
	held.RawRecordsDays, held.ImmutableUntil = 14, &hold
	require.NoError(t, st.db.SetRetention(held, pebblestore.AuditEntry{Time: now, User: "admin"}))
	var he *pebblestore.HoldError
	for _, tc := range []struct {
		change func(*pebblestore.RetentionPolicy)
		err    string
	}{
		{func(p *pebblestore.RetentionPolicy) { p.RawRecordsDays = 7 }, "retention.raw_records_days: the compliance hold until 2026-12-29T00:00:00Z forbids shortening it (14 → 7 days)"},
		{func(p *pebblestore.RetentionPolicy) { p.ImmutableUntil = nil }, "retention.immutable_until: the compliance hold until 2026-12-29T00:00:00Z cannot be moved earlier or removed"},
		{func(p *pebblestore.RetentionPolicy) { e := hold.Add(-time.Hour); p.ImmutableUntil = &e }, "retention.immutable_until: the compliance hold until 2026-12-29T00:00:00Z cannot be moved earlier or removed"},
	} {
		p := held
		tc.change(&p)
		err := st.db.SetRetention(p, pebblestore.AuditEntry{Time: now, User: "mallory"})
		require.ErrorAs(t, err, &he)
		require.EqualError(t, err, tc.err)
	}
	// Longer periods and a later hold are fine; after the hold, anything valid.
	longer := held
	longer.DailyDays, longer.ImmutableUntil = 400, new(hold.Add(time.Hour))
	require.NoError(t, st.db.SetRetention(longer, pebblestore.AuditEntry{Time: now, User: "admin"}))
	require.NoError(t, st.db.SetRetention(p, pebblestore.AuditEntry{Time: hold.Add(2 * time.Hour), User: "admin"}))
	got, err = st.db.Retention()
	require.NoError(t, err)
	require.Equal(t, p, got)
	// Every change and every refusal is in the audit log.
	entries, err := st.db.AuditEntries(pebblestore.AuditFilter{From: now.Add(-time.Hour), To: hold.Add(3 * time.Hour)})
	require.NoError(t, err)
	require.Len(t, entries, 6)
	require.Equal(t, "mallory", entries[1].User)
	require.False(t, entries[1].Success)
	require.Contains(t, entries[1].Error, "forbids shortening")
	require.True(t, entries[5].Success)
}
