package remotewrite

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"
	commonconfig "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/proxylens/proxylens/pebblestore"
	"github.com/proxylens/proxylens/selfmetrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// receiver is a loopback remote write receiver that keeps what it
// accepted, series by series, and can refuse requests.
type receiver struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	series   map[string][]prompb.Sample // by labels
	attempts []time.Time
	refuse   []func(w http.ResponseWriter) bool // taken one per request; true: refused
	down     atomic.Bool                        // every request answered 503
	v2       int                                // RW 2.0 requests seen
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t, series: map[string][]prompb.Sample{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts = append(r.attempts, time.Now())
	if r.down.Load() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	if len(r.refuse) > 0 {
		f := r.refuse[0]
		r.refuse = r.refuse[1:]
		if f(w) {
			return
		}
	}
	body, err := io.ReadAll(req.Body)
	require.NoError(r.t, err)
	raw, err := snappy.Decode(nil, body)
	require.NoError(r.t, err)
	if req.Header.Get("Content-Type") == "application/x-protobuf;proto=io.prometheus.write.v2.Request" {
		r.v2++
		var wr writev2.Request
		require.NoError(r.t, wr.Unmarshal(raw))
		n := 0
		for _, ts := range wr.Timeseries {
			var b labels.ScratchBuilder
			ls, err := ts.ToLabels(&b, wr.Symbols)
			require.NoError(r.t, err)
			for _, s := range ts.Samples {
				r.series[ls.String()] = append(r.series[ls.String()], prompb.Sample{Value: s.Value, Timestamp: s.Timestamp})
				n++
			}
		}
		w.Header().Set("X-Prometheus-Remote-Write-Samples-Written", strconv.Itoa(n))
		w.WriteHeader(http.StatusNoContent)
		return
	}
	var wr prompb.WriteRequest
	require.NoError(r.t, wr.Unmarshal(raw))
	for _, ts := range wr.Timeseries {
		var b labels.ScratchBuilder
		k := ts.ToLabels(&b, nil).String()
		r.series[k] = append(r.series[k], ts.Samples...)
	}
	w.WriteHeader(http.StatusNoContent)
}

// last returns the newest value received of each series, checking that
// each series' timestamps only grow.
func (r *receiver) last() map[string]float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]float64{}
	for k, smps := range r.series {
		for i := 1; i < len(smps); i++ {
			require.Greater(r.t, smps[i].Timestamp, smps[i-1].Timestamp, "series %s goes back in time", k)
		}
		out[k] = smps[len(smps)-1].Value
	}
	return out
}

func remoteConfig(t testing.TB, u string, edit func(*config.RemoteWriteConfig)) *RemoteWriteConfig {
	t.Helper()
	pu, err := url.Parse(u)
	require.NoError(t, err)
	rw := config.DefaultRemoteWriteConfig
	rw.URL = &commonconfig.URL{URL: pu}
	rw.QueueConfig.BatchSendDeadline = model.Duration(time.Millisecond)
	rw.QueueConfig.MinBackoff = model.Duration(10 * time.Millisecond)
	rw.QueueConfig.MaxBackoff = model.Duration(100 * time.Millisecond)
	rw.QueueConfig.MaxSamplesPerSend = 3
	rw.QueueConfig.Capacity = 9
	if edit != nil {
		edit(&rw)
	}
	return &RemoteWriteConfig{RemoteWriteConfig: rw}
}

type env struct {
	t   *testing.T
	dir string
	db  *pebblestore.DB
	reg *selfmetrics.Registry
	m   *Manager
}

func openEnv(t *testing.T, dir string) *env {
	db, err := pebblestore.Open(dir, pebblestore.Options{Series: pebblestore.SeriesOptions{Feed: true}})
	require.NoError(t, err)
	return &env{t: t, dir: dir, db: db}
}

func (e *env) start(cfg Config) {
	e.reg = selfmetrics.New()
	m, err := New(cfg, e.db.Series(), Options{Metrics: e.reg})
	require.NoError(e.t, err)
	require.NoError(e.t, m.Start(context.Background()))
	e.m = m
}

func (e *env) stop() {
	require.NoError(e.t, e.m.Shutdown(context.Background()))
	require.NoError(e.t, e.db.Close())
}

func (e *env) add(ls labels.Labels, t int64, v float64) {
	require.NoError(e.t, e.db.Series().AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
		return add(ls, t, v)
	}))
}

// metric returns a self-metric's value by its full name.
func (e *env) metric(name string) float64 {
	fams, err := e.reg.Gather()
	require.NoError(e.t, err)
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			var b labels.ScratchBuilder
			b.Add("__name__", f.GetName())
			for _, l := range m.GetLabel() {
				b.Add(l.GetName(), l.GetValue())
			}
			b.Sort()
			if b.Labels().String() == name {
				switch {
				case m.Counter != nil:
					return m.Counter.GetValue()
				case m.Gauge != nil:
					return m.Gauge.GetValue()
				}
			}
		}
	}
	e.t.Fatalf("no metric %s", name)
	return 0
}

func TestCumulativeCountersAcrossRestarts(t *testing.T) {
	recv := newReceiver(t)
	dir := t.TempDir()
	e := openEnv(t, dir)
	a := labels.FromStrings("__name__", "proxy_requests_total", "source", "a")
	b := labels.FromStrings("__name__", "proxy_requests_total", "source", "b")
	other := labels.FromStrings("__name__", "up")
	e.add(a, 1_000, 100) // before the remote existed: not sent
	cfg := Config{Send: SendProxy, ExternalLabels: labels.FromStrings("proxylens_instance", "x", "source", "ignored"),
		RemoteWrite: []*RemoteWriteConfig{remoteConfig(t, recv.srv.URL+"/api/v1/write", nil)}}
	e.start(cfg)
	for i := range 10 {
		e.add(a, int64(15_000*(i+1)), 1)
		e.add(b, int64(15_000*(i+1)), 2)
	}
	committed := time.Now().UnixMilli()
	e.add(a, 15_000, 5) // late: counted when it was committed
	committedBy := time.Now().UnixMilli()
	app := e.db.Series().Appender(context.Background())
	_, err := app.Append(0, other, 1000, 1)
	require.NoError(t, err)
	require.NoError(t, app.Commit())
	wantA := `{__name__="proxy_requests_total", proxylens_instance="x", source="a"}`
	wantB := `{__name__="proxy_requests_total", proxylens_instance="x", source="b"}`
	require.Eventually(t, func() bool {
		l := recv.last()
		return l[wantA] == 15 && l[wantB] == 20
	}, 10*time.Second, 10*time.Millisecond)
	require.Len(t, recv.last(), 2, "up is not proxy_*: not sent")
	recv.mu.Lock()
	late := recv.series[wantA][len(recv.series[wantA])-1].Timestamp
	recv.mu.Unlock()
	require.GreaterOrEqual(t, late, committed, "the late increment stamped at its commit")
	require.LessOrEqual(t, late, committedBy)
	require.Eventually(t, func() bool { return e.metric(metricName("samples_total", recv.srv.URL)) == 21 }, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return e.metric(metricName("samples_pending", recv.srv.URL)) == 0 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, float64(late)/1000, e.metric(metricName("highest_sent_timestamp_seconds", recv.srv.URL)))
	e.stop()

	// Committed while the sender is stopped: sent after the restart, the
	// counters going on from where they were.
	e = openEnv(t, dir)
	e.add(a, 165_000, 3)
	e.start(cfg)
	require.Eventually(t, func() bool { return recv.last()[wantA] == 18 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, 20.0, recv.last()[wantB])
	e.stop()

	// A remote dropped from the config forgets its position: added again,
	// it starts at the head.
	e = openEnv(t, dir)
	e.start(Config{Send: SendProxy})
	e.stop()
	e = openEnv(t, dir)
	pos, _, ok, err := e.db.Series().FeedConsumer(recv.srv.URL + "/api/v1/write")
	require.NoError(t, err)
	require.False(t, ok, "position %v kept", pos)
	require.NoError(t, e.db.Close())
}

func metricName(n, u string) string {
	return `{__name__="proxylens_remote_storage_` + n + `", remote_name="` + u + `/api/v1/write", url="` + u + `/api/v1/write"}`
}

func TestRefusedBatchDroppedAndCounted(t *testing.T) {
	recv := newReceiver(t)
	recv.refuse = []func(w http.ResponseWriter) bool{func(w http.ResponseWriter) bool {
		http.Error(w, "out of bounds", http.StatusBadRequest)
		return true
	}}
	e := openEnv(t, t.TempDir())
	defer e.stop()
	e.start(Config{Send: SendProxy, RemoteWrite: []*RemoteWriteConfig{remoteConfig(t, recv.srv.URL+"/api/v1/write", func(c *config.RemoteWriteConfig) {
		c.QueueConfig.BatchSendDeadline = model.Duration(time.Hour) // one batch of three
	})}})
	a := labels.FromStrings("__name__", "proxy_requests_total")
	for i := range 3 {
		e.add(a, int64(15_000*(i+1)), 1)
	}
	require.Eventually(t, func() bool { return e.metric(metricName("samples_failed_total", recv.srv.URL)) == 3 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, 3.0, e.metric(`{__name__="proxylens_remote_storage_samples_dropped_total", reason="http_4xx", remote_name="`+recv.srv.URL+`/api/v1/write", url="`+recv.srv.URL+`/api/v1/write"}`))
	require.Empty(t, recv.last())
	// The counter sent next carries what the dropped batch held.
	for i := range 3 {
		e.add(a, int64(60_000+15_000*i), 1)
	}
	require.Eventually(t, func() bool { return recv.last()[`{__name__="proxy_requests_total"}`] == 6 }, 10*time.Second, 10*time.Millisecond)
}

func TestRateLimitedBatchRetriedAfterRetryAfter(t *testing.T) {
	recv := newReceiver(t)
	recv.refuse = []func(w http.ResponseWriter) bool{func(w http.ResponseWriter) bool {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "slow down", http.StatusTooManyRequests)
		return true
	}}
	e := openEnv(t, t.TempDir())
	defer e.stop()
	e.start(Config{Send: SendProxy, RemoteWrite: []*RemoteWriteConfig{remoteConfig(t, recv.srv.URL+"/api/v1/write", func(c *config.RemoteWriteConfig) {
		c.QueueConfig.RetryOnRateLimit = true
	})}})
	e.add(labels.FromStrings("__name__", "proxy_requests_total"), 15_000, 7)
	require.Eventually(t, func() bool { return recv.last()[`{__name__="proxy_requests_total"}`] == 7 }, 10*time.Second, 10*time.Millisecond)
	recv.mu.Lock()
	require.Len(t, recv.attempts, 2)
	require.GreaterOrEqual(t, recv.attempts[1].Sub(recv.attempts[0]), time.Second, "Retry-After: 1 honoured")
	recv.mu.Unlock()
	require.Equal(t, 1.0, e.metric(metricName("samples_retried_total", recv.srv.URL)))
	require.Equal(t, 0.0, e.metric(metricName("samples_failed_total", recv.srv.URL)))
}

// TestFeedBoundedWhileReceiverDown: with the receiver down, the feed kept
// for it stays within remote_write_max_pending_bytes (the oldest unsent
// batches dropped, counted, their entries deleted), and once the receiver
// is back every counter's total arrives: points are lost, counts are not.
func TestFeedBoundedWhileReceiverDown(t *testing.T) {
	recv := newReceiver(t)
	recv.down.Store(true)
	const bound = 4 << 10
	e := openEnv(t, t.TempDir())
	defer e.stop()
	name := "bounded"
	e.start(Config{Send: SendProxy, MaxPendingBytes: bound, RemoteWrite: []*RemoteWriteConfig{remoteConfig(t, recv.srv.URL+"/api/v1/write", func(c *config.RemoteWriteConfig) {
		c.Name = name
		c.QueueConfig.MaxSamplesPerSend = 50
		c.QueueConfig.Capacity = 100
	})}})
	metric := func(n string, extra ...string) float64 {
		lbl := `remote_name="` + name + `", url="` + recv.srv.URL + `/api/v1/write"`
		if len(extra) > 0 {
			lbl = extra[0] + ", " + lbl
		}
		return e.metric(`{__name__="proxylens_remote_storage_` + n + `", ` + lbl + `}`)
	}
	const series, commits = 20, 200
	s := e.db.Series()
	commit := func(k int) {
		require.NoError(t, s.AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
			for i := range series {
				if err := add(labels.FromStrings("__name__", "proxy_requests_total", "source", strconv.Itoa(i)), int64(15_000*(k+1)), 1); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	for k := range commits {
		commit(k)
	}
	require.Greater(t, s.FeedBytes(), uint64(4*bound), "the test commits several times the bound")
	// Once the sender's next retry has looked, what it keeps is bounded
	// and the entries before its position are gone from the store.
	require.Eventually(t, func() bool { return metric("bytes_pending") <= bound }, 10*time.Second, 10*time.Millisecond)
	require.Positive(t, metric("samples_dropped_total", `reason="feed_full"`))
	require.Zero(t, metric("samples_total"))
	pos, _, ok, err := s.FeedConsumer(name)
	require.NoError(t, err)
	require.True(t, ok)
	require.Eventually(t, func() bool {
		rd, err := s.ReadFeed(pebblestore.FeedPosition{}, 1)
		require.NoError(t, err)
		return rd.Next.Seq >= pos.Seq
	}, 10*time.Second, 10*time.Millisecond, "entries before the position %v deleted", pos)

	recv.down.Store(false)
	commit(commits)
	require.Eventually(t, func() bool {
		l := recv.last()
		if len(l) != series {
			return false
		}
		for _, v := range l {
			if v != commits+1 {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond, "every counter's total upstream")
	require.Eventually(t, func() bool { return metric("bytes_pending") == 0 && metric("samples_pending") == 0 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, float64(series*(commits+1)), metric("samples_total")+metric("samples_dropped_total", `reason="feed_full"`))
}

// RW 2.0, every series, relabelled.
func TestWriteV2AllSeriesRelabelled(t *testing.T) {
	recv := newReceiver(t)
	e := openEnv(t, t.TempDir())
	defer e.stop()
	e.start(Config{Send: SendAll, RemoteWrite: []*RemoteWriteConfig{remoteConfig(t, recv.srv.URL+"/api/v1/write", func(c *config.RemoteWriteConfig) {
		c.Name = "v2"
		c.ProtobufMessage = "io.prometheus.write.v2.Request"
		c.WriteRelabelConfigs = []*relabel.Config{{
			SourceLabels: model.LabelNames{"__name__"}, Regex: relabel.MustNewRegexp("secret"), Action: relabel.Drop,
			Separator: ";", NameValidationScheme: model.UTF8Validation,
		}}
	})}})
	app := e.db.Series().Appender(context.Background())
	for _, n := range []string{"up", "secret"} {
		for i := range 4 {
			_, err := app.Append(0, labels.FromStrings("__name__", n), int64(i*1000), float64(i))
			require.NoError(t, err)
		}
	}
	require.NoError(t, app.Commit())
	e.add(labels.FromStrings("__name__", "proxy_requests_total"), 15_000, 2)
	require.Eventually(t, func() bool {
		l := recv.last()
		return l[`{__name__="up"}`] == 3 && l[`{__name__="proxy_requests_total"}`] == 2
	}, 10*time.Second, 10*time.Millisecond)
	require.Len(t, recv.last(), 2)
	require.Positive(t, recv.v2)
	require.Eventually(t, func() bool {
		return e.metric(`{__name__="proxylens_remote_storage_samples_dropped_total", reason="relabel", remote_name="v2", url="`+recv.srv.URL+`/api/v1/write"}`) == 4
	}, 10*time.Second, 10*time.Millisecond)
}

// BenchmarkSend measures remote write out: a store with 10,000 increment
// series and 10 cuts of them, sent from the start of the feed to a
// loopback receiver that reads and discards the requests. It reports
// samples per second and per CPU-second of the whole process (receiver
// included).
func BenchmarkSend(b *testing.B) {
	for _, msg := range []string{"prometheus.WriteRequest", "io.prometheus.write.v2.Request"} {
		b.Run("msg="+msg, func(b *testing.B) {
			const series, cuts = 10_000, 10
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				raw, err := snappy.Decode(nil, body)
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				w.Header().Set("X-Prometheus-Remote-Write-Samples-Written", "1")
				_ = raw
				w.WriteHeader(http.StatusNoContent)
			}))
			defer srv.Close()
			lsets := make([]labels.Labels, series)
			for i := range lsets {
				lsets[i] = labels.FromStrings("__name__", "proxy_requests_total", "source", "s"+strconv.Itoa(i%20), "domain", "d"+strconv.Itoa(i))
			}
			// fill commits the cuts to a new store; sending them from the
			// start of its feed is what is measured.
			fill := func() *pebblestore.DB {
				db, err := pebblestore.Open(b.TempDir(), pebblestore.Options{Series: pebblestore.SeriesOptions{Feed: true}})
				require.NoError(b, err)
				for c := range cuts {
					require.NoError(b, db.Series().AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
						for _, ls := range lsets {
							if err := add(ls, int64(c+1)*15_000, 1); err != nil {
								return err
							}
						}
						return nil
					}))
				}
				require.NoError(b, db.Series().SaveFeedConsumer("bench", pebblestore.FeedPosition{Seq: 1}, nil))
				return db
			}
			b.ReportAllocs()
			var cpu, wall time.Duration
			for range b.N {
				b.StopTimer()
				db := fill()
				b.StartTimer()
				rw := remoteConfig(b, srv.URL, func(c *config.RemoteWriteConfig) {
					c.Name = "bench"
					c.ProtobufMessage = remoteapiMessage(msg)
					c.QueueConfig = config.DefaultQueueConfig
				})
				reg := selfmetrics.New()
				m, err := New(Config{Send: SendProxy, RemoteWrite: []*RemoteWriteConfig{rw}}, db.Series(), Options{Metrics: reg})
				require.NoError(b, err)
				before, start := cpuTime(), time.Now()
				require.NoError(b, m.Start(context.Background()))
				for m.remotes[0].pending() > 0 {
					time.Sleep(time.Millisecond) // a benchmark's wait for the sender to finish
				}
				cpu += cpuTime() - before
				wall += time.Since(start)
				b.StopTimer()
				require.NoError(b, m.Shutdown(context.Background()))
				require.NoError(b, db.Close())
				b.StartTimer()
			}
			n := float64(b.N * series * cuts)
			b.ReportMetric(n/wall.Seconds(), "samples/s")
			b.ReportMetric(n/cpu.Seconds(), "samples/cpu-s")
		})
	}
}
