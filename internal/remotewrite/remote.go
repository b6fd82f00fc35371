package remotewrite

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/proxylens/proxylens/pebblestore"
	"github.com/proxylens/proxylens/selfmetrics"
)

// remote is the sender of one remote_write entry: a reader goroutine that
// reads the feed and builds requests, and the sender that sends them in
// order and saves the position after each.
type remote struct {
	m       *Manager
	cfg     *RemoteWriteConfig
	name    string
	api     *remoteapi.API
	log     *slog.Logger
	relabel []*relabel.Config
	metrics *remoteMetrics

	// Owned by the reader goroutine.
	state  map[uint64]*seriesState // increment series: what was sent last
	labels map[uint64]*outLabels   // the labels each series is sent with

	posMu sync.Mutex
	pos   pebblestore.FeedPosition // saved: everything before it is handled

	// oldestUnsent is the commit time (Unix ms) of the oldest entry not
	// handled yet, for the lag; meaningful while samples are pending.
	oldestUnsent atomic.Int64
	highestSent  atomic.Int64 // Unix ms, math.MinInt64 before the first

	shed bool // owned by the sender: a batch was dropped for feed_full since the last prune
}

// seriesState is what a remote sent last of an increment series: the
// cumulative value and its timestamp.
type seriesState struct {
	t int64
	v float64
}

func (s seriesState) encode() []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(s.t))
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(s.v))
}

// outLabels are the labels a series is sent with; skip is set for a
// series not sent (not proxy_* under remote_write_send: proxy), dropped
// for one write_relabel_configs drops.
type outLabels struct {
	ls            labels.Labels
	skip, dropped bool
}

// batch is one request, built and waiting to be sent.
type batch struct {
	v1      *prompb.WriteRequest
	v2      *writev2.Request
	samples int   // samples in the request
	dropped int   // samples write_relabel_configs dropped
	maxT    int64 // newest sample in the request
	first   time.Time
	next    pebblestore.FeedPosition
	oldest  time.Time // commit time of the entry at next, zero if none was left
	changed map[uint64][]byte
}

func (r *remote) sentPos() pebblestore.FeedPosition {
	r.posMu.Lock()
	defer r.posMu.Unlock()
	return r.pos
}

// pending is the number of samples in the feed after the saved position.
func (r *remote) pending() uint64 {
	total, pos := r.m.store.FeedSamples(), r.sentPos().Cum
	if total < pos {
		return 0
	}
	return total - pos
}

// load reads the remote's saved position and per-series state; a remote
// never saved starts at the feed's head.
func (r *remote) load() error {
	pos, state, ok, err := r.m.store.FeedConsumer(r.name)
	if err != nil {
		return err
	}
	if !ok {
		pos, _ = r.m.store.FeedHead()
		if err := r.m.store.SaveFeedConsumer(r.name, pos, nil); err != nil {
			return err
		}
	}
	for id, v := range state {
		if len(v) != 16 {
			return fmt.Errorf("remote write %s: state of series %d: %d bytes, want 16", r.name, id, len(v))
		}
		r.state[id] = &seriesState{t: int64(binary.LittleEndian.Uint64(v)), v: math.Float64frombits(binary.LittleEndian.Uint64(v[8:]))}
	}
	r.posMu.Lock()
	r.pos = pos
	r.posMu.Unlock()
	r.highestSent.Store(math.MinInt64)
	r.oldestUnsent.Store(r.m.now().UnixMilli())
	return nil
}

// run reads and sends until ctx ends.
func (r *remote) run(ctx context.Context) {
	q := r.cfg.QueueConfig
	// capacity bounds the samples read ahead: the batch being sent and
	// those waiting.
	batches := make(chan *batch, max(0, q.Capacity/q.MaxSamplesPerSend-1))
	var reader sync.WaitGroup
	reader.Go(func() {
		defer close(batches)
		r.read(ctx, batches)
	})
	defer reader.Wait()
	for sent := 0; ; sent++ {
		var b *batch
		select {
		case <-ctx.Done():
			return
		case b = <-batches:
		}
		if b == nil || !r.send(ctx, b) {
			return
		}
		if b.oldest.IsZero() || sent%64 == 63 || r.shed {
			r.shed = false
			if err := r.m.prune(); err != nil {
				r.log.Warn("prune the series feed, trying again later", "err", err)
			}
		}
	}
}

// read follows the feed from the saved position and hands batches to the
// sender. A batch smaller than max_samples_per_send waits for more until
// batch_send_deadline after its oldest sample's commit.
func (r *remote) read(ctx context.Context, out chan<- *batch) {
	q := r.cfg.QueueConfig
	deadline := time.Duration(q.BatchSendDeadline)
	pos := r.sentPos()
	for ctx.Err() == nil {
		_, notify := r.m.store.FeedHead()
		rd, err := r.m.store.ReadFeed(pos, q.MaxSamplesPerSend)
		if err != nil {
			r.log.Warn("read the series feed, trying again", "err", err)
			r.wait(ctx, nil, deadline)
			continue
		}
		if rd.Samples == 0 {
			r.wait(ctx, notify, time.Hour)
			continue
		}
		if rd.Samples < q.MaxSamplesPerSend {
			if wait := rd.First.Add(deadline).Sub(r.m.now()); wait > 0 && rd.Oldest.IsZero() {
				r.wait(ctx, notify, wait)
				if r.m.now().Before(rd.First.Add(deadline)) {
					continue // more came: read again, up to a full batch
				}
			}
		}
		b := r.build(rd)
		select {
		case out <- b:
			pos = rd.Next
		case <-ctx.Done():
			return
		}
	}
}

// wait returns when notify is closed, d has passed or ctx ends.
func (r *remote) wait(ctx context.Context, notify <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-notify:
	case <-t.C:
	}
}

// send sends b, drops it if the receiver refuses it for good or if the
// feed holds more than remote_write_max_pending_bytes for this remote, and
// saves the position after it. It returns false when ctx ended first.
func (r *remote) send(ctx context.Context, b *batch) bool {
	r.oldestUnsent.Store(b.first.UnixMilli())
	switch {
	case b.samples == 0:
	case r.feedFull():
		r.drop(b, "feed_full", nil)
	default:
		var (
			msg any = b.v1
			typ     = remoteapi.WriteV1MessageType
		)
		if b.v2 != nil {
			msg, typ = b.v2, remoteapi.WriteV2MessageType
		}
		// A retry gives up on the batch when the feed grew past its bound
		// meanwhile.
		sendCtx, cancel := context.WithCancel(ctx)
		full := false
		_, err := r.api.Write(sendCtx, typ, msg, remoteapi.WithWriteRetryCallback(func(err error) {
			r.metrics.retried.Add(b.samples)
			r.log.Debug("remote write failed, retrying after backoff", "err", err, "samples", b.samples)
			if r.feedFull() {
				full = true
				cancel()
			}
		}))
		cancel()
		switch {
		case ctx.Err() != nil:
			return false
		case full:
			r.drop(b, "feed_full", err)
		case err != nil:
			reason := "error"
			if strings.Contains(err.Error(), "server returned HTTP status 4") {
				reason = "http_4xx"
			}
			r.metrics.failed.Add(b.samples)
			r.drop(b, reason, err)
		default:
			r.metrics.sent.Add(b.samples)
			for {
				old := r.highestSent.Load()
				if b.maxT <= old || r.highestSent.CompareAndSwap(old, b.maxT) {
					break
				}
			}
		}
	}
	if b.dropped > 0 {
		r.metrics.droppedCounter("relabel").Add(b.dropped)
	}
	for {
		err := r.m.store.SaveFeedConsumer(r.name, b.next, b.changed)
		if err == nil {
			break
		}
		r.log.Warn("save the remote write position, trying again", "err", err)
		r.wait(ctx, nil, time.Second)
		if ctx.Err() != nil {
			return false
		}
	}
	r.posMu.Lock()
	r.pos = b.next
	r.posMu.Unlock()
	if !b.oldest.IsZero() {
		r.oldestUnsent.Store(b.oldest.UnixMilli())
	} else {
		r.oldestUnsent.Store(r.m.now().UnixMilli())
	}
	return true
}

// drop counts b's samples as dropped for reason. The counters it held
// are not lost: the per-series state saved with the position already
// adds them, and the next sample of each series carries them.
func (r *remote) drop(b *batch, reason string, err error) {
	r.metrics.droppedCounter(reason).Add(b.samples)
	msg := "remote write refused a batch, dropping it"
	if reason == "feed_full" {
		r.shed = true
		msg = "the series feed holds more than remote_write_max_pending_bytes for this remote: dropping its oldest unsent batch"
	}
	r.log.Warn(msg, "err", err, "samples", b.samples, "reason", reason, "pending_bytes", r.pendingBytes())
}

// pendingBytes is the bytes of the feed from the saved position on (the
// entry it is in counted whole): what this remote keeps on disk.
func (r *remote) pendingBytes() uint64 {
	head := r.m.store.FeedBytes()
	before, err := r.m.store.FeedBytesBefore(r.sentPos().Seq)
	if err != nil || before > head {
		return 0
	}
	return head - before
}

// feedFull reports whether the remote keeps more of the feed than
// remote_write_max_pending_bytes.
func (r *remote) feedFull() bool { return r.pendingBytes() > uint64(r.m.cfg.MaxPendingBytes) }

// build turns what was read into a request: increments become the
// cumulative counter, stamped at their time or, when late (not after the
// series' last sent sample), at their commit time, or 1 ms after the last
// sent sample if that is later.
func (r *remote) build(rd pebblestore.FeedRead) *batch {
	b := &batch{first: rd.First, next: rd.Next, oldest: rd.Oldest, changed: map[uint64][]byte{}, maxT: math.MinInt64}
	v2 := r.cfg.ProtobufMessage == remoteapi.WriteV2MessageType
	var (
		v1req   prompb.WriteRequest
		v2req   writev2.Request
		symbols writev2.SymbolsTable
		index   = map[uint64]int{}
	)
	if v2 {
		symbols = writev2.NewSymbolTable()
	}
	for _, fs := range rd.Series {
		ol := r.outLabelsOf(fs)
		if ol.skip {
			continue
		}
		if ol.dropped {
			b.dropped += len(fs.Samples)
			continue
		}
		i, ok := index[fs.Ref]
		if !ok {
			i = len(index)
			index[fs.Ref] = i
			if v2 {
				ts := writev2.TimeSeries{LabelsRefs: symbols.SymbolizeLabels(ol.ls, nil)}
				if fs.Kind == pebblestore.KindIncrements {
					ts.Metadata.Type = writev2.Metadata_METRIC_TYPE_COUNTER
				}
				v2req.Timeseries = append(v2req.Timeseries, ts)
			} else {
				v1req.Timeseries = append(v1req.Timeseries, prompb.TimeSeries{Labels: prompb.FromLabels(ol.ls, nil)})
			}
		}
		add := func(t int64, v float64) {
			if v2 {
				v2req.Timeseries[i].Samples = append(v2req.Timeseries[i].Samples, writev2.Sample{Value: v, Timestamp: t})
			} else {
				v1req.Timeseries[i].Samples = append(v1req.Timeseries[i].Samples, prompb.Sample{Value: v, Timestamp: t})
			}
			b.maxT = max(b.maxT, t)
			b.samples++
		}
		if fs.Kind == pebblestore.KindIncrements {
			st := r.state[fs.Ref]
			if st == nil {
				st = &seriesState{t: math.MinInt64}
				r.state[fs.Ref] = st
			}
			for _, smp := range fs.Samples {
				st.v += smp.F
				if smp.T > st.t {
					st.t = smp.T // on time: at its interval's end
				} else {
					st.t = max(st.t+1, fs.Committed) // late: when it was committed
				}
				add(st.t, st.v)
			}
			b.changed[fs.Ref] = st.encode()
			continue
		}
		for _, smp := range fs.Samples {
			switch {
			case smp.H != nil && v2:
				v2req.Timeseries[i].Histograms = append(v2req.Timeseries[i].Histograms, writev2.FromIntHistogram(0, smp.T, smp.H))
			case smp.FH != nil && v2:
				v2req.Timeseries[i].Histograms = append(v2req.Timeseries[i].Histograms, writev2.FromFloatHistogram(0, smp.T, smp.FH))
			case smp.H != nil:
				v1req.Timeseries[i].Histograms = append(v1req.Timeseries[i].Histograms, prompb.FromIntHistogram(smp.T, smp.H))
			case smp.FH != nil:
				v1req.Timeseries[i].Histograms = append(v1req.Timeseries[i].Histograms, prompb.FromFloatHistogram(smp.T, smp.FH))
			default:
				add(smp.T, smp.F)
				continue
			}
			b.maxT = max(b.maxT, smp.T)
			b.samples++
		}
	}
	if v2 {
		v2req.Symbols = symbols.Symbols()
		b.v2 = &v2req
	} else {
		b.v1 = &v1req
	}
	return b
}

// outLabelsOf returns, once per series, the labels it is sent with:
// its own, the external labels it lacks, then write_relabel_configs.
func (r *remote) outLabelsOf(fs pebblestore.FeedSeries) *outLabels {
	if ol := r.labels[fs.Ref]; ol != nil {
		return ol
	}
	ol := &outLabels{}
	if r.m.cfg.Send != SendAll && !strings.HasPrefix(fs.Labels.Get(model.MetricNameLabel), "proxy_") {
		ol.skip = true
	} else {
		lb := labels.NewBuilder(fs.Labels)
		r.m.cfg.ExternalLabels.Range(func(l labels.Label) {
			if !fs.Labels.Has(l.Name) {
				lb.Set(l.Name, l.Value)
			}
		})
		if relabel.ProcessBuilder(lb, r.relabel...) {
			ol.ls = lb.Labels()
		} else {
			ol.dropped = true
		}
	}
	r.labels[fs.Ref] = ol
	return ol
}

// remoteMetrics are a remote's self-metrics, named as Prometheus names
// its prometheus_remote_storage_* ones, with the same remote_name and url
// labels.
type remoteMetrics struct {
	reg     *selfmetrics.Registry
	labels  string
	sent    *metrics.Counter
	failed  *metrics.Counter
	retried *metrics.Counter
	mu      sync.Mutex
	dropped map[string]*metrics.Counter
}

func newMetrics(reg *selfmetrics.Registry, r *remote) *remoteMetrics {
	lbl := fmt.Sprintf(`remote_name=%q,url=%q`, escape(r.name), escape(r.cfg.redactedURL()))
	rm := &remoteMetrics{reg: reg, labels: lbl, dropped: map[string]*metrics.Counter{}}
	name := func(n string) string { return "proxylens_remote_storage_" + n + "{" + lbl + "}" }
	rm.sent = reg.Counter(name("samples_total"), "Samples sent to the remote and acknowledged by it.")
	rm.failed = reg.Counter(name("samples_failed_total"), "Samples in requests the remote refused for good (a 4xx other than a retried 429); they are dropped.")
	rm.retried = reg.Counter(name("samples_retried_total"), "Samples in requests sent again after a recoverable error (5xx, 429, network).")
	reg.Gauge(name("samples_pending"), "Samples committed to the store and not yet sent to the remote (read from the series feed).", func() float64 {
		return float64(r.pending())
	})
	reg.Gauge(name("bytes_pending"), "Bytes of the series feed kept on disk for the remote: its entries from the remote's position to the newest, bounded by remote_write_max_pending_bytes.", func() float64 {
		return float64(r.pendingBytes())
	})
	reg.Gauge(name("highest_sent_timestamp_seconds"), "Newest sample timestamp the remote acknowledged, in seconds since the epoch.", func() float64 {
		t := r.highestSent.Load()
		if t == math.MinInt64 {
			return 0
		}
		return float64(t) / 1000
	})
	reg.Gauge(name("queue_lag_seconds"), "How long ago the oldest sample not yet sent was committed to the store; 0 with nothing pending.", func() float64 {
		if r.pending() == 0 {
			return 0
		}
		return max(0, float64(r.m.now().UnixMilli()-r.oldestUnsent.Load())/1000)
	})
	for _, reason := range []string{"relabel", "http_4xx", "error", "feed_full"} {
		rm.droppedCounter(reason)
	}
	return rm
}

// droppedCounter returns the samples_dropped_total counter of a reason.
func (rm *remoteMetrics) droppedCounter(reason string) *metrics.Counter {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	c := rm.dropped[reason]
	if c == nil {
		c = rm.reg.Counter("proxylens_remote_storage_samples_dropped_total{"+rm.labels+`,reason="`+reason+`"}`,
			"Samples not sent, by reason: relabel (write_relabel_configs), http_4xx (the remote refused them for good), error (another error that is not retried), feed_full (unsent past remote_write_max_pending_bytes).")
		rm.dropped[reason] = c
	}
	return c
}

// escape prepares a label value for %q: Go's quoting of \ and " is the
// exposition format's; other characters in names and URLs are printable.
func escape(s string) string { return strings.ToValidUTF8(s, "?") }
