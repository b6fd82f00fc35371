package receiver

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"

	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
)

// FuzzConvertOTLP: any request that decodes converts without panicking,
// every sample it yields has a metric name, and none a name proxylens
// owns (issue 17).
func FuzzConvertOTLP(f *testing.F) {
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	rm.Resource().Attributes().PutStr("service.name", "svc")
	rm.Resource().Attributes().PutStr("host.name", "h")
	ms := rm.ScopeMetrics().AppendEmpty().Metrics()
	g := ms.AppendEmpty()
	g.SetName("a.b")
	g.SetEmptyGauge().DataPoints().AppendEmpty().SetIntValue(3)
	h := ms.AppendEmpty()
	h.SetName("lat")
	h.SetUnit("ms")
	hp := h.SetEmptyHistogram().DataPoints().AppendEmpty()
	hp.ExplicitBounds().FromRaw([]float64{1, 2})
	hp.BucketCounts().FromRaw([]uint64{1, 2, 3})
	hp.SetCount(6)
	hp.SetTimestamp(pcommon.Timestamp(1e18))
	e := ms.AppendEmpty()
	e.SetName("exp")
	ep := e.SetEmptyExponentialHistogram().DataPoints().AppendEmpty()
	ep.SetScale(30)
	ep.Positive().BucketCounts().FromRaw([]uint64{1, 0, 0, 0, 4})
	ep.SetCount(5)
	s := ms.AppendEmpty()
	s.SetName("sum")
	sp := s.SetEmptySummary().DataPoints().AppendEmpty()
	sp.QuantileValues().AppendEmpty().SetQuantile(0.5)
	b, err := pmetricotlp.NewExportRequestFromMetrics(md).MarshalProto()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	// Names that translate to reserved ones.
	for _, name := range []string{"proxy.requests", "proxylens_up", "proxy_cost", "Proxy.Requests"} {
		r := pmetric.NewMetrics()
		m := r.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
		m.SetName(name)
		sum := m.SetEmptySum()
		sum.SetIsMonotonic(true)
		sum.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
		sum.DataPoints().AppendEmpty().SetDoubleValue(1e6)
		b, err := pmetricotlp.NewExportRequestFromMetrics(r).MarshalProto()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req := pmetricotlp.NewExportRequest()
		if req.UnmarshalProto(data) != nil {
			return
		}
		conv := convertOTLP(req.Metrics(), ReservedName)
		for _, s := range conv.samples {
			name := s.ls.Get("__name__")
			if name == "" {
				t.Fatalf("sample without a name: %s", s.ls)
			}
			if ReservedName(name) {
				t.Fatalf("sample with a reserved name: %s", s.ls)
			}
		}
		if conv.reserved > conv.rejected {
			t.Fatalf("%d reserved points, more than the %d rejected", conv.reserved, conv.rejected)
		}
	})
}

// FuzzRemoteWrite: any decodable write request is appended or refused
// without panicking, against a real store, and no series with a name
// proxylens owns is appended (issue 17).
func FuzzRemoteWrite(f *testing.F) {
	req := prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:     []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "a"}},
		Samples:    []prompb.Sample{{Value: 1, Timestamp: 1}, {Value: 2, Timestamp: 0}},
		Histograms: []prompb.Histogram{prompb.FromIntHistogram(5, &histogram.Histogram{Count: 1, PositiveSpans: []histogram.Span{{Length: 1}}, PositiveBuckets: []int64{1}})},
	}}}
	b, err := req.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	forged := prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: []prompb.Label{{Name: "__name__", Value: "proxy_requests_total"}, {Name: "source", Value: "forged"}}, Samples: []prompb.Sample{{Value: 1e6, Timestamp: 1}}},
		{Labels: []prompb.Label{{Name: "__name__", Value: "up"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}},
		{Labels: []prompb.Label{{Name: "__name__", Value: "proxylens_up"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}},
	}}
	if b, err = forged.Marshal(); err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	db, err := pebblestore.Open(f.TempDir(), pebblestore.Options{})
	if err != nil {
		f.Fatal(err)
	}
	defer db.Close()
	if _, err := otelanalytics.Restore(db, otelanalytics.NewDict(0), otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, time.Second, nil)); err != nil {
		f.Fatal(err)
	}
	w := NewSeriesWriter(db.Series(), SeriesWriterOptions{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var req prompb.WriteRequest
		if req.Unmarshal(data) != nil {
			return
		}
		app := reservedGuard{AppenderV2: db.Series().AppenderV2(context.Background()), t: t}
		if _, _, err := w.appendRemoteWrite(app, &req, time.Now().Add(maxAhead).UnixMilli()); err == nil {
			_ = app.Commit()
		} else {
			_ = app.Rollback()
		}
	})
}

// reservedGuard fails the test on an append of a reserved name.
type reservedGuard struct {
	storage.AppenderV2
	t *testing.T
}

func (g reservedGuard) Append(ref storage.SeriesRef, ls labels.Labels, st, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, o storage.AppendV2Options) (storage.SeriesRef, error) {
	if ReservedName(ls.Get("__name__")) {
		g.t.Fatalf("appended a reserved name: %s", ls)
	}
	return g.AppenderV2.Append(ref, ls, st, t, v, h, fh, o)
}
