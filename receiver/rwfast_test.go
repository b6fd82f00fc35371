package receiver

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"
)

// recorder is an AppendableV2 that records what is appended, in order,
// and refuses a sample at a time it already holds for the series with a
// different value, as the store does.
type recorder struct {
	appends  []string
	reserved int               // appends of a reserved name
	seen     map[string]uint64 // series@t → value bits
	refs     map[string]storage.SeriesRef
}

func (r *recorder) AppenderV2(context.Context) storage.AppenderV2 { return &recordApp{r: r} }

type recordApp struct {
	r       *recorder
	staged  []string
	stagedT map[string]uint64
}

func (a *recordApp) Append(ref storage.SeriesRef, ls labels.Labels, st, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, _ storage.AppendV2Options) (storage.SeriesRef, error) {
	if ReservedName(ls.Get("__name__")) {
		a.r.reserved++
	}
	if a.r.refs == nil {
		a.r.refs, a.r.seen = map[string]storage.SeriesRef{}, map[string]uint64{}
	}
	id, ok := a.r.refs[ls.String()]
	if !ok {
		id = storage.SeriesRef(len(a.r.refs) + 1)
		a.r.refs[ls.String()] = id
	}
	if ref != 0 && ref != id {
		return 0, fmt.Errorf("ref %d given for %s, which is %d", ref, ls, id)
	}
	key := fmt.Sprintf("%s@%d", ls, t)
	bits := math.Float64bits(v)
	if a.stagedT == nil {
		a.stagedT = map[string]uint64{}
	}
	for _, m := range []map[string]uint64{a.r.seen, a.stagedT} {
		if old, ok := m[key]; ok && old != bits && h == nil && fh == nil {
			return 0, storage.ErrDuplicateSampleForTimestamp
		}
	}
	a.stagedT[key] = bits
	a.staged = append(a.staged, fmt.Sprintf("%s st=%d t=%d v=%x h=%v fh=%v", ls, st, t, bits, h, fh))
	return id, nil
}

func (a *recordApp) Commit() error {
	a.r.appends = append(a.r.appends, a.staged...)
	for k, v := range a.stagedT {
		a.r.seen[k] = v
	}
	return nil
}

func (a *recordApp) Rollback() error { a.staged, a.stagedT = nil, nil; return nil }

// slowPath is what remote write did before the fast path, and still does
// for what the fast path declines: prompb's decoder and appendRemoteWrite.
func slowPath(w *SeriesWriter, app storage.AppenderV2, raw []byte, limit int64) (int, error) {
	var req prompb.WriteRequest
	if err := req.Unmarshal(raw); err != nil {
		return 0, err
	}
	n, reserved, err := w.appendRemoteWrite(app, &req, limit)
	if err == nil && reserved.series > 0 {
		return n, fmt.Errorf("%d series with reserved names refused", reserved.series)
	}
	return n, err
}

// checkFast runs raw through the fast path and through prompb's decoder
// and appendRemoteWrite, each into its own recorder, twice (the second
// time from the label cache): whatever the fast path takes, the slow path
// takes too, with the same appends. It returns whether the fast path took
// the request.
func checkFast(t *testing.T, raw []byte) bool {
	t.Helper()
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	limit := now.Add(maxAhead).UnixMilli()
	fastRec, slowRec := &recorder{}, &recorder{}
	fw := NewSeriesWriter(fastRec, SeriesWriterOptions{Now: func() time.Time { return now }})
	sw := NewSeriesWriter(slowRec, SeriesWriterOptions{Now: func() time.Time { return now }})
	took := false
	for round := range 2 {
		app := fastRec.AppenderV2(context.Background())
		n, ok := fw.appendFast(app, raw, limit)
		if !ok {
			require.NoError(t, app.Rollback())
			require.Zero(t, round, "the fast path took the request once, then declined it")
			return false
		}
		took = true
		require.NoError(t, app.Commit())
		sapp := slowRec.AppenderV2(context.Background())
		sn, err := slowPath(sw, sapp, raw, limit)
		require.NoError(t, err, "the fast path took a request the slow path refuses")
		require.NoError(t, sapp.Commit())
		require.Equal(t, sn, n, "samples counted")
		require.Equal(t, slowRec.appends, fastRec.appends, "round %d", round)
	}
	require.Zero(t, fastRec.reserved+slowRec.reserved, "a reserved name was appended")
	return took
}

// rwCorpus is remote write 1.0 requests, ordinary and odd, named.
func rwCorpus(t testing.TB) map[string][]byte {
	base := int64(1_795_000_000_000)
	marshal := func(ts ...prompb.TimeSeries) []byte {
		b, err := (&prompb.WriteRequest{Timeseries: ts}).Marshal()
		require.NoError(t, err)
		return b
	}
	lbl := func(kv ...string) []prompb.Label {
		var out []prompb.Label
		for i := 0; i+1 < len(kv); i += 2 {
			out = append(out, prompb.Label{Name: kv[i], Value: kv[i+1]})
		}
		return out
	}
	smp := func(tv ...float64) []prompb.Sample {
		var out []prompb.Sample
		for i := 0; i+1 < len(tv); i += 2 {
			out = append(out, prompb.Sample{Timestamp: base + int64(tv[i]), Value: tv[i+1]})
		}
		return out
	}
	ordinary := marshal(
		prompb.TimeSeries{Labels: lbl("__name__", "up", "job", "a"), Samples: smp(0, 1, 60e3, 1, 120e3, 0)},
		prompb.TimeSeries{Labels: lbl("__name__", "http_requests_total", "domain", "x.example", "source", "s1"), Samples: smp(0, 10, 60e3, 15)},
	)
	huge := strings.Repeat("v", 1<<20)
	// A series whose labels and samples interleave on the wire, as no
	// encoder writes them but protobuf allows.
	var interleaved []byte
	{
		l1, _ := (&prompb.Label{Name: "__name__", Value: "m"}).Marshal()
		s1, _ := (&prompb.Sample{Timestamp: base, Value: 2}).Marshal()
		l2, _ := (&prompb.Label{Name: "a", Value: "b"}).Marshal()
		var ts []byte
		for _, f := range []struct {
			tag byte
			b   []byte
		}{{0x0a, l1}, {0x12, s1}, {0x0a, l2}} {
			ts = append(ts, f.tag, byte(len(f.b)))
			ts = append(ts, f.b...)
		}
		interleaved = append([]byte{0x0a, byte(len(ts))}, ts...)
	}
	hist := marshal(prompb.TimeSeries{Labels: lbl("__name__", "h"), Histograms: []prompb.Histogram{
		prompb.FromIntHistogram(base, &histogram.Histogram{Count: 1, ZeroCount: 1, ZeroThreshold: 0.001, Sum: 0})}})
	meta, err := (&prompb.WriteRequest{Metadata: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "c", Help: "h"}}}).Marshal()
	require.NoError(t, err)
	withUnknown := append(bytes.Clone(ordinary), 0x28, 0x01) // field 5, varint
	return map[string][]byte{
		"ordinary":       ordinary,
		"empty request":  {},
		"empty value":    marshal(prompb.TimeSeries{Labels: lbl("__name__", "m", "gone", "", "kept", "x"), Samples: smp(0, 1)}),
		"empty name":     marshal(prompb.TimeSeries{Labels: lbl("__name__", "m", "", "x"), Samples: smp(0, 1)}),
		"no metric name": marshal(prompb.TimeSeries{Labels: lbl("job", "a"), Samples: smp(0, 1)}),
		"no labels":      marshal(prompb.TimeSeries{Samples: smp(0, 1)}),
		"no samples":     marshal(prompb.TimeSeries{Labels: lbl("__name__", "m")}),
		"repeated name":  marshal(prompb.TimeSeries{Labels: lbl("__name__", "m", "a", "1", "a", "2"), Samples: smp(0, 1)}),
		"unsorted":       marshal(prompb.TimeSeries{Labels: lbl("z", "1", "__name__", "m", "a", "2"), Samples: smp(0, 1)}),
		"invalid utf8":   marshal(prompb.TimeSeries{Labels: lbl("__name__", "m", "a", "\xff\xfe"), Samples: smp(0, 1)}),
		"nan and stale": marshal(prompb.TimeSeries{Labels: lbl("__name__", "m"), Samples: []prompb.Sample{
			{Timestamp: base, Value: math.NaN()}, {Timestamp: base + 1, Value: math.Float64frombits(value.StaleNaN)},
			{Timestamp: base + 2, Value: math.Inf(-1)}, {Timestamp: base + 3, Value: math.Copysign(0, -1)}}}),
		"huge label value": marshal(prompb.TimeSeries{Labels: lbl("__name__", "m", "big", huge), Samples: smp(0, 1)}),
		"out of order":     marshal(prompb.TimeSeries{Labels: lbl("__name__", "m"), Samples: smp(120e3, 3, 0, 1, 60e3, 2)}),
		"same time twice":  marshal(prompb.TimeSeries{Labels: lbl("__name__", "m"), Samples: smp(0, 1, 0, 1)}),
		"conflict":         marshal(prompb.TimeSeries{Labels: lbl("__name__", "m"), Samples: smp(0, 1, 0, 2)}),
		"series twice": marshal(
			prompb.TimeSeries{Labels: lbl("__name__", "m"), Samples: smp(0, 1)},
			prompb.TimeSeries{Labels: lbl("__name__", "m"), Samples: smp(60e3, 2)}),
		"zero fields":  marshal(prompb.TimeSeries{Labels: lbl("__name__", "m"), Samples: []prompb.Sample{{}}}),
		"negative ts":  marshal(prompb.TimeSeries{Labels: lbl("__name__", "m"), Samples: []prompb.Sample{{Timestamp: -5, Value: 1}}}),
		"future":       marshal(prompb.TimeSeries{Labels: lbl("__name__", "m"), Samples: []prompb.Sample{{Timestamp: base * 2, Value: 1}}}),
		"interleaved":  interleaved,
		"histogram":    hist,
		"metadata":     meta,
		"unknown":      withUnknown,
		"truncated":    ordinary[:len(ordinary)-3],
		"bad length":   {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"tag overflow": append([]byte{0x8a, 0x80, 0x80, 0x80, 0x10}, ordinary[1:]...),
		// Names proxylens writes itself: the slow path decides (issue 17).
		"reserved name": marshal(
			prompb.TimeSeries{Labels: lbl("__name__", "up", "job", "a"), Samples: smp(0, 1)},
			prompb.TimeSeries{Labels: lbl("__name__", "proxy_requests_total", "source", "forged"), Samples: smp(0, 1e6)}),
		"reserved self-metric": marshal(prompb.TimeSeries{Labels: lbl("__name__", "proxylens_up"), Samples: smp(0, 1)}),
	}
}

// TestRemoteWriteFast holds the fast path to prompb's decoder and the
// append path it replaces, on ordinary and odd requests; and checks it
// takes those it is for.
func TestRemoteWriteFast(t *testing.T) {
	mustTake := map[string]bool{
		"ordinary": true, "empty request": true, "empty value": true, "unsorted": true, "nan and stale": true,
		"huge label value": true, "out of order": true, "same time twice": true, "series twice": true,
		"zero fields": true, "negative ts": true, "interleaved": true,
	}
	for name, raw := range rwCorpus(t) {
		t.Run(name, func(t *testing.T) {
			took := checkFast(t, raw)
			require.Equal(t, mustTake[name], took, "fast path took it")
		})
	}
}

// FuzzRemoteWriteFast: whatever the fast path takes, prompb's decoder
// and appendRemoteWrite take too, with the same appends.
func FuzzRemoteWriteFast(f *testing.F) {
	for _, raw := range rwCorpus(f) {
		if len(raw) < 64<<10 {
			f.Add(raw)
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		checkFast(t, raw)
	})
}

// TestSeriesCacheBounded: the cache never holds more than its size, and
// keeps the series still written.
func TestSeriesCacheBounded(t *testing.T) {
	c := newSeriesCache(8)
	hot := []byte("hot")
	c.put(hot, &cachedSeries{ls: labels.FromStrings("__name__", "hot")})
	for i := range 100 {
		c.put(fmt.Appendf(nil, "k%d", i), &cachedSeries{})
		require.LessOrEqual(t, c.len(), 8)
		require.NotNil(t, c.get(hot), "after %d others", i)
	}
	require.Nil(t, c.get([]byte("k0")))
	require.NotNil(t, c.get([]byte("k99")))
}
