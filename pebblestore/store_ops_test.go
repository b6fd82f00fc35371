package pebblestore_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/internal/traffic"
	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
)

// The store implements what the ingest pipeline asks of it, though neither
// package imports the other (see otelanalytics.StoreCut).
var (
	_ otelanalytics.Store         = (*pebblestore.DB)(nil)
	_ otelanalytics.Loader        = (*pebblestore.DB)(nil)
	_ otelanalytics.RecordScanner = (*pebblestore.DB)(nil)
)

// TestCostsSnapshotAndAudit: cuts are priced with the cost models in force
// (cost counters and subscription gauges), the models and the audit log
// are stored, and a snapshot taken between cuts, with batches only in the
// journal, opens as a store holding all of it.
func TestCostsSnapshotAndAudit(t *testing.T) {
	dir := t.TempDir()
	var costs otelanalytics.Costs
	models := []otelanalytics.CostModel{{
		Source: "brightdata", Model: "hybrid", Currency: "USD", From: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		PerRequest: new(0.01), PerGB: new(2.0), Subscription: new(100.0), Period: "month",
	}}
	book, err := otelanalytics.NewCostBook(models)
	require.NoError(t, err)
	costs.Set(book)
	db, err := pebblestore.Open(dir, pebblestore.Options{})
	require.NoError(t, err)
	st := &store{db: db, dict: otelanalytics.NewDict(0), agg: otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, 15*time.Second, nil), costs: &costs}
	st.seq, err = otelanalytics.Restore(db, st.dict, st.agg)
	require.NoError(t, err)
	defer func() { require.NoError(t, st.db.Close()) }()

	now := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	g := traffic.NewGenerator(traffic.NewModel(5), 3)
	var recs []otelanalytics.Record
	wantUSD := 0.0
	for i := range 400 {
		req := g.Next(now.Add(-time.Duration(i) * 7 * time.Second))
		r := req.Record()
		r.Source = "brightdata"
		recs = append(recs, r)
		wantUSD += 0.01 + float64(r.BytesSent+r.BytesReceived)/1e9*2
	}
	st.ingest(t, recs)

	stored, err := db.CostModels()
	require.NoError(t, err)
	require.Empty(t, stored)
	v, err := json.Marshal(book.Models())
	require.NoError(t, err)
	require.NoError(t, db.SetCostModels(v, pebblestore.AuditEntry{Time: now, User: "admin", ClientIP: "127.0.0.1"}))
	stored, err = db.CostModels()
	require.NoError(t, err)
	require.JSONEq(t, string(v), string(stored))
	// The sampling settings are kept the same way, each in its own key.
	stored, err = db.Sampling()
	require.NoError(t, err)
	require.Empty(t, stored)
	require.NoError(t, db.SetSampling([]byte(`{"floor":0.5}`), pebblestore.AuditEntry{Time: now, User: "admin"}))
	stored, err = db.Sampling()
	require.NoError(t, err)
	require.JSONEq(t, `{"floor":0.5}`, string(stored))
	stored, err = db.RetiredSources()
	require.NoError(t, err)
	require.Empty(t, stored)
	require.NoError(t, db.SetRetiredSources([]byte(`[{"source":"old"}]`), pebblestore.AuditEntry{Time: now, User: "admin"}))
	stored, err = db.RetiredSources()
	require.NoError(t, err)
	require.JSONEq(t, `[{"source":"old"}]`, string(stored))
	audited, err := db.AuditEntries(pebblestore.AuditFilter{Actions: []string{"costs.update", "sampling.update", "sources.retire"}})
	require.NoError(t, err)
	require.Len(t, audited, 3)
	require.Equal(t, []string{"costs.update", "sampling.update", "sources.retire"}, []string{audited[0].Action, audited[1].Action, audited[2].Action})
	require.Equal(t, `{"floor":0.5}`, audited[1].Detail)

	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1e7, Timeout: 30 * time.Minute, Parser: parser.NewParser(parser.Options{})})
	cost := func(s *pebblestore.SeriesStore) float64 {
		m := runQuery(t, engine, s, context.Background(), `sum(increase(proxy_cost_total[2h]))`, 0, now.Add(time.Hour).UnixMilli(), 0)
		require.Len(t, m, 1)
		return m[0].Floats[0].F
	}
	require.InEpsilon(t, wantUSD, cost(db.Series()), 1e-6)
	sub := runQuery(t, engine, db.Series(), context.Background(), `proxy_subscription_cost`, 0, now.UnixMilli(), 0)
	require.Len(t, sub, 1)
	require.Equal(t, 100.0, sub[0].Floats[0].F)

	// A batch acknowledged but not cut, then a snapshot.
	refs := make([]otelanalytics.Refs, 1)
	lateReq := g.Next(now.Add(-time.Minute))
	late := []otelanalytics.Record{lateReq.Record()}
	late[0].Source = "brightdata"
	pending := st.dict.Intern(late, refs, nil)
	batch := &otelanalytics.Batch{Seq: st.seq, Records: late, Refs: refs, Kept: []bool{true}, Probability: 1, Dict: pending}
	require.NoError(t, db.CommitBatch(batch.AppendEntry(nil), nil))
	copyDir := filepath.Join(t.TempDir(), "copy")
	require.NoError(t, db.Snapshot(context.Background(), copyDir))

	cp, err := pebblestore.Open(copyDir, pebblestore.Options{})
	require.NoError(t, err)
	defer cp.Close()
	cst := &store{db: cp, dict: otelanalytics.NewDict(0), agg: otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, 15*time.Second, nil), costs: &costs}
	cst.seq, err = otelanalytics.Restore(cp, cst.dict, cst.agg)
	require.NoError(t, err)
	require.True(t, cp.Replayed())
	cst.cut(t) // the replayed batch goes to the records and series at the next cut
	require.Equal(t, 401, cst.countRecords(t, now.Add(-time.Hour), now.Add(time.Hour)))
	stored2, err := cp.CostModels()
	require.NoError(t, err)
	var models2 []otelanalytics.CostModel
	require.NoError(t, json.Unmarshal(stored2, &models2))
	require.Len(t, models2, 1)
	entries, err := cp.AuditEntries(pebblestore.AuditFilter{From: now.Add(-time.Hour), To: now.Add(time.Hour)})
	require.NoError(t, err)
	require.Len(t, entries, 3, "the snapshot holds every change")
	require.Equal(t, "costs.update", entries[0].Action)
	require.Equal(t, "127.0.0.1", entries[0].ClientIP)
	sampling, err := cp.Sampling()
	require.NoError(t, err)
	require.JSONEq(t, `{"floor":0.5}`, string(sampling))
	retired, err := cp.RetiredSources()
	require.NoError(t, err)
	require.JSONEq(t, `[{"source":"old"}]`, string(retired))
	wantUSD += 0.01 + float64(late[0].BytesSent+late[0].BytesReceived)/1e9*2
	require.InEpsilon(t, wantUSD, cost(cp.Series()), 1e-6)
}

// TestRetentionWithoutSummaries: at a flush interval of a minute or more
// the windows have no summaries, and the raw windows stay until the hourly
// cut-off, as they are the finest data there is.
func TestRetentionWithoutSummaries(t *testing.T) {
	db, err := pebblestore.Open(t.TempDir(), pebblestore.Options{Series: pebblestore.SeriesOptions{IncrementInterval: time.Minute}})
	require.NoError(t, err)
	defer db.Close()
	s := db.Series()
	now := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	ls := labels.FromStrings("__name__", "x_total")
	require.NoError(t, s.AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
		for ts := now.Add(-20 * 24 * time.Hour); ts.Before(now); ts = ts.Add(time.Hour) {
			if err := add(ls, ts.UnixMilli(), 1); err != nil {
				return err
			}
		}
		return nil
	}))
	res, err := s.Rollup(context.Background(), 0, now.UnixMilli())
	require.NoError(t, err)
	require.Zero(t, res.Summarized)
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1e7, Timeout: 30 * time.Minute, Parser: parser.NewParser(parser.Options{})})
	q := func() float64 {
		m := runQuery(t, engine, s, context.Background(), `increase(x_total[10d])`, 0, now.UnixMilli(), 0)
		require.Len(t, m, 1)
		return m[0].Floats[0].F
	}
	before := q()
	_, err = db.EnforceRetention(context.Background(), pebblestore.DefaultRetention(), now, false)
	require.NoError(t, err)
	require.InDelta(t, before, q(), 1e-6, "10 days of raw windows kept: the hourly cut-off is 30 days")
	samples, rollups, err := db.SeriesBytes()
	require.NoError(t, err)
	require.Positive(t, samples)
	require.Positive(t, rollups, "the daily rollup")
}
