package receiver_test

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/prompb"
	prompromql "github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/pebblestore"
	"github.com/proxylens/proxylens/promql"
	"github.com/proxylens/proxylens/receiver"
)

// t0 is where the written histories start.
var t0 = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

// writeServer serves the query API and the write endpoints over a fresh
// store; now is the writer's clock.
type writeServer struct {
	*httptest.Server
	store *pebblestore.SeriesStore
	api   v1.API
}

func startWriteServer(t *testing.T, now time.Time) writeServer {
	t.Helper()
	db, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	s := db.Series()
	meta := func() map[string][]metadata.Metadata {
		out := map[string][]metadata.Metadata{}
		for n, md := range s.Metadata() {
			out[n] = []metadata.Metadata{md}
		}
		return out
	}
	a := promql.New(promql.Config{}, s, promql.Options{Metadata: meta, Now: func() time.Time { return now }})
	t.Cleanup(func() { require.NoError(t, a.Close()) })
	w := receiver.NewSeriesWriter(s, receiver.SeriesWriterOptions{
		Now:         func() time.Time { return now },
		SetMetadata: s.SetMetadata,
	})
	mux := http.NewServeMux()
	a.Register(mux)
	w.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	c, err := api.NewClient(api.Config{Address: srv.URL})
	require.NoError(t, err)
	return writeServer{Server: srv, store: s, api: v1.NewAPI(c)}
}

// remoteWrite sends req as Prometheus' remote write 1.0 client does and
// returns the status and body.
func (ws writeServer) remoteWrite(t *testing.T, req *prompb.WriteRequest) (int, string) {
	t.Helper()
	raw, err := req.Marshal()
	require.NoError(t, err)
	return ws.post(t, "/api/v1/write", snappy.Encode(nil, raw), map[string]string{
		"Content-Encoding":                  "snappy",
		"Content-Type":                      "application/x-protobuf",
		"User-Agent":                        "Prometheus/3.7.0",
		"X-Prometheus-Remote-Write-Version": "0.1.0",
	})
}

func (ws writeServer) post(t *testing.T, path string, body []byte, hdr map[string]string) (int, string) {
	t.Helper()
	r, err := http.NewRequest(http.MethodPost, ws.URL+path, bytes.NewReader(body))
	require.NoError(t, err)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(r)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func series(name string, kv ...string) []prompb.Label {
	out := []prompb.Label{{Name: "__name__", Value: name}}
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, prompb.Label{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

func samples(pts ...float64) []prompb.Sample { // time (ms), value pairs
	var out []prompb.Sample
	for i := 0; i+1 < len(pts); i += 2 {
		out = append(out, prompb.Sample{Timestamp: int64(pts[i]), Value: pts[i+1]})
	}
	return out
}

func TestRemoteWrite(t *testing.T) {
	now := t0.Add(30 * 24 * time.Hour)
	ws := startWriteServer(t, now)
	ctx := context.Background()
	nowMs := float64(now.UnixMilli())
	month := float64((30 * 24 * time.Hour).Milliseconds())

	// A series may start at any time: this one a month back.
	code, body := ws.remoteWrite(t, &prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{
			{Labels: series("up", "job", "node", "instance", "a:9100"), Samples: samples(nowMs-month, 1, nowMs-month+15000, 0)},
			{Labels: series("node_requests_total", "job", "node"), Samples: samples(nowMs-120000, 10, nowMs-60000, 25, nowMs, 40)},
		},
		Metadata: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "node_requests_total", Help: "Requests.", Unit: ""}},
	})
	require.Equal(t, http.StatusNoContent, code, body)
	at := now.Add(-30*24*time.Hour + time.Minute)
	v, _, _, err := ws.api.Query(ctx, `up`, at)
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf(`up{instance="a:9100", job="node"} => 0 @[%d]`, at.Unix()), v.(model.Vector)[0].String())
	v, _, _, err = ws.api.Query(ctx, `increase(node_requests_total[2m])`, now)
	require.NoError(t, err)
	require.InDelta(t, 30, float64(v.(model.Vector)[0].Value), 1e-9)
	md, err := ws.api.Metadata(ctx, "node_requests_total", "")
	require.NoError(t, err)
	require.Equal(t, []v1.Metadata{{Type: v1.MetricTypeCounter, Help: "Requests."}}, md["node_requests_total"])

	// Out of order within the window (1 h) is accepted; an exact
	// duplicate changes nothing.
	code, body = ws.remoteWrite(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: series("node_requests_total", "job", "node"), Samples: samples(nowMs-90000, 18, nowMs-60000, 25)},
	}})
	require.Equal(t, http.StatusNoContent, code, body)
	v, _, _, err = ws.api.Query(ctx, `count_over_time(node_requests_total[5m])`, now)
	require.NoError(t, err)
	require.Equal(t, model.SampleValue(4), v.(model.Vector)[0].Value)

	// Refused with 400, and nothing of the request is written: beyond
	// the out-of-order window; another value at a stored time.
	for _, tc := range []struct {
		name string
		ts   prompb.TimeSeries
		msg  string
	}{
		{"too old", prompb.TimeSeries{Labels: series("node_requests_total", "job", "node"), Samples: samples(nowMs-2*3600000, 1)}, "too old sample"},
		{"conflicting duplicate", prompb.TimeSeries{Labels: series("node_requests_total", "job", "node"), Samples: samples(nowMs-60000, 26)}, "duplicate sample for timestamp"},
		{"no name", prompb.TimeSeries{Labels: []prompb.Label{{Name: "job", Value: "x"}}, Samples: samples(nowMs, 1)}, "no metric name"},
		{"invalid label", prompb.TimeSeries{Labels: series("m", "bad\xff", "x"), Samples: samples(nowMs, 1)}, "invalid metric name or labels"},
		{"repeated label", prompb.TimeSeries{Labels: series("m", "a", "1", "a", "2"), Samples: samples(nowMs, 1)}, `label "a" repeated`},
		{"future", prompb.TimeSeries{Labels: series("m"), Samples: samples(nowMs+float64(time.Hour.Milliseconds()), 1)}, "out of bounds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := ws.remoteWrite(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
				{Labels: series("rolled_back", "case", tc.name), Samples: samples(nowMs, 1)},
				tc.ts,
			}})
			require.Equal(t, http.StatusBadRequest, code)
			require.Contains(t, body, tc.msg)
			set, _, _, err := ws.api.Series(ctx, []string{`rolled_back`}, now.Add(-time.Hour), now)
			require.NoError(t, err)
			require.Empty(t, set, "the request is all or nothing")
		})
	}

	// Malformed requests.
	code, _ = ws.post(t, "/api/v1/write", []byte("not snappy"), map[string]string{"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"})
	require.Equal(t, http.StatusBadRequest, code)
	code, _ = ws.post(t, "/api/v1/write", snappy.Encode(nil, []byte{0xff, 0xff, 0xff}), map[string]string{"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"})
	require.Equal(t, http.StatusBadRequest, code)
	code, body = ws.post(t, "/api/v1/write", nil, map[string]string{"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request"})
	require.Equal(t, http.StatusUnsupportedMediaType, code)
	require.Contains(t, body, "remote write 1.0")
	code, _ = ws.post(t, "/api/v1/write", nil, map[string]string{"Content-Encoding": "gzip", "Content-Type": "application/x-protobuf"})
	require.Equal(t, http.StatusUnsupportedMediaType, code)
	resp, err := http.Get(ws.URL + "/api/v1/write")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)

	// Native histograms.
	h := &histogram.Histogram{Count: 12, Sum: 20, Schema: 0, ZeroThreshold: 0.001, ZeroCount: 2,
		PositiveSpans: []histogram.Span{{Offset: 0, Length: 3}}, PositiveBuckets: []int64{2, 2, 0}}
	code, body = ws.remoteWrite(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: series("latency_seconds", "job", "api"), Histograms: []prompb.Histogram{prompb.FromIntHistogram(int64(nowMs), h)}},
	}})
	require.Equal(t, http.StatusNoContent, code, body)
	v, _, _, err = ws.api.Query(ctx, `histogram_count(latency_seconds)`, now)
	require.NoError(t, err)
	require.Equal(t, model.SampleValue(12), v.(model.Vector)[0].Value)
}

// TestRemoteWriteAgainstTSDB writes the same random history, in random
// batches with out-of-order samples, duplicates and conflicts, to proxylens
// by remote write and to Prometheus' own TSDB (with the same 1 h
// out-of-order window), then checks that PromQL answers alike on both.
func TestRemoteWriteAgainstTSDB(t *testing.T) {
	now := t0.Add(7 * 24 * time.Hour)
	ws := startWriteServer(t, now)
	opts := tsdb.DefaultOptions()
	opts.OutOfOrderTimeWindow = time.Hour.Milliseconds()
	ref, err := tsdb.Open(t.TempDir(), nil, nil, opts, nil)
	require.NoError(t, err)
	defer ref.Close()

	rnd := rand.New(rand.NewPCG(5, 6))
	type smp struct {
		s int
		t int64
		v float64
	}
	var all []smp
	const nSeries = 12
	start := now.Add(-2 * 24 * time.Hour).UnixMilli()
	for s := range nSeries {
		v := 0.0
		for t := start + rnd.Int64N(60000); t < now.UnixMilli(); t += 15000 + rnd.Int64N(45000) {
			if s%3 == 2 {
				v = rnd.Float64() * 100 // a gauge
			} else if rnd.IntN(500) == 0 {
				v = 0 // a counter reset
			} else {
				v += float64(rnd.IntN(10))
			}
			all = append(all, smp{s, t, v})
		}
	}
	slices.SortFunc(all, func(a, b smp) int { return cmp.Compare(a.t, b.t) })
	labelsOf := func(s int) []prompb.Label {
		return series(fmt.Sprintf("metric_%d", s%3), "instance", fmt.Sprintf("i%d", s), "job", "j")
	}
	// Send in time order, in batches, but shuffle each batch: samples come
	// out of order within the window; some are repeated, some conflict.
	refused := 0
	for i := 0; i < len(all); {
		n := min(len(all)-i, 50+rnd.IntN(300))
		batch := slices.Clone(all[i : i+n])
		rnd.Shuffle(len(batch), func(a, b int) { batch[a], batch[b] = batch[b], batch[a] })
		if rnd.IntN(10) == 0 && i > 0 { // resend an earlier sample, sometimes with another value
			// Either well inside the out-of-order window or well beyond it:
			// Prometheus counts the window from the newest sample of all
			// series, proxylens from the series' own, which differ by
			// about a batch.
			old := all[rnd.IntN(i)]
			if last := all[i-1].t; old.t > last-3*3600000 {
				old = all[max(0, i-1-rnd.IntN(20))]
			}
			if rnd.IntN(2) == 0 {
				old.v++
			}
			batch = append(batch, old)
		}
		bySeries := map[int]*prompb.TimeSeries{}
		var req prompb.WriteRequest
		for _, x := range batch {
			ts := bySeries[x.s]
			if ts == nil {
				req.Timeseries = append(req.Timeseries, prompb.TimeSeries{Labels: labelsOf(x.s)})
				ts = &req.Timeseries[len(req.Timeseries)-1]
				bySeries[x.s] = ts
			}
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: x.t, Value: x.v})
		}
		// pointers into req.Timeseries stay valid: it is not grown after.
		code, body := ws.remoteWrite(t, &req)
		// The reference: the same request, all or nothing.
		app := ref.Appender(context.Background())
		var refErr error
		for _, ts := range req.Timeseries {
			var b labels.ScratchBuilder
			for _, l := range ts.Labels {
				b.Add(l.Name, l.Value)
			}
			b.Sort()
			for _, s := range ts.Samples {
				if _, err := app.Append(0, b.Labels(), s.Timestamp, s.Value); err != nil && refErr == nil {
					refErr = fmt.Errorf("%w: %s at %d", err, b.Labels(), s.Timestamp)
				}
			}
		}
		if refErr != nil {
			require.NoError(t, app.Rollback())
			require.Equal(t, http.StatusBadRequest, code, "TSDB refused (%v), proxylens said %s", refErr, body)
			refused++
		} else {
			require.NoError(t, app.Commit())
			require.Equal(t, http.StatusNoContent, code, body)
		}
		i += n
	}
	require.Positive(t, refused, "some requests carried conflicting duplicates")

	engine := prompromql.NewEngine(prompromql.EngineOpts{MaxSamples: 50_000_000, Timeout: 30 * time.Minute, Parser: parser.NewParser(parser.Options{}), EnableAtModifier: true})
	for _, q := range []string{
		`metric_0`,
		`rate(metric_0[5m])`,
		`sum by (job) (increase(metric_1[1h]))`,
		`resets(metric_0[2h])`,
		`avg_over_time(metric_2[10m])`,
		`max by (instance) (metric_2)`,
		`count_over_time({job="j"}[30m])`,
		`deriv(metric_2[15m])`,
	} {
		for _, step := range []time.Duration{time.Minute, 17 * time.Minute} {
			from, to := now.Add(-47*time.Hour), now
			want := rangeQuery(t, engine, ref, q, from, to, step)
			got := rangeQuery(t, engine, ws.store, q, from, to, step)
			require.Equal(t, len(want), len(got), q)
			for i := range want {
				require.Equal(t, want[i].Metric, got[i].Metric, q)
				require.Equal(t, len(want[i].Floats), len(got[i].Floats), "%s %s", q, want[i].Metric)
				for j := range want[i].Floats {
					w, g := want[i].Floats[j], got[i].Floats[j]
					require.Equal(t, w.T, g.T, q)
					if !(math.IsNaN(w.F) && math.IsNaN(g.F)) {
						require.InDelta(t, w.F, g.F, 1e-9*math.Max(1, math.Abs(w.F)), "%s %s at %d", q, want[i].Metric, w.T)
					}
				}
			}
		}
	}
}

func rangeQuery(t *testing.T, ng *prompromql.Engine, q storage.Queryable, expr string, from, to time.Time, step time.Duration) prompromql.Matrix {
	t.Helper()
	qry, err := ng.NewRangeQuery(context.Background(), q, nil, expr, from, to, step)
	require.NoError(t, err)
	defer qry.Close()
	res := qry.Exec(context.Background())
	require.NoError(t, res.Err)
	m, err := res.Matrix()
	require.NoError(t, err)
	// Close hands the points back to the engine's pools: copy them.
	out := make(prompromql.Matrix, len(m))
	for i, s := range m {
		out[i] = prompromql.Series{Metric: s.Metric, Floats: slices.Clone(s.Floats), Histograms: slices.Clone(s.Histograms)}
	}
	slices.SortFunc(out, func(a, b prompromql.Series) int { return labels.Compare(a.Metric, b.Metric) })
	return out
}

func TestWriteOTLPPath(t *testing.T) {
	ws := startWriteServer(t, time.Now())
	code, body := ws.post(t, "/api/v1/otlp/v1/metrics", []byte("{}"), map[string]string{"Content-Type": "text/plain"})
	require.Equal(t, http.StatusUnsupportedMediaType, code, body)
	code, body = ws.post(t, "/api/v1/otlp/v1/metrics", []byte("{nope"), map[string]string{"Content-Type": "application/json"})
	require.Equal(t, http.StatusBadRequest, code, body)
	code, body = ws.post(t, "/api/v1/otlp/v1/metrics", []byte(strings.ReplaceAll(`{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}}]},
		"scopeMetrics":[{"metrics":[{"name":"queue.depth","unit":"{item}","gauge":{"dataPoints":[{"timeUnixNano":"NOW","asInt":"7"}]}}]}]}]}`,
		"NOW", fmt.Sprint(time.Now().Add(-time.Second).UnixNano()))), map[string]string{"Content-Type": "application/json"})
	require.Equal(t, http.StatusOK, code, body)
	v, _, _, err := ws.api.Query(context.Background(), `queue_depth`, time.Now())
	require.NoError(t, err)
	require.Equal(t, `queue_depth{job="shop"} => 7`, strings.Split(v.(model.Vector)[0].String(), " @")[0])
}
