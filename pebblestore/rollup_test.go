package pebblestore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/pebblestore"
)

// TestRollupsMatchRaw: queries whose window boundaries fall on the hour or
// the day read the hourly summaries and the daily rollup, and answer as
// the raw increments do (the series iterator over the raw windows, and the
// raw read forced with WithRawData), with late data that moves the bases
// of later days and a restart in between.
func TestRollupsMatchRaw(t *testing.T) {
	dir := t.TempDir()
	open := func() (*pebblestore.DB, *pebblestore.SeriesStore) {
		st := openStore(t, dir)
		return st.db, st.db.Series()
	}
	db, s := open()
	const day = int64(24 * 3600 * 1000)
	end := int64(1_800_000_000_000) / day * day
	start := end - 9*day + 5*3600*1000 // not on a day boundary
	rnd := rand.New(rand.NewPCG(3, 4))
	var series []labels.Labels
	for i := range 6 {
		series = append(series, labels.FromStrings("__name__", "x_total", "g", fmt.Sprint(i%2), "i", fmt.Sprint(i)))
	}
	type inc struct {
		s int
		t int64
		v float64
	}
	write := func(batch []inc) {
		require.NoError(t, s.AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
			for _, x := range batch {
				if err := add(series[x.s], x.t, x.v); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	var late []inc
	restarted := false
	for t0 := start; t0 < end; t0 += 3600 * 1000 {
		var batch []inc
		// Increments on the 15 s grid, midnight included, some exactly
		// on hour and day boundaries.
		for tt := t0 + 15000; tt <= t0+3600*1000; tt += 15000 * int64(1+rnd.IntN(12)) {
			for si := range series {
				if rnd.IntN(2) == 0 {
					x := inc{si, tt, float64(1 + rnd.IntN(9))}
					if rnd.IntN(20) == 0 {
						late = append(late, x)
					} else {
						batch = append(batch, x)
					}
				}
			}
		}
		write(batch)
		if !restarted && t0 > start+4*day {
			require.NoError(t, db.Close())
			db, s = open()
			restarted = true
		}
	}
	rnd.Shuffle(len(late), func(i, j int) { late[i], late[j] = late[j], late[i] })
	write(late)
	defer db.Close()

	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 50_000_000, Timeout: 30 * time.Minute, Parser: parser.NewParser(parser.Options{}), EnableAtModifier: true})
	m := pebblestore.SumPushdownMatcher(false, []string{"g"})
	marker := fmt.Sprintf("%s=%q", m.Name, m.Value)
	checked := 0
	for _, tc := range []struct {
		q        string
		from, to int64
		step     time.Duration
	}{
		{`increase(x_total[1d])`, end - 10*day, end + day, 24 * time.Hour},                       // daily rollup
		{`sum by (g) (increase(x_total{` + marker + `}[1d]))`, end - 9*day, end, 24 * time.Hour}, // daily rollup, summed
		{`increase(x_total[3d])`, end - 7*day, end, 24 * time.Hour},                              // daily, windows longer than a step
		{`increase(x_total[1d])`, end - 9*day + 3600*1000, end, 24 * time.Hour},                  // off the day grid: hourly
		{`rate(x_total[1h])`, start, end, time.Hour},                                             // hourly summaries
		{`sum by (g) (rate(x_total{` + marker + `}[2h]))`, start, end, time.Hour},                // hourly, summed
		{`increase(x_total[7d])`, 0, end, 0},                                                     // instant at midnight
		{`increase(x_total[9d])`, 0, end, 0},                                                     // instant, a seek a bound
		{`sum by (g) (increase(x_total{` + marker + `}[12d]))`, 0, end + day, 0},                 // instant, summed, past the data
		{`increase(x_total[1d] offset 1d)`, 0, end - day, 0},                                     // instant, offset
		{`rate(x_total[5m])`, start + 4*day, start + 5*day, 7 * time.Minute},                     // raw
	} {
		want := runQuery(t, engine, s, pebblestore.IteratorOnly(context.Background()), tc.q, tc.from, tc.to, tc.step)
		got := runQuery(t, engine, s, context.Background(), tc.q, tc.from, tc.to, tc.step)
		raw := runQuery(t, engine, s, s.WithRawData(context.Background()), tc.q, tc.from, tc.to, tc.step)
		require.NotEmpty(t, want, tc.q)
		checked += requireSameResults(t, want, got, 1e-9, tc.q)
		requireSameResults(t, want, raw, 1e-9, tc.q+" (raw)")
	}
	require.Greater(t, checked, 500)
}
