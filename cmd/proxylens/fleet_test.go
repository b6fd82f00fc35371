package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/proxylens/proxylens/internal/upstreamtest"
)

// upstream is an engine the fleet's answers are read from.
type upstream struct{ name, root string }

// TestFleetSeveralInstances: two proxylens instances (external label
// proxylens_instance a and b), the spans split between them, both
// remote-writing into VictoriaMetrics and into a Thanos Receive hashring
// of two (through one receiver, which forwards), read through Thanos
// Query. Both receivers are stopped for a minute while spans keep being
// acknowledged, and instance b is killed with SIGKILL in that minute and
// restarted on its data. Then sum(proxy_requests_total) upstream equals
// the acknowledged spans exactly, per instance and fleet-wide, and the
// shipped dashboard queries and alert expressions give the fleet-wide
// answer: one series per group, no instance label, and (where the
// engine's increase() is exact: VictoriaMetrics) the acknowledged counts.
func TestFleetSeveralInstances(t *testing.T) {
	t.Parallel()
	ring := upstreamtest.StartThanosReceive(t, 2, "2h") // first: skips at once without Thanos
	vm := upstreamtest.StartVictoriaMetrics(t)
	query := upstreamtest.StartThanosQuery(t, ring.GRPC)
	receiver := ring.Receivers[0]
	upstreams := []upstream{{"victoria-metrics", vm.URL}, {"thanos-query", query.URL}}

	names := []string{"a", "b"}
	procs, dirs, cfgs := map[string]*proc{}, map[string]string{}, map[string]string{}
	for _, n := range names {
		cfgs[n] = writeConfig(t, "flush_interval: 1s\nexternal_labels:\n  proxylens_instance: "+n+"\nremote_write:\n"+
			remoteConfig("vm", vm.WriteURL(), "")+remoteConfig("thanos", receiver.WriteURL(), ""))
		dirs[n] = t.TempDir()
		procs[n] = runBinary(t, dirs[n], "--config", cfgs[n])
	}

	acked := map[string]tally{"a": {}, "b": {}}
	all := func() tally {
		s := tally{}
		for _, tl := range acked {
			s.add(tl)
		}
		return s
	}
	id := 0
	send := func(name string, n int) {
		t.Helper()
		spans, tl := fleetSpans(id, n, time.Now())
		require.NoError(t, export(procs[name].grpc, spans), "proxylens %s refused spans", name)
		id += n
		acked[name].add(tl)
	}
	totals := func(why string) {
		t.Helper()
		for _, u := range upstreams {
			eventually(t, why+": "+u.name, 2*time.Minute, func() error {
				for _, n := range names {
					if err := wantTotal(t, u.root, `{proxylens_instance="`+n+`"}`, acked[n].total()); err != nil {
						return err
					}
				}
				return wantTotal(t, u.root, "", all().total())
			})
		}
	}

	send("a", 100)
	send("b", 100)
	send("a", 100)
	totals("first spans")
	// Every sample of the spans so far is upstream, so stamped before
	// now; the spans sent from here end after it.
	boundary := time.Now()
	before := all()

	// Both receivers are stopped for a minute; the spans keep being
	// acknowledged, and b is killed in the middle and restarted on its
	// data, its unsent samples on disk.
	vm.Stop()
	receiver.Stop()
	outageEnd := time.Now().Add(time.Minute)
	for i := 0; time.Now().Before(outageEnd); i++ {
		send(names[i%2], 37)
		if i == 4 {
			for _, n := range names {
				for _, remote := range []string{"vm", "thanos"} {
					metric := `proxylens_remote_storage_samples_pending{remote_name="` + remote + `"`
					require.Eventually(t, func() bool { return procs[n].metric(t, metric) > 0 }, 30*time.Second, 50*time.Millisecond,
						"%s: nothing pending for %s while it is down", n, remote)
				}
			}
			kill9(t, procs["b"])
			procs["b"] = runBinary(t, dirs["b"], "--config", cfgs["b"])
		}
		time.Sleep(2 * time.Second) // the outage lasts a minute: spans arrive through it
	}
	vm.Restart()
	receiver.Restart()
	send("a", 50)
	send("b", 50)
	totals("after a minute's outage of the receivers and a kill -9 of b")
	for _, n := range names {
		eventually(t, n+": pending", time.Minute, func() error {
			if v := procs[n].metric(t, "proxylens_remote_storage_samples_pending"); v != 0 {
				return fmt.Errorf("%v samples pending", v)
			}
			return nil
		})
		require.Zero(t, procs[n].metric(t, "proxylens_remote_storage_samples_failed_total"), n)
	}
	totals("once nothing is pending: no double count")

	// The fleet-wide answers of shipped dashboards and alerts, at a time
	// after every sample, over the range since the boundary.
	at := time.Now()
	rng := at.Sub(boundary).Truncate(time.Millisecond)
	after := all()
	for k, v := range before {
		after[k] -= v
	}
	failures := dashboardQuery(t, "source-performance.json", "Failures by source and error type over the time range", rng)
	success := dashboardQuery(t, "source-performance.json", "Success rate over the time range", rng)
	failing := alertExpr(t, "ProxySourceFailing")
	bd := func(errType string) float64 { return float64(after[[2]string{"brightdata", errType}]) }
	for _, u := range upstreams {
		vec, err := instant(t, u.root, failures, at)
		require.NoError(t, err, u.name)
		got, err := byLabels(vec, "source", "error_type")
		require.NoError(t, err, "%s: %s", u.name, failures)
		require.Equal(t, []string{"brightdata/503"}, sortedKeys(got), "%s: %s", u.name, failures)

		vec, err = instant(t, u.root, success, at)
		require.NoError(t, err, u.name)
		rate, err := byLabels(vec, "source")
		require.NoError(t, err, "%s: %s", u.name, success)
		require.Equal(t, []string{"brightdata", "oxylabs"}, sortedKeys(rate), "%s: %s", u.name, success)
		require.Equal(t, 1.0, rate["oxylabs"], "%s: oxylabs never fails", u.name)

		// Prometheus' engine (Thanos Query) extrapolates increase() to
		// the range's ends; VictoriaMetrics' takes the last sample before
		// the range: exact.
		if u.name == "victoria-metrics" {
			require.Equal(t, bd("503"), got["brightdata/503"], "%s: %s", u.name, failures)
			require.Equal(t, bd("")/(bd("")+bd("503")), rate["brightdata"], "%s: %s", u.name, success)
		}

		vec, err = instant(t, u.root, failing, at)
		require.NoError(t, err, u.name)
		alerts, err := byLabels(vec, "source")
		require.NoError(t, err, "%s: %s", u.name, failing)
		require.Equal(t, []string{"brightdata"}, sortedKeys(alerts), "%s: %s", u.name, failing)

		// Exact on both: the counters by the dashboards' labels.
		vec, err = instant(t, u.root, `sum by (source, error_type) (proxy_requests_total)`, at)
		require.NoError(t, err, u.name)
		counts, err := byLabels(vec, "source", "error_type")
		require.NoError(t, err, u.name)
		want := map[string]float64{}
		for k, v := range all() {
			want[k[0]+"/"+k[1]] = float64(v)
		}
		require.Equal(t, want, counts, u.name)
	}
	t.Logf("%d spans acknowledged: %v by instance a, %v by b", all().total(), acked["a"].total(), acked["b"].total())
}

// TestFleetHAPair: two proxylens instances receive the same spans (the
// client sends every batch to both, as the Collector exporting to both
// would), with external label replica a and b; Thanos Query deduplicates
// along replica (--query.replica-label), VictoriaMetrics keeps one sample
// a second (-dedup.minScrapeInterval=1s) of the series made identical by
// dropping replica in write_relabel_configs. Member a is killed with
// SIGKILL; the client keeps sending to b and queues a's batches, as the
// Collector's sending queue does; a is restarted on its data and the
// queue delivered. Throughout, sum(proxy_requests_total) and
// sum(increase(proxy_requests_total[…])) upstream are those of the spans
// acknowledged: no gap, no double count.
func TestFleetHAPair(t *testing.T) {
	t.Parallel()
	ring := upstreamtest.StartThanosReceive(t, 2, "2h") // first: skips at once without Thanos
	vm := upstreamtest.StartVictoriaMetrics(t, "-dedup.minScrapeInterval=1s")
	query := upstreamtest.StartThanosQuery(t, ring.GRPC, "replica")
	upstreams := []upstream{{"victoria-metrics", vm.URL}, {"thanos-query", query.URL}}

	names := []string{"a", "b"}
	procs, dirs, cfgs := map[string]*proc{}, map[string]string{}, map[string]string{}
	for i, n := range names {
		cfgs[n] = writeConfig(t, "flush_interval: 1s\nexternal_labels:\n  proxylens_instance: pair\n  replica: "+n+"\nremote_write:\n"+
			remoteConfig("vm", vm.WriteURL(), "    write_relabel_configs: [{action: labeldrop, regex: replica}]\n")+
			remoteConfig("thanos", ring.Receivers[i].WriteURL(), ""))
		dirs[n] = t.TempDir()
		procs[n] = runBinary(t, dirs[n], "--config", cfgs[n])
	}

	// The client: a queue per member, delivered in order while the member
	// is up; a span counts as acknowledged once one member took it.
	queued := map[string][]tracetest.SpanStubs{}
	down := map[string]bool{}
	acked := tally{}
	id := 0
	deliver := func(name string) {
		t.Helper()
		for len(queued[name]) > 0 {
			require.NoError(t, export(procs[name].grpc, queued[name][0]), "member %s refused spans", name)
			queued[name] = queued[name][1:]
		}
	}
	send := func(n int) {
		t.Helper()
		spans, tl := fleetSpans(id, n, time.Now())
		id += n
		for _, m := range names {
			queued[m] = append(queued[m], spans)
			if !down[m] {
				deliver(m)
			}
		}
		acked.add(tl)
	}

	var boundary time.Time
	var before int
	check := func(why string) {
		t.Helper()
		for _, u := range upstreams {
			eventually(t, why+": "+u.name, 2*time.Minute, func() error {
				return wantTotal(t, u.root, "", acked.total())
			})
		}
		if boundary.IsZero() {
			return
		}
		// increase() over the range since the boundary. VictoriaMetrics'
		// is exact (the last sample before the range is its base);
		// Prometheus' engine in Thanos Query extrapolates to the range's
		// ends, so the deduplicated answer is compared with the same query
		// over the member that never stopped.
		at := time.Now()
		rng := at.Sub(boundary).Truncate(time.Millisecond)
		q := fmt.Sprintf("sum(increase(proxy_requests_total[%dms]))", rng.Milliseconds())
		vec, err := instant(t, vm.URL, q, at)
		require.NoError(t, err)
		require.Len(t, vec, 1, "%s: %s", why, q)
		require.Equal(t, float64(acked.total()-before), vec[0].Value, "%s: victoria-metrics %s", why, q)

		// Prometheus' engine needs two samples in the range and
		// extrapolates to its ends: over the last hour (all of the
		// test), the deduplicated answer must be the one over the member
		// that never stopped (twice it if both were counted), and at
		// least the spans since the boundary.
		q = "sum(increase(proxy_requests_total[1h]))"
		dedup, err := instant(t, query.URL, q, at)
		require.NoError(t, err)
		survivor, err := instant(t, query.URL, `sum(increase(proxy_requests_total{replica="b"}[1h]))`, at)
		require.NoError(t, err)
		require.Len(t, dedup, 1, "%s: %s", why, q)
		require.Equal(t, survivor, dedup, "%s: thanos-query %s, deduplicated and over b alone", why, q)
		require.GreaterOrEqual(t, dedup[0].Value, float64(acked.total()-before), "%s: thanos-query %s", why, q)
	}

	send(100)
	send(100)
	check("both members")
	boundary = time.Now()
	before = acked.total()

	kill9(t, procs["a"])
	down["a"] = true
	for range 3 {
		send(100)
	}
	check("a killed, b alone")

	procs["a"] = runBinary(t, dirs["a"], "--config", cfgs["a"])
	down["a"] = false
	deliver("a")
	eventually(t, "a: pending", time.Minute, func() error {
		if v := procs["a"].metric(t, "proxylens_remote_storage_samples_pending"); v != 0 {
			return fmt.Errorf("%v samples pending", v)
		}
		return nil
	})
	send(50)
	check("a back, its queue delivered")
	for _, n := range names {
		require.Zero(t, procs[n].metric(t, "proxylens_remote_storage_samples_failed_total"), n)
	}
}

// TestFleetQueryProxyThanos: proxylens with query.upstream set to a
// Thanos Query over a Thanos Receive hashring answers Grafana's requests
// field by field as Thanos Query does.
func TestFleetQueryProxyThanos(t *testing.T) {
	t.Parallel()
	ring := upstreamtest.StartThanosReceive(t, 2, "6h")
	query := upstreamtest.StartThanosQuery(t, ring.GRPC)

	// Two hours at 60 s resolution, ending an hour ago: source i's web
	// traffic grows by i+1 requests a second, its batch traffic by 1.
	start := time.Now().UTC().Truncate(time.Hour).Add(-3 * time.Hour)
	sources := upstreamtest.FixtureSources
	series, want := upstreamtest.Fixture(start)
	ring.Receivers[0].RemoteWrite(t, series)
	end := start.Add(2 * time.Hour)
	eventually(t, "the fixture in Thanos", time.Minute, func() error {
		vec, err := instant(t, query.URL, "sum(proxy_requests_total)", end)
		if err != nil {
			return err
		}
		if len(vec) != 1 || vec[0].Value != want {
			return fmt.Errorf("sum(proxy_requests_total) = %v, want %v", vec, want)
		}
		return nil
	})

	p := runBinary(t, t.TempDir(), "--config", writeConfig(t, "query:\n  upstream:\n    url: "+query.URL+"\n"))
	reqs := upstreamtest.GrafanaRequests(start)
	for _, r := range reqs {
		upstreamtest.SameAnswer(t, "http://"+p.http, query.URL, r)
	}

	// The dashboard's range query, decoded: source i's web traffic is
	// i+1 a second, as written.
	body := upstreamtest.SameAnswer(t, "http://"+p.http, query.URL, reqs[6])
	var m struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Values [][2]any          `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &m))
	require.Len(t, m.Data.Result, len(sources))
	for _, s := range m.Data.Result {
		require.Equal(t, []string{"source"}, slices.Collect(maps.Keys(s.Metric)))
		i := slices.Index(sources, s.Metric["source"])
		require.GreaterOrEqual(t, i, 0, s.Metric)
		require.Len(t, s.Values, 31)
		for _, v := range s.Values {
			require.IsType(t, float64(0), v[0], "times are JSON numbers")
			f, err := strconv.ParseFloat(v[1].(string), 64)
			require.NoError(t, err, "values are strings")
			require.InDelta(t, float64(i+1), f, 1e-9)
		}
	}
}
